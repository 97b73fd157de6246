//! PauseVm and ResumeVm: Firecracker's vCPUs stopped and started again; the jail is untouched.

use std::sync::Arc;

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::Manager;
use crate::daemon::state::{Op, VmState};

impl Manager {
    /// PauseVm.
    pub async fn pause(self: &Arc<Self>, id: &str) -> Result<VmState, ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move {
            let mut slot = m.lock_for(&id, Op::Pause).await?;
            let vm = slot
                .vm
                .as_ref()
                .ok_or(ManagerError::NotLive { id: id.clone() })?;
            vm.pause().await?;
            slot.rec.state = VmState::Paused;
            m.put(&mut slot.rec).await?;
            Ok(VmState::Paused)
        })
        .await
    }

    /// ResumeVm.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<VmState, ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move {
            let mut slot = m.lock_for(&id, Op::Resume).await?;
            let vm = slot
                .vm
                .as_ref()
                .ok_or(ManagerError::NotLive { id: id.clone() })?;
            vm.resume().await?;
            slot.rec.state = VmState::Running;
            m.put(&mut slot.rec).await?;
            Ok(VmState::Running)
        })
        .await
    }
}
