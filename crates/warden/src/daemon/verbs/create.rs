//! CreateVm: validate everything and record the VM as `created`; nothing is made on the host.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::{Manager, Slot};
use crate::daemon::state::VmState;
use crate::daemon::store::{now_ms, VmRecord, VmSpec};
use crate::vm;

impl Manager {
    /// CreateVm: validates everything (sizes, id, asset paths, the jail plan) and records the
    /// VM as `created`. Nothing is created on the host. An empty `id` gets a generated one.
    pub async fn create(
        self: &Arc<Self>,
        id: &str,
        spec: VmSpec,
    ) -> Result<VmRecord, ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.create_inner(&id, spec).await }).await
    }

    async fn create_inner(&self, id: &str, spec: VmSpec) -> Result<VmRecord, ManagerError> {
        let t0 = Instant::now();
        let id = if id.is_empty() {
            generate_id()
        } else {
            id.to_owned()
        };
        let spec = self.check_spec(spec)?;
        let held = self.slots.lock().unwrap().len() as u64;
        if held >= self.cfg.max_vms {
            return Err(ManagerError::TooManyVms { held });
        }
        if let Ok(Some(r)) = self.registry.read(&id) {
            if r.owner != self.owner {
                return Err(ManagerError::IdInUse { id, owner: r.owner });
            }
        }
        let (config, mut options) = self.vm_config(&id, &spec);
        self.restore_options(&spec, &mut options).await?;
        // Addresses are taken at boot; validate with the pool's first one.
        options.network.guest = Some(self.addresses.guest(self.addresses.sample()));
        let plan = vm::plan_vm(&config, &options)?.plan;
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
                return Err(ManagerError::Exists { id });
            }
            slots.insert(
                id.clone(),
                Arc::new(Mutex::new(Slot {
                    rec: crate::daemon::manager::Tracked::new(rec.clone()),
                    vm: None,
                    generation: 0,
                })),
            );
        }
        match self.store.insert(&rec).await {
            Ok(true) => {}
            Ok(false) => return Err(ManagerError::Exists { id }),
            Err(e) => {
                self.slots.lock().unwrap().remove(&id);
                return Err(e.into());
            }
        }
        tracing::info!(vm_id = %id, "vm created");
        self.events.record(&rec);
        self.metrics.observe("create", t0.elapsed());
        Ok(rec)
    }
}

/// `vm-` and 16 hex digits.
fn generate_id() -> String {
    format!("vm-{}", super::random_hex())
}
