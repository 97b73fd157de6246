//! The configuration of `warden serve`: [`DaemonConfig`], where each value came from ([`Origin`]),
//! and the reference documentation, all driven by one table, [`KEYS`].
//!
//! Precedence, highest first: command-line flags, environment variables, the TOML file given with
//! `--config PATH`, built-in defaults. Every setting has two environment variables: the seed's
//! `UNKEY_METALD_<NAME>` and `WARDEN_<NAME>`; when both are set, `WARDEN_<NAME>` wins. An empty
//! variable counts as unset.
//!
//! `docs/configuration.md` is [`reference_markdown`] below a marker line; a unit test fails when
//! the two differ (run the test with `WARDEN_BLESS_DOCS=1` to rewrite the document).
//!
//! The configuration of `warden gc` and `warden doctor` is the same: the CLI builds their flags
//! from [`KEYS`] too, and [`crate::doctor::DoctorInput::from_config`] turns a loaded
//! configuration into the host checks.
//!
//! The parts: `keys.rs` is the table, `value.rs` the parsers its entries use (the rules `jail`
//! owns, such as uids, cgroup paths and subnets, are `jail`'s functions), `load.rs` the
//! precedence, `render.rs` `--print-config` and the reference.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use jail::cgroup::CgroupVersion;
use jail::net::NetMode;
use jail::spec::ResourceLimits;
use serde::Serialize;

use crate::assets;
use crate::vm::config::{JailerMode, VMM_OVERHEAD_MB};
use crate::vm::jailer::{IoLimits, JailerConfig, DEFAULT_JAIL_UID};

mod keys;
mod load;
mod render;
mod value;

pub use keys::{key_def, KeyDef, KEYS, RENAMED};
pub use load::load;
pub use render::reference_markdown;
#[cfg(test)]
use value::*;

/// Prefixes of the environment variables, lowest precedence first: `WARDEN_` beats
/// `UNKEY_METALD_` (the seed's spelling).
pub const ENV_PREFIXES: [&str; 2] = ["UNKEY_METALD_", "WARDEN_"];

/// Variables with a warden prefix that other parts of warden read: never reported as unknown.
pub const OTHER_WARDEN_VARS: &[&str] = &[
    "WARDEN_JAILER_BINARY",
    "WARDEN_FIRECRACKER_BINARY",
    "WARDEN_ASSETS_DIR",
    "WARDEN_TESTGUEST",
    "WARDEN_LOG",
    "WARDEN_CACHE_DIR",
];

/// The smallest per-VM memory cgroup cap accepted, in bytes (128 MiB, the seed's example).
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 128 << 20;

/// The `cgroup_delegation` setting: how the daemon lives in a delegated cgroup v2 subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delegation {
    /// When the VMs use cgroup v2 and the daemon starts outside the root cgroup.
    Auto,
    /// Always (the daemon refuses to start in the root cgroup or without cgroup v2).
    On,
    /// Never: the daemon stays where it started, VMs go under `parent_cgroup` of the root.
    Off,
}

impl Delegation {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// How the daemon writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// The configuration spelling: `json` or `text`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
        }
    }
}

pub use crate::vm::jailer::DEFAULT_JAIL_ID_RANGE;

