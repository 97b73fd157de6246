//! The daemon in a delegated cgroup v2 subtree: before it makes anything, it moves itself into
//! the subtree's `supervisor` leaf and gives every VM a parent beside it (see
//! [`jail::cgroup::delegation`] for why).

use std::path::Path;

use jail::cgroup::delegation::Delegation as Subtree;
use jail::cgroup::{CgroupVersion, Hierarchy};

use super::config::{DaemonConfig, Delegation};

/// What the daemon did about its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Nothing: the VMs use cgroup v1, the daemon is in the root cgroup, or delegation is off.
    Unchanged(&'static str),
    /// It moved into `<subtree>/supervisor`; VMs go under `<subtree>/<parent_cgroup>`.
    Delegated(Subtree),
}

/// Failed to settle into the delegated subtree.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    /// `cgroup_delegation = on` but there is nothing to delegate.
    #[error(
        "cgroup_delegation is on but {0}; run the daemon in a delegated cgroup (systemd: \
         Delegate=yes in the unit, as deploy/warden.service has), or set cgroup_delegation=auto"
    )]
    Impossible(&'static str),
    /// Moving into the supervisor leaf failed.
    #[error("cannot move the daemon into its supervisor leaf {}", leaf.display())]
    Move {
        /// The leaf.
        leaf: std::path::PathBuf,
        /// Why.
        source: jail::cgroup::CgroupError,
    },
}

/// Moves this process into its delegated subtree's supervisor leaf when `cfg` asks for it, and
/// rewrites `cfg.parent_cgroup` to the VMs' place beside it. Call it before anything else
/// touches cgroups or starts a child process.
pub fn settle(
    cfg: &mut DaemonConfig,
    hierarchy: &Hierarchy,
    proc_root: &Path,
) -> Result<Placement, DelegationError> {
    let version = cfg
        .cgroup_version
        .unwrap_or_else(|| hierarchy.default_version());
    let unchanged = |why: &'static str| match cfg.cgroup_delegation {
        Delegation::On => Err(DelegationError::Impossible(why)),
        _ => Ok(Placement::Unchanged(why)),
    };
    if cfg.cgroup_delegation == Delegation::Off {
        return Ok(Placement::Unchanged("cgroup_delegation is off"));
    }
    if version != CgroupVersion::V2 {
        return unchanged("the VMs use cgroup v1");
    }
    let Some(mount) = &hierarchy.v2 else {
        return unchanged("no cgroup2 hierarchy is mounted");
    };
    let Some(subtree) = Subtree::detect(mount, proc_root, std::process::id()) else {
        return unchanged("the daemon runs in the root cgroup");
    };
    if cfg.cgroup_delegation == Delegation::Auto
        && !subtree.is_delegated(Path::new("/run/systemd/system").exists())
    {
        return unchanged(
            "the daemon's cgroup is not delegated (systemd did not mark it trusted.delegate=1: \
             add Delegate=yes to its unit, or set cgroup_delegation=on)",
        );
    }
    subtree
        .enter_supervisor()
        .map_err(|source| DelegationError::Move {
            leaf: subtree.supervisor_dir(),
            source,
        })?;
    cfg.parent_cgroup = subtree.vm_parent(&cfg.parent_cgroup);
    Ok(Placement::Delegated(subtree))
}
