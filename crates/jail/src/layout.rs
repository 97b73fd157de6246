//! Where one VM's host resources live. [`Layout`] is the only code that spells those paths: the
//! jail directory and chroot under the chroot base, the API socket, pid and log files inside it,
//! the owner record beside the chroot, the cgroup directories under the parent cgroup of each
//! hierarchy, the network namespace file and the host-side interface names.
//!
//! Plan, staging, removal, the orphan scan, the daemon's recovery, `warden doctor` and the
//! benchmarks all ask a `Layout`, so the rules cannot drift apart.

use std::path::{Path, PathBuf};

use crate::cgroup::{CgroupVersion, Hierarchy, Setting};
use crate::net;

/// The API socket's path inside the jail.
pub const SOCKET_IN_JAIL: &str = "/run/firecracker.socket";
/// Firecracker's log file inside the jail (created by us: Firecracker only opens it).
pub const LOG_IN_JAIL: &str = "/firecracker.log";
/// The owner record's copy in the jail directory (beside `root/`, out of the jail user's reach),
/// so a jail that outlives `/run` (a reboot) can still be attributed.
pub const OWNER_FILE: &str = "warden-owner.json";
/// Where named network namespaces live (`ip netns` uses the same directory).
pub const NETNS_DIR: &str = "/var/run/netns";
/// Longest path the kernel accepts in a `sockaddr_un` (108 bytes including the trailing NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// An API socket path the kernel cannot bind: longer than [`MAX_SOCKET_PATH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPathTooLong {
    /// The path as the host sees it.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: usize,
}

impl SocketPathTooLong {
    /// How many bytes too long it is.
    pub fn excess(&self) -> usize {
        self.len - MAX_SOCKET_PATH
    }
}

/// The host paths of every VM of one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `--chroot-base-dir`.
    pub chroot_base: PathBuf,
    /// The Firecracker binary's file name (the jailer's directory level under the base).
    pub exec_name: String,
    /// The parent cgroup of the VMs, relative to each hierarchy's root.
    pub parent_cgroup: String,
    /// The cgroup API the VMs use.
    pub cgroup_version: CgroupVersion,
    /// The host's cgroup mounts.
    pub hierarchy: Hierarchy,
    /// Where network namespace files are made.
    pub netns_dir: PathBuf,
}

impl Layout {
    /// A layout with the standard namespace directory.
    pub fn new(
        chroot_base: impl Into<PathBuf>,
        exec_file: &Path,
        parent_cgroup: impl Into<String>,
        cgroup_version: CgroupVersion,
        hierarchy: Hierarchy,
    ) -> Self {
        Self {
            chroot_base: chroot_base.into(),
            exec_name: exec_name(exec_file),
            parent_cgroup: parent_cgroup.into(),
            cgroup_version,
            hierarchy,
            netns_dir: PathBuf::from(NETNS_DIR),
        }
    }

