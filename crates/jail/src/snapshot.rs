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
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// A diff snapshot's memory file cannot be applied to its parent.
    #[error("the diff snapshot's memory file {path} cannot be merged into its parent: {why}")]
    Diff {
        /// The diff file.
        path: PathBuf,
        /// Why.
        why: String,
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
    copy_into(open_untrusted(plan, name)?, name, store)
}

/// Opens `name` in the chroot's snapshot directory once, without following links, and checks
/// that it is a regular file with one link owned by the jail user.
fn open_untrusted(plan: &JailPlan, name: &str) -> Result<fs::File, SnapshotError> {
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
    match why {
        Some(why) => Err(SnapshotError::Untrusted { path: from, why }),
        None => Ok(src),
    }
}

/// What [`merge_diff`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The complete memory file in the store.
    pub file: StoredFile,
    /// Bytes of guest memory the diff carried (its data extents).
    pub diff_bytes: u64,
    /// Whether the parent's memory was cloned by reflink (else it was copied).
    pub reflinked: bool,
}

/// Makes a complete memory file `store/name` from a diff snapshot: a copy of the parent's
/// complete memory file `parent` (a reflink when the filesystem can, else a plain copy), with
/// the data extents of the chroot's diff file `diff` (the pages dirtied since the parent,
/// found with `SEEK_DATA`/`SEEK_HOLE`; the clean pages are holes) written over it at the same
/// offsets. The diff file is opened and checked as in [`collect`].
///
/// A diff must be sparse to mean anything: on a filesystem that does not report holes, every
/// clean page would read as zeros and overwrite the parent's. So a diff whose data extents add
/// up to more than the blocks the file has allocated is refused.
pub fn merge_diff(
    plan: &JailPlan,
    diff: &str,
    parent: &Path,
    name: &str,
    store: &Path,
) -> Result<Merged, SnapshotError> {
    let diff_path = host_dir(plan).join(diff);
    let src = open_untrusted(plan, diff)?;
    let base = fs::File::open(parent).map_err(io_err("open", parent))?;
    let (src_meta, base_len) = (
        src.metadata().map_err(io_err("inspect", &diff_path))?,
        base.metadata().map_err(io_err("inspect", parent))?.len(),
    );
    if src_meta.len() != base_len {
        return Err(SnapshotError::Diff {
            path: diff_path,
            why: format!(
                "it is {} bytes, its parent's memory {} is {base_len}: a diff only applies to \
                 the memory of the same VM",
                src_meta.len(),
                parent.display()
            ),
        });
    }
    let extents = data_extents(&src, src_meta.len()).map_err(io_err("seek", &diff_path))?;
    let diff_bytes: u64 = extents.iter().map(|(_, len)| len).sum();
    let allocated = src_meta.blocks() * 512;
    if diff_bytes > allocated + (1 << 20) {
        return Err(SnapshotError::Diff {
            path: diff_path,
            why: format!(
                "its filesystem reports {diff_bytes} bytes of data but only {allocated} are \
                 allocated, so it does not report holes (SEEK_DATA); put the chroot base on a \
                 filesystem that does (ext4, xfs, btrfs, tmpfs) to take diff snapshots"
            ),
        });
    }
    let to = store.join(name);
    let dst = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&to)
        .map_err(io_err("create", &to))?;
    let reflinked = rustix::fs::ioctl_ficlone(&dst, &base).is_ok();
    if !reflinked {
        let mut base = base;
        let mut w = &dst;
        io::copy(&mut base, &mut w).map_err(io_err("copy the parent's memory into", &to))?;
    }
    let mut buf = vec![0u8; 1 << 20];
    for (start, len) in extents {
        let mut done = 0u64;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            src.read_exact_at(&mut buf[..n], start + done)
                .map_err(io_err("read", &diff_path))?;
            dst.write_all_at(&buf[..n], start + done)
                .map_err(io_err("write", &to))?;
            done += n as u64;
        }
    }
    dst.sync_all().map_err(io_err("sync", &to))?;
    dst.set_permissions(fs::Permissions::from_mode(0o444))
        .map_err(io_err("chmod", &to))?;
    drop(dst);
    Ok(Merged {
        file: StoredFile {
            name: name.to_owned(),
            len: base_len,
            sha256: sha256_of(&to)?,
        },
        diff_bytes,
        reflinked,
    })
}

/// The `(offset, length)` data extents of a file of `len` bytes, by `SEEK_DATA`/`SEEK_HOLE`.
fn data_extents(f: &fs::File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // ENXIO: no data at or after `pos`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(f, SeekFrom::Hole(start))?.min(len);
        if end > start {
            out.push((start, end - start));
        }
        pos = end.max(start + 1);
    }
    Ok(out)
}

