//! DeleteVm: stop it if it runs, remove everything of it from the host, give back its address
//! and uid, forget it.

use std::sync::Arc;

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::Manager;
use crate::daemon::state::{Op, VmState};

impl Manager {
    /// DeleteVm: a running VM is stopped gracefully first (within the daemon's stop timeout).
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<(), ManagerError> {
        self.delete_with(id, false).await
    }

    /// DeleteVm; with `force` a running VM is killed at once instead of stopped gracefully.
    pub async fn delete_with(self: &Arc<Self>, id: &str, force: bool) -> Result<(), ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move { m.delete_inner(&id, force).await }).await
    }

    async fn delete_inner(&self, id: &str, force: bool) -> Result<(), ManagerError> {
        let mut slot = self.lock_for(id, Op::Delete).await?;
        if let Some(vm) = slot.vm.take() {
            slot.rec.state = VmState::Stopping;
            self.put(&mut slot.rec).await?;
            let timeout = if force {
                std::time::Duration::ZERO
            } else {
                self.stop_timeout()
            };
            let _ = vm.stop_within(timeout).await;
        }
        self.clean_host(slot.rec.jail_id()).await?;
        // Its files, and those of the warm jail it started in, if it took one.
        let mut dirs = vec![self.vm_dir(id)];
        dirs.extend(
            slot.rec
                .serial_path
                .as_ref()
                .and_then(|p| p.parent())
                .filter(|d| d.starts_with(self.vm_dir("")))
                .map(|d| d.to_owned()),
        );
        let _ = tokio::task::spawn_blocking(move || {
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        })
        .await;
        self.store.delete(id).await?;
        if let Some(a) = slot.rec.address {
            self.addresses.release(a);
        }
        if let Some(uid) = slot.rec.uid {
            self.uids.release(uid, id).await;
        }
        slot.rec.state = VmState::Deleted;
        self.slots.lock().unwrap().remove(id);
        self.stats.forget(id);
        self.events.deleted(id);
        tracing::info!(vm_id = %id, "vm deleted");
        Ok(())
    }
}
