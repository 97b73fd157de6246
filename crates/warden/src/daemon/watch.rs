//! The exit watcher: one task per running VM that records its exit when it ends on its own
//! (guest power-off, OOM kill, crash, a kill from outside). Stops asked for through the API
//! record their own outcome.

use super::manager::Manager;
use super::state::VmState;
use super::store::{now_ms, ExitCause, ExitRecord};
use crate::vm::{ExitReason, VmHandle};

impl Manager {
    /// Watches the run `generation` of VM `id`.
    pub(crate) fn watch(&self, id: &str, vm: &VmHandle, generation: u64) {
        let mut exit_rx = vm.exit_watch();
        let Ok(slot) = self.slot(id) else {
            return;
        };
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let events = self.events.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let Ok(exit) = exit_rx.wait_for(Option::is_some).await.map(|e| e.clone()) else {
                return;
            };
            let exit = exit.expect("waited for Some");
            let mut slot = slot.lock().await;
            if slot.generation != generation
                || !matches!(slot.rec.state, VmState::Running | VmState::Paused)
            {
                return;
            }
            slot.vm = None;
            let record = exit_record(&exit.reason, &exit.output);
            tracing::info!(vm_id = %id, reason = %record.reason, detail = %record.detail, "vm exited; host resources cleaned");
            metrics.failure(record.reason.as_str());
            slot.rec.state = VmState::Stopped;
            slot.rec.pid = None;
            slot.rec.exit = Some(record);
            slot.rec.updated_at = now_ms();
            if let Err(e) = store.put(&slot.rec).await {
                tracing::error!(vm_id = %id, error = %jail::error_chain(&e), "recording the exit failed");
            }
            events.record(&slot.rec);
        });
    }
}

/// The stored cause of a library exit reason.
pub(crate) fn cause(reason: &ExitReason) -> ExitCause {
    match reason {
        ExitReason::GuestPowerOff => ExitCause::GuestPowerOff,
        ExitReason::Stopped => ExitCause::Stopped,
        ExitReason::Killed => ExitCause::Killed,
        ExitReason::OomKilled => ExitCause::OomKilled,
        ExitReason::Signaled { .. } => ExitCause::Signaled,
        ExitReason::FirecrackerError { .. } => ExitCause::FirecrackerError,
        ExitReason::Unknown => ExitCause::Unknown,
    }
}

/// How an exit is recorded: its cause, and for people the reason with Firecracker's last words
/// when it failed.
pub(crate) fn exit_record(reason: &ExitReason, output: &str) -> ExitRecord {
    let mut detail = reason.to_string();
    if matches!(reason, ExitReason::FirecrackerError { .. }) && !output.is_empty() {
        detail.push_str(": ");
        detail.push_str(output.lines().last().unwrap_or_default());
    }
    ExitRecord {
        reason: cause(reason),
        detail,
        at_unix_ms: now_ms(),
    }
}
