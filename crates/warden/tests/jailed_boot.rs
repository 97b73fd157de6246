//! A jailed boot, checked the way a user would check it: the guest's own output, the process's
//! credentials, seccomp state and namespaces in /proc, and the staged drives as the guest sees
//! them.

mod common;

use std::time::Duration;

use common::*;
use warden::vm::config::DriveConfig;
use warden::vm::{start_vm, ExitReason};

#[tokio::test]
async fn jailed_vm_runs_unprivileged_under_seccomp_in_its_own_mount_namespace() {
    let (config, options) = guest("jailed", "mode=idle marker=jailed-ok");
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(
        vm.wait_for_serial("WARDEN_MARKER jailed-ok", Duration::from_secs(5))
            .await,
        "{}",
        vm.serial_output()
    );

    // A uid and gid of its own, leased from the default range, in every id slot.
    let uid = status_field(vm.pid, "Uid");
    let gid = status_field(vm.pid, "Gid");
    let own = vm.plan.uid.to_string();
    let range = warden::vm::jailer::DEFAULT_JAIL_ID_RANGE;
    assert!(
        (range.0..=range.1).contains(&vm.plan.uid),
        "{}",
        vm.plan.uid
    );
    assert_eq!(vm.plan.gid, vm.plan.uid);
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        [own.as_str(); 4],
        "Uid: {uid}"
    );
    assert_eq!(
        gid.split_whitespace().collect::<Vec<_>>(),
        [own.as_str(); 4],
        "Gid: {gid}"
    );
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", vm.pid))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        tasks.len() >= 3,
        "expected API, VMM and vCPU threads, got {}",
        tasks.len()
    );
    for t in &tasks {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        assert!(
            status.lines().any(|l| l == "Seccomp:\t2"),
            "thread {:?} has no seccomp filter",
            t.path()
        );
    }
    let ns = |pid: &str, n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap();
    assert_ne!(
        ns(&vm.pid.to_string(), "mnt"),
        ns("self", "mnt"),
        "mount namespace is the host's"
    );
    assert!(vm.is_sandboxed, "{:#?}", vm.isolation);
    assert!(
        vm.isolation.chroot.active && vm.isolation.cgroups.active && vm.isolation.seccomp.active
    );
    assert!(vm
        .socket_path
        .starts_with(base().join("firecracker").join(&config.vm_id).join("root")));
    assert!(vm.socket_path.ends_with("run/firecracker.socket"));

    let exit = vm.stop().await.unwrap();
    assert_eq!(exit.reason, ExitReason::Stopped);
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test]
async fn guest_reads_staged_drives_and_writes_only_its_private_copy() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.img");
    let data = dir.path().join("data.img");
    let mut sector = b"WARDEN-TEST-ROOTFS-SECTOR".to_vec();
    sector.resize(1 << 20, 0);
    std::fs::write(&rootfs, &sector).unwrap();
    let mut sector = b"WARDEN-TEST-READONLY-DATA".to_vec();
    sector.resize(1 << 20, 0);
    std::fs::write(&data, &sector).unwrap();

    let (mut config, mut options) = guest("blk", "mode=blk");
    config.rootfs_path = rootfs.display().to_string();
    options.drives.push(DriveConfig {
        path: data.clone(),
        read_only: true,
    });
    let vm = start_vm(&config, &options).await.unwrap();
    let exit = vm.wait().await;
    let out = vm.serial_output();
    assert_eq!(exit.reason, ExitReason::GuestPowerOff, "{out}");
    assert!(
        out.contains("WARDEN_BLK 0 ro=0 sector0=WARDEN-TEST-ROOTFS-SECTOR"),
        "{out}"
    );
    assert!(out.contains("WARDEN_BLK_WROTE 0 ok"), "{out}");
    assert!(
        out.contains("WARDEN_BLK 1 ro=1 sector0=WARDEN-TEST-READONLY-DATA"),
        "{out}"
    );
    assert!(out.contains("WARDEN_BLK_DONE 2"), "{out}");
    // The guest wrote its private copy; the caller's image is untouched.
    assert!(std::fs::read(&rootfs)
        .unwrap()
        .starts_with(b"WARDEN-TEST-ROOTFS-SECTOR"));
    assert_nothing_left(&base(), &config.vm_id);
}
