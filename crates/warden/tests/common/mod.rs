//! Shared pieces of the tests that boot real jailed VMs: unique ids, the pinned assets, and the
//! check that a VM left nothing behind.
#![allow(dead_code)]

pub mod net;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use warden::vm::config::{JailerMode, VmConfig, VmOptions};
use warden::vm::jailer::JailerConfig;

/// A VM id unique across parallel test processes and runs.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t-{prefix}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

/// An asset built by scripts/setup-assets.sh; fails (never skips) when it is missing.
pub fn asset(name: &str) -> PathBuf {
    let p = match name {
        "testguest" => warden::assets::testguest(),
        "jailer" => warden::assets::jailer(),
        _ => warden::assets::firecracker(),
    };
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-assets.sh (or `make assets`)",
        p.display()
    );
    p
}

/// A jailed test-guest VM with `boot_args`.
pub fn guest(prefix: &str, boot_args: &str) -> (VmConfig, VmOptions) {
    let config = VmConfig {
        vm_id: unique_id(prefix),
        vcpu_count: 1,
        memory_mb: 128,
        kernel_path: asset("testguest").display().to_string(),
        rootfs_path: String::new(),
        enable_networking: false,
    };
    let options = VmOptions {
        boot_args: Some(boot_args.to_owned()),
        jailer: JailerConfig {
            jailer_binary: asset("jailer"),
            exec_file: asset("firecracker"),
            ..JailerConfig::default()
        },
        jailer_mode: JailerMode::Required,
        ..VmOptions::default()
    };
    (config, options)
}

/// Every host path a VM with this id could have: its jail directory and its cgroup directories
/// in every v1 controller and in the v2 mount.
pub fn host_traces(chroot_base: &Path, id: &str) -> Vec<PathBuf> {
    let mut paths = vec![chroot_base.join("firecracker").join(id)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            paths.push(e.path().join("warden").join(id));
        }
    }
    paths.into_iter().filter(|p| p.exists()).collect()
}

/// Asserts nothing of VM `id` is left on the host: no jail, no cgroup, no process.
pub fn assert_nothing_left(chroot_base: &Path, id: &str) {
    let left = host_traces(chroot_base, id);
    assert!(left.is_empty(), "VM {id} left behind: {left:?}");
    let procs = processes_mentioning(id);
    assert!(procs.is_empty(), "VM {id} left processes: {procs:?}");
}

/// Pids whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// The default chroot base.
pub fn base() -> PathBuf {
    PathBuf::from("/srv/jailer")
}

/// A `key: value` field of /proc/<pid>/status.
pub fn status_field(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .map(|l| l[key.len() + 1..].trim().to_owned())
        .unwrap_or_default()
}
