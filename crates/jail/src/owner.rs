//! Who owns a VM's host resources, and the host-wide reservation of its id.
//!
//! Before anything of a VM exists, its id is reserved in a [`Registry`] (by default
//! `/run/warden/vms/<id>.json`): the record is written to a temporary file and hard-linked to its
//! final name, which fails if the name exists, so two warden instances (two daemons, a daemon and
//! a `warden run`, two library users) can never build the same id, and a record is never half
//! written. The record names the [`Owner`] and carries the whole [`JailPlan`], so whoever removes
//! the VM later removes exactly what was made, by exact paths and names. It is removed last, after
//! every resource is gone, so a failed removal can always be finished.
//!
//! A resource without a record was made by someone else (the plain jailer, another tool) and is
//! never touched. A record is removed by its owner, or by anyone once its owner is provably dead:
//! a process that no longer runs (pid and start time, and the boot it ran in), or a daemon whose
//! state directory is gone.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::JailPlan;
use crate::proc;

/// The default registry directory.
pub const REGISTRY_DIR: &str = "/run/warden/vms";

/// The owner of a VM's host resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// A daemon instance, named by its state directory (canonical path). Its VMs outlive the
    /// daemon process and are re-attached at its next start.
    Daemon {
        /// The daemon's state directory.
        state_dir: PathBuf,
    },
    /// A process (`warden run`, a library user): its VMs end with it.
    Process {
        /// Its pid.
        pid: u32,
        /// Its start time in clock ticks since boot, which with the pid names it for good.
        start_time: u64,
        /// The kernel's boot id when it ran: after a reboot no such process exists.
        boot_id: String,
    },
}

/// Whether an owner is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It may still act on its resources: leave them alone.
    Alive,
    /// It provably cannot: anyone may remove what it left.
    Dead,
}

impl Owner {
    /// The calling process.
    pub fn this_process() -> Self {
        let pid = std::process::id();
        Self::Process {
            pid,
            start_time: proc::start_time(Path::new(proc::PROC), pid).unwrap_or(0),
            boot_id: boot_id(),
        }
    }

    /// A daemon instance with this state directory (made canonical when it exists).
    pub fn daemon(state_dir: &Path) -> Self {
        Self::Daemon {
            state_dir: std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned()),
        }
    }

    /// Whether the owner is still there, judged from `proc_root` (normally `/proc`).
    pub fn liveness(&self, proc_root: &Path) -> Liveness {
        match self {
            Self::Daemon { state_dir } => {
                if state_dir.is_dir() {
                    Liveness::Alive
                } else {
                    Liveness::Dead
                }
            }
            Self::Process {
                pid,
                start_time,
                boot_id: b,
            } => {
                if *b != boot_id() || !proc::is_running(proc_root, *pid, *start_time) {
                    Liveness::Dead
                } else {
                    Liveness::Alive
                }
            }
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Daemon { state_dir } => {
                write!(f, "the daemon with state dir {}", state_dir.display())
            }
            Self::Process { pid, .. } => write!(f, "process {pid}"),
        }
    }
}

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A Firecracker process, named for good by its pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Host pid.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// One VM's reservation: who owns it and everything that may exist of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The VM id.
    pub id: String,
    /// Its owner.
    pub owner: Owner,
    /// Every path and name of its host resources.
    pub plan: JailPlan,
    /// Its Firecracker, once started.
    pub firecracker: Option<ProcessRef>,
    /// When the id was reserved (Unix ms).
    pub reserved_at_unix_ms: u64,
    /// The plan's uid is leased for this VM alone (see [`UidLease`]) and goes with it.
    #[serde(default)]
    pub uid_leased: bool,
}

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The id is reserved by someone.
    #[error("VM id {id:?} is already in use on this host by {owner}; choose another id")]
    Taken {
        /// The id.
        id: String,
        /// Who holds it (or `an unreadable record` when the record cannot be read).
        owner: String,
    },
    /// A file of the registry could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A record is not the JSON of an owner record (a foreign or damaged file).
    #[error("cannot parse the owner record {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The host-wide directory of owner records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    dir: PathBuf,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(REGISTRY_DIR)
    }
}

