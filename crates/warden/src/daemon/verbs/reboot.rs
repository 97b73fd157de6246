//! RebootVm: a stop and a boot with the same configuration, under one lock.

use std::sync::Arc;

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::Manager;
use crate::daemon::state::{Op, VmState};
use crate::daemon::store::ExitCause;

impl Manager {
    /// RebootVm: a graceful stop (within the daemon's stop timeout), then a boot.
    pub async fn reboot(self: &Arc<Self>, id: &str) -> Result<VmState, ManagerError> {
        self.reboot_with(id, false).await
    }

    /// RebootVm; with `force` the VM is killed at once instead of stopped gracefully.
    pub async fn reboot_with(
        self: &Arc<Self>,
        id: &str,
        force: bool,
    ) -> Result<VmState, ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move {
            let mut slot = m.lock_for(&id, Op::Reboot).await?;
            let timeout = if force {
                std::time::Duration::ZERO
            } else {
                m.stop_timeout()
            };
            m.stop_locked(&mut slot, timeout, ExitCause::Rebooted)
                .await?;
            m.boot_locked(&mut slot).await
        })
        .await
    }
}
