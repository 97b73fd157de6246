//! Reconciling the store with the host when the daemon starts.
//!
//! - VMs recorded as running or paused whose Firecracker is still the same process (pid and
//!   start time) and answers on its socket are re-attached and stay fully controllable.
//! - VMs that died while the daemon was down are recorded with a reason (Firecracker's logged
//!   exit status, or the cgroup's OOM count) and their host resources are removed.
//! - VMs caught mid-boot or mid-stop are ended and cleaned: a boot that was not confirmed is
//!   not trusted.
//! - Host state is attributed by owner records (see [`jail::owner`]), never by naming: a record
//!   of this instance for a VM its store does not know, or a record whose owner is provably dead
//!   (a `warden run` that was killed, a daemon whose state directory is gone), is removed with
//!   every process still in it. A record of a live foreign owner (another daemon, a running
//!   `warden run`, a library user) is logged and left alone, and anything without a record
//!   (the plain jailer, other tools) is never touched.
//!
//! What to do with a stored VM is decided by [`decide`], a pure function of its state and of
//! what the host shows, so every case is tested without a host.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Mutex;

use jail::error_chain;

use super::error::ManagerError;
use super::manager::{Manager, Slot, Tracked};
use super::state::VmState;
use super::store::{now_ms, ExitCause, ExitRecord, VmRecord};
use super::watch::exit_record;
use crate::vm::{ExitReason, VmHandle};

/// How many stored VMs recovery reconciles at once.
const RECONCILE_AT_ONCE: usize = 32;

