//! The host lifecycle of one VM: [`apply`] makes everything a [`JailPlan`] lists, in one
//! commented order, and returns a [`Jail`]; [`Jail::remove`] (and [`remove`], for a VM known only
//! from its record) takes all of it away again, trying every step and reporting every failure.
//! The same removal runs for a stop, a guest power-off, a Firecracker killed from outside, a
//! failed start, the daemon's recovery and `gc`.
//!
//! Spawning the jailer and configuring Firecracker's API stay with the caller (`warden`): this
//! module only makes and removes host state. Everything here blocks (copies, netlink round
//! trips, `rmdir` retries): async callers run it on a blocking thread.

use std::path::Path;
use std::sync::Arc;

use crate::cgroup::CgroupError;
use crate::host::Host;
use crate::net::{self, netns::NetnsError, NetError};
use crate::owner::{Owner, OwnerRecord, ProcessRef, Registry, RegistryError};
use crate::plan::JailPlan;
use crate::stage::{self, StageError};

/// Making a VM's host state failed. What was made before the failure has been removed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The id is reserved by another owner: nothing was made, nothing of theirs touched.
    #[error(transparent)]
    Reserve(#[from] RegistryError),
    /// The VM's network could not be made.
    #[error("cannot set up the network of VM {id}")]
    Net {
        /// The VM.
        id: String,
        /// The cause.
        source: NetError,
    },
    /// The VM's (empty) network namespace could not be made.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The jail directory exists already: it is someone else's and was left alone.
    #[error("jail directory {path} already exists and belongs to no warden VM; it was left alone (remove it, or choose another id)")]
    JailExists {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// Staging the chroot or a file failed.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A cgroup step before the spawn failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The VM does not fit the warm jail it was to take over; nothing was changed.
    #[error(transparent)]
    Misfit(#[from] crate::warm::Misfit),
}

/// One step of a removal that failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveFailure {
    /// The jail directory (chroot included).
    #[error("cannot remove jail directory {path}: {source}")]
    JailDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A cgroup directory.
    #[error("{}", crate::error_chain(.0))]
    Cgroup(CgroupError),
    /// The host end of the veth pair.
    #[error("{}", crate::error_chain(.0))]
    Link(NetError),
    /// The network namespace.
    #[error("{}", crate::error_chain(.0))]
    Netns(NetnsError),
    /// The owner record (only released once everything else is gone).
    #[error("{}", crate::error_chain(.0))]
    Registry(RegistryError),
}

/// Some of a VM's host resources could not be removed; every failed step is listed. The owner
/// record stays, so a later removal (or `gc`) can finish the job.
#[derive(Debug, thiserror::Error)]
#[error("could not remove {} of VM {id}'s host resources: {}", failures.len(), failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
pub struct RemoveError {
    /// The VM.
    pub id: String,
    /// Every step that failed.
    pub failures: Vec<RemoveFailure>,
}

/// Which parts of a plan exist (all of them, for a removal from a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Made {
    net: bool,
    netns: bool,
    jail_dir: bool,
    cgroups: bool,
}

const ALL: Made = Made {
    net: true,
    netns: true,
    jail_dir: true,
    cgroups: true,
};

/// The host state of one VM, made by [`apply`] or adopted from its record. Dropping it while
/// armed removes everything; [`Jail::disarm`] lets the VM outlive the handle (a daemon that
/// leaves its VMs running for its next start).
#[derive(Debug)]
pub struct Jail {
    record: std::sync::Mutex<OwnerRecord>,
    registry: Registry,
    host: Arc<dyn Host>,
    armed: std::sync::atomic::AtomicBool,
}

