//! Removing a VM's host state: through its owner record, and only when this instance owns it.

use super::error::ManagerError;
use super::manager::Manager;

impl Manager {
    /// Removes everything of VM `id` on the host that this instance owns, from its owner record
    /// (idempotent: a VM already removed has no record). A record of another owner is never
    /// touched. Runs on the blocking pool.
    pub(crate) async fn clean_host(&self, id: &str) -> Result<(), ManagerError> {
        let registry = self.registry.clone();
        let owner = self.owner.clone();
        let id = id.to_owned();
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || {
            match jail::lifecycle::remove_owned(&id, &owner, &registry, host)? {
                jail::lifecycle::Owned::Foreign(holder) => {
                    tracing::warn!(vm_id = %id, owner = %holder, "host state of this id belongs to another owner; left alone");
                    Ok(())
                }
                jail::lifecycle::Owned::Removed | jail::lifecycle::Owned::Nothing => Ok(()),
            }
        })
        .await?
    }
}
