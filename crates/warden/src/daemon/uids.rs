//! Per-VM jail uids: one uid (and the gid of the same number) of `jail_id_range` per VM, leased
//! host-wide in the registry (so another daemon or a `warden run` never gets the same one) and
//! held from the first boot until DeleteVm.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use super::error::ManagerError;

/// The uids this daemon's VMs hold.
pub(crate) struct UidLeases {
    range: Option<(u32, u32)>,
    registry: jail::Registry,
    owner: jail::Owner,
    held: Mutex<BTreeSet<u32>>,
}

impl UidLeases {
    /// Leases from `range` (`None`: single-uid mode, every VM runs as the jailer uid).
    pub(crate) fn new(
        range: Option<(u32, u32)>,
        registry: jail::Registry,
        owner: jail::Owner,
    ) -> Self {
        Self {
            range,
            registry,
            owner,
            held: Mutex::default(),
        }
    }

    /// A free uid for VM `id`, leased host-wide (`None` in single-uid mode).
    pub(crate) async fn lease(&self, id: &str) -> Result<Option<u32>, ManagerError> {
        let Some(range) = self.range else {
            return Ok(None);
        };
        let skip = self.held.lock().unwrap().clone();
        let (registry, owner, vm) = (self.registry.clone(), self.owner.clone(), id.to_owned());
        let leased =
            tokio::task::spawn_blocking(move || registry.lease_uid(range, &skip, &vm, &owner))
                .await??;
        let uid = leased.ok_or_else(|| ManagerError::NoFreeUid {
            id: id.to_owned(),
            range,
        })?;
        self.held.lock().unwrap().insert(uid);
        Ok(Some(uid))
    }

    /// Marks a uid a stored VM holds (at recovery).
    pub(crate) fn mark(&self, uid: u32) {
        self.held.lock().unwrap().insert(uid);
    }

    /// Every uid this daemon's VMs hold.
    pub(crate) fn held(&self) -> HashSet<u32> {
        self.held.lock().unwrap().iter().copied().collect()
    }

    /// Gives VM `id`'s uid back (at DeleteVm). A lease that is already gone is fine.
    pub(crate) async fn release(&self, uid: u32, id: &str) {
        let (registry, owner, vm) = (self.registry.clone(), self.owner.clone(), id.to_owned());
        let released =
            tokio::task::spawn_blocking(move || registry.release_uid(uid, &owner, &vm)).await;
        if let Ok(Err(e)) = released {
            tracing::warn!(vm_id = %id, uid, error = %jail::error_chain(&e), "releasing the VM's uid lease failed");
        }
        self.held.lock().unwrap().remove(&uid);
    }
}
