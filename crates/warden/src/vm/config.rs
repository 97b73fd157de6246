//! What a VM is: [`VmConfig`] (the six fields of the orchestrator guide, with its defaults) and
//! [`VmOptions`] (everything the guide left out, with safe defaults).

use std::path::PathBuf;
use std::time::Duration;

use jail::SpecError;

use super::jailer::JailerConfig;

/// Fewest MiB of guest memory accepted.
pub const MIN_MEMORY_MB: u32 = 128;
/// Most vCPUs Firecracker supports.
pub const MAX_VCPUS: u8 = 32;
/// Memory the VMM itself needs beside guest RAM, added to the cgroup limit: guest RAM is
/// charged to the Firecracker process, so a limit of exactly the guest's size gets the VM
/// OOM-killed under load.
pub const VMM_OVERHEAD_MB: u32 = 64;
/// Boot arguments when none are given: a serial console, reboot = exit, no PCI.
pub const DEFAULT_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// A microVM, as the orchestrator guide defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Unique VM id: 1-64 ASCII letters, digits or `-`. Also the jail id.
    pub vm_id: String,
    /// Number of vCPUs (1-32).
    pub vcpu_count: u8,
    /// Guest memory in MiB (at least 128).
    pub memory_mb: u32,
    /// Kernel image (an ELF vmlinux).
    pub kernel_path: String,
    /// Root filesystem image, attached read-write as the root device; empty for none.
    pub rootfs_path: String,
    /// Give the VM a network device (off by default: a security risk).
    pub enable_networking: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            vm_id: "default".into(),
            vcpu_count: 1,
            memory_mb: 512,
            kernel_path: "/path/to/vmlinux.bin".into(),
            rootfs_path: "/path/to/rootfs.ext4".into(),
            enable_networking: false,
        }
    }
}

impl VmConfig {
    /// Checks sizes and the id. Paths are checked when the jail is planned.
    pub fn validate(&self) -> Result<(), SpecError> {
        jail::JailId::new(&self.vm_id)
            .map_err(|e| SpecError::new("vm_id", format!("{:?} {e}", self.vm_id)))?;
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return Err(SpecError::new(
                "vcpu_count",
                format!("is {}; use 1 to {MAX_VCPUS}", self.vcpu_count),
            ));
        }
        if self.memory_mb < MIN_MEMORY_MB {
            return Err(SpecError::new(
                "memory_mb",
                format!("is {} MiB; use at least {MIN_MEMORY_MB}", self.memory_mb),
            ));
        }
        if self.kernel_path.is_empty() {
            return Err(SpecError::new(
                "kernel_path",
                "is empty; give the path of a kernel image",
            ));
        }
        Ok(())
    }
}

/// An extra block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveConfig {
    /// The image on the host (never modified: a writable drive gets a private copy).
    pub path: PathBuf,
    /// Attach read-only.
    pub read_only: bool,
}

/// The network of a VM with `enable_networking`: its own namespace and a TAP owned by the jail
/// user, reachable as `mode` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// `None`: the TAP is reachable only inside the VM's namespace. `Bridge`: a veth pair joins
    /// the namespace to the host bridge `bridge`.
    pub mode: jail::net::NetMode,
    /// Host bridge for bridge mode (created if missing).
    pub bridge: String,
    /// The guest's address, told to it with the kernel's `ip=` argument.
    pub guest: Option<jail::net::GuestAddr>,
    /// Firecracker rate limiter for traffic into the guest.
    pub rx_rate_limiter: Option<firecracker_api::RateLimiter>,
    /// Firecracker rate limiter for traffic from the guest.
    pub tx_rate_limiter: Option<firecracker_api::RateLimiter>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self {
            mode: jail::net::NetMode::None,
            bridge: "warden0".into(),
            guest: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }
}

/// Whether the jailer must be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JailerMode {
    /// Use the jailer; if it is missing, warn loudly and run unjailed (`is_sandboxed == false`).
    /// The orchestrator guide's graceful degradation, for development.
    #[default]
    Auto,
    /// Production mode: a missing jailer is an error.
    Required,
    /// Run Firecracker directly (development only).
    Disabled,
}

/// The default cap of kept serial output: 16 MiB.
pub const DEFAULT_SERIAL_LOG_MAX_BYTES: usize = 16 << 20;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Serial {
    /// Kept in memory ([`super::VmHandle::serial_output`]).
    #[default]
    Capture,
    /// Kept in memory and copied to our stdout as it arrives.
    CaptureAndEcho,
    /// Discarded.
    Discard,
    /// Appended to this file; Firecracker's stderr goes to the same path with `.stderr` added.
    /// Files outlive the caller, so a VM keeps running if the caller (a daemon) exits.
    File(PathBuf),
}

impl Serial {
    /// Where stderr goes in [`Serial::File`] mode.
    pub fn stderr_path(path: &std::path::Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".stderr");
        PathBuf::from(p)
    }
}

