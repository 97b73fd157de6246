//! Bad input gets one clear error naming the field and the fix, and creates nothing.

mod common;

use std::path::PathBuf;

use common::*;
use warden::vm::config::VmConfig;
use warden::vm::start_vm;

async fn refused(config: VmConfig, options: warden::vm::config::VmOptions, field: &str, fix: &str) {
    let id = config.vm_id.clone();
    let err = start_vm(&config, &options)
        .await
        .expect_err("must be refused");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("invalid {field}")), "{msg}");
    assert!(msg.contains(fix), "message lacks the fix {fix:?}: {msg}");
    assert!(matches!(err, warden::Error::Invalid(_)), "{err:?}");
    if jail::JailId::new(&id).is_ok() {
        assert_nothing_left(&base(), &id);
    }
    // Nothing of any name was created either.
    if !id.is_empty() && !id.contains('/') && id != "." && id != ".." {
        assert!(!base().join("firecracker").join(&id).exists());
    }
}

#[tokio::test]
async fn bad_ids_are_refused() {
    for (id, fix) in [
        ("a/b", "no '/'"),
        ("..", "'.'"),
        ("vm-é", "non-ASCII"),
        (&"x".repeat(65)[..], "at most 64"),
        ("", "1 to 64"),
    ] {
        let (mut config, options) = guest("id", "");
        config.vm_id = id.to_owned();
        refused(config, options, "vm_id", fix).await;
    }
}

#[tokio::test]
async fn bad_sizes_are_refused() {
    let (mut config, options) = guest("mem", "");
    config.memory_mb = 100;
    refused(config, options, "memory_mb", "at least 128").await;
    for vcpus in [0, 33] {
        let (mut config, options) = guest("cpu", "");
        config.vcpu_count = vcpus;
        refused(config, options, "vcpu_count", "use 1 to 32").await;
    }
    let (config, mut options) = guest("cap", "");
    options.memory_limit_mb = Some(64);
    refused(config, options, "memory_limit_mb", "at least 128").await;
}

#[tokio::test]
async fn bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, options) = guest("nokern", "");
    config.kernel_path = "/nonexistent/vmlinux".into();
    refused(
        config,
        options,
        "kernel_path",
        "give the path of an existing file",
    )
    .await;

    // Root reads any mode bits, so "unreadable" here is a kernel that is not a regular file.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (mut config, options) = guest("fifo", "");
    config.kernel_path = fifo.display().to_string();
    refused(config, options, "kernel_path", "not a regular file").await;

    let (mut config, options) = guest("rootdir", "");
    config.rootfs_path = dir.path().display().to_string();
    refused(config, options, "rootfs_path", "is a directory").await;

    let (config, mut options) = guest("drivemiss", "");
    options.drives.push(warden::vm::config::DriveConfig {
        path: "/nonexistent/disk".into(),
        read_only: true,
    });
    refused(config, options, "drives[0]", "existing file").await;
}

#[tokio::test]
async fn a_socket_path_over_107_bytes_is_refused() {
    let long_base = PathBuf::from(format!("/tmp/{}", "b".repeat(60)));
    let (mut config, mut options) = guest("sock", "");
    config.vm_id = format!("{}-{}", config.vm_id, "s".repeat(20));
    options.jailer.chroot_base_dir = long_base.clone();
    refused(
        config.clone(),
        options,
        "chroot_base_dir",
        "over the kernel's limit of 107",
    )
    .await;
    assert!(!long_base.exists(), "the long base was created");
}

#[tokio::test]
async fn uid_0_is_refused_for_a_jailed_vm() {
    let (config, mut options) = guest("root", "");
    options.jailer.uid = 0;
    refused(config, options, "uid", "unprivileged user").await;
}

#[tokio::test]
async fn networking_that_cannot_work_is_refused() {
    let (mut config, mut options) = guest("net", "");
    config.enable_networking = true;
    options.network.mode = jail::net::NetMode::Bridge;
    refused(
        config,
        options,
        "network.guest",
        "needs the guest's address",
    )
    .await;
    let (mut config, mut options) = guest("netns", "");
    config.enable_networking = true;
    options.jailer.netns = Some("/run/netns/elsewhere".into());
    refused(config, options, "netns", "drop netns").await;
}