    /// The API socket path of VM `id`, if the kernel can bind it (the one rule for socket path
    /// length: plans refuse a longer one and `warden doctor` checks the longest id against it).
    pub fn checked_socket_path(&self, id: &str) -> Result<PathBuf, SocketPathTooLong> {
        let path = self.socket_path(id);
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(SocketPathTooLong { path, len });
        }
        Ok(path)
    }

    /// `<base>/<exec-name>`: every jail of this layout is a directory in it.
    pub fn jails_dir(&self) -> PathBuf {
        self.chroot_base.join(&self.exec_name)
    }

    /// `<base>/<exec-name>/<id>`: removed as a whole.
    pub fn jail_dir(&self, id: &str) -> PathBuf {
        self.jails_dir().join(id)
    }

    /// The chroot, `<jail_dir>/root`.
    pub fn root_dir(&self, id: &str) -> PathBuf {
        self.jail_dir(id).join("root")
    }

    /// The API socket as seen from the host.
    pub fn socket_path(&self, id: &str) -> PathBuf {
        self.in_root(id, SOCKET_IN_JAIL)
    }

    /// Firecracker's log as seen from the host.
    pub fn log_file(&self, id: &str) -> PathBuf {
        self.in_root(id, LOG_IN_JAIL)
    }

    /// The pid file the jailer writes, `<root>/<exec-name>.pid`.
    pub fn pid_file(&self, id: &str) -> PathBuf {
        self.root_dir(id).join(format!("{}.pid", self.exec_name))
    }

    /// The owner record's copy in the jail directory.
    pub fn owner_file(&self, id: &str) -> PathBuf {
        self.jail_dir(id).join(OWNER_FILE)
    }

    fn in_root(&self, id: &str, path: &str) -> PathBuf {
        self.root_dir(id).join(path.trim_start_matches('/'))
    }

    /// The VM's directory holding a setting's file, if its controller is mounted.
    pub fn setting_dir(&self, id: &str, setting: &Setting) -> Option<PathBuf> {
        self.hierarchy
            .setting_dir(self.cgroup_version, &self.parent_cgroup, id, setting)
    }

    /// The cgroup directories the jailer makes for these settings (sorted, no duplicates).
    pub fn cgroup_dirs(&self, id: &str, settings: &[Setting]) -> Vec<PathBuf> {
        self.hierarchy
            .vm_dirs(self.cgroup_version, &self.parent_cgroup, id, settings)
    }

    /// The v1 `cpuacct` directory warden makes itself (see [`Hierarchy::v1_accounting_dir`]).
    pub fn accounting_dir(&self, id: &str) -> Option<PathBuf> {
        self.hierarchy
            .v1_accounting_dir(self.cgroup_version, &self.parent_cgroup, id)
    }

    /// The parent cgroup directory in every hierarchy of this layout's version.
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = match self.cgroup_version {
            CgroupVersion::V1 => self
                .hierarchy
                .v1
                .iter()
                .map(|(_, m)| m.join(&self.parent_cgroup))
                .collect(),
            CgroupVersion::V2 => self
                .hierarchy
                .v2
                .iter()
                .map(|r| r.join(&self.parent_cgroup))
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// The parent cgroup directory in every hierarchy the host mounts, v1 and v2 alike (for
    /// sweeps that must find a VM's cgroups whatever version made them).
    pub fn cgroup_parents_everywhere(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .hierarchy
            .v1
            .iter()
            .map(|(_, m)| m.join(&self.parent_cgroup))
            .chain(
                self.hierarchy
                    .v2
                    .iter()
                    .map(|r| r.join(&self.parent_cgroup)),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every cgroup directory VM `id` may have, in every hierarchy the host mounts.
    pub fn vm_cgroup_dirs_everywhere(&self, id: &str) -> Vec<PathBuf> {
        self.cgroup_parents_everywhere()
            .into_iter()
            .map(|p| p.join(id))
            .collect()
    }

    /// The network namespace file of a VM.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(net::netns::name_for(id))
    }

    /// The host end of a VM's veth pair.
    pub fn host_veth(&self, id: &str) -> String {
        net::link_name(net::HOST_VETH_PREFIX, id)
    }

    /// The namespace end of a VM's veth pair.
    pub fn peer_veth(&self, id: &str) -> String {
        net::link_name(net::PEER_VETH_PREFIX, id)
    }

    /// The ids of the jail directories under [`Layout::jails_dir`] that carry an owner file
    /// (exact directory names; anything else there is someone else's).
    pub fn owned_jail_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.jails_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|id| crate::JailId::new(id).is_ok())
            .filter(|id| self.owner_file(id).is_file())
            .collect();
        ids.sort();
        ids
    }
}

/// One VM's host state found by [`Layout::scan`], and what to do with it.
#[derive(Debug, Clone)]
pub enum Found {
    /// A readable record and the verdict on it.
    Record(Box<crate::owner::OwnerRecord>, crate::owner::Verdict),
    /// A record (in the registry or beside a jail) that cannot be read: left alone.
    Unreadable {
        /// The VM id.
        id: String,
        /// Why.
        why: String,
    },
}

impl Layout {
    /// The orphan scan: every VM the registry records, and every jail of this layout with an
    /// owner file (a jail that outlived `/run`), judged for `me` ([`crate::owner::judge`]):
    /// `known` says which ids the caller's store has. Reads only; the caller removes what the
    /// verdicts say. A jail without any owner record is not listed: it is never touched.
    pub fn scan(
        &self,
        registry: &crate::owner::Registry,
        me: &crate::owner::Owner,
        known: &dyn Fn(&str) -> bool,
        proc_root: &Path,
    ) -> Vec<Found> {
        let mut ids = registry.ids();
        ids.extend(self.owned_jail_ids());
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let record = match registry.read(&id) {
                    Ok(Some(r)) => r,
                    Ok(None) => match std::fs::read(self.owner_file(&id))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<crate::owner::OwnerRecord>(&b).ok())
                    {
                        // Only a copy that names this very jail is believed.
                        Some(r) if r.id == id && r.plan.jail_dir == self.jail_dir(&id) => r,
                        _ => {
                            return Found::Unreadable {
                                id,
                                why: "its owner file cannot be read".into(),
                            }
                        }
                    },
                    Err(e) => {
                        return Found::Unreadable {
                            id,
                            why: crate::error_chain(&e),
                        }
                    }
                };
                let alive = record.owner.liveness(proc_root);
                let verdict = crate::owner::judge(&record, me, known(&id), alive);
                Found::Record(Box::new(record), verdict)
            })
            .collect()
    }
}

