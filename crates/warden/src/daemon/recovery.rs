//! Reconciling the store with the host when the daemon starts.
//!
//! - VMs recorded as running or paused whose Firecracker is still the same process (pid and
//!   start time) and answers on its socket are re-attached and stay fully controllable.
//! - VMs that died while the daemon was down are recorded with a reason (Firecracker's logged
//!   exit status, or the cgroup's OOM count) and their host resources are removed.
//! - VMs caught mid-boot or mid-stop are ended and cleaned: a boot that was not confirmed is
//!   not trusted.
//! - Jail directories, cgroup directories and network namespaces that carry warden's naming
//!   but belong to no known VM are removed (after killing a process still in them), and logged.
//!   Nothing outside `<chroot_dir>/<firecracker>/`, `<cgroup>/<parent_cgroup>/` and
//!   `/var/run/netns/fc-vm-*` is ever touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::manager::{error_chain, exit_record, ErrorCode, Manager, ManagerError, Slot};
use super::state::VmState;
use super::store::{now_ms, ExitRecord, VmRecord};
use crate::vm::{ExitReason, VmHandle};

pub(crate) async fn recover(m: &Arc<Manager>) -> Result<(), ManagerError> {
    let records = m
        .store
        .list()
        .await
        .map_err(|e| ManagerError::new(ErrorCode::Internal, error_chain(&e)))?;
    let mut known = HashSet::new();
    for rec in records {
        known.insert(rec.id.clone());
        if let Some(a) = rec.address {
            m.addresses.lock().unwrap().insert(u32::from(a));
        }
        let id = rec.id.clone();
        let slot = Arc::new(Mutex::new(Slot {
            rec,
            vm: None,
            generation: 0,
        }));
        m.slots.lock().unwrap().insert(id, slot.clone());
        let mut slot = slot.lock().await;
        reconcile(m, &mut slot).await?;
    }
    remove_orphans(m, &known);
    Ok(())
}

async fn reconcile(m: &Manager, slot: &mut Slot) -> Result<(), ManagerError> {
    let id = slot.rec.id.clone();
    match slot.rec.state {
        VmState::Running | VmState::Paused => {
            let (Some(plan), Some(pid), Some(start)) =
                (slot.rec.plan.clone(), slot.rec.pid, slot.rec.start_time)
            else {
                return end(
                    m,
                    slot,
                    "daemon_restart",
                    "no process was recorded for this VM",
                )
                .await;
            };
            match VmHandle::attach(
                &id,
                plan,
                pid,
                start,
                slot.rec.serial_path.clone(),
                m.stop_timeout(),
            )
            .await
            {
                Ok(Some(vm)) => {
                    slot.generation += 1;
                    m.watch(&id, &vm, slot.generation);
                    tracing::info!(vm_id = %id, pid, state = %slot.rec.state, "re-attached to running vm");
                    slot.vm = Some(vm);
                    Ok(())
                }
                Ok(None) => {
                    let record = died_while_down(&slot.rec);
                    tracing::warn!(vm_id = %id, reason = %record.reason, "vm exited while the daemon was down; cleaning");
                    m.clean_host(&slot.rec)?;
                    slot.rec.state = VmState::Stopped;
                    slot.rec.pid = None;
                    slot.rec.exit = Some(record);
                    m.put(&mut slot.rec).await
                }
                Err(e) => {
                    kill_if_same(pid, start);
                    end(
                        m,
                        slot,
                        "unresponsive",
                        &format!(
                            "its API did not answer after the daemon restarted: {}",
                            error_chain(&e)
                        ),
                    )
                    .await
                }
            }
        }
        VmState::Booting | VmState::Stopping => {
            // Unconfirmed: end whatever process the jail holds, then clean.
            if let (Some(pid), Some(start)) = (slot.rec.pid, slot.rec.start_time) {
                kill_if_same(pid, start);
            }
            if let Some(plan) = &slot.rec.plan {
                kill_jail_processes(&plan.pid_file, &plan.cgroup_dirs);
            }
            let (reason, detail) = if slot.rec.state == VmState::Booting {
                (
                    "daemon_restart",
                    "the daemon stopped while this VM was booting; boot it again",
                )
            } else {
                (
                    "stopped_by_api",
                    "the stop was finished after the daemon restarted",
                )
            };
            end(m, slot, reason, detail).await
        }
        VmState::Created | VmState::Stopped | VmState::Failed | VmState::Deleted => {
            // Nothing should exist; make sure of it.
            m.clean_host(&slot.rec)
        }
    }
}

/// Cleans and records a VM as failed (or stopped, for finished stops) with a reason.
async fn end(m: &Manager, slot: &mut Slot, reason: &str, detail: &str) -> Result<(), ManagerError> {
    m.clean_host(&slot.rec)?;
    slot.rec.state = if reason == "stopped_by_api" {
        VmState::Stopped
    } else {
        VmState::Failed
    };
    slot.rec.pid = None;
    slot.rec.exit = Some(ExitRecord {
        reason: reason.into(),
        detail: detail.into(),
        at_unix_ms: now_ms(),
    });
    tracing::warn!(vm_id = %slot.rec.id, reason, detail, "vm ended during recovery; host resources cleaned");
    m.put(&mut slot.rec).await
}

