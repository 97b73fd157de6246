//! BootVm: lease what the VM holds (address, uid), record the intent, then make its jail and
//! start it through the library.

use std::sync::Arc;
use std::time::Instant;

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::{Manager, Slot};
use crate::daemon::state::{Op, VmState};
use crate::daemon::store::{now_ms, ExitCause, ExitRecord};
use crate::vm;

impl Manager {
    /// BootVm.
    pub async fn boot(self: &Arc<Self>, id: &str) -> Result<VmState, ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move {
            let mut slot = m.lock_for(&id, Op::Boot).await?;
            m.boot_locked(&mut slot).await
        })
        .await
    }

    /// Boots the locked VM (BootVm, and the second half of RebootVm).
    pub(crate) async fn boot_locked(&self, slot: &mut Slot) -> Result<VmState, ManagerError> {
        let _permit =
            self.boots
                .clone()
                .try_acquire_owned()
                .map_err(|_| ManagerError::BootsBusy {
                    max: self.cfg.max_concurrent_boots,
                })?;
        let t0 = Instant::now();
        let id = slot.rec.id.clone();
        let networked = slot.rec.spec.enable_networking;
        if let Some(state) = self.boot_from_pool(slot, t0).await {
            return state;
        }
        // A networked VM's namespace is made with its network; otherwise an empty one if asked.
        let netns = (self.cfg.netns || networked).then(|| jail::net::netns::name_for(&id));
        if networked
            && self.cfg.network_mode == jail::net::NetMode::Bridge
            && slot.rec.address.is_none()
        {
            slot.rec.address = Some(self.addresses.take(&id)?);
        }
        if slot.rec.uid.is_none() {
            slot.rec.uid = self.uids.lease(&id).await?;
        }
        // Intent first: a crash from here on leaves a record of what may exist.
        slot.rec.state = VmState::Booting;
        slot.rec.netns = netns;
        slot.rec.tap = networked.then(|| jail::net::TAP_NAME.to_owned());
        slot.rec.pid = None;
        slot.rec.start_time = None;
        slot.rec.exit = None;
        // A VM that ran in a warm jail before has its console there; this run writes its own.
        if let Some(old) = slot.rec.serial_path.replace(self.serial_path(&id)) {
            self.remove_warm_console(&id, &old);
        }
        self.put(&mut slot.rec).await?;
        let started = async {
            let dir = self.vm_dir(&id);
            std::fs::create_dir_all(&dir).map_err(|source| ManagerError::Os {
                what: format!("creating {}", dir.display()),
                source,
            })?;
            // A first boot in a warm jail left links to its console here; this run writes
            // files of its own.
            self.unlink_console(&id);
            let (mut config, mut options) = self.vm_config(&id, &slot.rec.spec);
            self.restore_options(&slot.rec.spec, &mut options).await?;
            config.enable_networking = networked;
            if let Some(uid) = slot.rec.uid {
                options.jailer.uid = uid;
                options.jailer.gid = uid;
            }
            options.network.guest = slot.rec.address.map(|a| self.addresses.guest(a));
            let phases = vm::Phases::start();
            let planned = vm::plan_vm(&config, &options)?;
            slot.rec.plan = Some(planned.plan.clone());
            self.put(&mut slot.rec).await?;
            Ok::<_, ManagerError>(vm::start_planned(&config, &options, planned, phases).await?)
        }
        .await;
        self.booted(slot, started, t0).await
    }

    /// Makes `<vm dir>/serial.log` (and `.stderr`) of VM `id` links to the console files of
    /// the warm jail `jail_id` it runs in (the state directory is root's alone).
    fn link_console(&self, id: &str, jail_id: &str) -> Result<(), ManagerError> {
        let dir = self.vm_dir(id);
        std::fs::create_dir_all(&dir).map_err(|source| ManagerError::Os {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        self.unlink_console(id);
        let (target, link) = (self.serial_path(jail_id), self.serial_path(id));
        for (t, l) in [
            (target.clone(), link.clone()),
            (
                vm::config::Serial::stderr_path(&target),
                vm::config::Serial::stderr_path(&link),
            ),
        ] {
            std::os::unix::fs::symlink(&t, &l).map_err(|source| ManagerError::Os {
                what: format!("linking {} to {}", l.display(), t.display()),
                source,
            })?;
        }
        Ok(())
    }

    /// Removes the console directory of the warm jail VM `id` ran in (`old`: its console file),
    /// once that jail is gone. Nothing else: a VM's own directory stays.
    fn remove_warm_console(&self, id: &str, old: &std::path::Path) {
        let Some(dir) = old.parent() else { return };
        let is_warm = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(super::super::pool::PREFIX));
        if is_warm && dir.parent() == Some(self.vm_dir("").as_path()) && dir != self.vm_dir(id) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Removes console links [`Self::link_console`] made (never a file).
    fn unlink_console(&self, id: &str) {
        let link = self.serial_path(id);
        for p in [vm::config::Serial::stderr_path(&link), link] {
            if p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    /// Records the outcome of a boot (either path).
    async fn booted(
        &self,
        slot: &mut Slot,
        started: Result<vm::VmHandle, ManagerError>,
        t0: Instant,
    ) -> Result<VmState, ManagerError> {
        let id = slot.rec.id.clone();
        match started {
            Ok(vm) => {
                slot.rec.state = VmState::Running;
                slot.rec.pid = Some(vm.pid);
                slot.rec.start_time = vm.start_time();
                slot.rec.plan = Some(vm.plan.clone());
                slot.generation += 1;
                self.watch(&id, &vm, slot.generation);
                self.stats.started(&id, vm.cgroup_stats());
                slot.vm = Some(vm);
                self.put(&mut slot.rec).await?;
                tracing::info!(vm_id = %id, pid = slot.rec.pid, jail = %slot.rec.jail_id(), "vm running");
                self.metrics.observe("boot", t0.elapsed());
                Ok(VmState::Running)
            }
            Err(e) => {
                // The library removed what it made; a refused id touched nothing of its owner.
                let detail = e.chain();
                slot.rec.state = VmState::Failed;
                slot.rec.exit = Some(ExitRecord {
                    reason: ExitCause::BootFailed,
                    detail: detail.clone(),
                    at_unix_ms: now_ms(),
                });
                self.put(&mut slot.rec).await?;
                self.metrics.failure(ExitCause::BootFailed.as_str());
                tracing::warn!(vm_id = %id, error = %detail, "boot failed");
                Err(e)
            }
        }
    }

    /// Boots the VM in a warm jail of the pool when one is ready and fits: a first boot (no uid
    /// of its own yet), without networking. `None`: take the normal path (a warm jail that did
    /// not fit went back to the pool untouched).
    async fn boot_from_pool(
        &self,
        slot: &mut Slot,
        t0: Instant,
    ) -> Option<Result<VmState, ManagerError>> {
        if self.cfg.pool_size == 0 {
            return None;
        }
        let rec = &slot.rec;
        let eligible = !rec.spec.enable_networking && rec.uid.is_none();
        let Some(warm) = eligible.then(|| self.pool.take()).flatten() else {
            self.metrics.pool_boot(false);
            return None;
        };
        let id = rec.id.clone();
        let (config, mut options) = self.vm_config(&id, &rec.spec);
        if let Err(e) = self.restore_options(&rec.spec, &mut options).await {
            self.pool.put_back(warm);
            return Some(Err(e));
        }
        let planned = match warm.plan_for(&config, &options) {
            Ok(p) => p,
            Err(e) => {
                self.pool.put_back(warm);
                return Some(Err(e.into()));
            }
        };
        if let Err(misfit) = warm.fits(&planned) {
            tracing::debug!(vm_id = %id, jail = %warm.id(), %misfit, "the VM does not fit a warm jail; booting it the normal way");
            self.pool.put_back(warm);
            self.metrics.pool_boot(false);
            return None;
        }
        self.metrics.pool_boot(true);
        let jail_id = warm.id().to_owned();
        // The jail's uid becomes the VM's (held until DeleteVm, as every VM's).
        if self.cfg.jail_id_range.is_some() {
            let (registry, owner, uid, from, to) = (
                self.registry.clone(),
                self.owner.clone(),
                warm.uid(),
                jail_id.clone(),
                id.clone(),
            );
            let relabeled =
                tokio::task::spawn_blocking(move || registry.relabel_uid(uid, &owner, &from, &to))
                    .await;
            match relabeled {
                Ok(Ok(())) => slot.rec.uid = Some(warm.uid()),
                Ok(Err(e)) => {
                    warm.discard().await;
                    return Some(Err(ManagerError::Os {
                        what: "passing the warm jail's uid lease to the VM".into(),
                        source: std::io::Error::other(jail::error_chain(&e)),
                    }));
                }
                Err(e) => {
                    warm.discard().await;
                    return Some(Err(e.into()));
                }
            }
        }
        // Intent first, as on the normal path: from here the record names the jail.
        slot.rec.state = VmState::Booting;
        slot.rec.plan = Some(planned.plan.clone());
        slot.rec.netns = planned
            .plan
            .netns
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        slot.rec.tap = None;
        slot.rec.pid = None;
        slot.rec.start_time = None;
        slot.rec.exit = None;
        slot.rec.serial_path = Some(self.serial_path(&jail_id));
        // The console stays in the file the jail's Firecracker writes; the VM's usual path
        // names it too.
        if let Err(e) = self.link_console(&id, &jail_id) {
            warm.discard().await;
            return Some(Err(e));
        }
        if let Err(e) = self.put(&mut slot.rec).await {
            warm.discard().await;
            return Some(Err(e));
        }
        let started = warm
            .start(&config, &options, planned)
            .await
            .map_err(ManagerError::from);
        Some(self.booted(slot, started, t0).await)
    }
}