/// The effective configuration of `warden serve`. Field names are the TOML keys.
#[derive(Clone, PartialEq)]
pub struct DaemonConfig {
    /// VM backend; only `firecracker` exists.
    pub backend: String,
    /// Run Firecracker under the jailer.
    pub jailer_enabled: bool,
    /// Production mode: refuse to start without a working jailer.
    pub require_jailer: bool,
    /// The jailer binary.
    pub jailer_binary: PathBuf,
    /// The Firecracker binary.
    pub firecracker_binary: PathBuf,
    /// User the jailed Firecracker runs as (never 0).
    pub jailer_uid: u32,
    /// Group the jailed Firecracker runs as (never 0).
    pub jailer_gid: u32,
    /// The uids (and gids, same numbers) VMs get one each from; `None` runs every VM as
    /// `jailer_uid`/`jailer_gid`.
    pub jail_id_range: Option<(u32, u32)>,
    /// Base directory of the jails.
    pub chroot_base: PathBuf,
    /// Give each VM its own network namespace.
    pub netns: bool,
    /// Run Firecracker as PID 1 of a new PID namespace.
    pub pidns: bool,
    /// Per-VM memory cgroup cap in bytes; `None` means guest memory + 64 MiB.
    pub memory_limit_bytes: Option<u64>,
    /// Per-VM CPU cap in percent of one core; `None` means 100 per vCPU.
    pub cpu_quota_percent: Option<u32>,
    /// CPUs VMs are pinned to unless they ask for fewer; `None` is unpinned.
    pub cpuset: Option<jail::cgroup::cpuset::CpuList>,
    /// Per-VM disk I/O limits: the default and the most a request may ask for.
    pub io_limits: IoLimits,
    /// rlimit `no-file` of Firecracker.
    pub fd_limit: u64,
    /// Parent cgroup of all VMs.
    pub parent_cgroup: String,
    /// cgroup version; `None` detects it.
    pub cgroup_version: Option<CgroupVersion>,
    /// Whether the daemon moves into a `supervisor` leaf of its delegated v2 cgroup and puts
    /// its VMs beside it.
    pub cgroup_delegation: Delegation,
    /// TCP address of the API, `host:port`.
    pub listen: String,
    /// Unix socket of the API, if any.
    pub unix_socket: Option<PathBuf>,
    /// Bearer token required on the TCP API.
    pub auth_token: Option<String>,
    /// How networked VMs reach the host.
    pub network_mode: NetMode,
    /// Host bridge of bridge mode.
    pub bridge: String,
    /// Subnet of bridge-mode addresses: (network address, prefix length).
    pub address_pool: (std::net::Ipv4Addr, u8),
    /// Where the daemon keeps its state.
    pub state_dir: PathBuf,
    /// Folders that kernels, root filesystems and drives must lie under.
    pub asset_dirs: Vec<PathBuf>,
    /// Seconds a graceful VM stop may take before SIGKILL.
    pub stop_timeout_secs: u64,
    /// Stop all VMs when the daemon exits.
    pub stop_vms_on_exit: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Web origins (`scheme://host[:port]`) allowed to call the API from a browser.
    pub allowed_origins: Vec<String>,
    /// `Host` names the TCP API answers to besides its listen address, IP literals and
    /// `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Most VMs the daemon holds at once.
    pub max_vms: u64,
    /// Most boots (and reboots) in progress at once.
    pub max_concurrent_boots: u64,
    /// Warm jails kept ready for first boots (0: no pool).
    pub pool_size: u64,
    /// The largest guest memory a warm jail serves, in MiB.
    pub pool_memory_mib: u64,
    /// Most guest memory one VM may ask for, in MiB.
    pub max_memory_mib: u64,
    /// Most vCPUs one VM may ask for.
    pub max_vcpus: u64,
    /// Most extra drives one VM may have.
    pub max_drives: u64,
    /// Most metadata entries one VM may carry.
    pub max_metadata_entries: u64,
    /// Most serial console output kept per VM on disk, in bytes (the newest).
    pub serial_log_max_bytes: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            backend: "firecracker".into(),
            jailer_enabled: true,
            require_jailer: false,
            jailer_binary: assets::jailer(),
            firecracker_binary: assets::firecracker(),
            jailer_uid: DEFAULT_JAIL_UID,
            jailer_gid: DEFAULT_JAIL_UID,
            jail_id_range: Some(DEFAULT_JAIL_ID_RANGE),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_vms: 4096,
            max_concurrent_boots: 64,
            pool_size: 0,
            pool_memory_mib: 512,
            max_memory_mib: 32768,
            max_vcpus: 32,
            max_drives: 16,
            max_metadata_entries: 64,
            serial_log_max_bytes: crate::vm::config::DEFAULT_SERIAL_LOG_MAX_BYTES as u64,
            chroot_base: PathBuf::from("/srv/jailer"),
            netns: false,
            pidns: true,
            memory_limit_bytes: None,
            cpu_quota_percent: None,
            cpuset: None,
            io_limits: IoLimits::default(),
            fd_limit: 2048,
            parent_cgroup: "warden".into(),
            cgroup_version: None,
            cgroup_delegation: Delegation::Auto,
            listen: "127.0.0.1:8080".into(),
            unix_socket: None,
            auth_token: None,
            network_mode: NetMode::None,
            bridge: "warden0".into(),
            address_pool: (std::net::Ipv4Addr::new(172, 31, 0, 0), 16),
            state_dir: PathBuf::from("/var/lib/warden"),
            asset_dirs: assets::dir().into_iter().collect(),
            stop_timeout_secs: 5,
            stop_vms_on_exit: false,
            log_format: LogFormat::Json,
        }
    }
}