/// The file name of the Firecracker binary, as the jailer uses it.
pub fn exec_name(exec_file: &Path) -> String {
    exec_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "firecracker".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::tests_support::HYBRID_MOUNTS;

    fn layout() -> Layout {
        Layout::new(
            "/srv/jailer",
            Path::new("/usr/bin/firecracker"),
            "warden",
            CgroupVersion::V1,
            Hierarchy::parse(HYBRID_MOUNTS).unwrap(),
        )
    }

    #[test]
    fn spells_the_real_jailers_paths() {
        let l = layout();
        assert_eq!(l.jail_dir("a"), Path::new("/srv/jailer/firecracker/a"));
        assert_eq!(
            l.socket_path("a"),
            Path::new("/srv/jailer/firecracker/a/root/run/firecracker.socket")
        );
        assert_eq!(
            l.pid_file("a"),
            Path::new("/srv/jailer/firecracker/a/root/firecracker.pid")
        );
        assert_eq!(
            l.owner_file("a"),
            Path::new("/srv/jailer/firecracker/a/warden-owner.json")
        );
        assert_eq!(l.netns_path("a"), Path::new("/var/run/netns/fc-vm-a"));
        assert!(l
            .cgroup_parents()
            .contains(&PathBuf::from("/sys/fs/cgroup/memory/warden")));
    }

    #[test]
    fn the_scan_finds_records_and_owner_copies_and_judges_them() {
        use crate::owner::{tests::record, Owner, Registry, Verdict};
        let tmp = tempfile::tempdir().unwrap();
        let mut l = layout();
        l.chroot_base = tmp.path().join("base");
        let reg = Registry::new(tmp.path().join("reg"));
        let me = Owner::daemon(Path::new("/me"));
        // In the registry: one known, one own leftover, one foreign and alive.
        for (id, owner) in [
            ("known", me.clone()),
            ("left", me.clone()),
            ("theirs", Owner::this_process()),
        ] {
            reg.reserve(&record(id, owner, &l.jails_dir())).unwrap();
        }
        // Beside a jail only (the registry was wiped): a dead owner's.
        let mut lost = record("lost", Owner::daemon(Path::new("/gone")), &l.jails_dir());
        lost.plan.jail_dir = l.jail_dir("lost");
        std::fs::create_dir_all(l.root_dir("lost")).unwrap();
        std::fs::write(l.owner_file("lost"), serde_json::to_vec(&lost).unwrap()).unwrap();
        // A copy that names another jail is not believed.
        std::fs::create_dir_all(l.root_dir("forged")).unwrap();
        let forged = record("forged", me.clone(), Path::new("/elsewhere"));
        std::fs::write(l.owner_file("forged"), serde_json::to_vec(&forged).unwrap()).unwrap();
        let found = l.scan(&reg, &me, &|id| id == "known", Path::new("/proc"));
        let verdicts: Vec<(String, Option<Verdict>)> = found
            .iter()
            .map(|f| match f {
                Found::Record(r, v) => (r.id.clone(), Some(v.clone())),
                Found::Unreadable { id, .. } => (id.clone(), None),
            })
            .collect();
        assert_eq!(
            verdicts,
            [
                ("forged".to_owned(), None),
                ("known".to_owned(), Some(Verdict::Known)),
                ("left".to_owned(), Some(Verdict::OwnLeftover)),
                ("lost".to_owned(), Some(Verdict::DeadOwner)),
                ("theirs".to_owned(), Some(Verdict::Foreign)),
            ]
        );
    }

    #[test]
    fn only_jail_directories_with_an_owner_file_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut l = layout();
        l.chroot_base = tmp.path().to_owned();
        std::fs::create_dir_all(l.root_dir("ours")).unwrap();
        std::fs::write(l.owner_file("ours"), "{}").unwrap();
        std::fs::create_dir_all(l.root_dir("plain-jailer")).unwrap();
        std::fs::create_dir_all(l.jails_dir().join("bad.name")).unwrap();
        assert_eq!(l.owned_jail_ids(), ["ours"]);
    }

    #[test]
    fn a_socket_path_fits_up_to_107_bytes_and_names_its_excess_beyond() {
        let at = |base: &str| {
            Layout::new(
                base,
                Path::new("/usr/bin/firecracker"),
                "warden",
                CgroupVersion::V1,
                Hierarchy::empty(),
            )
        };
        let id = "x".repeat(crate::id::MAX_LEN);
        // A base "/bbb" adds its length plus one separator to "/firecracker/<id>/root/...".
        let fixed = at("/").socket_path(&id).as_os_str().len();
        let fits = "/".to_owned() + &"b".repeat(MAX_SOCKET_PATH - fixed - 1);
        let path = at(&fits).checked_socket_path(&id).unwrap();
        assert_eq!(path.as_os_str().len(), MAX_SOCKET_PATH);
        let err = at(&format!("{fits}cc"))
            .checked_socket_path(&id)
            .unwrap_err();
        assert_eq!((err.len, err.excess()), (MAX_SOCKET_PATH + 2, 2));
        assert_eq!(err.path, at(&format!("{fits}cc")).socket_path(&id));
    }
}
