//! Named network namespaces, as `ip netns` makes them: a file under `/var/run/netns/` with the
//! namespace bind-mounted on it, so it outlives every process and the jailer can join it with
//! `--netns <file>`. The jailer only joins; creating and removing are ours.
//!
//! iproute2 makes the directory a shared bind mount of itself before its first namespace. A
//! namespace mounted on the plain directory before that would be hidden by that later mount:
//! unmounting its path then removes only the copy in the new mount, and the file cannot be
//! unlinked (EBUSY). So warden prepares the directory exactly as `ip netns` does, before its own
//! first namespace ([`prepare_dir`]); a later `ip netns` then finds the mount and adds none.

use std::io;
use std::path::{Path, PathBuf};

pub use crate::layout::NETNS_DIR;

/// The prefix warden's namespaces carry (the process manager's `fc-vm-{id}`).
pub const PREFIX: &str = "fc-vm-";

/// The namespace name for a VM.
pub fn name_for(vm_id: &str) -> String {
    format!("{PREFIX}{vm_id}")
}

/// A netns operation failed; names the file, and what to do where warden cannot fix it.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} network namespace {path}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct NetnsError {
    /// What was being done.
    pub action: &'static str,
    /// The namespace file.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
    /// Why, and what to run, when the cause alone does not say.
    pub hint: Option<String>,
}

/// Makes `dir` a shared mount of its own (a bind mount of itself where it is not a mount point
/// yet), as `ip netns` does before its first namespace, so that no later `ip netns` mounts over
/// the namespaces made here. Idempotent; serialised within the process.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(dir)?;
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then make that shared.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(shared()?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates an empty network namespace named `name` under `dir`; returns its file.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf, NetnsError> {
    let path = dir.join(name);
    let err = |action, source| NetnsError {
        action,
        path: path.clone(),
        source,
        hint: None,
    };
    prepare_dir(dir).map_err(|e| err("prepare the directory of", e))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| err("create", e))?;
    let target = path.clone();
    // unshare() changes only the calling thread's namespace: do it in a thread that ends at once.
    let made = std::thread::spawn(move || -> io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(err("create", e));
    }
    Ok(path)
}

/// Removes a namespace file made by [`create`] (or `ip netns add`), in every mount state: every
/// mount stacked on the file is detached, then the file is unlinked. A missing one is fine. A
/// namespace hidden under a later mount of its directory cannot be reached by path: the error
/// says so and what to run.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    let err = |action, source, hint| NetnsError {
        action,
        path: path.to_owned(),
        source,
        hint,
    };
    for _ in 0..16 {
        match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(err("unmount", e.into(), None)),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) if source.raw_os_error() == Some(libc::EBUSY) => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            // mountinfo shows resolved paths (/var/run is a link to /run).
            let dir = path.parent().unwrap_or(Path::new("/"));
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
            let dir = dir.as_path();
            let seen = dir.join(path.file_name().unwrap_or_default());
            let hint = hidden_mounts(&mountinfo, dir).contains(&seen).then(|| {
                format!(
                    "it is mounted under a later mount of {} (made by `ip netns` after this \
                         namespace was created), where no path reaches it; it is freed at reboot, \
                         or now with `umount -l {}` once no other namespace there is in use",
                    dir.display(),
                    dir.display()
                )
            });
            Err(err("remove", source, hint))
        }
        Err(source) => Err(err("remove", source, None)),
    }
}

/// Namespace files under `dir` whose mount is hidden by a later mount of `dir` itself, read
/// from a `/proc/self/mountinfo` text.
pub fn hidden_mounts(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    // Fields: id parent major:minor root mountpoint ...; escaped like /proc/mounts.
    let rows: Vec<(u64, u64, PathBuf)> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                PathBuf::from(crate::cgroup::unescape_mount_path(f.get(4)?)),
            ))
        })
        .collect();
    // The mounts of `dir` itself; the last one is on top and the only one paths reach.
    let dir_mounts: Vec<u64> = rows
        .iter()
        .filter(|(_, _, mp)| mp == dir)
        .map(|(id, _, _)| *id)
        .collect();
    let top = dir_mounts.last().copied();
    rows.iter()
        .filter(|(_, parent, mp)| mp.parent() == Some(dir) && Some(*parent) != top)
        .map(|(_, _, mp)| mp.clone())
        .filter(|_| top.is_some())
        .collect()
}

/// Runs `f` on a thread that has joined the namespace at `path`, and returns its result. The
/// calling thread's namespace is never changed.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = std::fs::File::open(path)?;
    std::thread::spawn(move || -> io::Result<T> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_distinct_namespace_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let name = name_for(&format!("unit-{}", std::process::id()));
        let path = create(dir.path(), &name).unwrap();
        let ns = std::fs::metadata(&path).unwrap();
        let own = std::fs::metadata("/proc/self/ns/net").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            (ns.dev(), ns.ino()),
            (own.dev(), own.ino()),
            "a new namespace, not ours"
        );
        assert!(create(dir.path(), &name).is_err(), "names are unique");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
        // create() made the directory a mount of its own, as ip netns does.
        nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    }

    #[test]
    fn finds_namespaces_hidden_under_a_later_self_mount() {
        // As seen here: fc-a mounted on the plain directory, then `ip netns add x` bind-mounted
        // /run/netns over itself (copying fc-a), then the copy was unmounted.
        let info = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
63 27 0:4 net:[4026532178] /run/netns/fc-a rw - nsfs nsfs rw
64 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
66 64 0:4 net:[4026532247] /run/netns/x rw shared:3 - nsfs nsfs rw
";
        assert_eq!(
            hidden_mounts(info, Path::new("/run/netns")),
            [PathBuf::from("/run/netns/fc-a")]
        );
        let plain = "27 1 254:0 / / rw - ext4 /dev/vda rw\n63 27 0:4 net:[1] /run/netns/fc-a rw - nsfs nsfs rw\n";
        assert!(
            hidden_mounts(plain, Path::new("/run/netns")).is_empty(),
            "no mount of the directory: nothing hides"
        );
    }
}
