//! Living in a delegated cgroup v2 subtree (systemd's `Delegate=yes`, or any subtree handed to
//! a manager).
//!
//! The kernel's "no internal processes" rule: a cgroup that holds processes cannot enable
//! controllers for its children. The jailer writes `+<controller>` into every ancestor's
//! `cgroup.subtree_control` of a VM's cgroup, so a daemon that stays in the cgroup it was started
//! in (its service cgroup) makes its own VMs' limits fail. systemd's delegation rules say what
//! to do: the delegated process moves itself into a leaf of its own (`supervisor/`), and puts
//! its payload into siblings of that leaf. [`Delegation::detect`] finds the subtree,
//! [`Delegation::enter_supervisor`] moves the process, and [`Delegation::vm_parent`] is the
//! parent cgroup every VM gets (`<subtree>/<parent_cgroup>`).

use std::path::{Path, PathBuf};

use super::CgroupError;

/// The leaf the delegated process lives in, systemd's example name.
pub const SUPERVISOR: &str = "supervisor";

/// A process's place in a delegated cgroup v2 subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The cgroup2 mount point.
    pub mount: PathBuf,
    /// The delegated subtree, relative to the mount (no leading `/`), e.g.
    /// `system.slice/warden.service`.
    pub subtree: String,
}

impl Delegation {
    /// The delegated subtree of a process whose v2 cgroup is `own` (the path of the `0::` line
    /// of `/proc/<pid>/cgroup`, e.g. `/system.slice/warden.service`), or `None` at the root.
    /// A process already in a `supervisor` leaf (a restart from inside it) belongs to the leaf's
    /// parent.
    pub fn from_own(mount: &Path, own: &str) -> Option<Self> {
        let mut subtree = own.trim_matches('/');
        if let Some(parent) = subtree.strip_suffix(SUPERVISOR) {
            if parent.is_empty() || parent.ends_with('/') {
                subtree = parent.trim_end_matches('/');
            }
        }
        (!subtree.is_empty()).then(|| Self {
            mount: mount.to_owned(),
            subtree: subtree.to_owned(),
        })
    }

    /// The delegated subtree of process `pid` (read from `<proc_root>/<pid>/cgroup`), if it is
    /// not in the root cgroup.
    pub fn detect(mount: &Path, proc_root: &Path, pid: u32) -> Option<Self> {
        let own = crate::proc::cgroups(proc_root, pid)
            .into_iter()
            .find(|e| e.hierarchy_id == 0 && e.controllers.is_empty())?
            .path;
        Self::from_own(mount, &own)
    }

    /// Whether the subtree was handed over as a delegation: systemd marks a `Delegate=yes`
    /// unit's cgroup with the extended attribute `trusted.delegate=1` (`user.delegate` for a
    /// user manager). Without systemd (a container, another manager), a cgroup of one's own is
    /// taken as delegated; under systemd an unmarked one (a login session's scope) is not.
    pub fn is_delegated(&self, under_systemd: bool) -> bool {
        let marked = ["trusted.delegate", "user.delegate"].iter().any(|name| {
            xattr::get(self.dir(), name)
                .ok()
                .flatten()
                .is_some_and(|v| v == b"1")
        });
        marked || !under_systemd
    }

    /// The subtree's directory.
    pub fn dir(&self) -> PathBuf {
        self.mount.join(&self.subtree)
    }

    /// The supervisor leaf's directory.
    pub fn supervisor_dir(&self) -> PathBuf {
        self.dir().join(SUPERVISOR)
    }

    /// The parent cgroup (relative to the mount, as the jailer's `--parent-cgroup` takes it) of
    /// every VM: a sibling of the supervisor leaf.
    pub fn vm_parent(&self, parent_cgroup: &str) -> String {
        format!("{}/{}", self.subtree, parent_cgroup.trim_matches('/'))
    }

    /// Moves the calling process (every thread) into the supervisor leaf, creating it. Run it
    /// before any VM cgroup is made, and before any child process is started.
    pub fn enter_supervisor(&self) -> Result<PathBuf, CgroupError> {
        let leaf = self.supervisor_dir();
        super::create(&leaf)?;
        let procs = leaf.join("cgroup.procs");
        // "0" is the writing process: the kernel moves its whole thread group.
        std::fs::write(&procs, "0").map_err(|source| CgroupError::Write {
            path: procs.clone(),
            source,
        })?;
        Ok(leaf)
    }

    /// Processes still in the subtree's own directory (none once every process of the service
    /// moved into a leaf; the jailer's `+controller` writes fail while there are some).
    pub fn internal_processes(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Controllers the subtree may hand to its children (`cgroup.controllers` of its
    /// directory).
    pub fn controllers(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir().join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subtree_is_the_own_cgroup_or_the_parent_of_its_supervisor_leaf() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(Delegation::from_own(m, "/"), None);
        let d = Delegation::from_own(m, "/system.slice/warden.service").unwrap();
        assert_eq!(d.subtree, "system.slice/warden.service");
        assert_eq!(
            d.supervisor_dir(),
            Path::new("/sys/fs/cgroup/system.slice/warden.service/supervisor")
        );
        assert_eq!(d.vm_parent("warden"), "system.slice/warden.service/warden");
        let again = Delegation::from_own(m, "/system.slice/warden.service/supervisor").unwrap();
        assert_eq!(again, d);
        // Only a whole `supervisor` component counts.
        let other = Delegation::from_own(m, "/a/not-supervisor").unwrap();
        assert_eq!(other.subtree, "a/not-supervisor");
        assert_eq!(Delegation::from_own(m, "/supervisor"), None);
    }

    #[test]
    fn detect_reads_the_v2_line_of_the_process() {
        let proc_root = tempfile::tempdir().unwrap();
        let dir = proc_root.path().join("42");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cgroup"),
            "9:name=systemd:/\n4:memory:/x\n0::/t-1.service\n",
        )
        .unwrap();
        let d = Delegation::detect(Path::new("/cg"), proc_root.path(), 42).unwrap();
        assert_eq!(d.subtree, "t-1.service");
    }

    #[test]
    fn a_cgroup_counts_as_delegated_when_marked_or_without_systemd() {
        let dir = tempfile::tempdir().unwrap();
        let d = Delegation {
            mount: dir.path().to_owned(),
            subtree: "unit.service".into(),
        };
        std::fs::create_dir(d.dir()).unwrap();
        assert!(!d.is_delegated(true), "an unmarked cgroup under systemd");
        assert!(d.is_delegated(false), "a cgroup of one's own elsewhere");
        xattr::set(d.dir(), "user.delegate", b"1").unwrap();
        assert!(d.is_delegated(true), "marked by a user manager");
    }
}
