//! State-change events, for WatchVms: every state a VM's record takes is compared with the last
//! one seen for that VM, and a change is broadcast. Subscribers that fall too far behind learn
//! it (`Lagged`) and resynchronise from a listing, so a watcher never misses a VM's current
//! state, only intermediate ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::state::VmState;
use super::store::{now_ms, VmRecord};

/// One state change of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEvent {
    /// The VM.
    pub vm_id: String,
    /// Its state before, `None` for a VM that did not exist.
    pub old_state: Option<VmState>,
    /// Its state now.
    pub new_state: VmState,
    /// Why: `created`, `booting`, `booted`, `paused`, `resumed`, `stopping`, the exit reason
    /// (`guest_power_off`, `stopped_by_api`, `oom_killed`, `boot_failed`, ...) for `stopped` and
    /// `failed`, `deleted`.
    pub reason: String,
    /// When, ms since the epoch.
    pub at_unix_ms: i64,
}

/// How many events a slow subscriber may fall behind before it must resynchronise.
const BACKLOG: usize = 4096;

/// The broadcaster and the last state of each VM. One lock covers both, so a subscription and
/// the states it starts from are taken at one instant: the subscriber gets exactly the changes
/// after those states.
#[derive(Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<VmEvent>,
    last: Arc<Mutex<HashMap<String, VmState>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            last: Default::default(),
        }
    }
}

impl Events {
    /// Every change from now on, and each VM's state now.
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<VmEvent>, Vec<(String, VmState)>) {
        let last = self.last.lock().unwrap();
        let rx = self.tx.subscribe();
        let mut states: Vec<(String, VmState)> =
            last.iter().map(|(k, v)| (k.clone(), *v)).collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        (rx, states)
    }

    /// Notes a record's state (as just stored); a change is broadcast.
    pub(crate) fn record(&self, rec: &VmRecord) {
        let mut last = self.last.lock().unwrap();
        let old = last.insert(rec.id.clone(), rec.state);
        if old == Some(rec.state) {
            return;
        }
        let reason = match (old, rec.state) {
            (_, VmState::Created) => "created".to_owned(),
            (Some(VmState::Booting), VmState::Running) => "booted".to_owned(),
            (Some(VmState::Paused), VmState::Running) => "resumed".to_owned(),
            (None, VmState::Running) => "reattached".to_owned(),
            (_, VmState::Stopped | VmState::Failed) => rec
                .exit
                .as_ref()
                .map_or(rec.state.as_str(), |e| e.reason.as_str())
                .to_owned(),
            (_, s) => s.as_str().to_owned(),
        };
        self.send(&rec.id, old, rec.state, reason);
    }

    /// Notes that a VM is gone.
    pub(crate) fn deleted(&self, id: &str) {
        let mut last = self.last.lock().unwrap();
        let old = last.remove(id);
        self.send(id, old, VmState::Deleted, "deleted".into());
    }

    /// Sends under the caller's lock of `last`.
    fn send(&self, id: &str, old: Option<VmState>, new: VmState, reason: String) {
        // No subscriber is not an error.
        let _ = self.tx.send(VmEvent {
            vm_id: id.to_owned(),
            old_state: old,
            new_state: new,
            reason,
            at_unix_ms: now_ms(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, state: VmState) -> VmRecord {
        VmRecord {
            id: id.into(),
            state,
            spec: Default::default(),
            plan: None,
            pid: None,
            start_time: None,
            netns: None,
            tap: None,
            address: None,
            uid: None,
            serial_path: None,
            exit: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_subscriber_gets_the_states_then_each_change_once() {
        let e = Events::default();
        e.record(&rec("a", VmState::Created));
        let (mut rx, states) = e.subscribe();
        assert_eq!(states, vec![("a".to_owned(), VmState::Created)]);
        e.record(&rec("a", VmState::Created));
        e.record(&rec("a", VmState::Booting));
        e.record(&rec("a", VmState::Running));
        e.deleted("a");
        let got: Vec<(Option<VmState>, VmState, String)> =
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(|ev| (ev.old_state, ev.new_state, ev.reason))
                .collect();
        assert_eq!(
            got,
            vec![
                (Some(VmState::Created), VmState::Booting, "booting".into()),
                (Some(VmState::Booting), VmState::Running, "booted".into()),
                (Some(VmState::Running), VmState::Deleted, "deleted".into()),
            ]
        );
        assert!(e.subscribe().1.is_empty());
    }
}
