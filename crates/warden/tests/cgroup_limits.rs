//! cgroup limits: the values asked for land in the cgroup files, and the kernel enforces them on
//! a real guest.

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden::vm::{start_vm, ExitReason};

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn limits_asked_for_are_written_to_the_v1_cgroup_files() {
    let (mut config, mut options) = guest("limits", "mode=idle");
    config.memory_mb = 256;
    config.vcpu_count = 2;
    options.jailer.pids_max = Some(77);
    let vm = start_vm(&config, &options).await.unwrap();
    let id = &config.vm_id;
    let cg = |c: &str, f: &str| {
        read(
            &std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("warden")
                .join(id)
                .join(f),
        )
    };
    // Guest memory plus the VMM overhead; 100% of a core per vCPU.
    assert_eq!(
        cg("memory", "memory.limit_in_bytes"),
        ((256u64 + 64) << 20).to_string()
    );
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "200000");
    assert_eq!(cg("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cg("pids", "pids.max"), "77");
    for c in ["memory", "cpu", "pids", "cpuacct"] {
        let procs = cg(c, "cgroup.procs");
        assert!(
            procs.lines().any(|p| p == vm.pid.to_string()),
            "pid {} not in {c}: {procs}",
            vm.pid
        );
    }
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), id);
}

#[tokio::test]
async fn a_guest_touching_more_than_its_memory_limit_is_oom_killed() {
    let (mut config, mut options) = guest("oom", "mode=touch mib=200");
    config.memory_mb = 256;
    options.memory_limit_mb = Some(128);
    let vm = start_vm(&config, &options).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), vm.wait())
        .await
        .expect("guest neither finished nor died");
    assert_eq!(
        exit.reason,
        ExitReason::OomKilled,
        "serial: {}",
        vm.serial_output()
    );
    assert!(
        !vm.serial_output().contains("WARDEN_TOUCHED"),
        "{}",
        vm.serial_output()
    );
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn the_same_guest_under_a_sufficient_limit_finishes() {
    let (mut config, options) = guest("nooom", "mode=touch mib=200");
    config.memory_mb = 256;
    let vm = start_vm(&config, &options).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), vm.wait())
        .await
        .unwrap();
    assert_eq!(
        exit.reason,
        ExitReason::GuestPowerOff,
        "{}",
        vm.serial_output()
    );
    assert!(
        vm.serial_output().contains("WARDEN_TOUCHED 200"),
        "{}",
        vm.serial_output()
    );
}

#[tokio::test]
async fn a_spinning_guest_under_a_50_percent_quota_gets_about_half_a_core() {
    let (config, mut options) = guest("quota", "mode=spin secs=6");
    options.jailer.cpu_quota_pct = Some(50);
    let vm = start_vm(&config, &options).await.unwrap();
    // Skip the guest's TSC calibration, then measure two seconds of cgroup CPU accounting.
    assert!(
        vm.wait_for_serial("testguest: tsc", Duration::from_secs(5))
            .await,
        "{}",
        vm.serial_output()
    );
    let before = vm
        .cgroup_stats()
        .cpu_usage_ns
        .expect("cpuacct.usage readable");
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = vm.cgroup_stats().cpu_usage_ns.unwrap() - before;
    let share = used as f64 / t0.elapsed().as_nanos() as f64;
    assert!(
        share <= 0.56,
        "used {:.1}% of a core under a 50% quota",
        share * 100.0
    );
    assert!(
        share >= 0.30,
        "the guest should be spinning: {:.1}% of a core",
        share * 100.0
    );
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);
}