impl Registry {
    /// A registry in `dir` (tests use a temporary one).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record file of `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Reserves `record.id` for `record.owner`; fails with [`RegistryError::Taken`] if anyone
    /// holds it. Nothing else is touched either way.
    pub fn reserve(&self, record: &OwnerRecord) -> Result<(), RegistryError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| RegistryError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("create", &self.dir))?;
        let tmp = self.write_tmp(record)?;
        let dest = self.path(&record.id);
        let linked = std::fs::hard_link(&tmp, &dest);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(RegistryError::Taken {
                id: record.id.clone(),
                owner: match self.read(&record.id) {
                    Ok(Some(r)) => r.owner.to_string(),
                    _ => "an unreadable record".into(),
                },
            }),
            Err(e) => Err(io("reserve", &dest)(e)),
        }
    }

    /// Replaces the record of `record.id` (by its owner, e.g. to add the Firecracker pid).
    pub fn update(&self, record: &OwnerRecord) -> Result<(), RegistryError> {
        let tmp = self.write_tmp(record)?;
        let dest = self.path(&record.id);
        std::fs::rename(&tmp, &dest).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            RegistryError::Io {
                action: "update",
                path: dest,
                source,
            }
        })
    }

    fn write_tmp(&self, record: &OwnerRecord) -> Result<PathBuf, RegistryError> {
        let tmp = self.dir.join(format!(
            ".{}.{}.{:?}.tmp",
            record.id,
            std::process::id(),
            std::thread::current().id()
        ));
        let json = serde_json::to_vec_pretty(record).expect("a record serializes");
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // No fsync: the link makes the record whole or absent, and /run does not outlive
            // a reboot on a normal host (an unreadable record is left alone and logged).
            f.write_all(&json)
        })();
        written.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            RegistryError::Io {
                action: "write",
                path: tmp.clone(),
                source,
            }
        })?;
        Ok(tmp)
    }

    /// The record of `id`, if there is one.
    pub fn read(&self, id: &str) -> Result<Option<OwnerRecord>, RegistryError> {
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RegistryError::Parse { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RegistryError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Removes the record of `id` (a missing one is fine).
    pub fn release(&self, id: &str) -> Result<(), RegistryError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RegistryError::Io {
                action: "remove",
                path,
                source,
            }),
        }
    }

    /// The ids that have a record (exact names: `<valid id>.json`).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                crate::JailId::new(id).is_ok().then(|| id.to_owned())
            })
            .collect();
        ids.sort();
        ids
    }
}

/// One uid/gid held host-wide for one VM (`/run/warden/uids/<uid>.json`), so no two VMs of any
/// warden instance ever share a jail user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidLease {
    /// The uid (the gid has the same number).
    pub uid: u32,
    /// The VM it is for.
    pub vm_id: String,
    /// Who holds it.
    pub owner: Owner,
}

impl Registry {
    fn uid_dir(&self) -> PathBuf {
        self.dir.with_file_name("uids")
    }

    fn uid_path(&self, uid: u32) -> PathBuf {
        self.uid_dir().join(format!("{uid}.json"))
    }

