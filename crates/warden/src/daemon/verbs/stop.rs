//! ShutdownVm: a graceful stop within a timeout (or a kill), then everything of the VM removed
//! from the host, whatever the process did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::{Manager, Slot};
use crate::daemon::state::{Op, VmState};
use crate::daemon::store::{now_ms, ExitCause, ExitRecord};
use crate::vm::ExitReason;

impl Manager {
    /// ShutdownVm: graceful within `timeout` (the daemon's default when `None`; zero or `force`
    /// kills at once), then everything of the VM is removed from the host.
    pub async fn shutdown(
        self: &Arc<Self>,
        id: &str,
        force: bool,
        timeout: Option<Duration>,
    ) -> Result<VmState, ManagerError> {
        let (m, id) = (self.clone(), id.to_owned());
        to_completion(async move {
            let mut slot = m.lock_for(&id, Op::Shutdown).await?;
            let timeout = if force {
                Duration::ZERO
            } else {
                timeout.unwrap_or(m.stop_timeout())
            };
            m.stop_locked(&mut slot, timeout, ExitCause::StoppedByApi)
                .await?;
            Ok(VmState::Stopped)
        })
        .await
    }

    /// Stops the locked VM and records `cause`. A failed stop leaves the VM `failed` with the
    /// reason in its exit record; a failed removal is also returned.
    pub(crate) async fn stop_locked(
        &self,
        slot: &mut Slot,
        timeout: Duration,
        cause: ExitCause,
    ) -> Result<(), ManagerError> {
        let t0 = Instant::now();
        slot.rec.state = VmState::Stopping;
        self.put(&mut slot.rec).await?;
        let outcome = match slot.vm.take() {
            Some(vm) => vm
                .stop_within(timeout)
                .await
                .map(|e| e.reason)
                .map_err(|e| jail::error_chain(&e)),
            None => Ok(ExitReason::Stopped),
        };
        // Whatever the process did, make sure nothing of it is left.
        let leftover = self.clean_host(slot.rec.jail_id()).await.err();
        slot.rec.pid = None;
        let detail = match (&outcome, &leftover) {
            (Err(e), _) => e.clone(),
            (_, Some(e)) => e.chain(),
            (Ok(r), None) => format!("stopped by the API ({r})"),
        };
        slot.rec.state = if outcome.is_ok() && leftover.is_none() {
            VmState::Stopped
        } else {
            VmState::Failed
        };
        slot.rec.exit = Some(ExitRecord {
            reason: cause,
            detail,
            at_unix_ms: now_ms(),
        });
        self.put(&mut slot.rec).await?;
        self.metrics.observe("stop", t0.elapsed());
        leftover.map_or(Ok(()), Err)
    }
}