/// Bytes free to an unprivileged writer on the filesystem holding `path`, or holding its
/// nearest existing ancestor (a store or jail directory that is not made yet).
pub fn free_bytes(path: &Path) -> Result<u64, SnapshotError> {
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let v = rustix::fs::statvfs(at).map_err(|e| io_err("statvfs", at)(e.into()))?;
    Ok(v.f_bavail.saturating_mul(v.f_frsize))
}

/// The filesystem (device) holding `path` or its nearest existing ancestor.
pub fn device_of(path: &Path) -> Result<u64, SnapshotError> {
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    Ok(fs::metadata(at).map_err(io_err("inspect", at))?.dev())
}

/// The free space [`shortfall`] keeps beyond a write of `needed` bytes.
pub fn margin(needed: u64) -> u64 {
    (64u64 << 20).max(needed / 100)
}

/// Bytes missing when `needed` bytes are to be written where `free` are free, keeping a
/// margin of 64 MiB or 1 % of what is written, whichever is more (a filesystem that fills up
/// to the last block fails other writers on it too). `None` when it fits.
pub fn shortfall(free: u64, needed: u64) -> Option<u64> {
    let want = needed.saturating_add(margin(needed));
    (want > free).then(|| want - free)
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

    #[test]
    fn a_diff_is_written_over_a_copy_of_its_parent_at_its_data_extents() {
        let t = tempfile::tempdir().unwrap();
        let p = plan(t.path());
        let dir = prepare(&p).unwrap();
        let page = 4096usize;
        let parent = t.path().join("parent-mem");
        let old: Vec<u8> = (0..16 * page).map(|i| (i / page) as u8 + 1).collect();
        fs::write(&parent, &old).unwrap();
        // A sparse diff of the same size: pages 3 and 9..=10 dirtied, the rest holes.
        let diff = fs::File::create(dir.join(MEMORY_FILE)).unwrap();
        diff.set_len(old.len() as u64).unwrap();
        diff.write_all_at(&vec![0xaa; page], 3 * page as u64)
            .unwrap();
        diff.write_all_at(&vec![0xbb; 2 * page], 9 * page as u64)
            .unwrap();
        diff.sync_all().unwrap();
        let store = t.path().join("store");
        fs::create_dir(&store).unwrap();
        let m = merge_diff(&p, MEMORY_FILE, &parent, MEMORY_FILE, &store).unwrap();
        let got = fs::read(store.join(MEMORY_FILE)).unwrap();
        let mut want = old.clone();
        want[3 * page..4 * page].fill(0xaa);
        want[9 * page..11 * page].fill(0xbb);
        assert!(got == want, "the merged memory differs from parent + diff");
        assert_eq!(m.diff_bytes, 3 * page as u64);
        assert_eq!(m.file.len, old.len() as u64);
        assert_eq!(m.file.sha256, sha256_of(&store.join(MEMORY_FILE)).unwrap());
        let meta = fs::metadata(store.join(MEMORY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        // The parent is untouched (a reflink or a copy, never the same file).
        assert!(fs::read(&parent).unwrap() == old);
    }

    #[test]
    fn a_diff_of_another_size_than_its_parent_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = plan(t.path());
        let dir = prepare(&p).unwrap();
        let parent = t.path().join("parent-mem");
        fs::write(&parent, vec![1u8; 8192]).unwrap();
        fs::write(dir.join(MEMORY_FILE), vec![2u8; 4096]).unwrap();
        let store = t.path().join("store");
        fs::create_dir(&store).unwrap();
        let e = merge_diff(&p, MEMORY_FILE, &parent, MEMORY_FILE, &store).unwrap_err();
        assert!(matches!(e, SnapshotError::Diff { .. }), "{e}");
        assert!(e.to_string().contains("4096"), "{e}");
        assert!(!store.join(MEMORY_FILE).exists());
    }

    #[test]
    fn a_write_fits_only_with_its_margin() {
        const MIB: u64 = 1 << 20;
        assert_eq!(shortfall(1000 * MIB, 128 * MIB), None);
        // 128 MiB and a 64 MiB margin do not fit in 150 MiB: 42 MiB short.
        assert_eq!(shortfall(150 * MIB, 128 * MIB), Some(42 * MIB));
        // Large writes keep 1 %.
        let big = 100_000 * MIB;
        assert_eq!(shortfall(big, big), Some(1000 * MIB));
        assert_eq!(shortfall(0, u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn free_space_is_read_at_the_nearest_existing_ancestor() {
        let t = tempfile::tempdir().unwrap();
        let free = free_bytes(&t.path().join("not/made/yet")).unwrap();
        assert!(free > 0);
        assert_eq!(
            device_of(&t.path().join("not/made")).unwrap(),
            fs::metadata(t.path()).unwrap().dev()
        );
    }
}
