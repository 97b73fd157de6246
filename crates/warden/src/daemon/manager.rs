//! The manager: the one core every transport calls. It owns the store, one lock per VM (so
//! requests on one VM run one at a time while different VMs proceed in parallel), the live VM
//! handles, and what the VMs hold (addresses, uids, boot permits).
//!
//! Each step writes its intent to the store before its side effect: `booting` with the plan and
//! namespace before anything is staged, `stopping` before a stop. Recovery (the `recovery` module)
//! relies on that. The verbs are in `verbs/`, one file each; the exit watcher in `watch`; host
//! cleanup in `cleanup`; a request's checks and its library options in `spec`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jail::cgroup::CgroupStats;
use jail::inspect::IsolationReport;
use serde::Serialize;
use tokio::sync::Mutex;

use super::addresses::AddressPool;
use super::config::DaemonConfig;
use super::error::ManagerError;
use super::metrics::Metrics;
use super::state::{Op, VmState};
use super::store::{now_ms, ExitCause, Store, VmRecord};
use super::uids::UidLeases;
use crate::vm::VmHandle;

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

/// A [`VmInfo`] borrowed from the manager (ListVms' entries, see [`Manager::list_with`]).
#[derive(Debug, Clone, Copy)]
pub struct VmInfoRef<'a> {
    /// The record.
    pub record: &'a VmRecord,
    /// cgroup readings, while the VM runs.
    pub stats: Option<&'a CgroupStats>,
    /// The isolation report, while the VM runs.
    pub isolation: Option<&'a IsolationReport>,
    /// Equal for two views of a VM only when everything but `stats` is the same, so a caller
    /// may keep what it made of a view until the version changes.
    pub version: Version,
}

/// See [`VmInfoRef::version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The record's revision (see [`Tracked`]).
    revision: u64,
    /// The slot's run.
    generation: u64,
    /// Whether it runs, and whether it is sandboxed.
    live: Option<bool>,
}

impl Version {
    /// A version equal to no other.
    fn unique() -> Self {
        Self {
            revision: next_revision(),
            generation: 0,
            live: None,
        }
    }
}

impl VmInfo {
    /// Borrowed.
    pub fn borrowed(&self) -> VmInfoRef<'_> {
        VmInfoRef {
            record: &self.record,
            stats: self.stats.as_ref(),
            isolation: self.isolation.as_ref(),
            version: Version::unique(),
        }
    }
}

impl VmInfoRef<'_> {
    /// Copied.
    pub fn cloned(self) -> VmInfo {
        VmInfo {
            record: self.record.clone(),
            stats: self.stats.cloned(),
            isolation: self.isolation.cloned(),
        }
    }
}

/// A VM's record as its slot holds it. Every mutable access gives it a new revision, so that
/// a list can keep a VM's entry until its record may have changed ([`VmInfoRef::version`]).
#[derive(Debug)]
pub(crate) struct Tracked {
    rec: VmRecord,
    revision: u64,
}

impl Tracked {
    pub(crate) fn new(rec: VmRecord) -> Self {
        Self {
            rec,
            revision: next_revision(),
        }
    }
}

impl std::ops::Deref for Tracked {
    type Target = VmRecord;

    fn deref(&self) -> &VmRecord {
        &self.rec
    }
}

impl std::ops::DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut VmRecord {
        self.revision = next_revision();
        &mut self.rec
    }
}

/// Revisions are unique across the daemon's records.
fn next_revision() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub(crate) struct Slot {
    pub(crate) rec: Tracked,
    pub(crate) vm: Option<VmHandle>,
    /// Bumped at every boot, so a watcher only acts on the run it watches.
    pub(crate) generation: u64,
}

