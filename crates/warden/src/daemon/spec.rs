//! A request's VM spec: the daemon's own checks (its caps and its operator maxima) and its
//! translation to the library's [`VmConfig`] and [`VmOptions`]. Every rule the library owns
//! (sizes, ids, the asset paths, opened beneath the asset directories) is checked by the
//! library's plan, never again here.

use super::error::ManagerError;
use super::manager::Manager;
use super::store::VmSpec;
use crate::vm::config::{DriveConfig, NetworkOptions, Serial, VmConfig, VmOptions};

/// Firecracker's most vCPUs: beyond it a request is invalid (the plan says so), not too big.
const FIRECRACKER_MAX_VCPUS: u8 = 32;
/// Longest metadata key and value, in bytes.
const MAX_METADATA_KEY: usize = 256;
const MAX_METADATA_VALUE: usize = 4096;

impl Manager {
    /// Applies defaults and this daemon's caps and maxima.
    pub(crate) fn check_spec(&self, mut spec: VmSpec) -> Result<VmSpec, ManagerError> {
        if spec.vcpu_count == 0 {
            spec.vcpu_count = 1;
        }
        if spec.memory_mib == 0 {
            spec.memory_mib = 512;
        }
        let invalid = |field: &str, problem: String| ManagerError::Invalid {
            field: field.to_owned(),
            problem,
        };
        if spec.kernel_path.is_empty() {
            return Err(invalid(
                "config.kernel_path",
                "is empty; give the path of a kernel image under an asset directory".into(),
            ));
        }
        let cfg = &self.cfg;
        let vcpus = if spec.vcpu_count <= FIRECRACKER_MAX_VCPUS {
            u64::from(spec.vcpu_count)
        } else {
            0
        };
        let caps = [
            (
                "config.vcpu_count",
                vcpus,
                cfg.max_vcpus,
                "max_vcpus",
                "vCPUs",
            ),
            (
                "config.memory_mib",
                u64::from(spec.memory_mib),
                cfg.max_memory_mib,
                "max_memory_mib",
                "MiB",
            ),
            (
                "config.drives",
                spec.drives.len() as u64,
                cfg.max_drives,
                "max_drives",
                "drives",
            ),
            (
                "config.metadata",
                spec.metadata.len() as u64,
                cfg.max_metadata_entries,
                "max_metadata_entries",
                "entries",
            ),
        ];
        if let Some((field, asked, max, setting, unit)) = caps.into_iter().find(|c| c.1 > c.2) {
            return Err(ManagerError::OverCap {
                field,
                asked,
                max,
                setting,
                unit,
            });
        }
        if let Some((k, v)) = spec
            .metadata
            .iter()
            .find(|(k, v)| k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE)
        {
            return Err(invalid(
                "config.metadata",
                format!(
                    "the entry {:?} is too long ({} byte key, {} byte value); keys may have \
                     {MAX_METADATA_KEY} bytes and values {MAX_METADATA_VALUE}",
                    k.chars().take(32).collect::<String>(),
                    k.len(),
                    v.len()
                ),
            ));
        }
        // The operator's limits are maxima: a tenant may ask for a tighter cap, never a looser.
        let max_mem = cfg.memory_limit_mb(spec.memory_mib).unwrap_or(u32::MAX);
        if let Some(asked) = spec.memory_limit_mib.filter(|&m| m > max_mem) {
            return Err(invalid(
                "config.memory_limit_mib",
                format!(
                    "is {asked} MiB, above the maximum of {max_mem} MiB this daemon allows for a \
                     {} MiB guest (memory_limit_bytes); ask for at most {max_mem}",
                    spec.memory_mib
                ),
            ));
        }
        let max_cpu = cfg
            .cpu_quota_percent
            .unwrap_or(u32::from(spec.vcpu_count) * 100);
        if let Some(asked) = spec.cpu_quota_percent.filter(|&c| c > max_cpu) {
            return Err(invalid(
                "config.cpu_quota_percent",
                format!(
                    "is {asked}%, above the maximum of {max_cpu}% this daemon allows \
                     (cpu_quota_percent, or 100 per vCPU); ask for at most {max_cpu}"
                ),
            ));
        }
        // Pinning: within the operator's CPUs; I/O limits: at most the operator's.
        if let Some(asked) = &spec.cpuset {
            let cpus = asked
                .parse::<jail::cgroup::cpuset::CpuList>()
                .map_err(|e| invalid("config.cpuset", e))?;
            if let Some(allowed) = cfg.cpuset.as_ref().filter(|a| !cpus.is_subset(a)) {
                return Err(invalid(
                    "config.cpuset",
                    format!(
                        "names CPUs {} outside the CPUs this daemon pins VMs to ({allowed}, \
                         cpuset); ask for a subset of {allowed}",
                        cpus.missing_from(allowed)
                    ),
                ));
            }
            spec.cpuset = Some(cpus.to_string());
        }
        let maxima = cfg.io_limits.fields();
        for (i, (field, asked)) in spec.io_limits.fields().into_iter().enumerate() {
            if asked == Some(0) {
                return Err(invalid(
                    &format!("config.{field}"),
                    "is 0; give a positive limit, or leave it unset for the daemon's".into(),
                ));
            }
            if let (Some(asked), Some(max)) = (asked, maxima[i].1) {
                if asked <= max {
                    continue;
                }
                return Err(invalid(
                    &format!("config.{field}"),
                    format!(
                        "is {asked}, above the maximum of {max} this daemon allows ({field}); \
                         ask for at most {max}"
                    ),
                ));
            }
        }
        Ok(spec)
    }

