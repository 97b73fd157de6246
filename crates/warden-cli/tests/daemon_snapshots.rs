//! Snapshots through the daemon's API with real jailed VMs: SnapshotVm, RestoreVm into clones
//! that are listed and controlled like any VM, re-attached after the daemon is SIGKILLed and
//! started again, ListSnapshots, DeleteSnapshot, and the refusals with their codes; a daemon
//! SIGKILLed in the middle of a snapshot leaves no half snapshot and a VM that runs on, and one
//! SIGKILLed in the middle of a restore leaves a clone that is ended, cleaned and recorded.

mod common;

use std::time::Duration;

use common::*;
use warden_api::{pb, Code};

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_restore_into_clones_that_survive_a_daemon_restart() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    let src = unique("ssrc");
    c.create_vm(d.create_req(&src, "mode=flood")).await.unwrap();
    boot(&c, src.as_str()).await;

    let snap = |name: &str| pb::SnapshotVmRequest {
        vm_id: src.clone(),
        name: name.into(),
        ..Default::default()
    };
    let e = c.snapshot_vm(snap("../x")).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    let s = c.snapshot_vm(snap("base")).await.unwrap().snapshot.unwrap();
    assert_eq!(s.source_vm_id, src);
    assert_eq!(s.memory_bytes, 128 << 20);
    let e = c.snapshot_vm(snap("base")).await.unwrap_err();
    assert_eq!(e.code, Code::AlreadyExists, "{e}");
    let e = c
        .restore_vm(pb::RestoreVmRequest {
            vm_id: String::new(),
            snapshot: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::NotFound, "{e}");

    let mut clones = Vec::new();
    for _ in 0..2 {
        let r = c
            .restore_vm(pb::RestoreVmRequest {
                vm_id: String::new(),
                snapshot: "base".into(),
            })
            .await
            .unwrap();
        assert_eq!(r.state, pb::VmState::Running as i32);
        clones.push(r.vm_id);
    }
    let listed = c
        .list_snapshots(pb::ListSnapshotsRequest {})
        .await
        .unwrap()
        .snapshots;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "base");

    // The CLI shows the same store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["vm", "--endpoint", &d.url(), "snapshots"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("base ") && text.contains(&src), "{text}");

    // SIGKILL the daemon and start it again: the clones are re-attached and controllable.
    d.restart();
    let c = d.client();
    for id in &clones {
        let info = vm_info(&c, id.as_str()).await;
        assert_eq!(info.state, pb::VmState::Running as i32, "{id}");
        c.pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
            .await
            .unwrap();
        c.resume_vm(pb::ResumeVmRequest { vm_id: id.clone() })
            .await
            .unwrap();
    }
    for id in clones.iter().chain([&src]) {
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: true,
        })
        .await
        .unwrap();
    }
    c.delete_snapshot(pb::DeleteSnapshotRequest {
        name: "base".into(),
    })
    .await
    .unwrap();
    let e = c
        .delete_snapshot(pb::DeleteSnapshotRequest {
            name: "base".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::NotFound, "{e}");
    d.assert_clean();
}

