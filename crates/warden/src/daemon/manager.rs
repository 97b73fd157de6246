//! The manager: the one core every transport calls. It owns the store, one lock per VM (so
//! requests on one VM run one at a time while different VMs proceed in parallel), the live VM
//! handles, and a watcher per running VM that records its exit.
//!
//! Each step writes its intent to the store before its side effect: `booting` with the plan and
//! namespace before anything is staged, `stopping` before a stop. Recovery (the `recovery` module)
//! relies on that.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jail::cgroup::CgroupStats;
use jail::inspect::IsolationReport;
use serde::Serialize;
use tokio::sync::Mutex;

use super::config::DaemonConfig;
use super::metrics::Metrics;
use super::state::{Op, VmState};
use super::store::{now_ms, ExitRecord, Store, VmRecord, VmSpec};
use crate::vm::config::{DriveConfig, Serial, VmConfig, VmOptions};
use crate::vm::{self, ExitReason, VmHandle};

/// The kind of a failed request, mapped to Connect/gRPC codes by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    /// A field is invalid (the message names it).
    InvalidArgument,
    /// No such VM.
    NotFound,
    /// The id is taken.
    AlreadyExists,
    /// The VM's state forbids the request, or the host is not ready.
    FailedPrecondition,
    /// Out of a resource.
    ResourceExhausted,
    /// Anything else (the message says what).
    Internal,
}

/// A failed request: a code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ManagerError {
    /// The kind.
    pub code: ErrorCode,
    /// What went wrong, naming the VM, field or path.
    pub message: String,
}

impl ManagerError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn from_vm(e: &crate::Error) -> Self {
        use jail::owner::RegistryError;
        use jail::ApplyError;
        let code = match e {
            crate::Error::Invalid(_) => ErrorCode::InvalidArgument,
            crate::Error::JailerMissing { .. } | crate::Error::FirecrackerMissing { .. } => {
                ErrorCode::FailedPrecondition
            }
            crate::Error::Apply(ApplyError::Reserve(RegistryError::Taken { .. })) => {
                ErrorCode::AlreadyExists
            }
            crate::Error::Apply(ApplyError::JailExists { .. }) => ErrorCode::FailedPrecondition,
            _ => ErrorCode::Internal,
        };
        Self::new(code, error_chain(e))
    }

    fn store(e: super::store::StoreError) -> Self {
        Self::new(ErrorCode::Internal, error_chain(&e))
    }
}

/// An error and its causes on one line (one rule for the whole project, in `jail`).
pub use jail::error_chain;

/// What GetVmInfo and ListVms return.
#[derive(Debug, Clone, Serialize)]
pub struct VmInfo {
    /// The stored record.
    pub record: VmRecord,
    /// cgroup readings, while the VM runs.
    pub stats: Option<CgroupStats>,
    /// The isolation report, read from /proc now, while the VM runs.
    pub isolation: Option<IsolationReport>,
}

pub(crate) struct Slot {
    pub(crate) rec: VmRecord,
    pub(crate) vm: Option<VmHandle>,
    /// Bumped at every boot, so a watcher only acts on the run it watches.
    pub(crate) generation: u64,
}

/// The daemon's core.
pub struct Manager {
    pub(crate) cfg: DaemonConfig,
    pub(crate) store: Store,
    pub(crate) slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
    /// Pool addresses in use (as integers), by any VM in the store.
    pub(crate) addresses: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    /// Boots in progress, at most `max_concurrent_boots`.
    pub(crate) boots: Arc<tokio::sync::Semaphore>,
    /// Jail uids leased by this instance's VMs.
    pub(crate) uids: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    /// This instance, as the owner of its VMs' host state.
    pub(crate) owner: jail::Owner,
    /// The host-wide registry of VM ids.
    pub(crate) registry: jail::Registry,
    /// Where removals act.
    pub(crate) host: Arc<dyn jail::Host>,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

type Result<T> = std::result::Result<T, ManagerError>;

impl Manager {
    /// Opens the store and reconciles it with the host: re-attaches running VMs, records and
    /// cleans VMs that died, removes orphans. See the `recovery` module.
    pub async fn open(cfg: DaemonConfig) -> std::result::Result<Arc<Self>, ManagerError> {
        let store = Store::open(&cfg.state_dir).map_err(ManagerError::store)?;
        let boots = usize::try_from(cfg.max_concurrent_boots)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let manager = Arc::new(Self {
            owner: jail::Owner::daemon(&cfg.state_dir),
            registry: jail::Registry::default(),
            host: Arc::new(jail::RealHost),
            cfg,
            store,
            slots: Default::default(),
            addresses: Default::default(),
            uids: Default::default(),
            boots: Arc::new(tokio::sync::Semaphore::new(boots)),
            metrics: Metrics::default(),
        });
        super::recovery::recover(&manager).await?;
        Ok(manager)
    }