/// The daemon's core.
pub struct Manager {
    pub(crate) cfg: DaemonConfig,
    pub(crate) store: Store,
    pub(crate) slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
    /// Bridge-mode addresses, held by any VM in the store.
    pub(crate) addresses: AddressPool,
    /// Boots in progress, at most `max_concurrent_boots`.
    pub(crate) boots: Arc<tokio::sync::Semaphore>,
    /// Jail uids leased by this instance's VMs.
    pub(crate) uids: UidLeases,
    /// This instance, as the owner of its VMs' host state.
    pub(crate) owner: jail::Owner,
    /// The host-wide registry of VM ids.
    pub(crate) registry: jail::Registry,
    /// Where removals act.
    pub(crate) host: Arc<dyn jail::Host>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// State changes, for WatchVms.
    pub(crate) events: super::events::Events,
    /// Warm jails for first boots (`pool_size`).
    pub(crate) pool: super::pool::WarmPool,
    /// ListVms' cgroup readings.
    pub(crate) stats: super::stats::StatsCache,
}

type Result<T> = std::result::Result<T, ManagerError>;

impl Manager {
    /// Opens the store and reconciles it with the host: re-attaches running VMs, records and
    /// cleans VMs that died, removes orphans. See the `recovery` module.
    pub async fn open(cfg: DaemonConfig) -> Result<Arc<Self>> {
        let store = Store::open(&cfg.state_dir)?;
        let boots = usize::try_from(cfg.max_concurrent_boots)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let owner = jail::Owner::daemon(&cfg.state_dir);
        let registry = jail::Registry::default();
        let manager = Arc::new(Self {
            uids: UidLeases::new(cfg.jail_id_range, registry.clone(), owner.clone()),
            addresses: AddressPool::new(cfg.address_pool),
            owner,
            registry,
            host: Arc::new(jail::RealHost),
            cfg,
            store,
            slots: Default::default(),
            boots: Arc::new(tokio::sync::Semaphore::new(boots)),
            metrics: Metrics::default(),
            events: Default::default(),
            pool: Default::default(),
            stats: Default::default(),
        });
        super::recovery::recover(&manager).await?;
        manager.start_pool();
        Ok(manager)
    }

