//! The host's cgroup mounts, read from the mount table once and again only when that table
//! changes. The kernel marks an open `/proc/self/mounts` with a priority event (`POLLPRI`) at
//! every mount and unmount in its namespace, so a kept [`Hierarchy`] is as fresh as one read
//! anew: each call costs a `poll` and a `stat` instead of the kernel printing every mount of
//! the host (a fifth of planning a VM, measured). The cgroup2 root's `cgroup.controllers` is
//! read on every call, since it can change without a mount (a v1 hierarchy that empties
//! after its unmount hands its controller to v2 later).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use super::{hugepage_sizes, v2_controllers, CgroupError, Hierarchy};

const MOUNTS: &str = "/proc/self/mounts";
const MOUNT_NS: &str = "/proc/self/ns/mnt";
const HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// A hierarchy read after `watch` was opened, so any change since shows on `watch`.
struct Kept {
    watch: File,
    /// The mount namespace the table is of (a process may move to another).
    ns: u64,
    hierarchy: Hierarchy,
}

static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

/// The host's hierarchy (see the module doc).
pub(super) fn host() -> Result<Hierarchy, CgroupError> {
    let ns = std::fs::metadata(MOUNT_NS).map(|m| m.ino()).ok();
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(k), Some(ns)) = (kept.as_ref(), ns) {
        if k.ns == ns && !changed(&k.watch) {
            let mut h = k.hierarchy.clone();
            h.v2_controllers = v2_controllers(h.v2.as_deref());
            return Ok(h);
        }
    }
    *kept = None;
    // Opened before the read: a mount made while we read is seen at the next call.
    let watch = File::open(MOUNTS).map_err(|source| CgroupError::Read {
        path: MOUNTS.into(),
        source,
    })?;
    let mut h = Hierarchy::from_mounts_file(Path::new(MOUNTS))?;
    h.hugepage_sizes = hugepage_sizes(Path::new(HUGEPAGES));
    if let Some(ns) = ns {
        *kept = Some(Kept {
            watch,
            ns,
            hierarchy: h.clone(),
        });
    }
    Ok(h)
}

/// Whether the mount table of `watch` changed since it was opened (or since the last call that
/// said so). An error counts as a change: the caller then reads the table anew.
fn changed(watch: &File) -> bool {
    let mut p = libc::pollfd {
        fd: watch.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd for an fd we own, and a zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f`'s result, called while a small tmpfs is mounted on a temp dir (the tests run as root).
    fn with_a_tmpfs_mounted<R>(f: impl FnOnce() -> R) -> R {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("none"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mounting a tmpfs (the tests run as root)");
        let r = f();
        nix::mount::umount(dir.path()).unwrap();
        r
    }

    #[test]
    fn a_quiet_table_shows_no_change() {
        // Other tests' processes may mount meanwhile: one quiet moment in fifty is enough.
        let quiet = (0..50).any(|_| !changed(&File::open(MOUNTS).unwrap()));
        assert!(quiet, "every freshly opened mount table reported a change");
    }

    #[test]
    fn a_mount_and_an_unmount_show_on_a_table_opened_before_them() {
        let watch = File::open(MOUNTS).unwrap();
        // Other tests may mount meanwhile: only "a change is seen after ours" is certain.
        let _ = changed(&watch);
        let seen = with_a_tmpfs_mounted(|| changed(&watch));
        assert!(seen, "a mount did not show on the open mount table");
        assert!(changed(&watch), "the unmount did not show");
    }

    #[test]
    fn the_kept_hierarchy_equals_one_read_anew() {
        let fresh = || {
            let mut h = Hierarchy::from_mounts_file(Path::new(MOUNTS)).unwrap();
            h.hugepage_sizes = hugepage_sizes(Path::new(HUGEPAGES));
            h
        };
        let first = host().unwrap();
        assert_eq!(first, fresh());
        assert_eq!(host().unwrap(), first);
        // A mount elsewhere drops what was kept; the next read is whole again.
        let after = with_a_tmpfs_mounted(host);
        assert_eq!(after.unwrap(), fresh());
    }
}
