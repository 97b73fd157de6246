//! Snapshots through the daemon's API with real jailed VMs: SnapshotVm, RestoreVm into clones
//! that are listed and controlled like any VM, re-attached after the daemon is SIGKILLed and
//! started again, ListSnapshots, DeleteSnapshot, and the refusals with their codes.

mod common;

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
        keep_paused: false,
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