/// Everything about a VM beyond [`VmConfig`].
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Kernel command line; [`DEFAULT_BOOT_ARGS`] when `None`.
    pub boot_args: Option<String>,
    /// Attach the rootfs read-only.
    pub rootfs_read_only: bool,
    /// Production mode for cgroups: refuse a VM when a controller for any of its limits is
    /// missing, instead of leaving a derived limit (memory, CPU, pids) out with a warning.
    pub strict_cgroups: bool,
    /// Extra drives, attached after the rootfs as `drive1`, `drive2`, ...
    pub drives: Vec<DriveConfig>,
    /// Jail settings. `jailer_id`, `cpu_count` and `memory_limit_mb` are taken from the
    /// [`VmConfig`] (the memory limit is guest memory plus [`VMM_OVERHEAD_MB`] unless
    /// [`VmOptions::memory_limit_mb`] is set).
    pub jailer: JailerConfig,
    /// Jailer required, optional or off.
    pub jailer_mode: JailerMode,
    /// cgroup memory cap in MiB, overriding guest memory + overhead.
    pub memory_limit_mb: Option<u32>,
    /// Serial console handling.
    pub serial: Serial,
    /// The most serial output kept, in memory or on disk (the newest bytes).
    pub serial_log_max_bytes: usize,
    /// How long a graceful stop (Ctrl-Alt-Del) may take before SIGKILL.
    pub stop_timeout: Duration,
    /// How long the API socket may take to appear.
    pub socket_timeout: Duration,
    /// Network settings, used when `enable_networking` is on.
    pub network: NetworkOptions,
    /// Firecracker rate limiter applied to every drive.
    pub drive_rate_limiter: Option<firecracker_api::RateLimiter>,
    /// When set, the kernel, rootfs and every drive must lie under one of these directories and
    /// are opened beneath it without following any symlink (the daemon's `asset_dirs`).
    pub asset_dirs: Option<Vec<std::path::PathBuf>>,
    /// Give a VM without networking an empty network namespace of its own (made and removed
    /// with the VM) instead of the host's.
    pub own_netns: bool,
    /// Lease the VM a uid/gid of its own from this range (host-wide, released with the VM).
    /// On by default ([`crate::vm::jailer::DEFAULT_JAIL_ID_RANGE`]); it applies only while
    /// `jailer.uid`/`jailer.gid` keep their default: a uid set there is used as given, shared by
    /// every VM that sets it.
    pub uid_range: Option<(u32, u32)>,
    /// Who owns the VM's host resources; `None` is this process (its VMs end with it).
    pub owner: Option<jail::Owner>,
    /// The host-wide registry where the VM's id is reserved before anything is made.
    pub registry: jail::Registry,
    /// End Firecracker when this process dies, even by SIGKILL (one small watchdog process per
    /// owner waits for that, for all its VMs); its host state is then removed by the next
    /// `warden gc`. A daemon turns this off: its VMs outlive it and are re-attached.
    pub die_with_owner: bool,
    /// Check, for the isolation report kept from the start, that no other process runs as the
    /// VM's uid: from a pass over every process of the host at most a second old, shared by
    /// every start and live report of this process (the processes it names are checked again).
    /// A daemon turns it off: its GetVmInfo reads the report, with that check, when asked.
    pub uid_check_at_start: bool,
    /// Start from this snapshot instead of booting (set by [`crate::vm::restore_vm`]).
    pub restore: Option<crate::vm::snapshot::Restore>,
    /// Boot with Firecracker's dirty-page tracking (`track_dirty_pages` in machine-config),
    /// which diff snapshots need ([`crate::vm::VmHandle::snapshot_diff`]). It costs the guest
    /// a little on every first write to a page after a snapshot. Ignored by a restore.
    pub track_dirty_pages: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            boot_args: None,
            rootfs_read_only: false,
            strict_cgroups: false,
            drives: Vec::new(),
            jailer: JailerConfig::default(),
            jailer_mode: JailerMode::Auto,
            memory_limit_mb: None,
            serial: Serial::Capture,
            serial_log_max_bytes: DEFAULT_SERIAL_LOG_MAX_BYTES,
            stop_timeout: Duration::from_secs(3),
            socket_timeout: Duration::from_secs(5),
            network: NetworkOptions::default(),
            drive_rate_limiter: None,
            asset_dirs: None,
            own_netns: false,
            uid_range: Some(super::jailer::DEFAULT_JAIL_ID_RANGE),
            owner: None,
            registry: jail::Registry::default(),
            die_with_owner: true,
            uid_check_at_start: true,
            restore: None,
            track_dirty_pages: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> VmConfig {
        VmConfig {
            vm_id: "vm-1".into(),
            kernel_path: "/k".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_guide() {
        let d = VmConfig::default();
        assert_eq!(
            (
                d.vm_id.as_str(),
                d.vcpu_count,
                d.memory_mb,
                d.enable_networking
            ),
            ("default", 1, 512, false)
        );
        ok().validate().unwrap();
    }

    #[test]
    fn bad_sizes_and_ids_name_the_field() {
        let cases = [
            (
                VmConfig {
                    memory_mb: 127,
                    ..ok()
                },
                "memory_mb",
                "at least 128",
            ),
            (
                VmConfig {
                    vcpu_count: 0,
                    ..ok()
                },
                "vcpu_count",
                "1 to 32",
            ),
            (
                VmConfig {
                    vcpu_count: 33,
                    ..ok()
                },
                "vcpu_count",
                "1 to 32",
            ),
            (
                VmConfig {
                    vm_id: "a/b".into(),
                    ..ok()
                },
                "vm_id",
                "'/'",
            ),
            (
                VmConfig {
                    vm_id: "..".into(),
                    ..ok()
                },
                "vm_id",
                "'.'",
            ),
            (
                VmConfig {
                    vm_id: "vmé".into(),
                    ..ok()
                },
                "vm_id",
                "non-ASCII",
            ),
            (
                VmConfig {
                    vm_id: "x".repeat(65),
                    ..ok()
                },
                "vm_id",
                "at most 64",
            ),
        ];
        for (cfg, field, fix) in cases {
            let e = cfg.validate().unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.to_string().contains(fix), "{e}");
        }
    }
}
