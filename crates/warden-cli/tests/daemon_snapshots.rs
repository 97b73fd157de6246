//! Snapshots through the daemon's API with real jailed VMs: SnapshotVm, RestoreVm into clones
//! that are listed and controlled like any VM, re-attached after the daemon is SIGKILLed and
//! started again, ListSnapshots, DeleteSnapshot, the refusals with their codes and messages,
//! `warden vm restore --count`, the WatchVms events and the metrics of both; a daemon
//! SIGKILLed in the middle of a snapshot leaves no half snapshot and a VM that runs on, and one
//! SIGKILLed in the middle of a restore leaves a clone that is ended, cleaned and recorded.

mod common;

use std::time::Duration;

use common::*;
use warden_api::{pb, Code};

/// Reads `events` until `done` holds of what was read (30 s at most).
async fn read_until(
    events: &mut warden_api::EventStream,
    seen: &mut Vec<pb::WatchVmsResponse>,
    done: impl Fn(&[pb::WatchVmsResponse]) -> bool,
) {
    while !done(seen) {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {seen:#?}"))
            .expect("the stream ended")
            .expect("an event");
        seen.push(ev);
    }
}

/// (old state, new state, reason, snapshot, restored_from) of `id`'s events.
fn of(
    seen: &[pb::WatchVmsResponse],
    id: &str,
) -> Vec<(pb::VmState, pb::VmState, String, String, String)> {
    seen.iter()
        .filter(|e| e.vm_id == id)
        .map(|e| {
            (
                e.old_state(),
                e.new_state(),
                e.reason.clone(),
                e.snapshot.clone(),
                e.restored_from.clone(),
            )
        })
        .collect()
}

/// A Connect JSON call with curl, as a person would make it: (HTTP status, body).
fn curl(d: &Daemon, method: &str, body: &str) -> (u16, serde_json::Value) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ])
        .arg(format!("{}/vmprovisioner.v1.VmService/{method}", d.url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn metrics(d: &Daemon) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("{}/metrics", d.url())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the sample `name` (with its labels) in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_restore_into_clones_that_survive_a_daemon_restart() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    let src = unique("ssrc");
    c.create_vm(d.create_req(&src, "mode=flood")).await.unwrap();
    let snap = |name: &str| pb::SnapshotVmRequest {
        vm_id: src.clone(),
        name: name.into(),
        ..Default::default()
    };
    let restore = |id: &str, name: &str| pb::RestoreVmRequest {
        vm_id: id.into(),
        snapshot: name.into(),
    };

    // A VM that is not running: failed_precondition, naming the VM and its state.
    let e = c.snapshot_vm(snap("early")).await.unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition, "{e}");
    assert!(
        e.message.contains(&src)
            && e.message.contains("is created")
            && e.message.contains("running"),
        "{e}"
    );
    boot(&c, src.as_str()).await;
    let mut events = c.watch_vms(pb::WatchVmsRequest::default()).await.unwrap();
    let mut seen = Vec::new();

    // Bad names: invalid_argument naming the request's field and the name.
    let e = c.snapshot_vm(snap("../x")).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.message.starts_with("invalid name: \"../x\""), "{e}");
    let e = c.snapshot_vm(snap("")).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.message.contains("invalid name"), "{e}");
    let e = c.restore_vm(restore("", "../x")).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.message.starts_with("invalid snapshot: \"../x\""), "{e}");

    let s = c.snapshot_vm(snap("base")).await.unwrap().snapshot.unwrap();
    assert_eq!(s.source_vm_id, src);
    assert_eq!(s.memory_bytes, 128 << 20);
    // A name that exists: already_exists, naming it.
    let e = c.snapshot_vm(snap("base")).await.unwrap_err();
    assert_eq!(e.code, Code::AlreadyExists, "{e}");
    assert!(e.message.contains("\"base\" already exists"), "{e}");
    // An unknown snapshot: not_found, naming it; over plain Connect JSON too.
    let e = c.restore_vm(restore("", "nope")).await.unwrap_err();
    assert_eq!(e.code, Code::NotFound, "{e}");
    assert!(e.message.contains("no snapshot named \"nope\""), "{e}");
    let (status, body) = curl(&d, "RestoreVm", r#"{"snapshot":"nope"}"#);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
    let (status, body) = curl(&d, "DeleteSnapshot", r#"{"name":"nope"}"#);
    assert_eq!(
        (status, &body["code"]),
        (404, &"not_found".into()),
        "{body}"
    );

    let mut clones = Vec::new();
    for _ in 0..2 {
        let r = c.restore_vm(restore("", "base")).await.unwrap();
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

    // `warden vm restore --count`: three clones at once; the second's id is taken, and its
    // failure is one line among the others' (exit status 1).
    let prefix = unique("cl");
    c.create_vm(d.create_req(&format!("{prefix}-2"), "mode=idle"))
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "vm",
            "--endpoint",
            &d.url(),
            "restore",
            "base",
            "--count",
            "3",
            "--id",
            &prefix,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], format!("{prefix}-1 running"), "{text}");
    assert!(
        lines[1].starts_with(&format!("{prefix}-2 failed: already_exists: ")),
        "{text}"
    );
    assert_eq!(lines[2], format!("{prefix}-3 running"), "{text}");
    assert!(err.contains("1 of 3 clones of base failed"), "{err}");
    for i in [1, 3] {
        let id = format!("{prefix}-{i}");
        assert_eq!(
            vm_info(&c, id.as_str()).await.state,
            pb::VmState::Running as i32
        );
        clones.push(id);
    }
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: format!("{prefix}-2"),
        force: true,
    })
    .await
    .unwrap();

    // A snapshot that leaves the VM paused.
    c.snapshot_vm(pb::SnapshotVmRequest {
        keep_paused: true,
        ..snap("held")
    })
    .await
    .unwrap();
    assert_eq!(
        vm_info(&c, src.as_str()).await.state,
        pb::VmState::Paused as i32
    );
    c.resume_vm(pb::ResumeVmRequest { vm_id: src.clone() })
        .await
        .unwrap();

    // WatchVms: each snapshot is an event naming it; each clone's life names its snapshot.
    use pb::VmState::{Booting, Created, Paused, Running, Unspecified};
    let (sr, cl) = (src.clone(), clones.clone());
    read_until(&mut events, &mut seen, move |seen| {
        of(seen, &sr).len() >= 4 && cl.iter().all(|id| of(seen, id).len() >= 3)
    })
    .await;
    let base = || "base".to_owned();
    let none = String::new;
    assert_eq!(
        of(&seen, &src)[..4],
        [
            (Unspecified, Running, "current".into(), none(), none()),
            (Running, Running, "snapshot_taken".into(), base(), none()),
            (
                Running,
                Paused,
                "snapshot_taken".into(),
                "held".into(),
                none()
            ),
            (Paused, Running, "resumed".into(), none(), none()),
        ],
        "{seen:#?}"
    );
    for id in &clones {
        assert_eq!(
            of(&seen, id)[..3],
            [
                (Unspecified, Created, "created".into(), none(), base()),
                (Created, Booting, "booting".into(), none(), base()),
                (Booting, Running, "booted".into(), none(), base()),
            ],
            "{id}: {seen:#?}"
        );
    }
    drop(events);

    // Metrics: snapshots and restores by result, their durations, the store's size.
    let m = metrics(&d);
    let at = |name: &str| sample(&m, name).unwrap_or_else(|| panic!("no {name}:\n{m}"));
    assert_eq!(at("warden_snapshots_total{result=\"ok\"}"), 2.0);
    assert_eq!(at("warden_snapshots_total{result=\"already_exists\"}"), 1.0);
    assert_eq!(
        at("warden_snapshots_total{result=\"invalid_argument\"}"),
        1.0
    );
    assert_eq!(
        at("warden_snapshots_total{result=\"failed_precondition\"}"),
        1.0
    );
    assert_eq!(at("warden_restores_total{result=\"ok\"}"), 4.0);
    assert_eq!(at("warden_restores_total{result=\"not_found\"}"), 2.0);
    assert_eq!(at("warden_restores_total{result=\"already_exists\"}"), 1.0);
    assert_eq!(
        at("warden_request_duration_seconds_count{op=\"snapshot\"}"),
        2.0
    );
    assert_eq!(
        at("warden_request_duration_seconds_count{op=\"restore\"}"),
        4.0
    );
    assert!(at("warden_request_duration_seconds_sum{op=\"restore\"}") > 0.0);
    assert_eq!(at("warden_snapshots_stored"), 2.0);
    let sizes: f64 = c
        .list_snapshots(pb::ListSnapshotsRequest {})
        .await
        .unwrap()
        .snapshots
        .iter()
        .map(|s| s.size_bytes as f64)
        .sum();
    assert!(sizes >= 2.0 * f64::from(128u32 << 20), "{sizes}");
    assert_eq!(at("warden_snapshot_store_bytes"), sizes);

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
    for name in ["base", "held"] {
        c.delete_snapshot(pb::DeleteSnapshotRequest { name: name.into() })
            .await
            .unwrap();
    }
    let e = c
        .delete_snapshot(pb::DeleteSnapshotRequest {
            name: "base".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::NotFound, "{e}");
    assert!(
        metrics(&d).contains("warden_snapshots_stored 0"),
        "{}",
        metrics(&d)
    );
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
