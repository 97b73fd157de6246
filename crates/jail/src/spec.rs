//! The validated request for one jail, and the checks that make it so.
//!
//! Nothing here touches the host except reading metadata of the files to stage: a spec that
//! fails validation has created nothing.

use std::path::PathBuf;

use serde::Serialize;

use crate::cgroup::{CgroupLimits, CgroupVersion};
use crate::id::JailId;

/// rlimits the jailer sets on Firecracker (`--resource-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResourceLimits {
    /// `no-file`: one more than the highest file descriptor Firecracker may open.
    pub no_file: Option<u64>,
    /// `fsize`: the largest file Firecracker may create, in bytes.
    pub fsize: Option<u64>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        // 2048 is the jailer's own default; we pass it explicitly so the plan shows it.
        Self {
            no_file: Some(2048),
            fsize: None,
        }
    }
}

/// A file the VM needs, to be staged into the jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageRequest {
    /// The caller's file. It is never modified or chowned.
    pub source: PathBuf,
    /// Name of the staged file inside the jail's root (a single path component).
    pub name: String,
    /// Whether the VM may write it (a writable drive gets a private copy).
    pub writable: bool,
    /// The configuration field that named this file, used in error messages.
    pub field: String,
    /// The file, already opened (beneath an asset directory); opened from `source` at plan
    /// time when `None`.
    #[serde(skip)]
    pub opened: Option<crate::source::Source>,
}

/// Everything needed to plan one jail. Build it, then call [`JailSpec::plan`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JailSpec {
    /// The jail id (also the VM id).
    pub id: JailId,
    /// Run under the jailer (`true`) or start Firecracker directly (development mode).
    pub jailed: bool,
    /// The jailer binary.
    pub jailer_binary: PathBuf,
    /// The Firecracker binary the jailer copies into the chroot and execs.
    pub exec_file: PathBuf,
    /// User Firecracker runs as.
    pub uid: u32,
    /// Group Firecracker runs as.
    pub gid: u32,
    /// Where jails live: `<chroot_base_dir>/<exec file name>/<id>/root`.
    pub chroot_base_dir: PathBuf,
    /// cgroup API passed to the jailer.
    pub cgroup_version: CgroupVersion,
    /// cgroup parent directory for all of warden's VMs.
    pub parent_cgroup: String,
    /// cgroup limits.
    pub limits: CgroupLimits,
    /// The derived limits the caller set explicitly: like every limit that is not derived,
    /// they are refused, never skipped, where the hierarchy lacks their controller.
    pub explicit_limits: Vec<crate::cgroup::Derived>,
    /// Production mode: a missing controller refuses even a derived limit.
    pub strict_cgroups: bool,
    /// rlimits.
    pub resource_limits: ResourceLimits,
    /// When `resource_limits.fsize` is unset: limit it to the larger of the memory cap and the
    /// largest staged file, plus this. `fsize` stops Firecracker writing at any offset past it
    /// (its log, the console file, a snapshot, and also a drive), so it must clear every drive.
    pub fsize_headroom: Option<u64>,
    /// Exec Firecracker in a new PID namespace.
    pub new_pid_ns: bool,
    /// Network namespace file to join (`--netns`): made by someone else, or by warden when
    /// `make_netns` is set.
    pub netns: Option<PathBuf>,
    /// Warden makes the (empty) namespace at `netns` when the jail is applied, and removes it
    /// with the jail.
    pub make_netns: bool,
    /// The VM's own network (namespace, TAP, links), made by warden; its namespace is joined.
    pub net: Option<crate::net::NetPlan>,
    /// Files to stage into the jail.
    pub files: Vec<StageRequest>,
    /// The sysfs root (`/sys` on the host, [`SYS`]): online CPUs and memory nodes for
    /// `limits.cpuset`, the disk under the chroot base for `limits.io`.
    pub sys_root: PathBuf,
}

/// The host's sysfs root.
pub const SYS: &str = "/sys";

/// A request that cannot be planned. The message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct SpecError {
    /// The configuration field at fault.
    pub field: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// Whether `id` can be the uid or gid of a jailed Firecracker: anything but 0 (root).
pub fn valid_jail_id(id: u32) -> bool {
    id != 0
}

/// Whether `(first, last)` can be a range jail uids/gids are leased from (see
/// [`crate::owner::Registry::lease_uid`]): `1000 <= first <= last < 2^31 - 1`, so no system
/// account (below 1000) is ever a jail user and every id stays positive for tools that read
/// ids as signed.
pub fn valid_id_range((first, last): (u32, u32)) -> bool {
    1000 <= first && first <= last && last < i32::MAX as u32
}

/// A uid range as written in configuration: `FIRST-LAST` (checked by [`valid_id_range`]), or
/// `off` (`None`: every VM runs as one configured uid).
pub fn parse_id_range(s: &str) -> Option<Option<(u32, u32)>> {
    let s = s.trim();
    if s == "off" {
        return Some(None);
    }
    let (a, b) = s.split_once('-')?;
    let range: (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    valid_id_range(range).then_some(Some(range))
}

impl SpecError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl JailSpec {
    /// Checks the parts of the spec that do not depend on the host's cgroups.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.jailed {
            if !valid_jail_id(self.uid) || !valid_jail_id(self.gid) {
                return Err(SpecError::new(
                    if !valid_jail_id(self.uid) {
                        "uid"
                    } else {
                        "gid"
                    },
                    "is 0 (root); a jailed Firecracker must drop to an unprivileged user, \
                     e.g. create one with `useradd -r -s /bin/false jailer` and use its ids",
                ));
            }
            if !self.chroot_base_dir.is_absolute() {
                return Err(SpecError::new(
                    "chroot_base_dir",
                    format!(
                        "{} is relative; use an absolute path such as /srv/jailer",
                        self.chroot_base_dir.display()
                    ),
                ));
            }
            if !crate::cgroup::valid_parent(&self.parent_cgroup) {
                return Err(SpecError::new(
                    "parent_cgroup",
                    format!("{:?} is not a relative cgroup path; use names like \"warden\" or \"warden/tenant-a\"", self.parent_cgroup),
                ));
            }
        }
        if self.exec_file.file_name().is_none() {
            return Err(SpecError::new(
                "exec_file",
                "has no file name; give the path of the firecracker binary",
            ));
        }
        if let (Some(_), Some(_)) = (&self.netns, &self.net) {
            return Err(SpecError::new("netns", "cannot be combined with networking: a networked VM gets its own namespace; drop netns"));
        }
        if let (Some(ns), false) = (&self.netns, self.make_netns) {
            if !ns.exists() {
                return Err(SpecError::new(
                    "netns",
                    format!("{} does not exist; create it first (e.g. `ip netns add NAME` makes /run/netns/NAME)", ns.display()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_ids_are_never_root_and_ranges_stay_above_system_users_and_positive() {
        assert!(!valid_jail_id(0) && valid_jail_id(1) && valid_jail_id(u32::MAX));
        assert!(valid_id_range((1000, 1000)) && valid_id_range((1_900_000_000, 1_900_065_535)));
        for bad in [(999, 2000), (2000, 1000), (1000, i32::MAX as u32)] {
            assert!(!valid_id_range(bad), "{bad:?}");
        }
        assert_eq!(parse_id_range(" 2000 - 3000 "), Some(Some((2000, 3000))));
        assert_eq!(parse_id_range("off"), Some(None));
        for bad in ["", "2000", "3000-2000", "1-2000", "a-b", "Off"] {
            assert_eq!(parse_id_range(bad), None, "{bad:?}");
        }
    }
}
