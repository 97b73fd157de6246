//! The host side of a jailed VM's snapshot: the directory in the chroot that Firecracker writes
//! the snapshot into, and the move of what it wrote out of the jail into a snapshot store.
//!
//! Everything in the chroot's snapshot directory was written by the jail user, so nothing of it
//! is trusted: each file is opened once without following links, must be a regular file with
//! one link owned by the jail user, and its bytes are copied into a new root-owned, read-only
//! file in the store (never renamed: a compromised Firecracker could keep a descriptor to the
//! original and change it later). The jail's copies are removed afterwards.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::JailPlan;

/// The chroot directory Firecracker writes a snapshot into, as Firecracker sees it.
pub const DIR_IN_JAIL: &str = "/snapshot";
/// The microVM state file's name.
pub const STATE_FILE: &str = "vmstate";
/// The guest memory file's name.
pub const MEMORY_FILE: &str = "mem";

/// A snapshot step failed. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file or directory could not be made, read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// What the jail user left is not a plain file of its own.
    #[error("{path} is not a regular file with one link owned by the jail user ({why}); the snapshot is refused")]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// The snapshot directory of the jail on the host (`<root>/snapshot`).
pub fn host_dir(plan: &JailPlan) -> PathBuf {
    plan.root_dir.join(DIR_IN_JAIL.trim_start_matches('/'))
}

/// Makes the empty snapshot directory in the chroot, owned by the jail user (mode 0700), so
/// that Firecracker can write the snapshot there. A leftover of an earlier attempt is removed.
pub fn prepare(plan: &JailPlan) -> Result<PathBuf, SnapshotError> {
    let dir = host_dir(plan);
    remove(plan)?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io_err("create", &dir))?;
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(plan.uid)),
        Some(nix::unistd::Gid::from_raw(plan.gid)),
    )
    .map_err(|e| SnapshotError::Io {
        action: "chown",
        path: dir.clone(),
        source: e.into(),
    })?;
    Ok(dir)
}

/// Removes the chroot's snapshot directory and what is in it (without following links).
pub fn remove(plan: &JailPlan) -> Result<(), SnapshotError> {
    let dir = host_dir(plan);
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspect", &dir)(e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(&dir).map_err(io_err("remove", &dir)),
        Ok(_) => fs::remove_file(&dir).map_err(io_err("remove", &dir)),
    }
}

/// One file moved into the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Its name in the store.
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// Copies `name` from the chroot's snapshot directory into `store` as a root-owned read-only
/// file (0444: clones' jail users read it through a hard link in their own chroot; the store
/// directory itself is 0700), after checking it is the jail user's own plain file.
pub fn collect(plan: &JailPlan, name: &str, store: &Path) -> Result<StoredFile, SnapshotError> {
    let from = host_dir(plan).join(name);
    let src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&from)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => SnapshotError::Untrusted {
                path: from.clone(),
                why: "a symbolic link".into(),
            },
            _ => io_err("open", &from)(e),
        })?;
    let meta = src.metadata().map_err(io_err("inspect", &from))?;
    let why = if !meta.is_file() {
        Some("not a regular file".to_owned())
    } else if meta.nlink() != 1 {
        Some(format!("{} links", meta.nlink()))
    } else if meta.uid() != plan.uid {
        Some(format!("owned by uid {}", meta.uid()))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(SnapshotError::Untrusted { path: from, why });
    }
    copy_into(src, name, store)
}

/// Copies an open file into `store/name` (root-owned, 0444), hashing it on the way.
pub fn copy_into(mut src: fs::File, name: &str, store: &Path) -> Result<StoredFile, SnapshotError> {
    let to = store.join(name);
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&to)
        .map_err(io_err("create", &to))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io_err("read", &to))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_err("write", &to))?;
        len += n as u64;
    }
    dst.sync_all().map_err(io_err("sync", &to))?;
    dst.set_permissions(fs::Permissions::from_mode(0o444))
        .map_err(io_err("chmod", &to))?;
    Ok(StoredFile {
        name: name.to_owned(),
        len,
        sha256: hex(&hash.finalize()),
    })
}

/// SHA-256 of a file, hex (to check a store before a restore).
pub fn sha256_of(path: &Path) -> Result<String, SnapshotError> {
    let mut f = fs::File::open(path).map_err(io_err("open", path))?;
    let mut hash = Sha256::new();
    io::copy(&mut f, &mut hash).map_err(io_err("read", path))?;
    Ok(hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn plan(root: &Path) -> JailPlan {
        let mut p = crate::owner::tests::plan("vm-snap", root);
        p.root_dir = root.join("root");
        p.uid = nix::unistd::getuid().as_raw();
        p.gid = nix::unistd::getgid().as_raw();
        fs::create_dir_all(&p.root_dir).unwrap();
        p
    }

    #[test]
    fn a_plain_file_of_the_jail_user_is_copied_read_only_and_hashed() {
        let t = tempfile::tempdir().unwrap();
        let p = plan(t.path());
        let dir = prepare(&p).unwrap();
        fs::write(dir.join(MEMORY_FILE), b"guest memory").unwrap();
        let store = t.path().join("store");
        fs::create_dir(&store).unwrap();
        let f = collect(&p, MEMORY_FILE, &store).unwrap();
        assert_eq!(f.len, 12);
        assert_eq!(f.sha256, sha256_of(&store.join(MEMORY_FILE)).unwrap());
        let m = fs::metadata(store.join(MEMORY_FILE)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o444);
        remove(&p).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn links_left_by_the_jail_user_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = plan(t.path());
        let dir = prepare(&p).unwrap();
        let secret = t.path().join("secret");
        fs::write(&secret, b"host file").unwrap();
        symlink(&secret, dir.join(STATE_FILE)).unwrap();
        fs::hard_link(&secret, dir.join(MEMORY_FILE)).unwrap();
        let store = t.path().join("store");
        fs::create_dir(&store).unwrap();
        for name in [STATE_FILE, MEMORY_FILE] {
            let e = collect(&p, name, &store).unwrap_err();
            assert!(matches!(e, SnapshotError::Untrusted { .. }), "{name}: {e}");
        }
        assert!(!store.join(STATE_FILE).exists());
    }
}
