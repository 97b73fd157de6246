//! The daemon's [`VmService`]: a thin adapter from the proto messages to
//! [`warden::daemon::Manager`] and back. All behaviour lives in the manager.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use warden::daemon::state::VmState;
use warden::daemon::store::VmSpec;
use warden::daemon::{ErrorCode, Manager, ManagerError, Version, VmInfo, VmInfoRef};

use prost::Message;

use crate::{pb, ApiError, Code, VmService};

/// [`VmService`] backed by the manager.
pub struct ManagerService(pub Arc<Manager>, ListEntries);

impl ManagerService {
    /// The service of `manager`.
    pub fn new(manager: Arc<Manager>) -> Self {
        Self(manager, ListEntries::default())
    }
}

/// ListVms' entries as protobuf, each kept until its VM's [`Version`] changes: a list of 1,000
/// VMs spent most of its time building and encoding entries that had not changed. The cgroup
/// readings change at every refresh, so an entry is sent as its kept bytes followed by a
/// second encoding of the same `VmInfo` that holds only the readings; protobuf merges a message
/// field given twice, so a reader sees one entry (see [`ListEntries::entry`]).
#[derive(Default)]
pub struct ListEntries {
    kept: std::sync::Mutex<HashMap<String, Kept>>,
}

/// A VM's entry without its readings, and the version it was made of.
type Kept = (Version, Arc<[u8]>);

