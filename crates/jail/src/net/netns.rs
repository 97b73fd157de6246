//! Named network namespaces, as `ip netns` makes them: a file under `/var/run/netns/` with the
//! namespace bind-mounted on it, so it outlives every process and the jailer can join it with
//! `--netns <file>`. The jailer only joins; creating and removing are ours.

use std::io;
use std::path::{Path, PathBuf};

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/var/run/netns";

/// The prefix warden's namespaces carry (the process manager's `fc-vm-{id}`); orphan cleanup
/// only ever touches names with it.
pub const PREFIX: &str = "fc-vm-";

/// The namespace name for a VM.
pub fn name_for(vm_id: &str) -> String {
    format!("{PREFIX}{vm_id}")
}

/// A netns operation failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} network namespace {path}")]
pub struct NetnsError {
    /// What was being done.
    pub action: &'static str,
    /// The namespace file.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// Creates an empty network namespace named `name` under `dir`; returns its file.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf, NetnsError> {
    let path = dir.join(name);
    let err = |action, source| NetnsError {
        action,
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| err("create the directory of", e))?;
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

/// Removes a namespace file made by [`create`] (or `ip netns add`). A missing one is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetnsError {
                action: "unmount",
                path: path.to_owned(),
                source: e.into(),
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
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

/// Names under `dir` that carry warden's prefix.
pub fn list_ours(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
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
        assert_eq!(list_ours(dir.path()), std::slice::from_ref(&name));
        assert!(create(dir.path(), &name).is_err(), "names are unique");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