/// The counts of the `WARDEN_STATE` lines in a daemon VM's serial log.
fn state_counts(d: &Daemon, id: &str) -> Vec<u64> {
    states(d, id).into_iter().map(|(_, n)| n).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_during_a_snapshot_leaves_no_half_snapshot_and_the_vm_runs_on() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    let src = unique("skill");
    // 1 GiB of guest memory: Firecracker's write and warden's copy take seconds, so the kill
    // lands in the middle of them.
    let mut req = d.create_req(&src, "mode=state");
    req.config = req.config.map(|c| c.memory_mib(1024));
    c.create_vm(req).await.unwrap();
    boot(&c, src.as_str()).await;
    assert!(
        eventually(Duration::from_secs(10), || state_counts(&d, &src).len() > 3).await,
        "{}",
        d.logs()
    );

    let snapshots = d.dir.path().join("state/snapshots");
    let chroot_snapshot = d
        .chroot
        .join("firecracker")
        .join(&src)
        .join("root/snapshot");
    let taking = {
        let c = d.client();
        let src = src.clone();
        tokio::spawn(async move {
            c.snapshot_vm(pb::SnapshotVmRequest {
                vm_id: src,
                name: "big".into(),
                ..Default::default()
            })
            .await
        })
    };
    // Kill once the partial store exists and Firecracker has begun writing guest memory.
    let writing = eventually(Duration::from_secs(20), || {
        let partial = std::fs::read_dir(&snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("big.partial-"));
        let mem = std::fs::metadata(chroot_snapshot.join("mem")).map_or(0, |m| m.len());
        partial && mem > 0
    })
    .await;
    assert!(writing, "the snapshot never started writing: {}", d.logs());
    d.kill();
    let killed = taking.await.unwrap();
    assert!(
        killed.is_err(),
        "the snapshot finished before the kill: {killed:?}"
    );
    // What the killed daemon left: a partial store (never a listed one) in the store.
    let left: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| n.starts_with("big.partial-")),
        "{left:?}"
    );

    d.restart();
    let c = d.client();
    let listed = c
        .list_snapshots(pb::ListSnapshotsRequest {})
        .await
        .unwrap()
        .snapshots;
    assert!(listed.is_empty(), "no half snapshot is listed: {listed:?}");
    let left: Vec<_> = std::fs::read_dir(&snapshots).unwrap().flatten().collect();
    assert!(left.is_empty(), "the partial store is removed: {left:?}");
    assert!(
        !chroot_snapshot.exists(),
        "Firecracker's partial files are removed from the chroot"
    );
    let e = c
        .restore_vm(pb::RestoreVmRequest {
            vm_id: String::new(),
            snapshot: "big".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::NotFound, "{e}");
    // The VM was re-attached and resumed: running, and its guest counts on.
    let info = vm_info(&c, src.as_str()).await;
    assert_eq!(
        info.state,
        pb::VmState::Running as i32,
        "{info:?}\n{}",
        d.logs()
    );
    let n = *state_counts(&d, &src).last().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            state_counts(&d, &src).last().is_some_and(|&m| m > n + 5)
        })
        .await,
        "the guest stays paused after the restart: {}",
        d.logs()
    );
    // And a snapshot of the same name can be taken now.
    let s = c
        .snapshot_vm(pb::SnapshotVmRequest {
            vm_id: src.clone(),
            name: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert_eq!(s.memory_bytes, 1024 << 20);

    // Killed during a restore (here while the 1 GiB memory file is checked against its
    // checksum, before the jail exists): after the restart the clone is ended and cleaned,
    // and recorded as such, never half-made.
    let clone = unique("sclone");
    let restoring = {
        let (c, clone) = (d.client(), clone.clone());
        tokio::spawn(async move {
            c.restore_vm(pb::RestoreVmRequest {
                vm_id: clone,
                snapshot: "big".into(),
            })
            .await
        })
    };
    let mut booting = false;
    for _ in 0..400 {
        let vms = c.list_all_vms(Vec::new()).await.unwrap();
        // The common `state` says CREATED while booting; warden's own says BOOTING.
        if vms.iter().any(|v| {
            v.vm_id == clone
                && v.warden.as_ref().map(|w| w.state) == Some(pb::VmState::Booting as i32)
        }) {
            booting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(booting, "the clone was never seen booting: {}", d.logs());
    d.kill();
    assert!(
        restoring.await.unwrap().is_err(),
        "the restore finished before the kill"
    );
    d.restart();
    let c = d.client();
    let info = vm_info(&c, clone.as_str()).await;
    assert_eq!(info.state, pb::VmState::Failed as i32, "{info:?}");
    assert_eq!(
        info.exit.map(|e| e.reason).as_deref(),
        Some("daemon_restart")
    );
    let traces: Vec<_> = d
        .host_traces()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&clone))
        .collect();
    assert!(traces.is_empty(), "the half restore is cleaned: {traces:?}");
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: clone.clone(),
        force: true,
    })
    .await
    .unwrap();
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: src.clone(),
        force: true,
    })
    .await
    .unwrap();
    c.delete_snapshot(pb::DeleteSnapshotRequest { name: "big".into() })
        .await
        .unwrap();
    assert!(std::fs::read_dir(&snapshots).unwrap().next().is_none());
    d.assert_clean();
}