    /// The effective configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.cfg
    }

    // The lifecycle verbs run to completion in a task of their own, which the request only
    // waits on: a caller that goes away (a dropped connection, a Connect deadline) never leaves
    // an unsupervised Firecracker, or a VM stuck in Booting or Stopping.

    /// CreateVm: validates everything (sizes, id, asset paths, the jail plan) and records the
    /// VM as `created`. Nothing is created on the host.
    pub async fn create(self: &Arc<Self>, id: &str, spec: VmSpec) -> Result<VmRecord> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.create_inner(&id, spec).await }).await
    }

    /// BootVm.
    pub async fn boot(self: &Arc<Self>, id: &str) -> Result<VmState> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.boot_inner(&id).await }).await
    }

    /// PauseVm.
    pub async fn pause(self: &Arc<Self>, id: &str) -> Result<VmState> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.pause_inner(&id).await }).await
    }

    /// ResumeVm.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<VmState> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.resume_inner(&id).await }).await
    }

    /// ShutdownVm: graceful within `timeout` (the daemon's default when `None`; zero or `force`
    /// kills at once), then everything of the VM is removed from the host.
    pub async fn shutdown(
        self: &Arc<Self>,
        id: &str,
        force: bool,
        timeout: Option<Duration>,
    ) -> Result<VmState> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.shutdown_inner(&id, force, timeout).await }).await
    }

    /// RebootVm: a stop and a boot with the same configuration.
    pub async fn reboot(self: &Arc<Self>, id: &str) -> Result<VmState> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.reboot_inner(&id).await }).await
    }

    /// DeleteVm: stops it if it runs, removes everything of it from the host, forgets it.
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<()> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.delete_inner(&id).await }).await
    }

    pub(crate) fn slot(&self, id: &str) -> Result<Arc<Mutex<Slot>>> {
        self.slots.lock().unwrap().get(id).cloned().ok_or_else(|| {
            ManagerError::new(
                ErrorCode::NotFound,
                format!("no VM with id {id:?}; list them with ListVms"),
            )
        })
    }

    /// Locks a VM for a request that needs `op`, failing with `failed_precondition` when its
    /// state forbids it.
    async fn lock_for(&self, id: &str, op: Op) -> Result<tokio::sync::OwnedMutexGuard<Slot>> {
        let slot = self.slot(id)?.lock_owned().await;
        if slot.rec.state == VmState::Deleted {
            return Err(ManagerError::new(
                ErrorCode::NotFound,
                format!("VM {id:?} was deleted"),
            ));
        }
        if !slot.rec.state.allows(op) {
            return Err(ManagerError::new(
                ErrorCode::FailedPrecondition,
                format!(
                    "VM {id} is {}; {op:?} needs it to be {}",
                    slot.rec.state,
                    allowed_states(op)
                ),
            ));
        }
        Ok(slot)
    }

    /// CreateVm: validates everything (sizes, id, asset paths, the jail plan) and records the
    /// VM as `created`. Nothing is created on the host.
    async fn create_inner(&self, id: &str, spec: VmSpec) -> Result<VmRecord> {
        let t0 = Instant::now();
        let id = if id.is_empty() {
            generate_id()
        } else {
            id.to_owned()
        };
        let spec = self.check_spec(spec)?;
        let held = self.slots.lock().unwrap().len() as u64;
        if held >= self.cfg.max_vms {
            return Err(ManagerError::new(
                ErrorCode::ResourceExhausted,
                format!("this daemon holds {held} VMs, its max_vms; delete VMs or raise max_vms"),
            ));
        }
        if let Ok(Some(r)) = self.registry.read(&id) {
            if r.owner != self.owner {
                return Err(ManagerError::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "VM id {id:?} is in use on this host by {}; choose another id",
                        r.owner
                    ),
                ));
            }
        }
        let (config, mut options) = self.vm_config(&id, &spec);
        // Addresses are taken at boot; validate with the pool's first one.
        let (net, _) = self.cfg.address_pool;
        options.network.guest = Some(self.guest_addr((u32::from(net) + 2).into()));
        let plan = vm::plan_vm(&config, &options)
            .map(|p| p.plan)
            .map_err(|e| ManagerError::from_vm(&e).prefixed("config."))?;
        let now = now_ms();
        let rec = VmRecord {
            id: id.clone(),
            state: VmState::Created,
            spec,
            plan: Some(plan),
            pid: None,
            start_time: None,
            netns: None,
            tap: None,
            address: None,
            uid: None,
            serial_path: Some(self.serial_path(&id)),
            exit: None,
            created_at: now,
            updated_at: now,
        };
        // The map entry first: a concurrent create of the same id sees it at once.
        {
            let mut slots = self.slots.lock().unwrap();
            if slots.contains_key(&id) {
                return Err(ManagerError::new(
                    ErrorCode::AlreadyExists,
                    format!("a VM with id {id:?} already exists"),
                ));
            }
            slots.insert(
                id.clone(),
                Arc::new(Mutex::new(Slot {
                    rec: rec.clone(),
                    vm: None,
                    generation: 0,
                })),
            );
        }
        match self.store.insert(&rec).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ManagerError::new(
                    ErrorCode::AlreadyExists,
                    format!("a VM with id {id:?} already exists"),
                ));
            }
            Err(e) => {
                self.slots.lock().unwrap().remove(&id);
                return Err(ManagerError::store(e));
            }
        }
        tracing::info!(vm_id = %id, "vm created");
        self.metrics.observe("create", t0.elapsed());
        Ok(rec)
    }

    /// BootVm.
    async fn boot_inner(&self, id: &str) -> Result<VmState> {
        let mut slot = self.lock_for(id, Op::Boot).await?;
        self.boot_locked(&mut slot).await
    }

    async fn boot_locked(&self, slot: &mut Slot) -> Result<VmState> {
        let _permit = self.boots.clone().try_acquire_owned().map_err(|_| {
            ManagerError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{} boots are in progress, this daemon's max_concurrent_boots; retry shortly",
                    self.cfg.max_concurrent_boots
                ),
            )
        })?;
        let t0 = Instant::now();
        let id = slot.rec.id.clone();
        let networked = slot.rec.spec.enable_networking;
        // A networked VM's namespace is made with its network; otherwise an empty one if asked.
        let netns = (self.cfg.netns || networked).then(|| jail::net::netns::name_for(&id));
        if networked
            && self.cfg.network_mode == jail::net::NetMode::Bridge
            && slot.rec.address.is_none()
        {
            slot.rec.address = Some(self.allocate_address(&id)?);
        }
        if slot.rec.uid.is_none() {
            slot.rec.uid = self.lease_uid(&id).await?;
        }
        // Intent first: a crash from here on leaves a record of what may exist.
        slot.rec.state = VmState::Booting;
        slot.rec.netns = netns.clone();
        slot.rec.tap = networked.then(|| jail::net::TAP_NAME.to_owned());
        slot.rec.pid = None;
        slot.rec.start_time = None;
        slot.rec.exit = None;
        self.put(&mut slot.rec).await?;
        let started = async {
            std::fs::create_dir_all(self.vm_dir(&id)).map_err(|e| {
                ManagerError::new(
                    ErrorCode::Internal,
                    format!("cannot create {}: {e}", self.vm_dir(&id).display()),
                )
            })?;
            let (mut config, mut options) = self.vm_config(&id, &slot.rec.spec);
            config.enable_networking = networked;
            if let Some(uid) = slot.rec.uid {
                options.jailer.uid = uid;
                options.jailer.gid = uid;
            }
            options.network.guest = slot.rec.address.map(|a| self.guest_addr(a));
            let phases = vm::Phases::start();
            let planned = vm::plan_vm(&config, &options)
                .map_err(|e| ManagerError::from_vm(&e).prefixed("config."))?;
            slot.rec.plan = Some(planned.plan.clone());
            self.put(&mut slot.rec).await?;
            vm::start_planned(&config, &options, planned, phases)
                .await
                .map_err(|e| ManagerError::from_vm(&e))
        }
        .await;
        match started {
            Ok(vm) => {
                slot.rec.state = VmState::Running;
                slot.rec.pid = Some(vm.pid);
                slot.rec.start_time = vm.start_time();
                slot.rec.plan = Some(vm.plan.clone());
                slot.generation += 1;
                self.watch(&id, &vm, slot.generation);
                slot.vm = Some(vm);
                self.put(&mut slot.rec).await?;
                tracing::info!(vm_id = %id, pid = slot.rec.pid, "vm running");
                self.metrics.observe("boot", t0.elapsed());
                Ok(VmState::Running)
            }
            Err(e) => {
                // The library removed what it made; a refused id touched nothing of its owner.
                slot.rec.state = VmState::Failed;
                slot.rec.exit = Some(ExitRecord {
                    reason: "boot_failed".into(),
                    detail: e.message.clone(),
                    at_unix_ms: now_ms(),
                });
                self.put(&mut slot.rec).await?;
                self.metrics.failure("boot_failed");
                tracing::warn!(vm_id = %id, error = %e.message, "boot failed");
                Err(e)
            }
        }
    }

    /// Records the VM's exit when it ends on its own (guest power-off, OOM kill, crash, kill
    /// from outside). Stops asked for through the API record their own outcome.
    pub(crate) fn watch(&self, id: &str, vm: &VmHandle, generation: u64) {
        let mut exit_rx = vm.exit_watch();
        let slot = match self.slot(id) {
            Ok(s) => s,
            Err(_) => return,
        };
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let Ok(exit) = exit_rx.wait_for(Option::is_some).await.map(|e| e.clone()) else {
                return;
            };
            let exit = exit.expect("waited for Some");
            let mut slot = slot.lock().await;
            if slot.generation != generation
                || !matches!(slot.rec.state, VmState::Running | VmState::Paused)
            {
                return;
            }
            slot.vm = None;
            let record = exit_record(&exit.reason, &exit.output);
            tracing::info!(vm_id = %id, reason = %record.reason, detail = %record.detail, "vm exited; host resources cleaned");
            metrics.failure(&record.reason);
            slot.rec.state = VmState::Stopped;
            slot.rec.pid = None;
            slot.rec.exit = Some(record);
            slot.rec.updated_at = now_ms();
            if let Err(e) = store.put(&slot.rec).await {
                tracing::error!(vm_id = %id, error = %error_chain(&e), "recording the exit failed");
            }
        });
    }

    /// PauseVm.
    async fn pause_inner(&self, id: &str) -> Result<VmState> {
        let mut slot = self.lock_for(id, Op::Pause).await?;
        let vm = slot.vm.as_ref().ok_or_else(|| not_live(id))?;
        vm.pause().await.map_err(|e| ManagerError::from_vm(&e))?;
        slot.rec.state = VmState::Paused;
        self.put(&mut slot.rec).await?;
        Ok(VmState::Paused)
    }

    /// ResumeVm.
    async fn resume_inner(&self, id: &str) -> Result<VmState> {
        let mut slot = self.lock_for(id, Op::Resume).await?;
        let vm = slot.vm.as_ref().ok_or_else(|| not_live(id))?;
        vm.resume().await.map_err(|e| ManagerError::from_vm(&e))?;
        slot.rec.state = VmState::Running;
        self.put(&mut slot.rec).await?;
        Ok(VmState::Running)
    }

    /// ShutdownVm: graceful within `timeout` (the daemon's default when `None`; zero or `force`
    /// kills at once), then everything of the VM is removed from the host.
    async fn shutdown_inner(
        &self,
        id: &str,
        force: bool,
        timeout: Option<Duration>,
    ) -> Result<VmState> {
        let mut slot = self.lock_for(id, Op::Shutdown).await?;
        let timeout = if force {
            Duration::ZERO
        } else {
            timeout.unwrap_or(self.stop_timeout())
        };
        self.stop_locked(&mut slot, timeout, "stopped_by_api")
            .await?;
        Ok(VmState::Stopped)
    }

    /// RebootVm: a stop and a boot with the same configuration.
    async fn reboot_inner(&self, id: &str) -> Result<VmState> {
        let mut slot = self.lock_for(id, Op::Reboot).await?;
        self.stop_locked(&mut slot, self.stop_timeout(), "rebooted")
            .await?;
        self.boot_locked(&mut slot).await
    }

    async fn stop_locked(&self, slot: &mut Slot, timeout: Duration, reason: &str) -> Result<()> {
        let t0 = Instant::now();
        slot.rec.state = VmState::Stopping;
        self.put(&mut slot.rec).await?;
        let outcome = match slot.vm.take() {
            Some(vm) => vm
                .stop_within(timeout)
                .await
                .map(|e| e.reason)
                .map_err(|e| error_chain(&e)),
            None => Ok(ExitReason::Stopped),
        };
        // Whatever the process did, make sure nothing of it is left.
        let leftover = self.clean_host(&slot.rec.id).await.err();
        slot.rec.pid = None;
        let detail = match (&outcome, &leftover) {
            (Err(e), _) => e.clone(),
            (_, Some(e)) => e.message.clone(),
            (Ok(r), None) => format!("stopped by the API ({r})"),
        };
        slot.rec.state = if outcome.is_ok() && leftover.is_none() {
            VmState::Stopped
        } else {
            VmState::Failed
        };
        slot.rec.exit = Some(ExitRecord {
            reason: reason.into(),
            detail,
            at_unix_ms: now_ms(),
        });
        self.put(&mut slot.rec).await?;
        self.metrics.observe("stop", t0.elapsed());
        match leftover {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// DeleteVm: stops it if it runs, removes everything of it from the host, forgets it.
    async fn delete_inner(&self, id: &str) -> Result<()> {
        let mut slot = self.lock_for(id, Op::Delete).await?;
        if let Some(vm) = slot.vm.take() {
            slot.rec.state = VmState::Stopping;
            self.put(&mut slot.rec).await?;
            let _ = vm.stop_within(self.stop_timeout()).await;
        }
        self.clean_host(id).await?;
        let vm_dir = self.vm_dir(id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(vm_dir)).await;
        self.store.delete(id).await.map_err(ManagerError::store)?;
        if let Some(a) = slot.rec.address {
            self.addresses.lock().unwrap().remove(&u32::from(a));
        }
        if let Some(uid) = slot.rec.uid {
            let (registry, owner) = (self.registry.clone(), self.owner.clone());
            let vm = id.to_owned();
            let _ =
                tokio::task::spawn_blocking(move || registry.release_uid(uid, &owner, &vm)).await;
            self.uids.lock().unwrap().remove(&uid);
        }
        slot.rec.state = VmState::Deleted;
        self.slots.lock().unwrap().remove(id);
        tracing::info!(vm_id = %id, "vm deleted");
        Ok(())
    }

    /// GetVmInfo.
    pub async fn get(&self, id: &str) -> Result<VmInfo> {
        let slot = self.slot(id)?;
        let slot = slot.lock().await;
        if slot.rec.state == VmState::Deleted {
            return Err(ManagerError::new(
                ErrorCode::NotFound,
                format!("VM {id:?} was deleted"),
            ));
        }
        Ok(info(&slot, Report::Live))
    }

    /// ListVms, by id. A VM busy with a request is shown as last stored.
    pub async fn list(&self) -> Result<Vec<VmInfo>> {
        let slots: Vec<(String, Arc<Mutex<Slot>>)> = self
            .slots
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::with_capacity(slots.len());
        for (id, s) in slots {
            let info = match s.try_lock() {
                Ok(slot) => info(&slot, Report::AtStart),
                Err(_) => match self.store.get(&id).await {
                    Ok(Some(rec)) => VmInfo {
                        record: rec,
                        stats: None,
                        isolation: None,
                    },
                    _ => continue,
                },
            };
            if info.record.state != VmState::Deleted {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(out)
    }

    /// At daemon shutdown: stop every VM (`stop == true`) or let them run on for the next start
    /// to re-attach.
    pub async fn shutdown_all(&self, stop: bool) {
        let slots: Vec<Arc<Mutex<Slot>>> = self.slots.lock().unwrap().values().cloned().collect();
        for s in slots {
            let mut slot = s.lock().await;
            if stop {
                if slot.rec.state.allows(Op::Shutdown) {
                    let _ = self
                        .stop_locked(&mut slot, self.stop_timeout(), "daemon_exit")
                        .await;
                }
            } else if let Some(vm) = slot.vm.take() {
                // Bump the generation so the watcher does not record a detach as an exit.
                slot.generation += 1;
                vm.detach();
            }
        }
    }

    /// Removes everything of VM `id` on the host that this instance owns, from its owner record
    /// (idempotent: a VM already removed has no record). A record of another owner is never
    /// touched. Runs on the blocking pool.
    pub(crate) async fn clean_host(&self, id: &str) -> Result<()> {
        let registry = self.registry.clone();
        let owner = self.owner.clone();
        let id = id.to_owned();
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            match jail::lifecycle::remove_owned(&id, &owner, &registry, host) {
                Ok(jail::lifecycle::Owned::Foreign(holder)) => {
                    tracing::warn!(vm_id = %id, owner = %holder, "host state of this id belongs to another owner; left alone");
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(e) => Err(ManagerError::new(ErrorCode::Internal, error_chain(&e))),
            }
        })
        .await
        .map_err(|e| ManagerError::new(ErrorCode::Internal, format!("cleanup task failed: {e}")))?
    }

    pub(crate) async fn put(&self, rec: &mut VmRecord) -> Result<()> {
        rec.updated_at = now_ms();
        self.store.put(rec).await.map_err(ManagerError::store)
    }

    pub(crate) fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.stop_timeout_secs)
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("vms").join(id)
    }

    fn serial_path(&self, id: &str) -> PathBuf {
        self.vm_dir(id).join("serial.log")
    }

    /// The library's view of a stored spec.
    pub(crate) fn vm_config(&self, id: &str, spec: &VmSpec) -> (VmConfig, VmOptions) {
        let config = VmConfig {
            vm_id: id.to_owned(),
            vcpu_count: spec.vcpu_count,
            memory_mb: spec.memory_mib,
            kernel_path: spec.kernel_path.clone(),
            rootfs_path: spec.rootfs_path.clone(),
            enable_networking: spec.enable_networking,
        };
        let mut jailer = self.cfg.jailer_config();
        if spec.cpu_quota_percent.is_some() {
            jailer.cpu_quota_pct = spec.cpu_quota_percent;
        }
        let serial = self.serial_path(id);
        let options = VmOptions {
            boot_args: (!spec.boot_args.is_empty()).then(|| spec.boot_args.clone()),
            drives: spec
                .drives
                .iter()
                .map(|(p, ro)| DriveConfig {
                    path: p.into(),
                    read_only: *ro,
                })
                .collect(),
            jailer,
            jailer_mode: self.cfg.jailer_mode(),
            memory_limit_mb: spec
                .memory_limit_mib
                .or_else(|| self.cfg.memory_limit_mb(spec.memory_mib)),
            serial: Serial::File(serial),
            serial_log_max_bytes: usize::try_from(self.cfg.serial_log_max_bytes)
                .unwrap_or(usize::MAX),
            stop_timeout: self.stop_timeout(),
            network: crate::vm::config::NetworkOptions {
                mode: self.cfg.network_mode,
                bridge: self.cfg.bridge.clone(),
                guest: None,
                rx_rate_limiter: spec.net_rx_rate_limiter.clone(),
                tx_rate_limiter: spec.net_tx_rate_limiter.clone(),
            },
            drive_rate_limiter: spec.drive_rate_limiter.clone(),
            asset_dirs: Some(self.cfg.asset_dirs.clone()),
            // The daemon leases its VMs' uids itself, for as long as they exist.
            uid_range: None,
            own_netns: self.cfg.netns,
            owner: Some(self.owner.clone()),
            registry: self.registry.clone(),
            // The daemon's VMs outlive it and are re-attached at its next start.
            die_with_owner: false,
            ..VmOptions::default()
        };
        (config, options)
    }

    /// A uid of `jail_id_range` for VM `id`, leased host-wide (`None` in single-uid mode).
    async fn lease_uid(&self, id: &str) -> Result<Option<u32>> {
        let Some(range) = self.cfg.jail_id_range else {
            return Ok(None);
        };
        let skip = self.uids.lock().unwrap().clone();
        let (registry, owner, vm) = (self.registry.clone(), self.owner.clone(), id.to_owned());
        let leased =
            tokio::task::spawn_blocking(move || registry.lease_uid(range, &skip, &vm, &owner))
                .await
                .map_err(|e| ManagerError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| ManagerError::new(ErrorCode::Internal, error_chain(&e)))?;
        match leased {
            Some(uid) => {
                self.uids.lock().unwrap().insert(uid);
                Ok(Some(uid))
            }
            None => Err(ManagerError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "no free uid left in jail_id_range {}-{} for VM {id}; delete VMs or widen jail_id_range",
                    range.0, range.1
                ),
            )),
        }
    }

    /// The lowest free address of the pool (after the gateway), recorded as taken.
    fn allocate_address(&self, id: &str) -> Result<std::net::Ipv4Addr> {
        let (net, prefix) = self.cfg.address_pool;
        let first = u32::from(net) + 2;
        let last = u32::from(net) + (1u32 << (32 - u32::from(prefix))) - 2;
        let mut used = self.addresses.lock().unwrap();
        let free = (first..=last).find(|a| !used.contains(a)).ok_or_else(|| {
            ManagerError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "no free address left in {}/{} for VM {id}; delete VMs or widen address_pool",
                    net, prefix
                ),
            )
        })?;
        used.insert(free);
        Ok(free.into())
    }

    /// A pool address with its gateway and prefix.
    pub(crate) fn guest_addr(&self, address: std::net::Ipv4Addr) -> jail::net::GuestAddr {
        let (net, prefix) = self.cfg.address_pool;
        jail::net::GuestAddr {
            address,
            gateway: (u32::from(net) + 1).into(),
            prefix_len: prefix,
        }
    }

    /// Applies defaults and checks that every host path lies inside an asset directory (after
    /// resolving symlinks), so no caller can attach a host file such as /etc/shadow.
    fn check_spec(&self, mut spec: VmSpec) -> Result<VmSpec> {
        if spec.vcpu_count == 0 {
            spec.vcpu_count = 1;
        }
        if spec.memory_mib == 0 {
            spec.memory_mib = 512;
        }
        let invalid = |field: &str, problem: String| {
            ManagerError::new(
                ErrorCode::InvalidArgument,
                format!("invalid {field}: {problem}"),
            )
        };
        if spec.kernel_path.is_empty() {
            return Err(invalid(
                "config.kernel_path",
                "is empty; give the path of a kernel image under an asset directory".into(),
            ));
        }
        let cfg = &self.cfg;
        // Caps: (field, what was asked, this daemon's most, the setting, the unit). Beyond
        // Firecracker's 32 vCPUs the request is invalid, not just too big: the plan says so.
        let vcpus = if spec.vcpu_count <= 32 {
            u64::from(spec.vcpu_count)
        } else {
            0
        };
        let caps = [
            (
                "config.vcpu_count",
                vcpus,
                cfg.max_vcpus,
                "max_vcpus",
                "vCPUs",
            ),
            (
                "config.memory_mib",
                u64::from(spec.memory_mib),
                cfg.max_memory_mib,
                "max_memory_mib",
                "MiB",
            ),
            (
                "config.drives",
                spec.drives.len() as u64,
                cfg.max_drives,
                "max_drives",
                "drives",
            ),
            (
                "config.metadata",
                spec.metadata.len() as u64,
                cfg.max_metadata_entries,
                "max_metadata_entries",
                "entries",
            ),
        ];
        if let Some((field, asked, max, key, unit)) = caps.into_iter().find(|c| c.1 > c.2) {
            return Err(ManagerError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{field}: {asked} {unit} is more than {max} {unit}, above this daemon's {key}; \
                     ask for less, or raise {key}"
                ),
            ));
        }
        if let Some((k, v)) = spec
            .metadata
            .iter()
            .find(|(k, v)| k.len() > 256 || v.len() > 4096)
        {
            return Err(invalid(
                "config.metadata",
                format!(
                    "the entry {:?} is too long ({} byte key, {} byte value); keys may have 256 bytes and values 4096",
                    k.chars().take(32).collect::<String>(),
                    k.len(),
                    v.len()
                ),
            ));
        }
        // The operator's limits are maxima: a tenant may ask for a tighter cap, never a looser.
        let max_mem = cfg.memory_limit_mb(spec.memory_mib).unwrap_or(u32::MAX);
        if let Some(asked) = spec.memory_limit_mib.filter(|&m| m > max_mem) {
            return Err(invalid(
                "config.memory_limit_mib",
                format!(
                    "is {asked} MiB, above the maximum of {max_mem} MiB this daemon allows for a \
                     {} MiB guest (memory_limit_bytes); ask for at most {max_mem}",
                    spec.memory_mib
                ),
            ));
        }
        let max_cpu = cfg
            .cpu_quota_percent
            .unwrap_or(u32::from(spec.vcpu_count) * 100);
        if let Some(asked) = spec.cpu_quota_percent.filter(|&c| c > max_cpu) {
            return Err(invalid(
                "config.cpu_quota_percent",
                format!(
                    "is {asked}%, above the maximum of {max_cpu}% this daemon allows \
                     (cpu_quota_percent, or 100 per vCPU); ask for at most {max_cpu}"
                ),
            ));
        }
        // The paths are opened beneath the asset directories by every plan (CreateVm's check,
        // and again at each boot), never resolved here.
        Ok(spec)
    }
}