/// Makes the host state of `plan` for `owner`, in this order:
///
/// 1. **Reserve the id** in the registry, with the whole plan: from here on, whatever exists is
///    attributable and removable; an id someone else holds stops everything before any change.
/// 2. **Network**: the VM's own namespace with its TAP (and, in bridge mode, veth and bridge), or
///    the empty namespace the plan asks for. Before the jail: the jailer joins it.
/// 3. **Jail directory**, then the owner record's copy in it (out of the chroot), so a jail that
///    outlives `/run` is still attributed.
/// 4. **Chroot and staged files**: `root/`, `run/`, the log file, kernel, rootfs and drives.
/// 5. **cgroup pre-steps**: the v1 `cpuacct` directory the jailer does not make (Firecracker is
///    moved into it right after the spawn, see [`Jail::attach_accounting`]), and the v2
///    directory of a VM without `--cgroup` settings, which the jailer joins as its parent.
///
/// On a failure, what this call made is removed again (never what was there before) and the
/// reservation is released.
pub fn apply(
    plan: &JailPlan,
    owner: Owner,
    uid_leased: bool,
    registry: &Registry,
    host: Arc<dyn Host>,
) -> Result<Jail, ApplyError> {
    let record = OwnerRecord {
        id: plan.id.clone(),
        owner,
        plan: plan.clone(),
        firecracker: None,
        uid_leased,
        reserved_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    registry.reserve(&record)?;
    let jail = Jail {
        record: std::sync::Mutex::new(record),
        registry: registry.clone(),
        host,
        armed: true.into(),
    };
    let mut made = Made {
        net: false,
        netns: false,
        jail_dir: false,
        cgroups: false,
    };
    let result = (|| -> Result<(), ApplyError> {
        if let Some(n) = &plan.net {
            // setup removes what it made itself when it fails; a namespace or link of that
            // name that existed before (someone else's) must not be removed here.
            net::setup(n).map_err(|source| ApplyError::Net {
                id: plan.id.clone(),
                source,
            })?;
            made.net = true;
        } else if let (Some(ns), true) = (&plan.netns, plan.netns_owned) {
            let dir = ns.parent().unwrap_or(Path::new("/"));
            let name = ns.file_name().unwrap_or_default().to_string_lossy();
            net::netns::create(dir, &name)?;
            made.netns = true;
        }
        match stage::create_jail_dir(plan) {
            Ok(()) => made.jail_dir = true,
            Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ApplyError::JailExists {
                    path: plan.jail_dir.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        jail.write_owner_copy()?;
        stage::stage_into(plan)?;
        for dir in plan.cgroup_accounting_dir.iter().chain(&plan.cgroup_leaf) {
            made.cgroups = true;
            crate::cgroup::create(dir)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(jail),
        Err(e) => {
            // Remove only what this call made; a failure here leaves the record for gc.
            let _ = jail.remove_made(made);
            jail.disarm();
            Err(e)
        }
    }
}

impl Jail {
    /// Takes charge of a VM's host state known from its record (re-attach, recovery, gc).
    pub fn adopt(record: OwnerRecord, registry: &Registry, host: Arc<dyn Host>) -> Self {
        Self {
            record: std::sync::Mutex::new(record),
            registry: registry.clone(),
            host,
            armed: true.into(),
        }
    }

    /// The plan.
    pub fn plan(&self) -> JailPlan {
        self.record.lock().unwrap().plan.clone()
    }

    /// The owner record as it is now.
    pub fn record(&self) -> OwnerRecord {
        self.record.lock().unwrap().clone()
    }

    /// Records the Firecracker process (so a dead owner's VM can be ended exactly). A VM that
    /// already ended and was removed has nothing left to record.
    ///
    /// The copy beside the jail, read only when the registry lost the record (see
    /// [`crate::Layout::scan`]), is rewritten only for a VM without cgroup directories: one
    /// with them is ended there through them (every task in them is killed before anything is
    /// removed), so its copy from [`apply`] is enough, and a start writes one file less.
    pub fn set_firecracker(&self, p: ProcessRef) -> Result<(), RegistryError> {
        if !self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let rec = {
            let mut r = self.record.lock().unwrap();
            r.firecracker = Some(p);
            r.clone()
        };
        self.registry.update(&rec)?;
        if rec.plan.cgroup_dirs.is_empty() {
            self.write_owner_copy()?;
        }
        Ok(())
    }

    /// Moves Firecracker into the v1 `cpuacct` directory made by [`apply`], before its vCPU
    /// threads start, so its CPU time is accounted per VM.
    pub fn attach_accounting(&self, pid: u32) -> Result<(), CgroupError> {
        match &self.record.lock().unwrap().plan.cgroup_accounting_dir {
            Some(dir) => crate::cgroup::attach(dir, pid),
            None => Ok(()),
        }
    }

    fn write_owner_copy(&self) -> Result<(), RegistryError> {
        let rec = self.record();
        let path = rec.plan.owner_file.clone();
        let json = serde_json::to_vec_pretty(&rec).expect("a record serializes");
        let tmp = path.with_extension("json.tmp");
        match std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path)) {
            Ok(()) => Ok(()),
            // The jail is already gone (the VM ended and was removed meanwhile).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RegistryError::Io {
                action: "write",
                path,
                source,
            }),
        }
    }

    /// Hands this warm jail (see [`crate::warm`]) to the VM planned as `plan`: checks that it
    /// fits, records `plan` as the jail's (so every later removal, recovery and `gc` knows the
    /// staged files), stages its files into the chroot and writes its cgroup values into the
    /// directories the jailer made. The record comes first: a crash after it leaves a jail that
    /// is removed like any other. Firecracker must not have started a guest yet (a warm jail's
    /// has not), so nothing in the chroot comes from a guest; staging creates every file anew
    /// and never follows a link there.
    pub fn take_over(&self, plan: &JailPlan) -> Result<(), ApplyError> {
        let current = self.plan();
        crate::warm::fits(&current, plan)?;
        let rec = {
            let mut r = self.record.lock().unwrap();
            r.plan = plan.clone();
            r.clone()
        };
        self.registry.update(&rec)?;
        self.write_owner_copy()?;
        stage::stage_files(plan)?;
        crate::cgroup::rewrite_values(&plan.cgroups)?;
        Ok(())
    }

    /// Leaves the host state in place when this handle goes away.
    pub fn disarm(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Removes everything of the VM. Call it once Firecracker is gone (a process still in the
    /// VM's cgroups, or the recorded Firecracker, is killed first). Idempotent.
    pub fn remove(&self) -> Result<(), RemoveError> {
        let r = self.remove_made(ALL);
        if r.is_ok() {
            self.disarm();
        }
        r
    }

    fn remove_made(&self, made: Made) -> Result<(), RemoveError> {
        let rec = self.record();
        let plan = &rec.plan;
        let host = &*self.host;
        let mut failures = Vec::new();
        // Processes first: nothing may still be using what is removed next.
        if let Some(p) = rec.firecracker {
            host.kill_process(p);
        }
        if made.cgroups && !plan.cgroup_dirs.is_empty() {
            host.kill_cgroup_tasks(&plan.cgroup_dirs);
        }
        if made.jail_dir {
            if let Err(source) = host.remove_tree(&plan.jail_dir) {
                failures.push(RemoveFailure::JailDir {
                    path: plan.jail_dir.clone(),
                    source,
                });
            }
        }
        // Deepest first: the sorted list puts a parent before its children.
        for dir in plan.cgroup_dirs.iter().rev().filter(|_| made.cgroups) {
            if let Err(e) = host.remove_cgroup(dir) {
                failures.push(RemoveFailure::Cgroup(e));
            }
        }
        if let (Some(n), true) = (&plan.net, made.net) {
            if let Some(veth) = &n.host_veth {
                if let Err(e) = host.delete_link(veth) {
                    failures.push(RemoveFailure::Link(e));
                }
            }
            if let Err(e) = host.remove_netns(&n.netns_path) {
                failures.push(RemoveFailure::Netns(e));
            }
        }
        if let (Some(ns), true, true) = (&plan.netns, plan.netns_owned, made.netns) {
            if let Err(e) = host.remove_netns(ns) {
                failures.push(RemoveFailure::Netns(e));
            }
        }
        if failures.is_empty() && rec.uid_leased && made == ALL {
            if let Err(e) = self.registry.release_uid(plan.uid, &rec.owner, &rec.id) {
                failures.push(RemoveFailure::Registry(e));
            }
        }
        if failures.is_empty() {
            if let Err(e) = self.registry.release(&rec.id) {
                failures.push(RemoveFailure::Registry(e));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RemoveError {
                id: rec.id.clone(),
                failures,
            })
        }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.remove();
        }
    }
}

/// Removes the host state a record lists (gc and recovery, for leftovers already judged).
pub fn remove(
    record: OwnerRecord,
    registry: &Registry,
    host: Arc<dyn Host>,
) -> Result<(), RemoveError> {
    let jail = Jail::adopt(record, registry, host);
    let r = jail.remove();
    jail.disarm();
    r
}

/// What [`remove_owned`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// The VM was `owner`'s: everything of it was removed.
    Removed,
    /// Nothing of the VM is recorded (never made, or already removed).
    Nothing,
    /// Another owner holds the id: nothing was touched.
    Foreign(Owner),
}

/// Removing a VM's host state only if `owner` holds it failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveOwnedError {
    /// The record could not be read: nothing was touched.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Some steps failed.
    #[error(transparent)]
    Remove(#[from] RemoveError),
}

/// Removes the host state of VM `id` if, and only if, its record names `owner`.
pub fn remove_owned(
    id: &str,
    owner: &Owner,
    registry: &Registry,
    host: Arc<dyn Host>,
) -> Result<Owned, RemoveOwnedError> {
    match registry.read(id)? {
        None => Ok(Owned::Nothing),
        Some(rec) if rec.owner != *owner => Ok(Owned::Foreign(rec.owner)),
        Some(rec) => {
            let jail = Jail::adopt(rec, registry, host);
            let r = jail.remove();
            jail.disarm();
            r?;
            Ok(Owned::Removed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Call, RecordingHost};
    use crate::owner::tests::record;
    use std::path::PathBuf;

    fn networked(base: &Path) -> OwnerRecord {
        let mut r = record("vm-a", Owner::daemon(Path::new("/me")), base);
        r.plan.cgroup_dirs = vec![
            PathBuf::from("/cg/cpu/warden/vm-a"),
            PathBuf::from("/cg/memory/warden/vm-a"),
        ];
        r.plan.net = Some(crate::net::NetPlan::new(
            "vm-a",
            Path::new("/ns/fc-vm-a"),
            crate::net::NetMode::Bridge,
            1,
            1,
            Some((
                "warden0".into(),
                crate::net::GuestAddr {
                    address: "10.0.0.2".parse().unwrap(),
                    gateway: "10.0.0.1".parse().unwrap(),
                    prefix_len: 24,
                },
            )),
        ));
        r.firecracker = Some(ProcessRef {
            pid: 42,
            start_time: 7,
        });
        r
    }

    #[test]
    fn removal_ends_the_process_then_tries_every_step_and_releases_the_record_last() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("reg"));
        let rec = networked(tmp.path());
        reg.reserve(&rec).unwrap();
        let host = Arc::new(RecordingHost::default());
        let jail = Jail::adopt(rec.clone(), &reg, host.clone());
        jail.remove().unwrap();
        let veth = rec.plan.net.as_ref().unwrap().host_veth.clone().unwrap();
        assert_eq!(
            host.calls(),
            [
                Call::KillProcess(rec.firecracker.unwrap()),
                Call::KillCgroupTasks(rec.plan.cgroup_dirs.clone()),
                Call::RemoveTree(rec.plan.jail_dir.clone()),
                Call::RemoveCgroup("/cg/memory/warden/vm-a".into()),
                Call::RemoveCgroup("/cg/cpu/warden/vm-a".into()),
                Call::DeleteLink(veth),
                Call::RemoveNetns("/ns/fc-vm-a".into()),
            ]
        );
        assert!(reg.read("vm-a").unwrap().is_none(), "released");
        drop(jail);
        assert_eq!(
            host.calls().len(),
            7,
            "a removed jail is not removed again on drop"
        );
    }

    #[test]
    fn the_copy_beside_the_jail_names_firecracker_only_where_no_cgroup_can_end_it() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("reg"));
        let copy = |rec: &OwnerRecord| -> OwnerRecord {
            serde_json::from_slice(&std::fs::read(&rec.plan.owner_file).unwrap()).unwrap()
        };
        let fc = ProcessRef {
            pid: 42,
            start_time: 7,
        };
        for with_cgroups in [true, false] {
            let mut rec = networked(tmp.path());
            rec.id = format!("vm-{with_cgroups}");
            rec.firecracker = None;
            rec.plan.net = None;
            if !with_cgroups {
                rec.plan.cgroup_dirs.clear();
            }
            rec.plan.owner_file = tmp.path().join(format!("{}.owner.json", rec.id));
            reg.reserve(&rec).unwrap();
            let jail = Jail::adopt(rec.clone(), &reg, Arc::new(RecordingHost::default()));
            jail.write_owner_copy().unwrap();
            jail.set_firecracker(fc).unwrap();
            assert_eq!(reg.read(&rec.id).unwrap().unwrap().firecracker, Some(fc));
            let want = (!with_cgroups).then_some(fc);
            assert_eq!(copy(&rec).firecracker, want, "cgroups: {with_cgroups}");
            jail.disarm();
        }
    }

    #[test]
    fn a_failing_step_does_not_stop_the_others_and_keeps_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("reg"));
        let rec = networked(tmp.path());
        reg.reserve(&rec).unwrap();
        let host = Arc::new(RecordingHost {
            fail: vec![
                rec.plan.jail_dir.display().to_string(),
                "/cg/memory/warden/vm-a".into(),
            ],
            ..Default::default()
        });
        let jail = Jail::adopt(rec.clone(), &reg, host.clone());
        let err = jail.remove().unwrap_err();
        assert_eq!(err.failures.len(), 2, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("jail directory") && msg.contains("/cg/memory/warden/vm-a"),
            "{msg}"
        );
        assert!(
            host.calls()
                .contains(&Call::RemoveNetns("/ns/fc-vm-a".into())),
            "later steps still ran"
        );
        assert!(reg.read("vm-a").unwrap().is_some(), "kept for a retry");
        jail.disarm();
    }

    #[test]
    fn only_the_owner_removes_and_a_foreign_record_is_never_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("reg"));
        let rec = networked(tmp.path());
        reg.reserve(&rec).unwrap();
        let host = Arc::new(RecordingHost::default());
        let stranger = Owner::daemon(Path::new("/stranger"));
        assert_eq!(
            remove_owned("vm-a", &stranger, &reg, host.clone()).unwrap(),
            Owned::Foreign(rec.owner.clone())
        );
        assert!(host.calls().is_empty(), "nothing of the holder's touched");
        assert_eq!(
            remove_owned("vm-a", &rec.owner, &reg, host.clone()).unwrap(),
            Owned::Removed
        );
        assert!(!host.calls().is_empty());
        assert_eq!(
            remove_owned("vm-a", &rec.owner, &reg, host).unwrap(),
            Owned::Nothing,
            "idempotent"
        );
    }

    #[test]
    fn a_taken_id_makes_and_removes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("reg"));
        let theirs = networked(tmp.path());
        reg.reserve(&theirs).unwrap();
        let host = Arc::new(RecordingHost::default());
        let err = apply(
            &theirs.plan,
            Owner::daemon(Path::new("/someone-else")),
            false,
            &reg,
            host.clone(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ApplyError::Reserve(RegistryError::Taken { .. })),
            "{err}"
        );
        assert!(host.calls().is_empty());
        assert_eq!(
            reg.read("vm-a").unwrap().unwrap(),
            theirs,
            "their record is untouched"
        );
    }

    #[test]
    fn a_namespace_of_the_same_name_made_by_someone_else_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("reg"));
        let mut rec = record("vm-c", Owner::this_process(), tmp.path());
        let ns_dir = tmp.path().join("netns");
        std::fs::create_dir_all(&ns_dir).unwrap();
        // Theirs: a plain file where our namespace would go.
        std::fs::write(ns_dir.join("fc-vm-vm-c"), b"").unwrap();
        rec.plan.net = Some(crate::net::NetPlan::new(
            "vm-c",
            &ns_dir.join("fc-vm-vm-c"),
            crate::net::NetMode::None,
            1,
            1,
            None,
        ));
        let host = Arc::new(RecordingHost::default());
        let err = apply(&rec.plan, rec.owner.clone(), false, &reg, host.clone()).unwrap_err();
        assert!(matches!(err, ApplyError::Net { .. }), "{err}");
        assert!(
            host.calls().is_empty(),
            "nothing removed: {:?}",
            host.calls()
        );
        assert!(ns_dir.join("fc-vm-vm-c").exists());
        assert!(reg.read("vm-c").unwrap().is_none(), "reservation released");
        // setup() made the directory a mount of its own.
        let _ = nix::mount::umount2(&ns_dir, nix::mount::MntFlags::MNT_DETACH);
    }

    #[test]
    fn an_existing_jail_directory_is_left_alone_and_the_reservation_released() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("reg"));
        let rec = record("vm-b", Owner::this_process(), tmp.path());
        std::fs::create_dir_all(rec.plan.root_dir.join("keep")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let err = apply(&rec.plan, rec.owner.clone(), false, &reg, host.clone()).unwrap_err();
        assert!(matches!(err, ApplyError::JailExists { .. }), "{err}");
        assert!(rec.plan.root_dir.join("keep").is_dir());
        assert!(!host
            .calls()
            .iter()
            .any(|c| matches!(c, Call::RemoveTree(_))));
        assert!(reg.read("vm-b").unwrap().is_none());
    }
}
