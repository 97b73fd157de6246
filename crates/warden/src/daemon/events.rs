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
    /// `failed`, `deleted`, and `snapshot_taken` (see `snapshot`).
    pub reason: String,
    /// When, ms since the epoch.
    pub at_unix_ms: i64,
    /// With reason `snapshot_taken`: the snapshot just written. The VM runs on (old and new
    /// state are both `running`) or was left paused (`running` -> `paused`).
    pub snapshot: Option<String>,
    /// For a VM restored from a snapshot (RestoreVm), that snapshot's name, on each of its
    /// events but `deleted`.
    pub restored_from: Option<String>,
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
        self.send(VmEvent {
            vm_id: rec.id.clone(),
            old_state: old,
            new_state: rec.state,
            reason,
            at_unix_ms: now_ms(),
            snapshot: None,
            restored_from: rec.spec.restore_from.clone(),
        });
    }

    /// Notes that snapshot `name` of a VM was written; the record has the VM's state after it
    /// (`running`, or `paused` when it was left paused). Always broadcast, even without a state
    /// change: it is how a watcher learns of the snapshot.
    pub(crate) fn snapshot_taken(&self, rec: &VmRecord, name: &str) {
        let mut last = self.last.lock().unwrap();
        let old = last.insert(rec.id.clone(), rec.state);
        self.send(VmEvent {
            vm_id: rec.id.clone(),
            old_state: old,
            new_state: rec.state,
            reason: "snapshot_taken".into(),
            at_unix_ms: now_ms(),
            snapshot: Some(name.to_owned()),
            restored_from: rec.spec.restore_from.clone(),
        });
    }

    /// Notes that a VM is gone.
    pub(crate) fn deleted(&self, id: &str) {
        let mut last = self.last.lock().unwrap();
        let old = last.remove(id);
        self.send(VmEvent {
            vm_id: id.to_owned(),
            old_state: old,
            new_state: VmState::Deleted,
            reason: "deleted".into(),
            at_unix_ms: now_ms(),
            snapshot: None,
            restored_from: None,
        });
    }

    /// Sends under the caller's lock of `last`.
    fn send(&self, ev: VmEvent) {
        // No subscriber is not an error.
        let _ = self.tx.send(ev);
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

    #[test]
    fn a_snapshot_is_an_event_even_when_the_state_stays_and_clones_name_their_snapshot() {
        let e = Events::default();
        let mut a = rec("a", VmState::Running);
        e.record(&a);
        let (mut rx, _) = e.subscribe();
        e.snapshot_taken(&a, "base");
        a.state = VmState::Paused;
        e.snapshot_taken(&a, "second");
        let mut clone = rec("c", VmState::Created);
        clone.spec.restore_from = Some("base".into());
        e.record(&clone);
        type Seen = (
            Option<VmState>,
            VmState,
            String,
            Option<String>,
            Option<String>,
        );
        let got: Vec<Seen> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|ev| {
                (
                    ev.old_state,
                    ev.new_state,
                    ev.reason,
                    ev.snapshot,
                    ev.restored_from,
                )
            })
            .collect();
        let base = || Some("base".to_owned());
        assert_eq!(
            got,
            vec![
                (
                    Some(VmState::Running),
                    VmState::Running,
                    "snapshot_taken".into(),
                    base(),
                    None
                ),
                (
                    Some(VmState::Running),
                    VmState::Paused,
                    "snapshot_taken".into(),
                    Some("second".into()),
                    None
                ),
                (None, VmState::Created, "created".into(), None, base()),
            ]
        );
        // The paused state is what a new subscriber starts from.
        assert!(e.subscribe().1.contains(&("a".to_owned(), VmState::Paused)));
    }
}