impl ManagerError {
    /// Names library fields as the API does (`memory_mb` is the API's `config.memory_mib`).
    fn prefixed(mut self, prefix: &str) -> Self {
        if let Some(rest) = self.message.strip_prefix("invalid ") {
            let rest = rest
                .strip_prefix("memory_mb")
                .map_or(rest.to_owned(), |r| format!("memory_mib{r}"));
            let rest = rest
                .strip_prefix("memory_limit_mb")
                .map_or(rest.clone(), |r| format!("memory_limit_mib{r}"));
            self.message = if rest.starts_with(prefix) || rest.starts_with("vm_id") {
                format!("invalid {rest}")
            } else {
                format!("invalid {prefix}{rest}")
            };
        }
        self
    }
}

/// How fresh a VM's isolation report must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Report {
    /// Read from /proc now (GetVmInfo: one VM, proven at the moment of asking).
    Live,
    /// The one read when the VM started or was re-attached (ListVms: every VM, cheaply).
    AtStart,
}

fn info(slot: &Slot, report: Report) -> VmInfo {
    let live = slot.vm.as_ref().filter(|vm| vm.exited().is_none());
    VmInfo {
        record: slot.rec.clone(),
        stats: live.map(|vm| vm.cgroup_stats()),
        isolation: live.map(|vm| match report {
            Report::Live => vm.isolation_now(),
            Report::AtStart => vm.isolation.clone(),
        }),
    }
}

