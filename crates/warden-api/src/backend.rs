//! The daemon's [`VmService`]: a thin adapter from the proto messages to
//! [`warden::daemon::Manager`] and back. All behaviour lives in the manager.

use std::sync::Arc;
use std::time::Duration;

use warden::daemon::state::VmState;
use warden::daemon::store::VmSpec;
use warden::daemon::{ErrorCode, Manager, ManagerError, VmInfo};

use crate::{pb, ApiError, Code, VmService};

/// [`VmService`] backed by the manager.
pub struct ManagerService(pub Arc<Manager>);

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        let code = match e.code() {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Internal => Code::Internal,
        };
        ApiError::new(code, e.chain())
    }
}

/// The proto enum value of a state.
pub fn state_to_pb(s: VmState) -> pb::VmState {
    match s {
        VmState::Created => pb::VmState::Created,
        VmState::Booting => pb::VmState::Booting,
        VmState::Running => pb::VmState::Running,
        VmState::Paused => pb::VmState::Paused,
        VmState::Stopping => pb::VmState::Stopping,
        VmState::Stopped => pb::VmState::Stopped,
        VmState::Failed => pb::VmState::Failed,
        VmState::Deleted => pb::VmState::Deleted,
    }
}

fn limiter_from_pb(r: Option<pb::RateLimiter>) -> Option<warden::RateLimiter> {
    let bucket = |b: Option<pb::TokenBucket>| {
        b.map(|b| warden::TokenBucket {
            size: b.size,
            one_time_burst: (b.one_time_burst > 0).then_some(b.one_time_burst),
            refill_time: b.refill_time_ms,
        })
    };
    r.map(|r| warden::RateLimiter {
        bandwidth: bucket(r.bandwidth),
        ops: bucket(r.ops),
    })
}

fn limiter_to_pb(r: &Option<warden::RateLimiter>) -> Option<pb::RateLimiter> {
    let bucket = |b: &Option<warden::TokenBucket>| {
        b.as_ref().map(|b| pb::TokenBucket {
            size: b.size,
            one_time_burst: b.one_time_burst.unwrap_or(0),
            refill_time_ms: b.refill_time,
        })
    };
    r.as_ref().map(|r| pb::RateLimiter {
        bandwidth: bucket(&r.bandwidth),
        ops: bucket(&r.ops),
    })
}

fn spec_from_pb(c: pb::VmConfig) -> Result<VmSpec, ApiError> {
    let vcpu_count = u8::try_from(c.vcpu_count).map_err(|_| {
        ApiError::invalid_argument(format!(
            "invalid config.vcpu_count: is {}; use 1 to 32",
            c.vcpu_count
        ))
    })?;
    Ok(VmSpec {
        vcpu_count,
        memory_mib: c.memory_mib,
        kernel_path: c.kernel_path,
        rootfs_path: c.rootfs_path,
        boot_args: c.boot_args,
        drives: c
            .drives
            .into_iter()
            .map(|d| (d.path, d.read_only))
            .collect(),
        enable_networking: c.enable_networking,
        memory_limit_mib: c.memory_limit_mib,
        cpu_quota_percent: c.cpu_quota_percent,
        metadata: c.metadata.into_iter().collect(),
        net_rx_rate_limiter: limiter_from_pb(c.net_rx_rate_limiter),
        net_tx_rate_limiter: limiter_from_pb(c.net_tx_rate_limiter),
        drive_rate_limiter: limiter_from_pb(c.drive_rate_limiter),
        cpuset: c.cpuset,
        io_limits: warden::vm::jailer::IoLimits {
            read_bps: c.io_read_bps,
            write_bps: c.io_write_bps,
            read_iops: c.io_read_iops,
            write_iops: c.io_write_iops,
        },
        restore_from: None,
    })
}