/// Why a VM that is gone ended, from what it left: the cgroup's OOM count, or Firecracker's
/// logged exit status.
fn died_while_down(rec: &VmRecord) -> ExitRecord {
    let Some(plan) = &rec.plan else {
        return ExitRecord {
            reason: "unknown".into(),
            detail: "exited while the daemon was down".into(),
            at_unix_ms: now_ms(),
        };
    };
    let stats = jail::cgroup::stats(plan.cgroup_version, &plan.cgroup_dirs);
    let log = std::fs::read_to_string(&plan.log_file).unwrap_or_default();
    let reason = if stats.oom_kills.unwrap_or(0) > 0 {
        ExitReason::OomKilled
    } else {
        match crate::vm::logged_exit_code(&log) {
            Some(0) => ExitReason::GuestPowerOff,
            Some(code) => ExitReason::FirecrackerError { code },
            None => ExitReason::Unknown,
        }
    };
    let mut r = exit_record(&reason, &log);
    r.detail = format!("{} while the daemon was down", r.detail);
    r
}

fn kill_if_same(pid: u32, start: u64) {
    if jail::inspect::start_time(Path::new("/proc"), pid) == Some(start) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_gone(pid);
    }
}

/// Kills the processes of a jail: the pid in its pid file if that process is in the jail's
/// cgroup, and every task listed in the jail's cgroups (all of them are that jail's).
fn kill_jail_processes(pid_file: &Path, cgroup_dirs: &[PathBuf]) {
    let mut pids: Vec<u32> = Vec::new();
    for dir in cgroup_dirs {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    if let Ok(text) = std::fs::read_to_string(pid_file) {
        if let Ok(pid) = text.trim().parse::<u32>() {
            // Only if that pid really is in one of the jail's cgroups (pids get reused).
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let in_jail = cgroup_dirs.iter().any(|d| {
                let tail: Vec<_> = d.iter().rev().take(2).collect();
                tail.len() == 2
                    && cg.contains(&format!(
                        "/{}/{}",
                        tail[1].to_string_lossy(),
                        tail[0].to_string_lossy()
                    ))
            });
            if in_jail {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_gone(pid);
    }
}

fn wait_gone(pid: u32) {
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie (its cgroup membership and files are released).
        if stat.is_empty()
            || stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Removes jails, cgroups and namespaces that carry warden's naming but belong to no known VM.
fn remove_orphans(m: &Manager, known: &HashSet<String>) {
    let cfg = m.config();
    let exec_name = cfg
        .firecracker_binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "firecracker".into());
    let hierarchy = jail::cgroup::Hierarchy::host().ok();
    let mut parents: Vec<PathBuf> = Vec::new();
    if let Some(h) = &hierarchy {
        parents.extend(h.v1.iter().map(|(_, mount)| mount.join(&cfg.parent_cgroup)));
        parents.extend(h.v2.iter().map(|root| root.join(&cfg.parent_cgroup)));
    }
    parents.sort();
    parents.dedup();
    let cgroup_dirs_of = |id: &str| -> Vec<PathBuf> {
        parents
            .iter()
            .map(|p| p.join(id))
            .filter(|d| d.is_dir())
            .collect()
    };

    let jails = cfg.chroot_dir.join(&exec_name);
    let mut orphan_ids: HashSet<String> = HashSet::new();
    for dir in subdirs(&jails) {
        orphan_ids.insert(dir);
    }
    for p in &parents {
        for dir in subdirs(p) {
            orphan_ids.insert(dir);
        }
    }
    for id in orphan_ids.into_iter().filter(|id| !known.contains(id)) {
        if jail::JailId::new(&id).is_err() {
            continue;
        }
        let jail_dir = jails.join(&id);
        let cgroup_dirs = cgroup_dirs_of(&id);
        kill_jail_processes(
            &jail_dir.join("root").join(format!("{exec_name}.pid")),
            &cgroup_dirs,
        );
        match jail::cleanup::remove_paths(&jail_dir, &cgroup_dirs) {
            Ok(()) => {
                tracing::warn!(orphan = %id, jail = %jail_dir.display(), cgroups = ?cgroup_dirs, "removed an orphaned jail that belongs to no known VM")
            }
            Err(e) => {
                tracing::error!(orphan = %id, error = %error_chain(&e), "could not remove an orphaned jail")
            }
        }
    }
    // Host ends of veth pairs carry a hash of their VM's id.
    let ours: HashSet<String> = known
        .iter()
        .map(|id| jail::net::link_name(jail::net::HOST_VETH_PREFIX, id))
        .collect();
    for link in jail::net::link::list_with_prefix(jail::net::HOST_VETH_PREFIX).unwrap_or_default() {
        if ours.contains(&link) || link.len() != 15 {
            continue;
        }
        match jail::net::link::delete(&link) {
            Ok(()) => {
                tracing::warn!(orphan = %link, "removed an orphaned veth that belongs to no known VM")
            }
            Err(e) => {
                tracing::error!(orphan = %link, error = %error_chain(&e), "could not remove an orphaned veth")
            }
        }
    }
    let netns_dir = Path::new(jail::net::netns::NETNS_DIR);
    for name in jail::net::netns::list_ours(netns_dir) {
        let owner = name.trim_start_matches(jail::net::netns::PREFIX);
        if known.contains(owner) {
            continue;
        }
        if let Some(pid) = process_in_netns(&netns_dir.join(&name)) {
            tracing::warn!(orphan = %name, pid, "left an unknown network namespace alone: a live process is in it");
            continue;
        }
        match jail::net::netns::remove(&netns_dir.join(&name)) {
            Ok(()) => {
                tracing::warn!(orphan = %name, "removed an orphaned network namespace that belongs to no known VM")
            }
            Err(e) => {
                tracing::error!(orphan = %name, error = %error_chain(&e), "could not remove an orphaned network namespace")
            }
        }
    }
}

/// A process whose network namespace is the one bound at `file`, if any.
fn process_in_netns(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let want = format!("net:[{}]", std::fs::metadata(file).ok()?.ino());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read_link(e.path().join("ns/net")).ok()?.to_str()? == want).then_some(pid)
    })
}

fn subdirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
