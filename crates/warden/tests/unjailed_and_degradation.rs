//! Development mode and the guide's graceful degradation: a VM runs unjailed only when asked to
//! or when the jailer is missing in `Auto` mode, and then says so; production mode refuses.

mod common;

use std::time::Duration;

use common::*;
use warden::vm::config::JailerMode;
use warden::vm::{start_vm, ExitReason};

#[tokio::test]
async fn unjailed_boot_runs_and_reports_itself_unsandboxed() {
    let (config, mut options) = guest("nojail", "mode=idle marker=unjailed");
    options.jailer_mode = JailerMode::Disabled;
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(
        vm.wait_for_serial("WARDEN_MARKER unjailed", Duration::from_secs(5))
            .await,
        "{}",
        vm.serial_output()
    );
    assert!(!vm.is_sandboxed);
    assert!(!vm.isolation.jailer.active);
    assert!(
        vm.isolation.jailer.detail.contains("disabled"),
        "{}",
        vm.isolation.jailer.detail
    );
    assert!(
        !vm.isolation.uid_gid.active,
        "unjailed Firecracker runs as root: {:?}",
        vm.isolation.uid_gid
    );
    let exit = vm.stop().await.unwrap();
    assert_eq!(exit.reason, ExitReason::Stopped);
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn missing_jailer_degrades_to_unjailed_with_the_reason() {
    let (config, mut options) = guest("degrade", "mode=poweroff marker=degraded");
    options.jailer_mode = JailerMode::Auto;
    options.jailer.jailer_binary = "/nonexistent/jailer".into();
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(!vm.is_sandboxed);
    assert!(
        vm.isolation.jailer.detail.contains("/nonexistent/jailer"),
        "{:?}",
        vm.isolation.jailer
    );
    let exit = vm.wait().await;
    assert_eq!(exit.reason, ExitReason::GuestPowerOff);
    assert!(vm.serial_output().contains("WARDEN_MARKER degraded"));
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn production_mode_refuses_without_the_jailer_and_creates_nothing() {
    let (config, mut options) = guest("prod", "mode=poweroff");
    options.jailer_mode = JailerMode::Required;
    options.jailer.jailer_binary = "/nonexistent/jailer".into();
    let err = start_vm(&config, &options).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/jailer"), "{msg}");
    assert!(
        msg.contains("setup-assets.sh") && msg.contains("WARDEN_JAILER_BINARY"),
        "{msg}"
    );
    assert_nothing_left(&base(), &config.vm_id);
}
