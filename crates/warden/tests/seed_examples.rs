//! The orchestrator guide's "Basic Example" and "Direct Jailer Usage", as written there with only
//! the crate name (and the asset paths) changed.

mod common;

use std::path::PathBuf;

use common::*;

#[tokio::test]
async fn basic_example() -> anyhow::Result<()> {
    use warden::vm::config::VmConfig;
    use warden::vm::{start_firecracker, stop_firecracker};

    let dir = tempfile::tempdir()?;
    let rootfs = dir.path().join("rootfs.ext4");
    std::fs::write(&rootfs, vec![0u8; 1 << 20])?;
    let vm_id = unique_id("basic");

    // Create VM configuration
    let config = VmConfig {
        vm_id: vm_id.clone(),
        vcpu_count: 1,
        memory_mb: 256,
        kernel_path: asset("testguest").display().to_string(),
        rootfs_path: rootfs.display().to_string(),
        enable_networking: false,
    };

    // Start Firecracker with Jailer sandboxing
    let vm = start_firecracker(&config).await?;

    println!("VM started with PID: {}", vm.pid);
    println!("API socket: {:?}", vm.socket_path);
    println!("Sandboxed: {}", vm.is_sandboxed);
    assert!(vm.is_sandboxed, "{:#?}", vm.isolation);

    // Stop the VM
    stop_firecracker(vm).await?;

    assert_nothing_left(&base(), &vm_id);
    Ok(())
}

struct Netns(String);

impl Netns {
    fn add(name: &str) -> Self {
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Self(name.to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[tokio::test]
async fn direct_jailer_usage() -> anyhow::Result<()> {
    use warden::vm::jailer::{start_with_jailer, JailerConfig};

    let jailer_id = unique_id("direct");
    let ns = Netns::add(&jailer_id);
    let firecracker = asset("firecracker").display().to_string();

    // Configure Jailer
    let config = JailerConfig {
        jailer_id: jailer_id.clone(),
        exec_file: PathBuf::from(firecracker),
        cpu_count: 2,
        memory_limit_mb: 512,
        netns: Some(format!("/run/netns/{}", ns.0)),
        ..Default::default()
    };

    // Start with Jailer
    let process = start_with_jailer(&config).await?;

    println!("Jailed process started with PID: {}", process.pid);
    println!("API socket: {:?}", process.api_socket);
    println!("Is sandboxed: {}", process.jailed);
    assert!(process.jailed);

    // The API answers on the socket, and Firecracker runs in the namespace it was given.
    let info = process.client().instance_info().await?;
    assert_eq!(info.vmm_version, "1.12.1");
    let fc_net = std::fs::read_link(format!("/proc/{}/ns/net", process.pid))?;
    let ns_ino =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(format!("/run/netns/{}", ns.0))?);
    assert_eq!(fc_net.display().to_string(), format!("net:[{ns_ino}]"));
    let mem = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/warden/{jailer_id}/memory.limit_in_bytes"
    ))?;
    assert_eq!(mem.trim(), (512u64 << 20).to_string());
    let quota = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/cpu/warden/{jailer_id}/cpu.cfs_quota_us"
    ))?;
    assert_eq!(quota.trim(), "200000", "cpu_count 2 = two cores");

    process.stop().await?;
    assert_nothing_left(&base(), &jailer_id);
    Ok(())
}