fn not_live(id: &str) -> ManagerError {
    ManagerError::new(
        ErrorCode::FailedPrecondition,
        format!("VM {id} has no running process"),
    )
}

fn allowed_states(op: Op) -> String {
    let states: Vec<&str> = VmState::ALL
        .iter()
        .filter(|s| s.allows(op))
        .map(|s| s.as_str())
        .collect();
    states.join(" or ")
}

/// How an exit is recorded.
pub(crate) fn exit_record(reason: &ExitReason, output: &str) -> ExitRecord {
    let code = match reason {
        ExitReason::GuestPowerOff => "guest_power_off",
        ExitReason::Stopped => "stopped",
        ExitReason::Killed => "killed",
        ExitReason::OomKilled => "oom_killed",
        ExitReason::Signaled { .. } => "signaled",
        ExitReason::FirecrackerError { .. } => "firecracker_error",
        ExitReason::Unknown => "unknown",
    };
    let mut detail = reason.to_string();
    if matches!(reason, ExitReason::FirecrackerError { .. }) && !output.is_empty() {
        detail.push_str(": ");
        detail.push_str(output.lines().last().unwrap_or_default());
    }
    ExitRecord {
        reason: code.into(),
        detail,
        at_unix_ms: now_ms(),
    }
}

/// Runs a request's work in a task of its own and waits for it: dropping the waiter (the
/// request went away) does not stop the work.
async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(ManagerError::new(
            ErrorCode::Internal,
            format!("the request's task failed: {e}"),
        ))
    })
}

/// `vm-` and 16 hex digits.
fn generate_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("vm-{:016x}", h.finish())
}