impl fmt::Debug for DaemonConfig {
    /// Like a derived `Debug`, with the auth token hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("backend", &self.backend)
            .field("jailer_enabled", &self.jailer_enabled)
            .field("require_jailer", &self.require_jailer)
            .field("jailer_binary", &self.jailer_binary)
            .field("firecracker_binary", &self.firecracker_binary)
            .field("jailer_uid", &self.jailer_uid)
            .field("jailer_gid", &self.jailer_gid)
            .field("jail_id_range", &self.jail_id_range)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_vms", &self.max_vms)
            .field("max_concurrent_boots", &self.max_concurrent_boots)
            .field("pool_size", &self.pool_size)
            .field("pool_memory_mib", &self.pool_memory_mib)
            .field("max_memory_mib", &self.max_memory_mib)
            .field("max_vcpus", &self.max_vcpus)
            .field("max_drives", &self.max_drives)
            .field("max_metadata_entries", &self.max_metadata_entries)
            .field("serial_log_max_bytes", &self.serial_log_max_bytes)
            .field("chroot_base", &self.chroot_base)
            .field("netns", &self.netns)
            .field("pidns", &self.pidns)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("cpu_quota_percent", &self.cpu_quota_percent)
            .field("cpuset", &self.cpuset)
            .field("io_limits", &self.io_limits)
            .field("fd_limit", &self.fd_limit)
            .field("parent_cgroup", &self.parent_cgroup)
            .field("cgroup_version", &self.cgroup_version)
            .field("cgroup_delegation", &self.cgroup_delegation)
            .field("listen", &self.listen)
            .field("unix_socket", &self.unix_socket)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("network_mode", &self.network_mode)
            .field("bridge", &self.bridge)
            .field("address_pool", &self.address_pool)
            .field("state_dir", &self.state_dir)
            .field("asset_dirs", &self.asset_dirs)
            .field("stop_timeout_secs", &self.stop_timeout_secs)
            .field("stop_vms_on_exit", &self.stop_vms_on_exit)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl DaemonConfig {
    /// The jailer settings every VM starts from: binaries, uid/gid, chroot base, PID namespace,
    /// `no-file` rlimit, CPU quota, parent cgroup and cgroup version. The caller still sets the
    /// per-VM fields: `jailer_id`, `cpu_count`, `memory_limit_mb` (see
    /// [`Self::memory_limit_mb`]) and, when [`Self::netns`] is on, `netns` (a namespace it made
    /// for that VM).
    pub fn jailer_config(&self) -> JailerConfig {
        JailerConfig {
            jailer_binary: self.jailer_binary.clone(),
            chroot_base_dir: self.chroot_base.clone(),
            exec_file: self.firecracker_binary.clone(),
            uid: self.jailer_uid,
            gid: self.jailer_gid,
            cgroup_version: self.cgroup_version,
            parent_cgroup: self.parent_cgroup.clone(),
            cpu_quota_pct: self.cpu_quota_percent,
            cpuset: self.cpuset.as_ref().map(ToString::to_string),
            io_limits: self.io_limits,
            new_pid_ns: self.pidns,
            resource_limits: ResourceLimits {
                no_file: Some(self.fd_limit),
                ..ResourceLimits::default()
            },
            ..JailerConfig::default()
        }
    }

    /// How the daemon's VMs are jailed: with the jailer enabled, always jailed (a missing jailer
    /// is an error, never a fallback to unjailed tenant VMs).
    pub fn jailer_mode(&self) -> JailerMode {
        if self.jailer_enabled {
            JailerMode::Required
        } else {
            JailerMode::Disabled
        }
    }

    /// The memory cgroup cap in MiB for a VM with `guest_mb` of guest memory: the configured
    /// `memory_limit_bytes` rounded up to whole MiB, else guest memory plus
    /// [`VMM_OVERHEAD_MB`]. Always `Some`; the `Option` drops into
    /// [`crate::vm::config::VmOptions::memory_limit_mb`].
    pub fn memory_limit_mb(&self, guest_mb: u32) -> Option<u32> {
        Some(match self.memory_limit_bytes {
            Some(bytes) => u32::try_from(bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX),
            None => guest_mb.saturating_add(VMM_OVERHEAD_MB),
        })
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", content = "name", rename_all = "lowercase")]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag, e.g. `--listen`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(name) => write!(f, "from env {name}"),
            Self::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// The inputs of [`load`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file (`--config PATH`), if any.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; only warden's are read).
    pub env: Vec<(String, String)>,
    /// Command-line flags as (TOML key, value), e.g. `("listen", "0.0.0.0:8080")`; a boolean
    /// flag given bare is `("netns", "true")`.
    pub flags: Vec<(&'static str, String)>,
}

impl Sources {
    /// Sources with this process's environment (variables that are not UTF-8 are skipped).
    pub fn from_process(file: Option<PathBuf>, flags: Vec<(&'static str, String)>) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self { file, env, flags }
    }
}

/// A loaded configuration, where each value came from, and what was ignored.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The configuration.
    pub config: DaemonConfig,
    /// The origin of every key of [`KEYS`].
    pub origin: BTreeMap<&'static str, Origin>,
    /// Things ignored: unknown `UNKEY_METALD_*`/`WARDEN_*` variables, a variable shadowed by its
    /// `WARDEN_` twin, an unauthenticated non-loopback listener.
    pub warnings: Vec<String>,
}

/// Why the configuration could not be loaded. Each names the variable, key or flag and what it
/// accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("{} is not valid: expected {expected}", describe(key, origin, value))]
    Invalid {
        /// The TOML key.
        key: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value as given (TOML syntax for the file; `***` for the token).
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A key in the file that is not a setting.
    #[error("unknown key {key:?} in {}; known keys: {}", path.display(), known_keys())]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// A flag for a key that does not exist or has no flag (a bug in the caller).
    #[error("no command-line flag sets {key:?}; flags exist for: {}", flag_keys())]
    UnknownFlag {
        /// The key passed.
        key: String,
    },
    /// The file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: String,
    },
    /// The file is not TOML.
    #[error("{} is not valid TOML: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Settings that are valid alone but not together.
    #[error("{0}")]
    Conflict(String),
}

fn describe(key: &str, origin: &Origin, value: &str) -> String {
    match origin {
        Origin::Env(name) => format!("{name}={value:?}"),
        Origin::Flag(flag) => format!("{flag} {value:?}"),
        Origin::File(path) => format!("{key} = {value} in {}", path.display()),
        Origin::Default => format!("default {key} = {value:?}"),
    }
}

fn known_keys() -> String {
    KEYS.iter().map(|d| d.key).collect::<Vec<_>>().join(", ")
}

fn flag_keys() -> String {
    KEYS.iter()
        .filter(|d| d.flag.is_some())
        .map(|d| d.key)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