    /// Leases the first uid of `range` (inclusive) that is neither in `skip` nor leased by
    /// anyone, for `vm_id`. `None` when every uid of the range is taken.
    pub fn lease_uid(
        &self,
        range: (u32, u32),
        skip: &std::collections::BTreeSet<u32>,
        vm_id: &str,
        owner: &Owner,
    ) -> Result<Option<u32>, RegistryError> {
        let dir = self.uid_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| RegistryError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        for uid in range.0..=range.1 {
            if skip.contains(&uid) {
                continue;
            }
            let lease = UidLease {
                uid,
                vm_id: vm_id.to_owned(),
                owner: owner.clone(),
            };
            // Written whole to a temporary file, then linked to its name (which fails if the
            // uid is taken): a lease is never seen half written, even after a SIGKILL.
            let path = self.uid_path(uid);
            let tmp = self.lease_tmp(&lease, "lease");
            let linked = self
                .write_lease(&tmp, &lease)
                .and_then(|()| std::fs::hard_link(&tmp, &path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(Some(uid)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(RegistryError::Io {
                        action: "lease",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(None)
    }

    /// The lease of `uid`, if any (an unreadable one reads as held by nobody known).
    pub fn uid_lease(&self, uid: u32) -> Option<UidLease> {
        std::fs::read(self.uid_path(uid))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// A temporary file name for a lease being written (`what`: the step writing it).
    fn lease_tmp(&self, lease: &UidLease, what: &str) -> PathBuf {
        self.uid_dir().join(format!(
            ".{}.{}.{:?}.{what}.tmp",
            lease.uid,
            std::process::id(),
            std::thread::current().id()
        ))
    }

    /// Writes `lease` whole into the new file `tmp` (mode 0600), to be linked or renamed.
    fn write_lease(&self, tmp: &Path, lease: &UidLease) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .and_then(|mut f| f.write_all(&serde_json::to_vec(lease).expect("a lease serializes")))
    }

    /// Passes `owner`'s lease of `uid` from `from` to `to` (a warm jail's uid going to the VM
    /// that takes the jail over). The file is replaced whole by a rename, so the uid is never
    /// free meanwhile. Fails if the lease is not `owner`'s for `from`.
    pub fn relabel_uid(
        &self,
        uid: u32,
        owner: &Owner,
        from: &str,
        to: &str,
    ) -> Result<(), RegistryError> {
        let path = self.uid_path(uid);
        match self.uid_lease(uid) {
            Some(l) if l.owner == *owner && l.vm_id == from => {}
            other => {
                return Err(RegistryError::Taken {
                    id: format!("uid {uid}"),
                    owner: other.map_or_else(|| "nobody".to_owned(), |l| l.owner.to_string()),
                })
            }
        }
        let lease = UidLease {
            uid,
            vm_id: to.to_owned(),
            owner: owner.clone(),
        };
        let tmp = self.lease_tmp(&lease, "relabel");
        let written = self
            .write_lease(&tmp, &lease)
            .and_then(|()| std::fs::rename(&tmp, &path));
        written.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            RegistryError::Io {
                action: "relabel",
                path,
                source,
            }
        })
    }

    /// Releases `uid` if `owner` holds it for `vm_id`.
    pub fn release_uid(&self, uid: u32, owner: &Owner, vm_id: &str) -> Result<(), RegistryError> {
        match self.uid_lease(uid) {
            Some(l) if l.owner == *owner && l.vm_id == vm_id => {
                std::fs::remove_file(self.uid_path(uid)).or_else(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(RegistryError::Io {
                            action: "release",
                            path: self.uid_path(uid),
                            source: e,
                        })
                    }
                })
            }
            _ => Ok(()),
        }
    }

    /// Removes lease files nobody can read (left half written by an older warden killed
    /// mid-write, or damaged) once they are older than a minute; returns their uids.
    pub fn drop_unreadable_uid_leases(&self) -> Vec<u32> {
        let mut dropped = Vec::new();
        for e in std::fs::read_dir(self.uid_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(uid) = name
                .strip_suffix(".json")
                .and_then(|u| u.parse::<u32>().ok())
            else {
                continue;
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            if old && self.uid_lease(uid).is_none() && std::fs::remove_file(e.path()).is_ok() {
                dropped.push(uid);
            }
        }
        dropped
    }

    /// Every lease.
    pub fn uid_leases(&self) -> Vec<UidLease> {
        let mut out: Vec<UidLease> = std::fs::read_dir(self.uid_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by_key(|l| l.uid);
        out
    }
}

/// What the orphan scan decides for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ours and still wanted (the caller knows this VM): leave it to the caller.
    Known,
    /// Ours and unknown to the caller (a leftover of our own): remove it.
    OwnLeftover,
    /// Its owner is provably dead: remove it.
    DeadOwner,
    /// A live owner other than us holds it: leave it alone.
    Foreign,
}

/// The orphan-scan decision for a record: pure, so every case is tested without a host.
pub fn judge(record: &OwnerRecord, me: &Owner, known: bool, owner_alive: Liveness) -> Verdict {
    if record.owner == *me {
        if known {
            Verdict::Known
        } else {
            Verdict::OwnLeftover
        }
    } else if owner_alive == Liveness::Dead {
        Verdict::DeadOwner
    } else {
        Verdict::Foreign
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cgroup::CgroupVersion;

    pub(crate) fn plan(id: &str, base: &Path) -> JailPlan {
        JailPlan {
            id: id.into(),
            jailed: true,
            argv: vec!["jailer".into()],
            jail_dir: base.join(id),
            root_dir: base.join(id).join("root"),
            socket_path: base.join(id).join("root/run/firecracker.socket"),
            pid_file: base.join(id).join("root/firecracker.pid"),
            log_file: base.join(id).join("root/firecracker.log"),
            owner_file: base.join(id).join(crate::layout::OWNER_FILE),
            uid: 1,
            gid: 1,
            cgroup_version: CgroupVersion::V1,
            cgroups: vec![],
            cgroup_dirs: vec![],
            cgroup_leaf: None,
            cgroups_off: vec![],
            cgroup_accounting_dir: None,
            rlimits: vec![],
            new_pid_ns: false,
            netns: None,
            netns_owned: false,
            net: None,
            staged: vec![],
        }
    }

    pub(crate) fn record(id: &str, owner: Owner, base: &Path) -> OwnerRecord {
        OwnerRecord {
            id: id.into(),
            owner,
            plan: plan(id, base),
            firecracker: None,
            reserved_at_unix_ms: 1,
            uid_leased: false,
        }
    }

    #[test]
    fn an_id_is_reserved_once_and_the_loser_learns_who_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("vms"));
        let a = record("vm-1", Owner::daemon(Path::new("/var/lib/a")), tmp.path());
        let b = record("vm-1", Owner::daemon(Path::new("/var/lib/b")), tmp.path());
        reg.reserve(&a).unwrap();
        let err = reg.reserve(&b).unwrap_err();
        assert!(
            err.to_string().contains("/var/lib/a"),
            "names the holder: {err}"
        );
        assert_eq!(reg.read("vm-1").unwrap().unwrap(), a);
        assert_eq!(reg.ids(), ["vm-1"]);
        reg.release("vm-1").unwrap();
        reg.release("vm-1").unwrap();
        reg.reserve(&b).unwrap();
    }

    #[test]
    fn ids_that_share_a_prefix_are_different_records() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path());
        let me = Owner::daemon(Path::new("/x"));
        reg.reserve(&record("vm-1", me.clone(), tmp.path()))
            .unwrap();
        reg.reserve(&record("vm-10", me, tmp.path())).unwrap();
        std::fs::write(tmp.path().join("not an id.json"), "{}").unwrap();
        std::fs::write(tmp.path().join(".vm-2.1.tmp"), "{}").unwrap();
        assert_eq!(reg.ids(), ["vm-1", "vm-10"]);
    }