impl ListEntries {
    /// The encoded list entry of `v`: its kept part, and its readings.
    fn entry(&self, v: VmInfoRef<'_>) -> (Arc<[u8]>, Vec<u8>) {
        let id = &v.record.id;
        let kept = self
            .kept
            .lock()
            .unwrap()
            .get(id)
            .filter(|(version, _)| *version == v.version)
            .map(|(_, bytes)| bytes.clone());
        let kept = kept.unwrap_or_else(|| {
            let bytes: Arc<[u8]> = info_to_pb(VmInfoRef { stats: None, ..v })
                .encode_to_vec()
                .into();
            self.kept
                .lock()
                .unwrap()
                .insert(id.clone(), (v.version, bytes.clone()));
            bytes
        });
        let readings = match (v.stats, v.record.plan.as_ref()) {
            (Some(_), Some(_)) => {
                let mut cgroup = pb::CgroupInfo::default();
                readings_to_pb(v.stats, &mut cgroup);
                pb::VmInfo {
                    warden: Some(pb::VmDetails {
                        cgroup: Some(cgroup),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .encode_to_vec()
            }
            _ => Vec::new(),
        };
        (kept, readings)
    }

    /// Forgets the entries of VMs a page did not show though their ids fall in its range
    /// (after `after`, up to `last` or to the end): deleted ones.
    fn keep_only(&self, after: Option<&str>, last: Option<&str>, shown: &HashSet<&str>) {
        self.kept
            .lock()
            .unwrap()
            .retain(|id, _| !in_page_range(id, after, last) || shown.contains(id.as_str()));
    }

    /// Forgets a deleted VM's entry.
    fn forget(&self, id: &str) {
        self.kept.lock().unwrap().remove(id);
    }
}

/// Whether `id` falls in the range of a ListVms page: after `after` (its page token's id), up to
/// `last` (the page's last id, when another page follows) or to the end.
fn in_page_range(id: &str, after: Option<&str>, last: Option<&str>) -> bool {
    after.is_none_or(|a| id > a) && last.is_none_or(|l| id <= l)
}

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

/// warden's finer state, as the proto enum value.
pub fn state_to_pb(s: VmState) -> pb::VmState {
    match s {
        VmState::Created => pb::VmState::Created,
        VmState::Booting => pb::VmState::Booting,
        VmState::Running => pb::VmState::Running,
        VmState::Paused => pb::VmState::Paused,
        VmState::Stopping => pb::VmState::Stopping,
        VmState::Stopped => pb::VmState::Shutdown,
        VmState::Failed => pb::VmState::Failed,
        VmState::Deleted => pb::VmState::Deleted,
    }
}

/// The common state (one of metald's four) that a `state` field carries: a VM being booted is
/// still `created`, one being stopped still `running`, a failed or deleted one `shutdown`.
pub fn common_state(s: VmState) -> pb::VmState {
    match s {
        VmState::Created | VmState::Booting => pb::VmState::Created,
        VmState::Running | VmState::Stopping => pb::VmState::Running,
        VmState::Paused => pb::VmState::Paused,
        VmState::Stopped | VmState::Failed | VmState::Deleted => pb::VmState::Shutdown,
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

fn invalid(field: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_argument(format!("invalid {field}: {problem}"))
}

/// metald's `RateLimit` (bytes per second, refill time in ms, burst in bytes) as a Firecracker
/// bandwidth bucket: `bandwidth x refill_time / 1000` bytes every `refill_time` ms.
fn rate_limit_from_pb(
    field: &str,
    r: Option<pb::RateLimit>,
) -> Result<Option<warden::RateLimiter>, ApiError> {
    let Some(r) = r else { return Ok(None) };
    if r.bandwidth == 0 && r.refill_time == 0 && r.burst == 0 {
        return Ok(None);
    }
    for (name, v) in [
        ("bandwidth", r.bandwidth),
        ("refill_time", r.refill_time),
        ("burst", r.burst),
    ] {
        if v < 0 {
            return Err(invalid(
                &format!("{field}.{name}"),
                format!("is {v}; give a positive number (0 for the default)"),
            ));
        }
    }
    if r.bandwidth == 0 {
        return Err(invalid(
            &format!("{field}.bandwidth"),
            "is 0 with a refill_time or burst; give the bytes per second",
        ));
    }
    let refill_ms = if r.refill_time == 0 {
        1000
    } else {
        r.refill_time
    } as u64;
    let size = (r.bandwidth as u64).saturating_mul(refill_ms) / 1000;
    if size == 0 {
        return Err(invalid(
            &format!("{field}.bandwidth"),
            format!(
                "{} bytes/s over {refill_ms} ms is less than one byte; raise bandwidth or refill_time",
                r.bandwidth
            ),
        ));
    }
    Ok(Some(warden::RateLimiter {
        bandwidth: Some(warden::TokenBucket {
            size,
            one_time_burst: (r.burst > 0).then_some(r.burst as u64),
            refill_time: refill_ms,
        }),
        ops: None,
    }))
}

/// The metald `RateLimit` of a limiter that has only a bandwidth bucket.
fn rate_limit_to_pb(r: &Option<warden::RateLimiter>) -> Option<pb::RateLimit> {
    let r = r.as_ref()?;
    if r.ops.is_some() {
        return None;
    }
    let b = r.bandwidth.as_ref()?;
    let refill = b.refill_time.max(1);
    Some(pb::RateLimit {
        bandwidth: i64::try_from(b.size.saturating_mul(1000) / refill).unwrap_or(i64::MAX),
        refill_time: i64::try_from(b.refill_time).unwrap_or(i64::MAX),
        burst: i64::try_from(b.one_time_burst.unwrap_or(0)).unwrap_or(i64::MAX),
    })
}

const MIB: i64 = 1 << 20;

/// Where each of the spec's files came from in the request, so the manager's field names
/// (`config.kernel_path`, `config.drives[0].path`) can be given as the request spells them.
#[derive(Debug, Default)]
pub struct FieldMap {
    /// The root device's index in `config.storage`.
    root: Option<usize>,
    /// The `config.storage` index of each extra drive.
    drives: Vec<usize>,
}

impl FieldMap {
    /// The map of a stored spec: storage lists the root device first, then the drives.
    fn of_spec(s: &VmSpec) -> FieldMap {
        let root = (!s.rootfs_path.is_empty()).then_some(0);
        let first = usize::from(root.is_some());
        FieldMap {
            root,
            drives: (first..first + s.drives.len()).collect(),
        }
    }

    /// The request's name of one of the manager's fields.
    fn rename(&self, field: &str) -> String {
        let storage = |i: usize| format!("config.storage[{i}].path");
        match field {
            "config.vcpu_count" => "config.cpu.vcpu_count".into(),
            "config.memory_mib" => "config.memory.size_bytes".into(),
            "config.kernel_path" => "config.boot.kernel_path".into(),
            "config.boot_args" => "config.boot.kernel_args".into(),
            "config.drives" => "config.storage".into(),
            "config.rootfs_path" => self.root.map_or(field.into(), storage),
            "config.enable_networking" => "config.network".into(),
            "config.net_rx_rate_limiter" => "config.network[0].rx_rate_limit".into(),
            "config.net_tx_rate_limiter" => "config.network[0].tx_rate_limit".into(),
            _ => {
                let drive = field
                    .strip_prefix("config.drives[")
                    .and_then(|r| r.split_once(']'))
                    .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
                match drive {
                    Some((n, rest)) => match self.drives.get(n) {
                        Some(i) => format!("config.storage[{i}]{rest}"),
                        None => field.into(),
                    },
                    None => field.into(),
                }
            }
        }
    }

    /// A manager error, with the field it names as the request spells it.
    fn error(&self, e: ManagerError) -> ApiError {
        let field = match &e {
            ManagerError::Invalid { field, .. } => Some(field.clone()),
            ManagerError::OverCap { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        let mut api = ApiError::from(e);
        if let Some(f) = field {
            api.message = api.message.replacen(&f, &self.rename(&f), 1);
        }
        api
    }
}

/// The manager's spec of a request's config, refusing (with `invalid_argument` naming the field)
/// what warden cannot honour.
pub fn spec_from_pb(c: pb::VmConfig, customer_id: String) -> Result<(VmSpec, FieldMap), ApiError> {
    let mut map = FieldMap::default();
    // CPU: Firecracker has no vCPU hotplug and offers one socket of single-threaded cores.
    let cpu = c.cpu.unwrap_or_default();
    if cpu.vcpu_count < 0 || cpu.vcpu_count > i32::from(u8::MAX) {
        return Err(invalid(
            "config.cpu.vcpu_count",
            format!("is {}; use 1 to 32", cpu.vcpu_count),
        ));
    }
    let vcpus = if cpu.vcpu_count == 0 {
        1
    } else {
        cpu.vcpu_count
    };
    if cpu.max_vcpu_count != 0 && cpu.max_vcpu_count != vcpus {
        return Err(invalid(
            "config.cpu.max_vcpu_count",
            format!(
                "is {}, not vcpu_count {vcpus}: Firecracker has no vCPU hotplug; leave it 0",
                cpu.max_vcpu_count
            ),
        ));
    }
    if let Some(t) = cpu.topology {
        let one = |n: i32| n == 0 || n == 1;
        let cores_ok = t.cores_per_socket == 0 || t.cores_per_socket == vcpus;
        if !one(t.sockets) || !one(t.threads_per_core) || !cores_ok {
            return Err(invalid(
                "config.cpu.topology",
                format!(
                    "is {} socket(s) x {} core(s) x {} thread(s): warden's Firecracker VMs have \
                     one socket of vcpu_count single-threaded cores; leave topology out",
                    t.sockets, t.cores_per_socket, t.threads_per_core
                ),
            ));
        }
    }
    if let Some(k) = cpu.features.keys().next() {
        return Err(invalid(
            &format!("config.cpu.features[{k:?}]"),
            "CPU features and models are not supported (warden uses Firecracker's default CPU \
             template); leave features empty",
        ));
    }

    // Memory: whole MiB; no hotplug, no other backing.
    let mem = c.memory.unwrap_or_default();
    if mem.size_bytes < 0 || mem.size_bytes % MIB != 0 || mem.size_bytes / MIB > i64::from(u32::MAX)
    {
        return Err(invalid(
            "config.memory.size_bytes",
            format!(
                "is {}; give a whole number of MiB (a multiple of 1048576), at least 128 MiB",
                mem.size_bytes
            ),
        ));
    }
    let memory_mib = (mem.size_bytes / MIB) as u32;
    if memory_mib != 0 && memory_mib < 128 {
        return Err(invalid(
            "config.memory.size_bytes",
            format!(
                "is {} ({memory_mib} MiB); give at least 134217728 (128 MiB)",
                mem.size_bytes
            ),
        ));
    }
    if mem.hotplug_enabled {
        return Err(invalid(
            "config.memory.hotplug_enabled",
            "memory hotplug is not supported by warden's Firecracker VMs; leave it false",
        ));
    }
    if mem.max_size_bytes != 0 && mem.max_size_bytes != mem.size_bytes {
        return Err(invalid(
            "config.memory.max_size_bytes",
            format!(
                "is {}, not size_bytes: memory hotplug is not supported; leave it 0",
                mem.max_size_bytes
            ),
        ));
    }
    if let Some(k) = mem.backing.keys().next() {
        return Err(invalid(
            &format!("config.memory.backing[{k:?}]"),
            "memory backing options (hugepages, ...) are not supported; leave backing empty",
        ));
    }

    // Boot.
    let boot = c.boot.unwrap_or_default();
    if !boot.initrd_path.is_empty() {
        return Err(invalid(
            "config.boot.initrd_path",
            "an initrd is not supported by warden yet; boot a kernel with a root device in \
             config.storage",
        ));
    }
    if let Some(k) = boot.boot_options.keys().next() {
        return Err(invalid(
            &format!("config.boot.boot_options[{k:?}]"),
            "boot options are not supported; put kernel parameters in kernel_args",
        ));
    }

    // Storage: the root device is the rootfs, the others extra drives.
    let mut rootfs_path = String::new();
    let mut drives = Vec::new();
    for (i, d) in c.storage.into_iter().enumerate() {
        let field = |name: &str| format!("config.storage[{i}].{name}");
        if !matches!(d.interface_type.as_str(), "" | "virtio-blk") {
            return Err(invalid(
                &field("interface_type"),
                format!(
                    "is {:?}; Firecracker offers only virtio-blk (or leave it empty)",
                    d.interface_type
                ),
            ));
        }
        if let Some(k) = d.options.keys().next() {
            return Err(invalid(
                &format!("config.storage[{i}].options[{k:?}]"),
                "storage options are not supported; leave options empty",
            ));
        }
        if d.path.is_empty() {
            return Err(invalid(
                &field("path"),
                "is empty; give an image under an asset directory",
            ));
        }
        if d.is_root_device {
            if let Some(first) = map.root {
                return Err(invalid(
                    &field("is_root_device"),
                    format!("config.storage[{first}] is already the root device; mark only one"),
                ));
            }
            if d.read_only {
                return Err(invalid(
                    &field("read_only"),
                    "a read-only root device is not supported by the daemon; the root device is \
                     writable (extra devices may be read-only)",
                ));
            }
            map.root = Some(i);
            rootfs_path = d.path;
        } else {
            map.drives.push(i);
            drives.push((d.path, d.read_only));
        }
    }

    // Network: one interface, in the VM's own namespace, addressed by the daemon.
    let mut net_rx = None;
    let mut net_tx = None;
    let enable_networking = !c.network.is_empty();
    if c.network.len() > 1 {
        return Err(invalid(
            "config.network",
            format!(
                "has {} interfaces; warden gives a VM at most one",
                c.network.len()
            ),
        ));
    }
    if let Some(n) = c.network.into_iter().next() {
        let field = |name: &str| format!("config.network[0].{name}");
        if !matches!(n.interface_type.as_str(), "" | "virtio-net") {
            return Err(invalid(
                &field("interface_type"),
                format!(
                    "is {:?}; Firecracker offers only virtio-net (or leave it empty)",
                    n.interface_type
                ),
            ));
        }
        if let Some(k) = n.options.keys().next() {
            return Err(invalid(
                &format!("config.network[0].options[{k:?}]"),
                "network options are not supported; leave options empty",
            ));
        }
        if !matches!(n.tap_device.as_str(), "" | "tap0") {
            return Err(invalid(
                &field("tap_device"),
                format!(
                    "is {:?}; warden creates the TAP itself, as tap0 inside the VM's own network \
                     namespace; leave it empty",
                    n.tap_device
                ),
            ));
        }
        if !n.mac_address.is_empty() {
            return Err(invalid(
                &field("mac_address"),
                "warden derives a stable, locally administered MAC from the VM id (GetVmInfo \
                 shows it); leave it empty",
            ));
        }
        if let Some(v4) = &n.ipv4_config {
            if v4.dhcp {
                return Err(invalid(
                    &field("ipv4_config.dhcp"),
                    "warden runs no DHCP server: the guest gets its address on the kernel \
                     command line (ip=); leave dhcp false",
                ));
            }
            for (name, v) in [
                ("address", &v4.address),
                ("netmask", &v4.netmask),
                ("gateway", &v4.gateway),
            ] {
                if !v.is_empty() {
                    return Err(invalid(
                        &field(&format!("ipv4_config.{name}")),
                        "addresses come from the daemon's address_pool (bridge mode), never \
                         from the request; leave it empty (GetVmInfo's network_info shows the \
                         address)",
                    ));
                }
            }
            if !v4.dns_servers.is_empty() {
                return Err(invalid(
                    &field("ipv4_config.dns_servers"),
                    "warden configures no DNS in the guest; leave dns_servers empty",
                ));
            }
        }
        if n.ipv6_config.is_some() {
            return Err(invalid(
                &field("ipv6_config"),
                "IPv6 is not supported: warden's networking is IPv4 only; leave it out",
            ));
        }
        match pb::NetworkMode::try_from(n.mode) {
            Ok(pb::NetworkMode::Unspecified | pb::NetworkMode::Ipv4Only) => {}
            _ => {
                return Err(invalid(
                    &field("mode"),
                    format!(
                        "is {}; warden's networking is IPv4 only: use NETWORK_MODE_IPV4_ONLY",
                        pb::NetworkMode::try_from(n.mode)
                            .map_or_else(|_| n.mode.to_string(), |m| m.as_str_name().into())
                    ),
                ));
            }
        }
        let rx = rate_limit_from_pb(&field("rx_rate_limit"), n.rx_rate_limit)?;
        let tx = rate_limit_from_pb(&field("tx_rate_limit"), n.tx_rate_limit)?;
        // Both may be given when they say the same (as GetVmInfo's config does).
        let pick = |name: &str,
                    common: Option<warden::RateLimiter>,
                    full: Option<pb::RateLimiter>|
         -> Result<Option<warden::RateLimiter>, ApiError> {
            let full = limiter_from_pb(full);
            match (common, full) {
                (Some(a), Some(b)) if a != b => Err(invalid(
                    &field(name),
                    format!("differs from {}; give one of them", &name[..name.len() - 2]),
                )),
                (a, b) => Ok(a.or(b)),
            }
        };
        net_rx = pick("rx_rate_limiter", rx, n.rx_rate_limiter)?;
        net_tx = pick("tx_rate_limiter", tx, n.tx_rate_limiter)?;
    }

    // Console: always the serial console, captured in serial.log.
    if let Some(con) = c.console {
        for (name, v) in [("output", &con.output), ("input", &con.input)] {
            if !v.is_empty() {
                return Err(invalid(
                    &format!("config.console.{name}"),
                    "the serial console always goes to the VM's serial.log in the daemon's \
                     state_dir (bounded by serial_log_max_bytes); leave it empty",
                ));
            }
        }
        if !matches!(con.console_type.as_str(), "" | "serial") {
            return Err(invalid(
                "config.console.console_type",
                format!(
                    "is {:?}; Firecracker offers only a serial console",
                    con.console_type
                ),
            ));
        }
    }

    let spec = VmSpec {
        vcpu_count: vcpus as u8,
        memory_mib,
        kernel_path: boot.kernel_path,
        rootfs_path,
        boot_args: boot.kernel_args,
        drives,
        enable_networking,
        memory_limit_mib: c.memory_limit_mib,
        cpu_quota_percent: c.cpu_quota_percent,
        metadata: c.metadata.into_iter().collect(),
        net_rx_rate_limiter: net_rx,
        net_tx_rate_limiter: net_tx,
        drive_rate_limiter: limiter_from_pb(c.drive_rate_limiter),
        cpuset: c.cpuset,
        io_limits: warden::vm::jailer::IoLimits {
            read_bps: c.io_read_bps,
            write_bps: c.io_write_bps,
            read_iops: c.io_read_iops,
            write_iops: c.io_write_iops,
        },
        customer_id,
        restore_from: None,
        track_dirty_pages: c.track_dirty_pages,
    };
    Ok((spec, map))
}

/// A stored spec as the request's config: the root device first, then the drives.
pub fn spec_to_pb(s: &VmSpec) -> pb::VmConfig {
    let mut storage = Vec::new();
    if !s.rootfs_path.is_empty() {
        storage.push(pb::StorageDevice {
            id: "rootfs".into(),
            path: s.rootfs_path.clone(),
            read_only: false,
            is_root_device: true,
            interface_type: "virtio-blk".into(),
            options: Default::default(),
        });
    }
    for (i, (path, ro)) in s.drives.iter().enumerate() {
        storage.push(pb::StorageDevice {
            id: format!("drive{i}"),
            path: path.clone(),
            read_only: *ro,
            is_root_device: false,
            interface_type: "virtio-blk".into(),
            options: Default::default(),
        });
    }
    let network = if s.enable_networking {
        vec![pb::NetworkInterface {
            id: "eth0".into(),
            tap_device: "tap0".into(),
            interface_type: "virtio-net".into(),
            mode: pb::NetworkMode::Ipv4Only as i32,
            rx_rate_limit: rate_limit_to_pb(&s.net_rx_rate_limiter),
            tx_rate_limit: rate_limit_to_pb(&s.net_tx_rate_limiter),
            rx_rate_limiter: limiter_to_pb(&s.net_rx_rate_limiter),
            tx_rate_limiter: limiter_to_pb(&s.net_tx_rate_limiter),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    pb::VmConfig {
        cpu: Some(pb::CpuConfig {
            vcpu_count: i32::from(s.vcpu_count),
            max_vcpu_count: i32::from(s.vcpu_count),
            ..Default::default()
        }),
        memory: Some(pb::MemoryConfig {
            size_bytes: i64::from(s.memory_mib) * MIB,
            max_size_bytes: i64::from(s.memory_mib) * MIB,
            ..Default::default()
        }),
        boot: Some(pb::BootConfig {
            kernel_path: s.kernel_path.clone(),
            kernel_args: s.boot_args.clone(),
            ..Default::default()
        }),
        storage,
        network,
        console: Some(pb::ConsoleConfig {
            enabled: true,
            console_type: "serial".into(),
            ..Default::default()
        }),
        metadata: s.metadata.clone().into_iter().collect(),
        cpuset: s.cpuset.clone(),
        io_read_bps: s.io_limits.read_bps,
        io_write_bps: s.io_limits.write_bps,
        io_read_iops: s.io_limits.read_iops,
        io_write_iops: s.io_limits.write_iops,
        memory_limit_mib: s.memory_limit_mib,
        cpu_quota_percent: s.cpu_quota_percent,
        drive_rate_limiter: limiter_to_pb(&s.drive_rate_limiter),
        track_dirty_pages: s.track_dirty_pages,
    }
}

fn layer(l: &warden::Layer) -> pb::IsolationLayer {
    pb::IsolationLayer {
        active: l.active,
        detail: l.detail.clone(),
    }
}

/// A path as text, as `Path::display` shows it (invalid UTF-8 replaced) without going through
/// the formatter: half the cost of a list entry's paths was `display().to_string()`.
fn path_text(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// warden's own view of a VM: GetVmInfo's, with everything ListVms' summary leaves out.
pub fn details_to_pb(v: VmInfoRef<'_>) -> pb::VmDetails {
    let mut d = summary_to_pb(v);
    let Some(p) = v.record.plan.as_ref() else {
        return d;
    };
    if let Some(c) = &mut d.cgroup {
        c.paths = p.cgroup_dirs.iter().map(|d| path_text(d)).collect();
        c.settings = p
            .cgroups
            .iter()
            .map(|c| pb::CgroupSetting {
                file: c.file.clone(),
                value: c.value.clone(),
                path: c.path.as_ref().map(|p| path_text(p)).unwrap_or_default(),
                by_warden: c.by_warden,
            })
            .collect();
    }
    d.staged_assets = p
        .staged
        .iter()
        .map(|f| pb::StagedAsset {
            source: path_text(&f.source),
            path_in_jail: path_text(&f.path_in_jail),
            method: f.method.as_str().into(),
            writable: f.writable,
        })
        .collect();
    if let (Some(i), Some(out)) = (v.isolation, &mut d.isolation) {
        out.jailer = Some(layer(&i.jailer));
        out.uid_gid = Some(layer(&i.uid_gid));
        out.chroot = Some(layer(&i.chroot));
        out.cgroups = Some(layer(&i.cgroups));
        out.seccomp = Some(layer(&i.seccomp));
        out.pid_ns = Some(layer(&i.pid_ns));
        out.net_ns = Some(layer(&i.net_ns));
    }
    d
}

/// ListVms' summary of warden's view: without what only one VM's page needs (cgroup paths and
/// settings, staged assets, each isolation layer's text; GetVmInfo has them). A full list of
/// 1,000 VMs carried about 3 MB of JSON with them.
fn summary_to_pb(v: VmInfoRef<'_>) -> pb::VmDetails {
    let r = v.record;
    let plan = r.plan.as_ref();
    let net = plan.and_then(|p| p.net.as_ref());
    let memory_limit = plan.and_then(|p| {
        p.cgroups
            .iter()
            .find(|c| c.file == "memory.limit_in_bytes" || c.file == "memory.max")
            .and_then(|c| c.value.parse().ok())
    });
    pb::VmDetails {
        state: state_to_pb(r.state) as i32,
        pid: r.pid.unwrap_or(0),
        // The jail's id: the VM's own, or that of the warm jail it took.
        jailer_id: if plan.is_some_and(|p| p.jailed) {
            r.jail_id().to_owned()
        } else {
            String::new()
        },
        chroot_path: plan.map(|p| path_text(&p.root_dir)).unwrap_or_default(),
        socket_path: plan.map(|p| path_text(&p.socket_path)).unwrap_or_default(),
        cgroup: plan
            .map(|p| pb::CgroupInfo {
                paths: Vec::new(),
                memory_limit_bytes: memory_limit
                    .filter(|_| !p.cgroups_off.iter().any(|o| o.controller == "memory")),
                limits_off: p
                    .cgroups_off
                    .iter()
                    .map(|o| format!("{}: {}", o.controller, o.why))
                    .collect(),
                settings: Vec::new(),
                ..Default::default()
            })
            .map(|mut c| {
                readings_to_pb(v.stats, &mut c);
                c
            }),
        staged_assets: Vec::new(),
        isolation: v.isolation.map(|i| pb::IsolationReport {
            is_sandboxed: i.is_sandboxed,
            ..Default::default()
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
        uid: r.uid,
    }
}

/// A VM's cgroup readings, into its `CgroupInfo`.
fn readings_to_pb(stats: Option<&warden::CgroupStats>, c: &mut pb::CgroupInfo) {
    c.memory_bytes = stats.and_then(|s| s.memory_bytes);
    c.cpu_usage_ns = stats.and_then(|s| s.cpu_usage_ns);
    c.oom_kills = stats.and_then(|s| s.oom_kills);
    c.pids_current = stats.and_then(|s| s.pids_current);
}

/// The list entry of a VM.
pub fn info_to_pb(v: VmInfoRef<'_>) -> pb::VmInfo {
    let r = v.record;
    pb::VmInfo {
        vm_id: r.id.clone(),
        state: common_state(r.state) as i32,
        vcpu_count: i32::from(r.spec.vcpu_count),
        memory_size_bytes: i64::from(r.spec.memory_mib) * MIB,
        created_timestamp: r.created_at / 1000,
        modified_timestamp: r.updated_at / 1000,
        metadata: r.spec.metadata.clone().into_iter().collect(),
        customer_id: r.spec.customer_id.clone(),
        warden: Some(summary_to_pb(v)),
    }
}

/// Seconds since the process with this start time (clock ticks since boot) started.
fn uptime_seconds(start_ticks: u64) -> Option<u64> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let host: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // USER_HZ, which /proc/<pid>/stat counts in, is 100 on every Linux ABI.
    let started = start_ticks as f64 / 100.0;
    Some((host - started).max(0.0) as u64)
}

/// GetVmInfo's answer.
pub fn get_response(v: &VmInfo) -> pb::GetVmInfoResponse {
    let r = &v.record;
    let details = details_to_pb(v.borrowed());
    let running = r.state.may_have_process();
    let uptime = r
        .start_time
        .filter(|_| running)
        .and_then(uptime_seconds)
        .unwrap_or(0);
    let cpu_ns = v.stats.as_ref().and_then(|s| s.cpu_usage_ns).unwrap_or(0);
    let cpu_usage_percent = if uptime > 0 {
        let pct =
            cpu_ns as f64 / (uptime as f64 * 1e9) / f64::from(r.spec.vcpu_count.max(1)) * 100.0;
        pct.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let metrics = running.then(|| pb::VmMetrics {
        cpu_usage_percent,
        memory_usage_bytes: v
            .stats
            .as_ref()
            .and_then(|s| s.memory_bytes)
            .and_then(|m| i64::try_from(m).ok())
            .unwrap_or(0),
        network_stats: Some(Default::default()),
        storage_stats: Some(Default::default()),
        uptime_seconds: i64::try_from(uptime).unwrap_or(0),
    });
    let mut backend = std::collections::HashMap::new();
    backend.insert("backend".to_owned(), "firecracker".to_owned());
    backend.insert("state".to_owned(), r.state.as_str().to_owned());
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            backend.insert(k.to_owned(), v);
        }
    };
    put("customer_id", r.spec.customer_id.clone());
    put("jailed", (!details.jailer_id.is_empty()).to_string());
    if details.pid != 0 {
        put("pid", details.pid.to_string());
    }
    put("jailer_id", details.jailer_id.clone());
    put("chroot_path", details.chroot_path.clone());
    put("socket_path", details.socket_path.clone());
    if let Some(uid) = details.uid {
        put("uid", uid.to_string());
        put("gid", uid.to_string());
    }
    if let Some(c) = &details.cgroup {
        put("cgroups", c.paths.join(","));
    }
    put("netns", details.netns.clone());
    if let Some(i) = &details.isolation {
        put("sandboxed", i.is_sandboxed.to_string());
    }
    if let Some(e) = &details.exit {
        put("exit_reason", e.reason.clone());
    }
    let network_info = r.spec.enable_networking.then(|| pb::VmNetworkInfo {
        ip_address: details
            .guest_ip
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned(),
        mac_address: details.mac.clone(),
        tap_device: details.tap_device.clone(),
        network_namespace: details.netns.clone(),
        gateway: r
            .plan
            .as_ref()
            .and_then(|p| p.net.as_ref())
            .and_then(|n| n.guest)
            .map(|g| g.gateway.to_string())
            .unwrap_or_default(),
        dns_servers: Vec::new(),
        port_mappings: Vec::new(),
    });
    pb::GetVmInfoResponse {
        vm_id: r.id.clone(),
        config: Some(spec_to_pb(&r.spec)),
        state: common_state(r.state) as i32,
        metrics,
        backend_info: backend,
        network_info,
        warden: Some(details),
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

/// An opaque page token: the id of the last VM of the previous page.
fn page_token(last_id: &str) -> String {
    let hex: String = last_id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("after-{hex}")
}

fn parse_page_token(token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "page_token",
            "is not a token ListVms gave; pass next_page_token unchanged, or leave it empty",
        )
    };
    let hex = token.strip_prefix("after-").ok_or_else(bad)?;
    if hex.len() % 2 != 0 || hex.is_empty() {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes.ok_or_else(bad)?)
        .map(Some)
        .map_err(|_| bad())
}

/// Whether a VM matches ListVms' state filter: by its common state or its finer one.
fn state_matches(filter: &[i32], s: VmState) -> bool {
    filter.is_empty()
        || filter.contains(&(common_state(s) as i32))
        || filter.contains(&(state_to_pb(s) as i32))
}

macro_rules! state_response {
    ($ty:ident, $s:expr) => {{
        let s = $s;
        pb::$ty {
            success: true,
            state: common_state(s) as i32,
            warden_state: state_to_pb(s) as i32,
        }
    }};
}

#[crate::async_trait]
impl VmService for ManagerService {
    async fn create_vm(&self, req: pb::CreateVmRequest) -> Result<pb::CreateVmResponse, ApiError> {
        let config = req.config.ok_or_else(|| {
            ApiError::invalid_argument(
                "invalid config: missing; give {\"config\": {\"boot\": {\"kernel_path\": ...}}}",
            )
        })?;
        let (spec, fields) = spec_from_pb(config, req.customer_id)?;
        let rec = self
            .0
            .create(&req.vm_id, spec)
            .await
            .map_err(|e| fields.error(e))?;
        Ok(pb::CreateVmResponse {
            vm_id: rec.id,
            state: common_state(rec.state) as i32,
            warden_state: state_to_pb(rec.state) as i32,
        })
    }

    async fn delete_vm(&self, req: pb::DeleteVmRequest) -> Result<pb::DeleteVmResponse, ApiError> {
        let id = need_id(&req.vm_id)?;
        self.0.delete_with(id, req.force).await?;
        self.1.forget(id);
        Ok(pb::DeleteVmResponse { success: true })
    }

    async fn boot_vm(&self, req: pb::BootVmRequest) -> Result<pb::BootVmResponse, ApiError> {
        let id = need_id(&req.vm_id)?;
        let s = match self.0.boot(id).await {
            Ok(s) => s,
            Err(e) => return Err(self.stored_fields(id, e).await),
        };
        Ok(state_response!(BootVmResponse, s))
    }

    async fn shutdown_vm(
        &self,
        req: pb::ShutdownVmRequest,
    ) -> Result<pb::ShutdownVmResponse, ApiError> {
        if req.timeout_seconds < 0 {
            return Err(invalid(
                "timeout_seconds",
                format!(
                    "is {}; give seconds to wait (0 for the daemon's default)",
                    req.timeout_seconds
                ),
            ));
        }
        let timeout = (req.timeout_seconds > 0)
            .then(|| Duration::from_secs(u64::from(req.timeout_seconds.unsigned_abs())));
        let s = self
            .0
            .shutdown(need_id(&req.vm_id)?, req.force, timeout)
            .await?;
        Ok(state_response!(ShutdownVmResponse, s))
    }

    async fn pause_vm(&self, req: pb::PauseVmRequest) -> Result<pb::PauseVmResponse, ApiError> {
        let s = self.0.pause(need_id(&req.vm_id)?).await?;
        Ok(state_response!(PauseVmResponse, s))
    }

    async fn resume_vm(&self, req: pb::ResumeVmRequest) -> Result<pb::ResumeVmResponse, ApiError> {
        let s = self.0.resume(need_id(&req.vm_id)?).await?;
        Ok(state_response!(ResumeVmResponse, s))
    }

    async fn reboot_vm(&self, req: pb::RebootVmRequest) -> Result<pb::RebootVmResponse, ApiError> {
        let id = need_id(&req.vm_id)?;
        let s = match self.0.reboot_with(id, req.force).await {
            Ok(s) => s,
            Err(e) => return Err(self.stored_fields(id, e).await),
        };
        Ok(state_response!(RebootVmResponse, s))
    }

    async fn get_vm_info(
        &self,
        req: pb::GetVmInfoRequest,
    ) -> Result<pb::GetVmInfoResponse, ApiError> {
        let info = self.0.get(need_id(&req.vm_id)?).await?;
        Ok(get_response(&info))
    }

    async fn list_vms(&self, req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse, ApiError> {
        let (vms, next_page_token, total_count) = self
            .list_page(&req, info_to_pb, |v: &pb::VmInfo| v.vm_id.as_str())
            .await?;
        Ok(pb::ListVmsResponse {
            vms,
            next_page_token,
            total_count,
        })
    }

    async fn list_vms_encoded(&self, req: pb::ListVmsRequest) -> Result<Vec<u8>, ApiError> {
        type Made = (String, (Arc<[u8]>, Vec<u8>), Option<pb::VmInfo>);
        let (page, next_page_token, total_count) = self
            .list_page(
                &req,
                |v| -> Made {
                    // Debug builds check every kept entry against one made anew.
                    let fresh = cfg!(debug_assertions).then(|| info_to_pb(v));
                    (v.record.id.clone(), self.1.entry(v), fresh)
                },
                |m: &Made| m.0.as_str(),
            )
            .await?;
        // Every VM in the page's range is on it unless filtered out: prune what was deleted.
        if req.state_filter.is_empty() {
            let after = parse_page_token(&req.page_token)?;
            let last = (!next_page_token.is_empty())
                .then(|| page.last().map(|m| m.0.as_str()))
                .flatten();
            let shown = page.iter().map(|m| m.0.as_str()).collect();
            self.1.keep_only(after.as_deref(), last, &shown);
        }
        let mut out = Vec::with_capacity(page.iter().map(|m| m.1 .0.len() + 24).sum());
        for (_, (kept, readings), _) in &page {
            prost::encoding::encode_key(
                VMS_FIELD,
                prost::encoding::WireType::LengthDelimited,
                &mut out,
            );
            prost::encoding::encode_varint((kept.len() + readings.len()) as u64, &mut out);
            out.extend_from_slice(kept);
            out.extend_from_slice(readings);
        }
        let rest = pb::ListVmsResponse {
            vms: Vec::new(),
            next_page_token,
            total_count,
        };
        rest.encode(&mut out)
            .map_err(|e| ApiError::internal(format!("failed to encode the response: {e}")))?;
        if cfg!(debug_assertions) {
            let decoded = pb::ListVmsResponse::decode(out.as_slice());
            let want = pb::ListVmsResponse {
                vms: page.into_iter().filter_map(|m| m.2).collect(),
                ..rest
            };
            assert_eq!(decoded.ok(), Some(want), "a kept ListVms entry is stale");
        }
        Ok(out)
    }

    async fn snapshot_vm(
        &self,
        req: pb::SnapshotVmRequest,
    ) -> Result<pb::SnapshotVmResponse, ApiError> {
        let id = need_id(&req.vm_id)?;
        if req.name.is_empty() {
            return Err(ApiError::invalid_argument(
                "invalid name: is empty; give the snapshot a name (letters, digits and '-')",
            ));
        }
        let parent =
            match (req.diff, req.parent.as_str()) {
                (false, "") => None,
                (false, _) => return Err(ApiError::invalid_argument(
                    "invalid parent: is set without diff; set diff for a diff snapshot, or leave \
                     parent empty for a full one",
                )),
                (true, "") => return Err(ApiError::invalid_argument(
                    "invalid parent: is empty; a diff snapshot names the VM's last snapshot as \
                     its parent",
                )),
                (true, p) => Some(p),
            };
        let m = self
            .0
            .snapshot(id, &req.name, parent, !req.keep_paused)
            .await?;
        Ok(pb::SnapshotVmResponse {
            snapshot: Some(snapshot_to_pb(&req.name, &m)),
        })
    }

    async fn restore_vm(
        &self,
        req: pb::RestoreVmRequest,
    ) -> Result<pb::RestoreVmResponse, ApiError> {
        if req.snapshot.is_empty() {
            return Err(ApiError::invalid_argument(
                "invalid snapshot: is empty; give the name of a snapshot (ListSnapshots)",
            ));
        }
        let rec = self.0.restore(&req.vm_id, &req.snapshot).await?;
        let state = self.0.get(&rec.id).await?.record.state;
        Ok(pb::RestoreVmResponse {
            vm_id: rec.id,
            state: common_state(state) as i32,
        })
    }

    async fn list_snapshots(
        &self,
        _req: pb::ListSnapshotsRequest,
    ) -> Result<pb::ListSnapshotsResponse, ApiError> {
        Ok(pb::ListSnapshotsResponse {
            snapshots: self
                .0
                .list_snapshots()
                .await?
                .iter()
                .map(|(name, m)| snapshot_to_pb(name, m))
                .collect(),
        })
    }

    async fn delete_snapshot(
        &self,
        req: pb::DeleteSnapshotRequest,
    ) -> Result<pb::DeleteSnapshotResponse, ApiError> {
        self.0.delete_snapshot(&req.name).await?;
        Ok(pb::DeleteSnapshotResponse { success: true })
    }

    async fn watch_vms(&self, req: pb::WatchVmsRequest) -> Result<crate::VmEventStream, ApiError> {
        let only = (!req.vm_id.is_empty()).then_some(req.vm_id);
        if let Some(id) = &only {
            self.0.get(id).await?;
        }
        let manager = self.0.clone();
        let (tx, out) = tokio::sync::mpsc::channel::<Result<pb::WatchVmsResponse, ApiError>>(64);
        tokio::spawn(async move {
            let wanted = |id: &str| only.as_deref().is_none_or(|o| o == id);
            // What this watcher last reported of each VM, to resynchronise after a lag.
            let mut sent: std::collections::HashMap<String, VmState> = Default::default();
            let mut reason = "current";
            loop {
                let (mut rx, states) = manager.subscribe();
                let now = warden::daemon::store::now_ms();
                let mut gone: std::collections::HashSet<String> = sent.keys().cloned().collect();
                for (id, state) in states.into_iter().filter(|(id, _)| wanted(id)) {
                    gone.remove(&id);
                    let old = sent.insert(id.clone(), state);
                    if old == Some(state) {
                        continue;
                    }
                    let ev = pb::WatchVmsResponse {
                        vm_id: id,
                        old_state: old.map_or(pb::VmState::Unspecified, state_to_pb) as i32,
                        new_state: state_to_pb(state) as i32,
                        reason: reason.into(),
                        at_unix_ms: now,
                        ..Default::default()
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                // Deleted while this watcher lagged.
                for id in gone {
                    let old = sent.remove(&id);
                    let ev = pb::WatchVmsResponse {
                        vm_id: id,
                        old_state: old.map_or(pb::VmState::Unspecified, state_to_pb) as i32,
                        new_state: pb::VmState::Deleted as i32,
                        reason: "deleted".into(),
                        at_unix_ms: now,
                        ..Default::default()
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                loop {
                    // A client that went away ends the task without waiting for an event.
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        () = tx.closed() => return,
                    };
                    let ev = match next {
                        Ok(ev) => ev,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if !wanted(&ev.vm_id) {
                        continue;
                    }
                    if ev.new_state == VmState::Deleted {
                        sent.remove(&ev.vm_id);
                    } else {
                        sent.insert(ev.vm_id.clone(), ev.new_state);
                    }
                    let ev = pb::WatchVmsResponse {
                        vm_id: ev.vm_id,
                        old_state: ev.old_state.map_or(pb::VmState::Unspecified, state_to_pb)
                            as i32,
                        new_state: state_to_pb(ev.new_state) as i32,
                        reason: ev.reason,
                        at_unix_ms: ev.at_unix_ms,
                        snapshot: ev.snapshot.unwrap_or_default(),
                        restored_from: ev.restored_from.unwrap_or_default(),
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                reason = "resync";
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out)))
    }
}

const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_PAGE_SIZE: i32 = 1000;
/// `ListVmsResponse.vms`.
const VMS_FIELD: u32 = 1;

impl ManagerService {
    /// One page of ListVms, each entry made by `make`: the entries, the next page's token and
    /// the count of every VM that matches.
    async fn list_page<T>(
        &self,
        req: &pb::ListVmsRequest,
        mut make: impl FnMut(VmInfoRef<'_>) -> T,
        id_of: impl Fn(&T) -> &str,
    ) -> Result<(Vec<T>, String, i32), ApiError> {
        if req.page_size < 0 || req.page_size > MAX_PAGE_SIZE {
            return Err(invalid(
                "page_size",
                format!(
                    "is {}; give 1 to {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})",
                    req.page_size
                ),
            ));
        }
        for (i, s) in req.state_filter.iter().enumerate() {
            if pb::VmState::try_from(*s).is_err() || *s == pb::VmState::Unspecified as i32 {
                return Err(invalid(
                    &format!("state_filter[{i}]"),
                    format!("is {s}, not a VmState; give VM_STATE_CREATED .. VM_STATE_DELETED"),
                ));
            }
        }
        let after = parse_page_token(&req.page_token)?;
        let size = if req.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            req.page_size
        } as usize;
        // The manager lists by id, so a page is the ids after the last one of the previous page;
        // VMs created or deleted between pages neither repeat nor shift the others. Entries are
        // made only for the page (and one more, to know whether another page follows).
        let mut total = 0usize;
        let mut made = 0usize;
        let mut page: Vec<T> = self
            .0
            .list_with(|v| {
                if !state_matches(&req.state_filter, v.record.state) {
                    return None;
                }
                total += 1;
                let in_page = after
                    .as_ref()
                    .is_none_or(|a| v.record.id.as_str() > a.as_str());
                if !in_page || made > size {
                    return None;
                }
                made += 1;
                Some(make(v))
            })
            .await?;
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last()
                .map(|v| page_token(id_of(v)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((
            page,
            next_page_token,
            i32::try_from(total).unwrap_or(i32::MAX),
        ))
    }

    /// A BootVm or RebootVm error (staging names `config.kernel_path`, `config.drives[0].path`),
    /// with the field as GetVmInfo's config spells it.
    async fn stored_fields(&self, id: &str, e: ManagerError) -> ApiError {
        match self.0.get(id).await {
            Ok(info) => FieldMap::of_spec(&info.record.spec).error(e),
            Err(_) => e.into(),
        }
    }
}

/// A snapshot as the API shows it.
fn snapshot_to_pb(name: &str, m: &warden::vm::Manifest) -> pb::Snapshot {
    pb::Snapshot {
        name: name.to_owned(),
        source_vm_id: m.source_vm.clone(),
        firecracker_version: m.firecracker_version.clone(),
        created_at_unix_ms: i64::try_from(m.created_at_unix_ms).unwrap_or(i64::MAX),
        vcpu_count: u32::from(m.vcpu_count),
        memory_bytes: u64::from(m.memory_mb) << 20,
        size_bytes: warden::daemon::snapshot_size_bytes(m),
        network_interfaces: m.network_interfaces.clone(),
        kind: match m.kind {
            warden::vm::snapshot::SnapshotKind::Full => "full",
            warden::vm::snapshot::SnapshotKind::Diff => "diff",
        }
        .into(),
        parent: m.parent.clone().unwrap_or_default(),
        diff_bytes: m.diff_bytes.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> pb::VmConfig {
        pb::VmConfig::with_kernel("/k").memory_mib(256).vcpus(2)
    }

    #[test]
    fn a_page_covers_the_ids_after_its_token_up_to_its_last_one() {
        assert!(
            in_page_range("b", None, None),
            "a whole list covers everything"
        );
        assert!(in_page_range("b", Some("a"), Some("b")));
        assert!(
            !in_page_range("a", Some("a"), Some("c")),
            "the token's id is the last page's"
        );
        assert!(
            !in_page_range("d", Some("a"), Some("c")),
            "after the last: the next page's"
        );
        assert!(
            in_page_range("zz", Some("a"), None),
            "the last page runs to the end"
        );
    }

    #[test]
    fn a_path_reads_as_display_shows_it_even_when_it_is_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        for p in [
            std::path::Path::new("/srv/jailer/firecracker/vm-1/root"),
            std::path::Path::new(std::ffi::OsStr::from_bytes(b"/srv/\xff\xfejail")),
        ] {
            assert_eq!(path_text(p), p.display().to_string());
        }
    }

    fn refused(c: pb::VmConfig) -> String {
        let e = spec_from_pb(c, String::new()).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
        e.message
    }

    #[test]
    fn metalds_config_becomes_the_spec_and_comes_back_the_same() {
        let mut c = config().kernel_args("console=ttyS0").drive("/d", true);
        c.storage.insert(
            0,
            pb::StorageDevice {
                path: "/r".into(),
                is_root_device: true,
                ..Default::default()
            },
        );
        c.network = vec![pb::NetworkInterface {
            rx_rate_limit: Some(pb::RateLimit {
                bandwidth: 1_000_000,
                refill_time: 100,
                burst: 5000,
            }),
            ..Default::default()
        }];
        let (spec, map) = spec_from_pb(c, "acme".into()).unwrap();
        assert_eq!((spec.vcpu_count, spec.memory_mib), (2, 256));
        assert_eq!(
            (spec.rootfs_path.as_str(), &spec.drives),
            ("/r", &vec![("/d".to_owned(), true)])
        );
        assert!(spec.enable_networking);
        assert_eq!(spec.customer_id, "acme");
        let rx = spec.net_rx_rate_limiter.clone().unwrap().bandwidth.unwrap();
        assert_eq!(
            (rx.size, rx.refill_time, rx.one_time_burst),
            (100_000, 100, Some(5000))
        );
        assert_eq!(
            map.rename("config.drives[0].path"),
            "config.storage[1].path"
        );
        assert_eq!(map.rename("config.rootfs_path"), "config.storage[0].path");
        assert_eq!(map.rename("config.memory_mib"), "config.memory.size_bytes");
        let back = spec_to_pb(&spec);
        assert_eq!(back.memory_in_mib(), 256);
        assert_eq!(back.storage[0].path, "/r");
        assert!(back.storage[0].is_root_device);
        assert_eq!(back.storage[1].path, "/d");
        let rl = back.network[0].rx_rate_limit.unwrap();
        assert_eq!(
            (rl.bandwidth, rl.refill_time, rl.burst),
            (1_000_000, 100, 5000)
        );
        assert_eq!(spec_from_pb(back, "acme".into()).unwrap().0, spec);
    }

    #[test]
    fn what_warden_cannot_honour_is_refused_naming_the_field() {
        type Change = Box<dyn Fn(&mut pb::VmConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "config.boot.initrd_path",
                Box::new(|c| c.boot.as_mut().unwrap().initrd_path = "/i".into()),
            ),
            (
                "config.cpu.max_vcpu_count",
                Box::new(|c| c.cpu.as_mut().unwrap().max_vcpu_count = 8),
            ),
            (
                "config.memory.size_bytes",
                Box::new(|c| c.memory.as_mut().unwrap().size_bytes = 1 << 30 | 1),
            ),
            (
                "config.memory.size_bytes",
                Box::new(|c| c.memory.as_mut().unwrap().size_bytes = 64 << 20),
            ),
            (
                "config.memory.hotplug_enabled",
                Box::new(|c| c.memory.as_mut().unwrap().hotplug_enabled = true),
            ),
            (
                "config.network",
                Box::new(|c| c.network = vec![Default::default(), Default::default()]),
            ),
            (
                "config.network[0].ipv6_config",
                Box::new(|c| {
                    c.network = vec![pb::NetworkInterface {
                        ipv6_config: Some(Default::default()),
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.network[0].ipv4_config.dhcp",
                Box::new(|c| {
                    c.network = vec![pb::NetworkInterface {
                        ipv4_config: Some(pb::IPv4Config {
                            dhcp: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.network[0].rx_rate_limit.bandwidth",
                Box::new(|c| {
                    c.network = vec![pb::NetworkInterface {
                        rx_rate_limit: Some(pb::RateLimit {
                            bandwidth: -1,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.storage[0].read_only",
                Box::new(|c| {
                    c.storage = vec![pb::StorageDevice {
                        path: "/r".into(),
                        is_root_device: true,
                        read_only: true,
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.storage[0].interface_type",
                Box::new(|c| {
                    c.storage = vec![pb::StorageDevice {
                        path: "/r".into(),
                        interface_type: "nvme".into(),
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.console.output",
                Box::new(|c| {
                    c.console = Some(pb::ConsoleConfig {
                        output: "/tmp/x".into(),
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (field, change) in cases {
            let mut c = config();
            change(&mut c);
            let m = refused(c);
            assert!(m.starts_with(&format!("invalid {field}")), "{field}: {m}");
        }
    }

    #[test]
    fn states_map_to_metalds_four_and_warden_keeps_the_finer_ones() {
        for (s, common, fine) in [
            (VmState::Created, pb::VmState::Created, pb::VmState::Created),
            (VmState::Booting, pb::VmState::Created, pb::VmState::Booting),
            (VmState::Running, pb::VmState::Running, pb::VmState::Running),
            (VmState::Paused, pb::VmState::Paused, pb::VmState::Paused),
            (
                VmState::Stopping,
                pb::VmState::Running,
                pb::VmState::Stopping,
            ),
            (
                VmState::Stopped,
                pb::VmState::Shutdown,
                pb::VmState::Shutdown,
            ),
            (VmState::Failed, pb::VmState::Shutdown, pb::VmState::Failed),
        ] {
            assert_eq!((common_state(s), state_to_pb(s)), (common, fine), "{s:?}");
            assert!(state_matches(&[common as i32], s));
            assert!(state_matches(&[fine as i32], s));
        }
        // metald's numbers.
        assert_eq!(
            [
                pb::VmState::Created,
                pb::VmState::Running,
                pb::VmState::Paused,
                pb::VmState::Shutdown
            ]
            .map(|s| s as i32),
            [1, 2, 3, 4]
        );
        assert!(!state_matches(
            &[pb::VmState::Failed as i32],
            VmState::Stopped
        ));
    }

    #[test]
    fn page_tokens_round_trip_and_others_are_refused() {
        for id in ["a", "vm-0123", "x-y-z"] {
            assert_eq!(
                parse_page_token(&page_token(id)).unwrap().as_deref(),
                Some(id)
            );
        }
        assert_eq!(parse_page_token("").unwrap(), None);
        for bad in ["garbage", "after-", "after-zz", "after-6"] {
            let e = parse_page_token(bad).unwrap_err();
            assert!(e.message.contains("page_token"), "{bad}: {e:?}");
        }
    }
}