    /// The library's view of a stored spec.
    pub(crate) fn vm_config(&self, id: &str, spec: &VmSpec) -> (VmConfig, VmOptions) {
        let config = VmConfig {
            vm_id: id.to_owned(),
            vcpu_count: spec.vcpu_count,
            memory_mb: spec.memory_mib,
            kernel_path: spec.kernel_path.clone(),
            rootfs_path: spec.rootfs_path.clone(),
            enable_networking: spec.enable_networking,
        };
        let mut jailer = self.cfg.jailer_config();
        if spec.cpu_quota_percent.is_some() {
            jailer.cpu_quota_pct = spec.cpu_quota_percent;
        }
        if spec.cpuset.is_some() {
            jailer.cpuset = spec.cpuset.clone();
        }
        // Each limit the request leaves unset is the operator's.
        let (asked, default) = (&spec.io_limits, &mut jailer.io_limits);
        default.read_bps = asked.read_bps.or(default.read_bps);
        default.write_bps = asked.write_bps.or(default.write_bps);
        default.read_iops = asked.read_iops.or(default.read_iops);
        default.write_iops = asked.write_iops.or(default.write_iops);
        let options = VmOptions {
            boot_args: (!spec.boot_args.is_empty()).then(|| spec.boot_args.clone()),
            drives: spec
                .drives
                .iter()
                .map(|(p, ro)| DriveConfig {
                    path: p.into(),
                    read_only: *ro,
                })
                .collect(),
            jailer,
            jailer_mode: self.cfg.jailer_mode(),
            // Set only when the caller or the operator set it: otherwise the library derives it
            // from the VM's size (and may leave it out where v2 has no memory controller).
            memory_limit_mb: spec.memory_limit_mib.or_else(|| {
                self.cfg
                    .memory_limit_bytes
                    .and_then(|_| self.cfg.memory_limit_mb(spec.memory_mib))
            }),
            // Production mode refuses a VM that would lack any of its limits.
            strict_cgroups: self.cfg.require_jailer,
            serial: Serial::File(self.serial_path(id)),
            serial_log_max_bytes: usize::try_from(self.cfg.serial_log_max_bytes)
                .unwrap_or(usize::MAX),
            stop_timeout: self.stop_timeout(),
            network: NetworkOptions {
                mode: self.cfg.network_mode,
                bridge: self.cfg.bridge.clone(),
                guest: None,
                rx_rate_limiter: spec.net_rx_rate_limiter.clone(),
                tx_rate_limiter: spec.net_tx_rate_limiter.clone(),
            },
            drive_rate_limiter: spec.drive_rate_limiter.clone(),
            // The allowlist: every host path of a request is opened beneath these.
            asset_dirs: Some(self.cfg.asset_dirs.clone()),
            // The daemon leases its VMs' uids itself, for as long as they exist.
            uid_range: None,
            own_netns: self.cfg.netns,
            owner: Some(self.owner.clone()),
            registry: self.registry.clone(),
            // The daemon's VMs outlive it and are re-attached at its next start.
            die_with_owner: false,
            // GetVmInfo reads the isolation report live, with its uid check; ListVms shows only
            // whether the VM is sandboxed, which that check does not change.
            uid_check_at_start: false,
            track_dirty_pages: spec.track_dirty_pages,
            ..VmOptions::default()
        };
        (config, options)
    }
}
