//! The daemon's snapshots, through its manager (the core every transport calls), with real
//! jailed VMs: SnapshotVm into the store, RestoreVm into clones that are listed, supervised,
//! controlled and cleaned like any VM, and the refusals.

mod common;

use std::time::Duration;

use common::*;
use warden::daemon::config::DaemonConfig;
use warden::daemon::state::VmState;
use warden::daemon::store::VmSpec;
use warden::daemon::{ErrorCode, Manager};

fn config(dir: &std::path::Path) -> DaemonConfig {
    DaemonConfig {
        state_dir: dir.join("state"),
        parent_cgroup: unique_id("wsnap"),
        asset_dirs: vec![asset("testguest").parent().unwrap().to_owned()],
        jailer_binary: asset("jailer"),
        firecracker_binary: asset("firecracker"),
        stop_timeout_secs: 2,
        ..DaemonConfig::default()
    }
}

fn spec() -> VmSpec {
    VmSpec {
        vcpu_count: 1,
        memory_mib: 128,
        kernel_path: asset("testguest").display().to_string(),
        boot_args: "mode=flood".into(),
        ..VmSpec::default()
    }
}

#[tokio::test]
async fn snapshots_are_taken_and_restored_into_clones_controlled_like_any_vm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let m = Manager::open(cfg.clone()).await.unwrap();
    let src = unique_id("dsrc");
    m.create(&src, spec()).await.unwrap();
    m.boot(&src).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Refusals first: a bad name, a VM that is not running, an unknown snapshot.
    let e = m.snapshot(&src, "../x", None, true).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = m.restore("", "nope").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");

    let manifest = m.snapshot(&src, "base", None, true).await.unwrap();
    assert_eq!(manifest.source_vm, src);
    let e = m.snapshot(&src, "base", None, true).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::AlreadyExists, "{e}");
    assert_eq!(m.get(&src).await.unwrap().record.state, VmState::Running);
    let names: Vec<String> = m
        .list_snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["base"]);

    let mut clones = Vec::new();
    for _ in 0..2 {
        let rec = m.restore("", "base").await.unwrap();
        let info = m.get(&rec.id).await.unwrap();
        assert_eq!(info.record.state, VmState::Running);
        assert_eq!(info.record.spec.restore_from.as_deref(), Some("base"));
        assert!(info.isolation.unwrap().is_sandboxed);
        clones.push(rec.id);
    }

    // Clones are controlled like any VM.
    for id in &clones {
        m.pause(id).await.unwrap();
        m.resume(id).await.unwrap();
    }
    for id in clones.iter().chain([&src]) {
        m.delete(id).await.unwrap();
        assert_nothing_left(&cfg.chroot_base, id);
    }
    m.delete_snapshot("base").await.unwrap();
    assert!(m.list_snapshots().await.unwrap().is_empty());
    let e = m.delete_snapshot("base").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(c.path().join(&cfg.parent_cgroup));
    }
}