/// The `(token, count)` of the `WARDEN_STATE` lines in a daemon VM's serial log.
fn states(d: &Daemon, id: &str) -> Vec<(String, u64)> {
    let log = d.dir.path().join("state/vms").join(id).join("serial.log");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("WARDEN_STATE token=")?.1.split_once(" count="))
        .filter_map(|(t, n)| Some((t.to_owned(), n.trim().parse().ok()?)))
        .collect()
}

fn cli(d: &Daemon, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["vm", "--endpoint", &d.url()])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diff_snapshot_taken_with_the_cli_restores_the_guest_as_it_was_at_the_diff() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let src = unique("sdiff");
    let guest = testguest();
    let (ok, out) = cli(
        &d,
        &[
            "create",
            "--id",
            &src,
            "--kernel",
            &guest,
            "--boot-args",
            "mode=state",
            "--track-dirty-pages",
            "--boot",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        eventually(Duration::from_secs(10), || states(&d, &src).len() > 3).await,
        "{}",
        d.logs()
    );
    let (ok, out) = cli(&d, &["snapshot", &src, "base"]);
    assert!(ok, "{out}");
    let at_base = states(&d, &src).last().unwrap().1;
    assert!(
        eventually(Duration::from_secs(10), || states(&d, &src)
            .last()
            .is_some_and(|s| s.1 > at_base + 20))
        .await
    );
    let (token, before) = states(&d, &src).last().cloned().unwrap();
    // --diff needs --parent, and the other way round.
    let (ok, out) = cli(&d, &["snapshot", &src, "d1", "--diff"]);
    assert!(!ok && out.contains("--parent"), "{out}");
    let (ok, out) = cli(&d, &["snapshot", &src, "d1", "--diff", "--parent", "base"]);
    assert!(ok && out.contains("a diff on top of base"), "{out}");
    let listed = c
        .list_snapshots(pb::ListSnapshotsRequest {})
        .await
        .unwrap()
        .snapshots;
    let d1 = listed.iter().find(|s| s.name == "d1").expect("listed");
    assert_eq!((d1.kind.as_str(), d1.parent.as_str()), ("diff", "base"));
    assert!(
        d1.diff_bytes > 0 && d1.diff_bytes < d1.memory_bytes / 4,
        "{d1:?}"
    );
    let (ok, out) = cli(&d, &["snapshots"]);
    assert!(ok && out.contains("diff on top of base"), "{out}");
    // "base" is no longer the VM's last snapshot.
    let e = c
        .snapshot_vm(pb::SnapshotVmRequest {
            vm_id: src.clone(),
            name: "d2".into(),
            diff: true,
            parent: "base".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition, "{e}");
    assert!(e.message.contains("not the last snapshot"), "{e}");

    let r = c
        .restore_vm(pb::RestoreVmRequest {
            vm_id: String::new(),
            snapshot: "d1".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.state, pb::VmState::Running as i32);
    assert!(
        eventually(Duration::from_secs(10), || states(&d, &r.vm_id)
            .last()
            .is_some_and(|s| s.1 > before + 3))
        .await,
        "{}",
        d.logs()
    );
    let cs = states(&d, &r.vm_id);
    assert!(cs.iter().all(|(t, _)| *t == token), "{cs:?}");
    assert!(
        cs[0].1 >= before,
        "the clone goes on from the diff: {cs:?} (>= {before})"
    );

    // A VM booted without dirty-page tracking gets a diff refused, naming the setting.
    let plain = unique("splain");
    c.create_vm(d.create_req(&plain, "mode=state"))
        .await
        .unwrap();
    boot(&c, plain.as_str()).await;
    c.snapshot_vm(pb::SnapshotVmRequest {
        vm_id: plain.clone(),
        name: "pbase".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let e = c
        .snapshot_vm(pb::SnapshotVmRequest {
            vm_id: plain.clone(),
            name: "pdiff".into(),
            diff: true,
            parent: "pbase".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition, "{e}");
    assert!(e.message.contains("track_dirty_pages"), "{e}");

    for id in [&r.vm_id, &src, &plain] {
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: true,
        })
        .await
        .unwrap();
    }
    for name in ["base", "d1", "pbase"] {
        c.delete_snapshot(pb::DeleteSnapshotRequest { name: name.into() })
            .await
            .unwrap();
    }
    d.assert_clean();
}
