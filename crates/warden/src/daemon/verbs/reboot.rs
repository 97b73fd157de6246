//! RebootVm: a stop and a boot with the same configuration, under one lock.

use std::sync::Arc;

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::Manager;
use crate::daemon::state::{Op, VmState};
use crate::daemon::store::ExitCause;

impl Manager {
    /// RebootVm.
    pub async fn reboot(self: &Arc<Self>, id: &str) -> Result<VmState, ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move {
            let mut slot = m.lock_for(&id, Op::Reboot).await?;
            m.stop_locked(&mut slot, m.stop_timeout(), ExitCause::Rebooted)
                .await?;
            m.boot_locked(&mut slot).await
        })
        .await
    }
}
