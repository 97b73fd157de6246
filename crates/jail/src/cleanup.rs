//! Removing what a jail left behind. The jailer never cleans up: the chroot and the cgroup
//! directories stay after Firecracker exits, so every exit path of warden ends here.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{self, CgroupError};
use crate::plan::JailPlan;

/// Cleanup failed; names the path.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The jail directory could not be removed.
    #[error("cannot remove jail directory {path}")]
    JailDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A cgroup directory could not be removed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The VM's network could not be removed.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

/// Removes the jail directory (chroot included) and the VM's cgroup directories. Safe to call
/// more than once and on a jail that was only partly made. Call it after Firecracker is gone.
pub fn remove(plan: &JailPlan) -> Result<(), CleanupError> {
    remove_paths(&plan.jail_dir, &plan.cgroup_dirs)?;
    if let Some(net) = &plan.net {
        crate::net::teardown(net)?;
    }
    Ok(())
}

/// [`remove`] for a jail known only by its paths (e.g. from the store after a restart).
pub fn remove_paths(jail_dir: &Path, cgroup_dirs: &[PathBuf]) -> Result<(), CleanupError> {
    // remove_dir_all does not follow symlinks, so nothing the guest side planted in the chroot
    // can redirect the removal outside it.
    match std::fs::remove_dir_all(jail_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CleanupError::JailDir {
                path: jail_dir.to_owned(),
                source,
            })
        }
    }
    cgroup::remove(cgroup_dirs, Duration::from_secs(2))?;
    Ok(())
}