pub(crate) async fn recover(m: &Arc<Manager>) -> Result<(), ManagerError> {
    // Snapshots the last daemon was writing when it died: never complete, never listed.
    let snapshots = m.cfg.state_dir.join("snapshots");
    for p in tokio::task::spawn_blocking(move || crate::vm::snapshot::remove_partials(&snapshots))
        .await?
    {
        tracing::warn!(path = %p.display(), "removed a snapshot left half-written by the last daemon");
    }
    let t0 = std::time::Instant::now();
    let records = m.store.list().await?;
    let stored = records.len();
    m.remove_stale_warm_consoles(&records);
    // Every address and uid is marked taken before any VM is reconciled, so ending one VM
    // never frees what another still holds. VMs are then reconciled RECONCILE_AT_ONCE at a
    // time: most of a re-attach is waiting for the VM's own Firecracker to answer.
    let mut known = HashSet::new();
    let mut slots = Vec::with_capacity(records.len());
    for rec in records {
        known.insert(rec.id.clone());
        known.insert(rec.jail_id().to_owned());
        if let Some(a) = rec.address {
            m.addresses.mark(a);
        }
        if let Some(uid) = rec.uid {
            m.uids.mark(uid);
        }
        let id = rec.id.clone();
        let slot = Arc::new(Mutex::new(Slot {
            rec: Tracked::new(rec),
            vm: None,
            generation: 0,
        }));
        m.slots.lock().unwrap().insert(id, slot.clone());
        slots.push(slot);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut first_error = None;
    for slot in slots {
        if tasks.len() >= RECONCILE_AT_ONCE {
            if let Some(Err(e)) = tasks.join_next().await.transpose()? {
                first_error.get_or_insert(e);
            }
        }
        let m = m.clone();
        tasks.spawn(async move {
            let mut slot = slot.lock().await;
            let done = reconcile(&m, &mut slot).await;
            m.events.record(&slot.rec);
            done
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done? {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let reconciled = t0.elapsed();
    let uids = m.uids.held();
    let (m2, known) = (m.clone(), known);
    tokio::task::spawn_blocking(move || {
        remove_orphans(&m2, &known);
        release_stale_uids(&m2, &uids);
    })
    .await?;
    tracing::info!(
        vms = stored,
        reconcile_ms = reconciled.as_millis() as u64,
        total_ms = t0.elapsed().as_millis() as u64,
        "recovery done"
    );
    Ok(())
}

/// A daemon that died during a snapshot may leave Firecracker still writing it: its API then
/// answers nothing until the write is done (seconds for a few GiB), and an attach would judge
/// the VM unresponsive and end it. The chroot's snapshot directory, made just before the
/// snapshot, tells that case apart; the wait is bounded by 30 s plus 1 s per 100 MiB of guest
/// memory.
/// Whether there was such a snapshot (the VM then goes through [`finish_interrupted_snapshot`]).
async fn wait_for_interrupted_snapshot(id: &str, rec: &VmRecord) -> bool {
    let Some(plan) = &rec.plan else { return false };
    if !jail::snapshot::host_dir(plan).exists() {
        return false;
    }
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(30 + u64::from(rec.spec.memory_mib) / 100);
    let client = firecracker_api::Client::new(&plan.socket_path)
        .with_timeout(std::time::Duration::from_secs(2));
    tracing::warn!(vm_id = %id, "the last daemon stopped during a snapshot of this VM; waiting for Firecracker to finish writing it");
    while std::time::Instant::now() < deadline {
        if client.instance_info().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    true
}

/// A daemon that died during a snapshot left the VM paused (its record still says running)
/// and Firecracker's files in the chroot's snapshot directory: both are undone.
async fn finish_interrupted_snapshot(id: &str, vm: &VmHandle, state: VmState) {
    let plan = vm.plan.clone();
    let _ = tokio::task::spawn_blocking(move || jail::snapshot::remove(&plan)).await;
    if state != VmState::Running {
        return;
    }
    let paused = vm
        .client()
        .instance_info()
        .await
        .is_ok_and(|i| i.state == firecracker_api::InstanceState::Paused);
    if paused {
        match vm.resume().await {
            Ok(()) => {
                tracing::warn!(vm_id = %id, "resumed a VM the last daemon left paused (a snapshot it did not finish)")
            }
            Err(e) => {
                tracing::warn!(vm_id = %id, error = %error_chain(&e), "could not resume a VM the last daemon left paused")
            }
        }
    }
}

/// What the host shows of a stored VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Its owner record is ours and its recorded Firecracker still runs.
    Running,
    /// Its owner record is ours (or there is none) and no recorded process runs.
    Gone,
    /// Another live owner holds its id on this host.
    Foreign,
}

/// What recovery does with one stored VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Take charge of the running VM again.
    Reattach,
    /// It died while the daemon was down: record why, and clean.
    RecordExit,
    /// End whatever runs and clean: a boot or stop that was not confirmed.
    EndUnconfirmed,
    /// Nothing should exist; make sure of it.
    Clean,
    /// Its id belongs to someone else now: touch nothing, record that.
    LeaveForeign,
}

/// The decision for one stored VM.
pub(crate) fn decide(state: VmState, seen: Seen) -> Action {
    match (state, seen) {
        (_, Seen::Foreign) => Action::LeaveForeign,
        (VmState::Running | VmState::Paused, Seen::Running) => Action::Reattach,
        (VmState::Running | VmState::Paused, Seen::Gone) => Action::RecordExit,
        (VmState::Booting | VmState::Stopping, _) => Action::EndUnconfirmed,
        (VmState::Created | VmState::Stopped | VmState::Failed | VmState::Deleted, _) => {
            Action::Clean
        }
    }
}

async fn reconcile(m: &Manager, slot: &mut Slot) -> Result<(), ManagerError> {
    let id = slot.rec.id.clone();
    let jail_id = slot.rec.jail_id().to_owned();
    let record = m.registry.read(&jail_id).ok().flatten();
    let seen = match &record {
        Some(r) if r.owner != m.owner => Seen::Foreign,
        _ => match (slot.rec.pid, slot.rec.start_time) {
            (Some(pid), Some(start))
                if jail::proc::is_running(Path::new(jail::proc::PROC), pid, start) =>
            {
                Seen::Running
            }
            _ => Seen::Gone,
        },
    };
    match decide(slot.rec.state, seen) {
        Action::LeaveForeign => {
            let owner = record.map(|r| r.owner.to_string()).unwrap_or_default();
            tracing::warn!(vm_id = %id, %owner, "the id of this VM is held by another owner on this host; its host state was left alone");
            if matches!(
                slot.rec.state,
                VmState::Created | VmState::Stopped | VmState::Failed
            ) {
                return Ok(());
            }
            slot.rec.state = VmState::Failed;
            slot.rec.pid = None;
            slot.rec.exit = Some(ExitRecord {
                reason: ExitCause::DaemonRestart,
                detail: format!("after the daemon restarted, its id was held by {owner}"),
                at_unix_ms: now_ms(),
            });
            m.put(&mut slot.rec).await
        }
        Action::Reattach => {
            let (Some(plan), Some(pid), Some(start)) =
                (slot.rec.plan.clone(), slot.rec.pid, slot.rec.start_time)
            else {
                return end(
                    m,
                    slot,
                    ExitCause::DaemonRestart,
                    "no process was recorded for this VM",
                )
                .await;
            };
            let jail = match record {
                Some(r) => jail::Jail::adopt(r, &m.registry, m.host.clone()),
                None => {
                    // A running VM without a record (its /run was wiped): record it again.
                    let r = jail::OwnerRecord {
                        id: jail_id.clone(),
                        owner: m.owner.clone(),
                        plan,
                        firecracker: Some(jail::owner::ProcessRef {
                            pid,
                            start_time: start,
                        }),
                        reserved_at_unix_ms: now_ms() as u64,
                        // The daemon holds its VMs' uids until DeleteVm, not with the jail.
                        uid_leased: false,
                    };
                    if m.registry.reserve(&r).is_err() {
                        return end(
                            m,
                            slot,
                            ExitCause::DaemonRestart,
                            "its owner record could not be made again",
                        )
                        .await;
                    }
                    jail::Jail::adopt(r, &m.registry, m.host.clone())
                }
            };
            let interrupted = wait_for_interrupted_snapshot(&id, &slot.rec).await;
            let attached = VmHandle::attach(
                &id,
                jail,
                pid,
                start,
                slot.rec.serial_path.clone(),
                m.cfg.serial_log_max_bytes as usize,
                m.stop_timeout(),
            )
            .await;
            match attached {
                Ok(Some(vm)) => {
                    if interrupted {
                        finish_interrupted_snapshot(&id, &vm, slot.rec.state).await;
                    }
                    slot.generation += 1;
                    m.watch(&id, &vm, slot.generation);
                    tracing::info!(vm_id = %id, pid, state = %slot.rec.state, "re-attached to running vm");
                    slot.vm = Some(vm);
                    Ok(())
                }
                Ok(None) => record_exit(m, slot).await,
                Err(e) => {
                    end(
                        m,
                        slot,
                        ExitCause::Unresponsive,
                        &format!(
                            "its API did not answer after the daemon restarted: {}",
                            error_chain(&e)
                        ),
                    )
                    .await
                }
            }
        }
        Action::RecordExit => record_exit(m, slot).await,
        Action::EndUnconfirmed => {
            // The record's removal kills the recorded Firecracker and every task in the VM's
            // cgroups before it removes anything.
            let (reason, detail) = if slot.rec.state == VmState::Booting {
                (
                    ExitCause::DaemonRestart,
                    "the daemon stopped while this VM was booting; boot it again",
                )
            } else {
                (
                    ExitCause::StoppedByApi,
                    "the stop was finished after the daemon restarted",
                )
            };
            end(m, slot, reason, detail).await
        }
        Action::Clean => m.clean_host(&jail_id).await,
    }
}

async fn record_exit(m: &Manager, slot: &mut Slot) -> Result<(), ManagerError> {
    let rec = slot.rec.clone();
    let record = tokio::task::spawn_blocking(move || died_while_down(&rec)).await?;
    tracing::warn!(vm_id = %slot.rec.id, reason = %record.reason, "vm exited while the daemon was down; cleaning");
    m.clean_host(slot.rec.jail_id()).await?;
    slot.rec.state = VmState::Stopped;
    slot.rec.pid = None;
    slot.rec.exit = Some(record);
    m.put(&mut slot.rec).await
}

/// Cleans and records a VM as failed (or stopped, for finished stops) with a reason.
async fn end(
    m: &Manager,
    slot: &mut Slot,
    reason: ExitCause,
    detail: &str,
) -> Result<(), ManagerError> {
    m.clean_host(slot.rec.jail_id()).await?;
    slot.rec.state = if reason == ExitCause::StoppedByApi {
        VmState::Stopped
    } else {
        VmState::Failed
    };
    slot.rec.pid = None;
    slot.rec.exit = Some(ExitRecord {
        reason,
        detail: detail.into(),
        at_unix_ms: now_ms(),
    });
    tracing::warn!(vm_id = %slot.rec.id, %reason, detail, "vm ended during recovery; host resources cleaned");
    m.put(&mut slot.rec).await
}

/// Why a VM that is gone ended, from what it left: the cgroup's OOM count, or Firecracker's
/// logged exit status.
fn died_while_down(rec: &VmRecord) -> ExitRecord {
    let Some(plan) = &rec.plan else {
        return ExitRecord {
            reason: ExitCause::Unknown,
            detail: "exited while the daemon was down".into(),
            at_unix_ms: now_ms(),
        };
    };
    let stats = jail::cgroup::stats(plan.cgroup_version, &plan.cgroup_dirs);
    let log = crate::vm::read_tail(&plan.log_file, crate::vm::TAIL_BYTES);
    // Not our child, never stopped or killed by us: the OOM count, else what it logged.
    let reason: ExitReason = crate::vm::classify(&crate::vm::Ended {
        oom_kills: stats.oom_kills,
        log: &log,
        ..Default::default()
    });
    let mut r = exit_record(&reason, &log);
    r.detail = format!("{} while the daemon was down", r.detail);
    r
}

/// Removes the host state of every owner record that is this instance's and unknown to its
/// store, or whose owner is provably dead; leaves every other record alone. Records are found in
/// the registry and, for jails that outlived it (a reboot), in this layout's jail directories.
fn remove_orphans(m: &Manager, known: &HashSet<String>) {
    let cfg = m.config();
    let layout = jail::Layout::new(
        &cfg.chroot_base,
        &cfg.firecracker_binary,
        &cfg.parent_cgroup,
        jail::CgroupVersion::V1,
        jail::cgroup::Hierarchy::empty(),
    );
    use jail::layout::Found;
    use jail::owner::Verdict;
    let found = layout.scan(
        &m.registry,
        &m.owner,
        &|id| known.contains(id),
        Path::new("/proc"),
    );
    for f in found {
        match f {
            Found::Unreadable { id, why } => {
                tracing::warn!(orphan = %id, %why, "left a VM's host state alone: its owner record cannot be read")
            }
            Found::Record(_, Verdict::Known) => {}
            Found::Record(record, Verdict::Foreign) => {
                tracing::warn!(vm = %record.id, owner = %record.owner, "left a VM of another live owner alone");
            }
            Found::Record(record, verdict) => {
                let (id, owner) = (record.id.clone(), record.owner.to_string());
                match jail::lifecycle::remove(*record, &m.registry, m.host.clone()) {
                    Ok(()) => {
                        tracing::warn!(orphan = %id, %owner, ?verdict, "removed the host state of a VM that no live owner knows")
                    }
                    Err(e) => {
                        tracing::error!(orphan = %id, %owner, error = %error_chain(&e), "could not remove an orphaned VM's host state")
                    }
                }
            }
        }
    }
}

/// Releases uid leases that this instance holds for VMs its store no longer has, or whose holder
/// is provably dead. Another live owner's leases stay.
fn release_stale_uids(m: &Manager, ours: &HashSet<u32>) {
    for uid in m.registry.drop_unreadable_uid_leases() {
        tracing::warn!(uid, "removed an unreadable uid lease");
    }
    for lease in m.registry.uid_leases() {
        let stale = if lease.owner == m.owner {
            !ours.contains(&lease.uid)
        } else {
            lease.owner.liveness(Path::new("/proc")) == jail::owner::Liveness::Dead
        };
        if stale {
            let holder = lease.owner.clone();
            match m.registry.release_uid(lease.uid, &holder, &lease.vm_id) {
                Ok(()) => {
                    tracing::info!(uid = lease.uid, vm = %lease.vm_id, owner = %holder, "released a uid no live VM holds")
                }
                Err(e) => {
                    tracing::warn!(uid = lease.uid, error = %error_chain(&e), "could not release a stale uid lease")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stored_state_gets_its_action() {
        use Action::*;
        use VmState::*;
        let cases = [
            (Running, Seen::Running, Reattach),
            (Paused, Seen::Running, Reattach),
            (Running, Seen::Gone, RecordExit),
            (Paused, Seen::Gone, RecordExit),
            (Booting, Seen::Running, EndUnconfirmed),
            (Booting, Seen::Gone, EndUnconfirmed),
            (Stopping, Seen::Running, EndUnconfirmed),
            (Created, Seen::Gone, Clean),
            (Stopped, Seen::Running, Clean),
            (Failed, Seen::Gone, Clean),
        ];
        for (state, seen, want) in cases {
            assert_eq!(decide(state, seen), want, "{state:?} {seen:?}");
        }
        for state in VmState::ALL {
            assert_eq!(
                decide(state, Seen::Foreign),
                LeaveForeign,
                "another owner's id is never touched, whatever our store says ({state:?})"
            );
        }
    }
}
