//! The client against the real, pinned Firecracker v1.12.1 (no guest is booted).
//!
//! The binary is `$WARDEN_ASSETS_DIR/firecracker`, else `<workspace>/target/assets/firecracker`;
//! `scripts/setup-assets.sh` puts it there. These tests fail, never skip, without it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use firecracker_api::{
    ActionType, BootSource, Client, Drive, Error, InstanceState, Logger, MachineConfiguration,
    Metrics,
};
use tokio::process::{Child, Command};

fn firecracker_binary() -> PathBuf {
    let assets = std::env::var_os("WARDEN_ASSETS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/assets"));
    let bin = assets.join("firecracker");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup-assets.sh",
        bin.display()
    );
    bin
}

/// A Firecracker process with its API socket in a temporary folder; killed on drop.
struct Firecracker {
    child: Child,
    client: Client,
    dir: tempfile::TempDir,
}

impl Firecracker {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fc.sock");
        let child = Command::new(firecracker_binary())
            .arg("--api-sock")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let client = Client::new(sock);
        client.wait_ready(Duration::from_secs(10)).await.unwrap();
        Self { child, client, dir }
    }

    /// Kills and reaps the process (drop also kills it, if a test panics first).
    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn fault_message(err: Error, expected_uri: &str) -> String {
    match err {
        Error::Fault {
            uri,
            status,
            fault_message,
            ..
        } => {
            assert_eq!(uri, expected_uri);
            assert_eq!(status, 400);
            fault_message
        }
        other => panic!("expected a Fault, got {other:?}"),
    }
}

#[tokio::test]
async fn fresh_instance_is_not_started() {
    let fc = Firecracker::start().await;
    let info = fc.client.instance_info().await.unwrap();
    assert_eq!(info.state, InstanceState::NotStarted);
    assert_eq!(info.vmm_version, "1.12.1");
    assert_eq!(info.app_name, "Firecracker");
    fc.stop().await;
}

#[tokio::test]
async fn machine_config_shows_in_vm_config() {
    let fc = Firecracker::start().await;
    let m = MachineConfiguration {
        vcpu_count: 2,
        mem_size_mib: 256,
        track_dirty_pages: Some(true),
        ..Default::default()
    };
    fc.client.put_machine_config(&m).await.unwrap();
    let got = fc.client.vm_config().await.unwrap().machine_config.unwrap();
    assert_eq!((got.vcpu_count, got.mem_size_mib), (2, 256));
    assert_eq!(got.track_dirty_pages, Some(true));
    assert_eq!(got.smt, Some(false));
    fc.stop().await;
}

#[tokio::test]
async fn missing_kernel_is_a_fault() {
    let fc = Firecracker::start().await;
    let path = fc.dir.path().join("no-such-vmlinux");
    let b = BootSource {
        kernel_image_path: path.display().to_string(),
        ..Default::default()
    };
    let err = fc.client.put_boot_source(&b).await.unwrap_err();
    let shown = err.to_string();
    let msg = fault_message(err, "/boot-source");
    // Firecracker v1.12.1 names the failure and the OS error, not the path.
    assert!(msg.contains("kernel file cannot be opened"), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert_eq!(
        shown,
        format!("Firecracker refused PUT /boot-source (400): {msg}")
    );
    fc.stop().await;
}

#[tokio::test]
async fn zero_vcpus_is_a_fault() {
    let fc = Firecracker::start().await;
    let m = MachineConfiguration {
        vcpu_count: 0,
        mem_size_mib: 128,
        ..Default::default()
    };
    let err = fc.client.put_machine_config(&m).await.unwrap_err();
    let msg = fault_message(err, "/machine-config");
    assert!(msg.contains("number of vCPUs"), "{msg}");
    fc.stop().await;
}

#[tokio::test]
async fn devices_logger_and_pre_boot_refusals() {
    let fc = Firecracker::start().await;
    let file = |name: &str| {
        let p = fc.dir.path().join(name);
        std::fs::write(&p, b"").unwrap();
        p.display().to_string()
    };

    let drive = Drive {
        drive_id: "rootfs".into(),
        path_on_host: file("rootfs.ext4"),
        is_root_device: true,
        is_read_only: true,
        ..Default::default()
    };
    fc.client.put_drive(&drive).await.unwrap();
    fc.client
        .put_logger(&Logger {
            log_path: file("fc.log"),
            level: Some("Info".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    fc.client
        .put_metrics(&Metrics {
            metrics_path: file("fc.metrics"),
        })
        .await
        .unwrap();

    let config = fc.client.vm_config().await.unwrap();
    let drives = config.drives.unwrap();
    assert_eq!(drives.len(), 1);
    assert_eq!(drives[0].drive_id, "rootfs");
    assert_eq!(drives[0].path_on_host, drive.path_on_host);
    assert!(drives[0].is_read_only);

    // Not started: pausing and flushing metrics are refused; booting needs a kernel.
    let err = fc.client.pause().await.unwrap_err();
    assert!(fault_message(err, "/vm").contains("not supported before starting"));
    let err = fc
        .client
        .action(ActionType::FlushMetrics)
        .await
        .unwrap_err();
    assert!(fault_message(err, "/actions").contains("not supported before starting"));
    let err = fc
        .client
        .action(ActionType::InstanceStart)
        .await
        .unwrap_err();
    assert!(fault_message(err, "/actions").contains("without kernel configuration"));

    let info = fc.client.instance_info().await.unwrap();
    assert_eq!(info.state, InstanceState::NotStarted);
    fc.stop().await;
}
