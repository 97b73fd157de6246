//! The daemon never loses track of a VM: SIGKILLed with VMs running, it re-attaches them at the
//! next start, records the ones that died meanwhile, and removes orphans that carry warden's
//! naming, touching nothing else. Killed in the middle of a boot, it leaves either a running,
//! known VM or nothing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use warden_api::pb;

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_daemon_reattaches_running_vms_and_cleans_orphans() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    let base = unique("re");
    let ids: Vec<String> = (0..10).map(|i| format!("{base}-{i}")).collect();
    for id in &ids {
        c.create_vm(d.create_req(id, "mode=idle")).await.unwrap();
        boot(&c, id.clone()).await;
    }
    let victim = vm_info(&c, ids[9].clone()).await;
    d.kill();

    // While the daemon is down: one VM dies, and orphans appear beside things that are not ours:
    // a leftover recorded as this daemon's, one of an owner that is dead, one of a live owner
    // (this test process, as a `warden run` would be), and one without any owner record (the
    // plain jailer's, or another tool's), all with warden's naming.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let state_dir = d.dir.path().join("state");
    let own = plant_vm_state(
        &d,
        &format!("{base}-own"),
        Some(jail::Owner::daemon(&state_dir)),
    );
    let dead_one = plant_vm_state(&d, &format!("{base}-dead"), Some(dead_owner()));
    let live = plant_vm_state(
        &d,
        &format!("{base}-live"),
        Some(jail::Owner::this_process()),
    );
    let unowned = plant_vm_state(&d, &format!("{base}-plain"), None);
    let not_ours_dir = d.chroot.join("other-tool").join("keep");
    std::fs::create_dir_all(&not_ours_dir).unwrap();

    let t0 = std::time::Instant::now();
    d.restart();
    let reattach = t0.elapsed();
    let vms = c.list_vms(pb::ListVmsRequest::default()).await.unwrap().vms;
    assert_eq!(vms.len(), 10);
    for id in &ids[..9] {
        let info = vms.iter().find(|v| &v.vm_id == id).unwrap();
        assert_eq!(
            info.state,
            state(pb::VmState::Running),
            "{id}: {info:?}\n{}",
            d.logs()
        );
        assert!(info.details().isolation.unwrap().is_sandboxed);
    }
    let dead = vms.iter().find(|v| v.vm_id == ids[9]).unwrap();
    assert_eq!(dead.state, state(pb::VmState::Shutdown));
    let exit = dead.details().exit.unwrap();
    assert!(
        exit.detail.contains("while the daemon was down"),
        "{exit:?}"
    );
    assert!(
        !Path::new(&victim.chroot_path).exists(),
        "the dead VM's jail was cleaned"
    );

    assert_eq!(
        planted_traces(&own),
        Vec::<std::path::PathBuf>::new(),
        "own leftover removed\n{}",
        d.logs()
    );
    assert_eq!(
        planted_traces(&dead_one),
        Vec::<std::path::PathBuf>::new(),
        "dead owner's removed\n{}",
        d.logs()
    );
    assert_eq!(
        planted_traces(&live).len(),
        4,
        "a live owner's VM is left alone"
    );
    assert_eq!(
        planted_traces(&unowned).len(),
        3,
        "no owner record: never touched"
    );
    assert!(not_ours_dir.exists(), "not warden's: untouched");
    unplant(&live);
    unplant(&unowned);

    // Re-attached VMs are fully controllable.
    for id in &ids[..9] {
        c.pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
            .await
            .unwrap();
        c.resume_vm(pb::ResumeVmRequest { vm_id: id.clone() })
            .await
            .unwrap();
    }
    // And their exits are still noticed.
    let watched = vm_info(&c, ids[0].clone()).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watched.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_info(&c, ids[0].clone()).await;
    assert_eq!(after.state, state(pb::VmState::Shutdown), "{after:?}");
    for id in &ids {
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: false,
        })
        .await
        .unwrap();
    }
    d.assert_clean();
    eprintln!("daemon restart to 10 VMs reconciled: {reattach:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_boot_leaves_a_known_running_vm_or_nothing() {
    let mut d = Daemon::start(&[]);
    let base = unique("mid");
    // SIGKILL at a spread of moments during BootVm: before the intent is stored, after it,
    // while the jail is staged, after spawn, while configuring.
    for (i, delay_ms) in [0u64, 1, 2, 3, 5, 8, 12, 20, 35, 60]
        .into_iter()
        .enumerate()
    {
        let c = d.client();
        let id = format!("{base}-{i}");
        c.create_vm(d.create_req(&id, "mode=idle")).await.unwrap();
        let boot = {
            let c = c.clone();
            let id = id.clone();
            tokio::spawn(async move { c.boot_vm(pb::BootVmRequest { vm_id: id }).await })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        d.kill();
        let _ = boot.await;
        d.restart();
        let c = d.client();
        let info = vm_info(&c, id.clone()).await;
        let running = info.state == state(pb::VmState::Running);
        if running {
            assert!(
                Path::new(&format!("/proc/{}", info.pid)).exists(),
                "running VM has a process"
            );
            c.pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
                .await
                .unwrap();
        } else {
            assert!(
                [
                    pb::VmState::Created,
                    pb::VmState::Failed,
                    pb::VmState::Shutdown
                ]
                .iter()
                .any(|s| info.state == state(*s)),
                "delay {delay_ms} ms: {info:?}"
            );
            let jail = d.chroot.join("firecracker").join(&id);
            assert!(
                !jail.exists(),
                "delay {delay_ms} ms: {} left\n{}",
                jail.display(),
                d.logs()
            );
            assert!(
                !d.host_traces().iter().any(|p| p.ends_with(&id)),
                "delay {delay_ms} ms: {:?}",
                d.host_traces()
            );
            let procs = Command::new("pgrep")
                .args(["-f", &format!("--id {id} ")])
                .output()
                .unwrap();
            assert!(
                procs.stdout.is_empty(),
                "delay {delay_ms} ms: a process of {id} survived"
            );
        }
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: false,
        })
        .await
        .unwrap();
    }
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_daemon_exit_leaves_vms_running_unless_told_to_stop_them() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    let id = unique("term");
    c.create_vm(d.create_req(&id, "mode=idle")).await.unwrap();
    boot(&c, id.clone()).await;
    let pid = vm_info(&c, id.clone()).await.pid;
    d.terminate();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "SIGTERM must leave the VM running"
    );
    d.env
        .push(("WARDEN_STOP_VMS_ON_EXIT".into(), "true".into()));
    d.restart();
    let c = d.client();
    let info = vm_info(&c, id.clone()).await;
    assert_eq!(
        (info.state, info.pid),
        (state(pb::VmState::Running), pid),
        "re-attached after a graceful exit"
    );
    d.terminate();
    assert!(
        !Path::new(&format!("/proc/{pid}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap()
                .contains("zombie"),
        "stop_vms_on_exit stops the VM"
    );
    assert!(
        !d.chroot.join("firecracker").join(&id).exists(),
        "and cleans it"
    );
    d.env.retain(|(k, _)| k != "WARDEN_STOP_VMS_ON_EXIT");
    d.restart();
    let info = d
        .client()
        .get_vm_info(pb::GetVmInfoRequest { vm_id: id.clone() })
        .await
        .unwrap()
        .details();
    assert_eq!(info.state, state(pb::VmState::Shutdown));
    assert_eq!(info.exit.unwrap().reason, "daemon_exit");
    d.client()
        .delete_vm(pb::DeleteVmRequest {
            vm_id: id,
            force: false,
        })
        .await
        .unwrap();
    d.assert_clean();
}

#[test]
fn gc_removes_orphans_and_refuses_while_a_daemon_owns_the_state() {
    let mut d = Daemon::start(&[]);
    let state_dir = d.dir.path().join("state");
    let orphan = plant_vm_state(
        &d,
        &unique("gc-orphan"),
        Some(jail::Owner::daemon(&state_dir)),
    );
    let unowned = plant_vm_state(&d, &unique("gc-plain"), None);
    let gc = |d: &Daemon| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("gc")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    };
    let busy = gc(&d);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("another `warden serve`"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    d.terminate();
    let out = gc(&d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(planted_traces(&orphan).is_empty(), "orphan removed");
    assert_eq!(planted_traces(&unowned).len(), 3, "unowned: untouched");
    unplant(&unowned);
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed the host state of a VM"));
}
