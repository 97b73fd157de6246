//! Nothing is left behind, however a VM ends: a stop, a guest power-off, a SIGKILL from
//! outside, a dropped handle, or a start that fails at any step.

mod common;

use std::time::Duration;

use common::*;
use warden::vm::{start_vm, ExitReason};

#[tokio::test]
async fn guest_power_off_cleans_the_jail_and_cgroups() {
    let (config, options) = guest("poweroff", "mode=poweroff marker=bye");
    let vm = start_vm(&config, &options).await.unwrap();
    let jail_dir = vm.plan.jail_dir.clone();
    assert!(!vm.plan.cgroup_dirs.is_empty());
    let exit = vm.wait().await;
    assert_eq!(exit.reason, ExitReason::GuestPowerOff);
    assert!(exit.cleanup_error.is_none(), "{:?}", exit.cleanup_error);
    assert!(vm.serial_output().contains("WARDEN_MARKER bye"));
    assert!(!jail_dir.exists());
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn firecracker_killed_from_outside_is_reported_and_cleaned() {
    let (config, options) = guest("sigkill", "mode=idle");
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(
        vm.wait_for_serial("WARDEN_MARKER", Duration::from_secs(5))
            .await
    );
    let status = std::process::Command::new("kill")
        .args(["-KILL", &vm.pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(2), vm.wait())
        .await
        .expect("exit noticed");
    assert_eq!(exit.reason, ExitReason::Signaled { signal: 9 });
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn firecracker_killed_from_outside_in_a_pid_namespace_is_reported_and_cleaned() {
    let (config, mut options) = guest("sigkillns", "mode=idle");
    options.jailer.new_pid_ns = true;
    let vm = start_vm(&config, &options).await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vm.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(2), vm.wait())
        .await
        .expect("exit noticed");
    assert_eq!(exit.reason, ExitReason::Signaled { signal: 9 });
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn a_stop_that_the_guest_ignores_ends_in_sigkill() {
    // A paused guest cannot answer Ctrl-Alt-Del: the deadline passes and SIGKILL follows.
    let (config, mut options) = guest("stubborn", "mode=idle");
    options.stop_timeout = Duration::from_millis(300);
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(
        vm.wait_for_serial("WARDEN_MARKER", Duration::from_secs(5))
            .await
    );
    vm.pause().await.unwrap();
    let exit = vm.stop().await.unwrap();
    assert_eq!(exit.reason, ExitReason::Killed);
    assert_nothing_left(&base(), &config.vm_id);
}

#[test]
fn dropping_a_running_vm_kills_it_and_cleans_up() {
    let (config, options) = guest("drop", "mode=idle");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pid = rt.block_on(async {
        let vm = start_vm(&config, &options).await.unwrap();
        vm.pid
        // `vm` dropped here, inside the runtime.
    });
    drop(rt);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "Firecracker {pid} survived its handle"
    );
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn a_kernel_firecracker_rejects_fails_the_start_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not-a-kernel");
    std::fs::write(&bogus, b"this is not an ELF image").unwrap();
    let (mut config, options) = guest("badkernel", "mode=poweroff");
    config.kernel_path = bogus.display().to_string();
    let err = start_vm(&config, &options).await.unwrap_err();
    let msg = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        msg.contains(&format!("configuring VM {}", config.vm_id)),
        "{msg}"
    );
    assert!(
        msg.contains("Firecracker refused"),
        "the fault_message must surface: {msg}"
    );
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn a_jailer_failure_fails_the_start_and_leaves_nothing() {
    // An exec file the jailer cannot run as Firecracker: it is copied into the chroot and exec
    // fails, or it exits at once; either way no socket appears.
    let (config, mut options) = guest("badexec", "mode=poweroff");
    options.jailer.exec_file = "/bin/false".into();
    options.socket_timeout = Duration::from_secs(2);
    let err = start_vm(&config, &options).await.unwrap_err();
    assert!(
        err.to_string().contains("exited before the VM was up"),
        "{err}"
    );
    let jail = base().join("false").join(&config.vm_id);
    assert!(!jail.exists(), "{} left", jail.display());
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn a_missing_kernel_is_refused_before_anything_is_created() {
    let (mut config, options) = guest("nokernel", "mode=poweroff");
    config.kernel_path = "/nonexistent/vmlinux".into();
    let err = start_vm(&config, &options).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid kernel_path: /nonexistent/vmlinux"),
        "{err}"
    );
    assert_nothing_left(&base(), &config.vm_id);
}