    #[test]
    fn a_dead_process_is_dead_and_this_one_is_alive() {
        let me = Owner::this_process();
        assert_eq!(me.liveness(Path::new("/proc")), Liveness::Alive);
        let Owner::Process {
            pid,
            start_time,
            boot_id,
        } = me.clone()
        else {
            unreachable!()
        };
        let recycled = Owner::Process {
            pid,
            start_time: start_time + 1,
            boot_id: boot_id.clone(),
        };
        assert_eq!(recycled.liveness(Path::new("/proc")), Liveness::Dead);
        let other_boot = Owner::Process {
            pid,
            start_time,
            boot_id: "another-boot".into(),
        };
        assert_eq!(other_boot.liveness(Path::new("/proc")), Liveness::Dead);
        let gone = Owner::daemon(Path::new("/nonexistent/state"));
        assert_eq!(gone.liveness(Path::new("/proc")), Liveness::Dead);
    }

    #[test]
    fn uids_are_leased_once_host_wide_and_released_only_by_their_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("vms"));
        let a = Owner::daemon(Path::new("/a"));
        let b = Owner::daemon(Path::new("/b"));
        let none = std::collections::BTreeSet::new();
        assert_eq!(
            reg.lease_uid((100, 102), &none, "vm-1", &a).unwrap(),
            Some(100)
        );
        assert_eq!(
            reg.lease_uid((100, 102), &none, "vm-2", &b).unwrap(),
            Some(101)
        );
        let skip = [102].into_iter().collect();
        assert_eq!(reg.lease_uid((100, 102), &skip, "vm-3", &a).unwrap(), None);
        reg.release_uid(100, &b, "vm-1").unwrap();
        assert_eq!(
            reg.uid_lease(100).unwrap().vm_id,
            "vm-1",
            "not b's to release"
        );
        reg.release_uid(100, &a, "vm-9").unwrap();
        assert!(reg.uid_lease(100).is_some(), "not vm-9's lease");
        reg.release_uid(100, &a, "vm-1").unwrap();
        assert!(reg.uid_lease(100).is_none());
        assert_eq!(reg.uid_leases().len(), 1);
    }

    #[test]
    fn the_scan_removes_only_own_leftovers_and_dead_owners() {
        let base = Path::new("/j");
        let me = Owner::daemon(Path::new("/me"));
        let other = Owner::daemon(Path::new("/other"));
        let r = |o: &Owner| record("vm", o.clone(), base);
        assert_eq!(judge(&r(&me), &me, true, Liveness::Alive), Verdict::Known);
        assert_eq!(
            judge(&r(&me), &me, false, Liveness::Alive),
            Verdict::OwnLeftover
        );
        assert_eq!(
            judge(&r(&other), &me, false, Liveness::Alive),
            Verdict::Foreign
        );
        assert_eq!(
            judge(&r(&other), &me, true, Liveness::Alive),
            Verdict::Foreign,
            "a foreign record is never ours, whatever our store says"
        );
        assert_eq!(
            judge(&r(&other), &me, false, Liveness::Dead),
            Verdict::DeadOwner
        );
    }
}