fn spec_to_pb(s: &VmSpec) -> pb::VmConfig {
    pb::VmConfig {
        vcpu_count: u32::from(s.vcpu_count),
        memory_mib: s.memory_mib,
        kernel_path: s.kernel_path.clone(),
        rootfs_path: s.rootfs_path.clone(),
        boot_args: s.boot_args.clone(),
        drives: s
            .drives
            .iter()
            .map(|(p, ro)| pb::Drive {
                path: p.clone(),
                read_only: *ro,
            })
            .collect(),
        enable_networking: s.enable_networking,
        memory_limit_mib: s.memory_limit_mib,
        cpu_quota_percent: s.cpu_quota_percent,
        metadata: s.metadata.clone().into_iter().collect(),
        net_rx_rate_limiter: limiter_to_pb(&s.net_rx_rate_limiter),
        net_tx_rate_limiter: limiter_to_pb(&s.net_tx_rate_limiter),
        drive_rate_limiter: limiter_to_pb(&s.drive_rate_limiter),
        cpuset: s.cpuset.clone(),
        io_read_bps: s.io_limits.read_bps,
        io_write_bps: s.io_limits.write_bps,
        io_read_iops: s.io_limits.read_iops,
        io_write_iops: s.io_limits.write_iops,
    }
}

fn layer(l: &warden::Layer) -> pb::IsolationLayer {
    pb::IsolationLayer {
        active: l.active,
        detail: l.detail.clone(),
    }
}