    /// The effective configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.cfg
    }

    pub(crate) fn slot(&self, id: &str) -> Result<Arc<Mutex<Slot>>> {
        self.slots
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ManagerError::NoSuchVm { id: id.to_owned() })
    }

    /// Locks a VM for a request that needs `op`, failing with `failed_precondition` when its
    /// state forbids it.
    pub(crate) async fn lock_for(
        &self,
        id: &str,
        op: Op,
    ) -> Result<tokio::sync::OwnedMutexGuard<Slot>> {
        let slot = self.slot(id)?.lock_owned().await;
        if slot.rec.state == VmState::Deleted {
            return Err(ManagerError::Deleted { id: id.to_owned() });
        }
        if !slot.rec.state.allows(op) {
            return Err(ManagerError::WrongState {
                id: id.to_owned(),
                state: slot.rec.state,
                op,
            });
        }
        Ok(slot)
    }

    /// GetVmInfo.
    pub async fn get(&self, id: &str) -> Result<VmInfo> {
        let slot = self.slot(id)?;
        let slot = slot.lock().await;
        if slot.rec.state == VmState::Deleted {
            return Err(ManagerError::Deleted { id: id.to_owned() });
        }
        Ok(info(&slot))
    }

    /// ListVms, by id. A VM busy with a request is shown as last stored. cgroup readings are
    /// those of the last refresh (see the `stats` module).
    pub async fn list(&self) -> Result<Vec<VmInfo>> {
        self.list_with(|v| Some(v.cloned())).await
    }

    /// [`Manager::list`] without copying each record: `f` sees every VM, by id, borrowed while
    /// its slot is held, and keeps what it returns.
    pub async fn list_with<T>(
        &self,
        mut f: impl FnMut(VmInfoRef<'_>) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut slots: Vec<(String, Arc<Mutex<Slot>>)> = self
            .slots
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let readings = self.stats.readings();
        let mut out = Vec::new();
        for (id, s) in &slots {
            let kept = match s.try_lock() {
                Ok(slot) => {
                    if slot.rec.state == VmState::Deleted {
                        continue;
                    }
                    let live = slot.vm.as_ref().filter(|vm| vm.exited().is_none());
                    // A VM with no reading in the cache yet (one re-attached at recovery) shows
                    // none until the refresh this list starts: a list never reads cgroups.
                    f(VmInfoRef {
                        record: &slot.rec,
                        stats: live.and_then(|_| readings.get(id)),
                        isolation: live.map(|vm| &vm.isolation),
                        version: Version {
                            revision: slot.rec.revision,
                            generation: slot.generation,
                            live: live.map(|vm| vm.isolation.is_sandboxed),
                        },
                    })
                }
                Err(_) => match self.store.get(id).await {
                    Ok(Some(rec)) if rec.state != VmState::Deleted => f(VmInfoRef {
                        record: &rec,
                        stats: None,
                        isolation: None,
                        version: Version::unique(),
                    }),
                    _ => continue,
                },
            };
            out.extend(kept);
        }
        if readings.due {
            self.stats.refresh(move || live_sources(&slots));
        }
        Ok(out)
    }

    /// At daemon shutdown: stop every VM (`stop == true`) or let them run on for the next start
    /// to re-attach.
    pub async fn shutdown_all(&self, stop: bool) {
        // Warm jails hold no VM: they never outlive the daemon.
        self.drain_pool().await;
        let slots: Vec<Arc<Mutex<Slot>>> = self.slots.lock().unwrap().values().cloned().collect();
        for s in slots {
            let mut slot = s.lock().await;
            if stop {
                if slot.rec.state.allows(Op::Shutdown) {
                    let _ = self
                        .stop_locked(&mut slot, self.stop_timeout(), ExitCause::DaemonExit)
                        .await;
                }
            } else if let Some(vm) = slot.vm.take() {
                // Bump the generation so the watcher does not record a detach as an exit.
                slot.generation += 1;
                vm.detach();
            }
        }
    }

    pub(crate) async fn put(&self, rec: &mut VmRecord) -> Result<()> {
        rec.updated_at = now_ms();
        self.store.put(rec).await?;
        self.events.record(rec);
        Ok(())
    }

    /// WatchVms: each VM's state now and, from the same instant, every change. A receiver that
    /// lags (`RecvError::Lagged`) has missed changes: subscribe again to start over.
    pub fn subscribe(
        &self,
    ) -> (
        tokio::sync::broadcast::Receiver<super::events::VmEvent>,
        Vec<(String, VmState)>,
    ) {
        self.events.subscribe()
    }

    pub(crate) fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.stop_timeout_secs)
    }

    pub(crate) fn vm_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("vms").join(id)
    }

    pub(crate) fn serial_path(&self, id: &str) -> PathBuf {
        self.vm_dir(id).join("serial.log")
    }
}

/// Where the readings of the running VMs among `slots` come from (see the `stats` module), on
/// the refresh's thread: a slot busy with a request keeps its last reading.
fn live_sources(slots: &[(String, Arc<Mutex<Slot>>)]) -> Vec<super::stats::Source> {
    slots
        .iter()
        .filter_map(|(id, s)| match s.try_lock() {
            Ok(slot) => {
                let vm = slot.vm.as_ref().filter(|vm| vm.exited().is_none())?;
                let dirs = (vm.plan.cgroup_version, vm.plan.cgroup_dirs.clone());
                Some((id.clone(), Some(dirs)))
            }
            Err(_) => Some((id.clone(), None)),
        })
        .collect()
}

/// GetVmInfo's view of one VM: cgroup readings and the isolation report read now (one VM,
/// proven at the moment of asking). ListVms shows the report read when the VM started or was
/// re-attached, and cached readings.
fn info(slot: &Slot) -> VmInfo {
    let live = slot.vm.as_ref().filter(|vm| vm.exited().is_none());
    VmInfo {
        record: slot.rec.clone(),
        stats: live.map(|vm| vm.cgroup_stats()),
        isolation: live.map(|vm| vm.isolation_now()),
    }
}
