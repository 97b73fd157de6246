//! `new_pid_ns` and rlimits, as /proc shows them on the jailed Firecracker.

mod common;

use std::time::Duration;

use common::*;
use warden::vm::{start_vm, ExitReason};

#[tokio::test]
async fn new_pid_ns_makes_firecracker_pid_1_and_no_file_caps_descriptors() {
    let (config, mut options) = guest("pidns", "mode=idle");
    options.jailer.new_pid_ns = true;
    options.jailer.resource_limits.no_file = Some(1000);
    options.jailer.resource_limits.fsize = Some(1 << 30);
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(
        vm.wait_for_serial("WARDEN_MARKER", Duration::from_secs(5))
            .await
    );
    let nspid = status_field(vm.pid, "NSpid");
    let ids: Vec<&str> = nspid.split_whitespace().collect();
    assert_eq!(ids, [vm.pid.to_string().as_str(), "1"], "NSpid: {nspid}");
    assert!(vm.isolation.pid_ns.active, "{:?}", vm.isolation.pid_ns);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", vm.pid)).unwrap();
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("Max open files"), "Max open files 1000 1000 files");
    assert_eq!(
        line("Max file size"),
        "Max file size 1073741824 1073741824 bytes"
    );
    // PID 1 of its namespace ignores SIGTERM; the graceful stop still works.
    let exit = vm.stop().await.unwrap();
    assert_eq!(exit.reason, ExitReason::Stopped);
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn without_new_pid_ns_firecracker_shares_the_host_pid_namespace() {
    let (config, mut options) = guest("nopidns", "mode=idle");
    assert!(
        options.jailer.new_pid_ns,
        "a new PID namespace is the default"
    );
    options.jailer.new_pid_ns = false;
    let vm = start_vm(&config, &options).await.unwrap();
    assert_eq!(status_field(vm.pid, "NSpid"), vm.pid.to_string());
    assert!(!vm.isolation.pid_ns.active);
    assert!(vm.isolation.pid_ns.detail.contains("new_pid_ns is off"));
    vm.stop().await.unwrap();
}