/// The proto view of a VM.
pub fn info_to_pb(v: &VmInfo) -> pb::VmInfo {
    let r = &v.record;
    let plan = r.plan.as_ref();
    let net = plan.and_then(|p| p.net.as_ref());
    let memory_limit = plan.and_then(|p| {
        p.cgroups
            .iter()
            .find(|c| c.file == "memory.limit_in_bytes" || c.file == "memory.max")
            .and_then(|c| c.value.parse().ok())
    });
    pb::VmInfo {
        vm_id: r.id.clone(),
        state: state_to_pb(r.state) as i32,
        config: Some(spec_to_pb(&r.spec)),
        pid: r.pid.unwrap_or(0),
        jailer_id: if plan.is_some_and(|p| p.jailed) {
            r.id.clone()
        } else {
            String::new()
        },
        chroot_path: plan
            .map(|p| p.root_dir.display().to_string())
            .unwrap_or_default(),
        socket_path: plan
            .map(|p| p.socket_path.display().to_string())
            .unwrap_or_default(),
        cgroup: plan.map(|p| pb::CgroupInfo {
            paths: p
                .cgroup_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
            memory_bytes: v.stats.as_ref().and_then(|s| s.memory_bytes),
            memory_limit_bytes: memory_limit
                .filter(|_| !p.cgroups_off.iter().any(|o| o.controller == "memory")),
            cpu_usage_ns: v.stats.as_ref().and_then(|s| s.cpu_usage_ns),
            oom_kills: v.stats.as_ref().and_then(|s| s.oom_kills),
            pids_current: v.stats.as_ref().and_then(|s| s.pids_current),
            limits_off: p
                .cgroups_off
                .iter()
                .map(|o| format!("{}: {}", o.controller, o.why))
                .collect(),
            settings: p
                .cgroups
                .iter()
                .map(|c| pb::CgroupSetting {
                    file: c.file.clone(),
                    value: c.value.clone(),
                    path: c
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    by_warden: c.by_warden,
                })
                .collect(),
        }),
        staged_assets: plan
            .map(|p| {
                p.staged
                    .iter()
                    .map(|f| pb::StagedAsset {
                        source: f.source.display().to_string(),
                        path_in_jail: f.path_in_jail.display().to_string(),
                        method: f.method.as_str().into(),
                        writable: f.writable,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        isolation: v.isolation.as_ref().map(|i| pb::IsolationReport {
            is_sandboxed: i.is_sandboxed,
            jailer: Some(layer(&i.jailer)),
            uid_gid: Some(layer(&i.uid_gid)),
            chroot: Some(layer(&i.chroot)),
            cgroups: Some(layer(&i.cgroups)),
            seccomp: Some(layer(&i.seccomp)),
            pid_ns: Some(layer(&i.pid_ns)),
            net_ns: Some(layer(&i.net_ns)),
        }),
        exit: r.exit.as_ref().map(|e| pb::ExitInfo {
            reason: e.reason.as_str().into(),
            detail: e.detail.clone(),
            at_unix_ms: e.at_unix_ms,
        }),
        created_at_unix_ms: r.created_at,
        updated_at_unix_ms: r.updated_at,
        netns: r.netns.clone().unwrap_or_default(),
        tap_device: r.tap.clone().unwrap_or_default(),
        mac: net.map(|n| n.mac.clone()).unwrap_or_default(),
        // The address the VM holds from the pool, never the placeholder CreateVm validated with.
        guest_ip: r
            .address
            .zip(net.and_then(|n| n.guest))
            .map(|(a, g)| format!("{a}/{}", g.prefix_len))
            .unwrap_or_default(),
        host_veth: net.and_then(|n| n.host_veth.clone()).unwrap_or_default(),
        bridge: net.and_then(|n| n.bridge.clone()).unwrap_or_default(),
    }
}

fn need_id(id: &str) -> Result<&str, ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid_argument(
            "invalid vm_id: is empty; give the id CreateVm returned",
        ));
    }
    Ok(id)
}

#[crate::async_trait]
impl VmService for ManagerService {
    async fn create_vm(&self, req: pb::CreateVmRequest) -> Result<pb::CreateVmResponse, ApiError> {
        let config = req.config.ok_or_else(|| {
            ApiError::invalid_argument(
                "invalid config: missing; give {\"config\": {\"kernel_path\": ...}}",
            )
        })?;
        let rec = self.0.create(&req.vm_id, spec_from_pb(config)?).await?;
        Ok(pb::CreateVmResponse {
            vm_id: rec.id,
            state: state_to_pb(rec.state) as i32,
        })
    }

    async fn delete_vm(&self, req: pb::DeleteVmRequest) -> Result<pb::DeleteVmResponse, ApiError> {
        self.0.delete(need_id(&req.vm_id)?).await?;
        Ok(pb::DeleteVmResponse { success: true })
    }

    async fn boot_vm(&self, req: pb::BootVmRequest) -> Result<pb::BootVmResponse, ApiError> {
        let s = self.0.boot(need_id(&req.vm_id)?).await?;
        Ok(pb::BootVmResponse {
            success: true,
            state: state_to_pb(s) as i32,
        })
    }

    async fn shutdown_vm(
        &self,
        req: pb::ShutdownVmRequest,
    ) -> Result<pb::ShutdownVmResponse, ApiError> {
        let timeout =
            (req.timeout_seconds > 0).then(|| Duration::from_secs(u64::from(req.timeout_seconds)));
        let s = self
            .0
            .shutdown(need_id(&req.vm_id)?, req.force, timeout)
            .await?;
        Ok(pb::ShutdownVmResponse {
            success: true,
            state: state_to_pb(s) as i32,
        })
    }

    async fn pause_vm(&self, req: pb::PauseVmRequest) -> Result<pb::PauseVmResponse, ApiError> {
        let s = self.0.pause(need_id(&req.vm_id)?).await?;
        Ok(pb::PauseVmResponse {
            success: true,
            state: state_to_pb(s) as i32,
        })
    }

    async fn resume_vm(&self, req: pb::ResumeVmRequest) -> Result<pb::ResumeVmResponse, ApiError> {
        let s = self.0.resume(need_id(&req.vm_id)?).await?;
        Ok(pb::ResumeVmResponse {
            success: true,
            state: state_to_pb(s) as i32,
        })
    }

    async fn reboot_vm(&self, req: pb::RebootVmRequest) -> Result<pb::RebootVmResponse, ApiError> {
        let s = self.0.reboot(need_id(&req.vm_id)?).await?;
        Ok(pb::RebootVmResponse {
            success: true,
            state: state_to_pb(s) as i32,
        })
    }

    async fn get_vm_info(
        &self,
        req: pb::GetVmInfoRequest,
    ) -> Result<pb::GetVmInfoResponse, ApiError> {
        let info = self.0.get(need_id(&req.vm_id)?).await?;
        Ok(pb::GetVmInfoResponse {
            vm: Some(info_to_pb(&info)),
        })
    }

    async fn list_vms(&self, _req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse, ApiError> {
        let vms = self.0.list().await?;
        Ok(pb::ListVmsResponse {
            vms: vms.iter().map(info_to_pb).collect(),
        })
    }
}
