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

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jail::cgroup::CgroupVersion;
use jail::net::NetMode;
use jail::spec::ResourceLimits;
use serde::Serialize;

use crate::assets;
use crate::vm::config::{JailerMode, VMM_OVERHEAD_MB};
use crate::vm::jailer::{JailerConfig, DEFAULT_JAIL_UID};

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
    pub chroot_dir: PathBuf,
    /// Give each VM its own network namespace.
    pub netns: bool,
    /// Run Firecracker as PID 1 of a new PID namespace.
    pub pidns: bool,
    /// Per-VM memory cgroup cap in bytes; `None` means guest memory + 64 MiB.
    pub memory_limit_bytes: Option<u64>,
    /// Per-VM CPU cap in percent of one core; `None` means 100 per vCPU.
    pub cpu_quota_percent: Option<u32>,
    /// rlimit `no-file` of Firecracker.
    pub fd_limit: u64,
    /// Parent cgroup of all VMs.
    pub parent_cgroup: String,
    /// cgroup version; `None` detects it.
    pub cgroup_version: Option<CgroupVersion>,
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
            max_memory_mib: 32768,
            max_vcpus: 32,
            max_drives: 16,
            max_metadata_entries: 64,
            serial_log_max_bytes: crate::vm::config::DEFAULT_SERIAL_LOG_MAX_BYTES as u64,
            chroot_dir: PathBuf::from("/srv/jailer"),
            netns: false,
            pidns: true,
            memory_limit_bytes: None,
            cpu_quota_percent: None,
            fd_limit: 2048,
            parent_cgroup: "warden".into(),
            cgroup_version: None,
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
            .field("max_memory_mib", &self.max_memory_mib)
            .field("max_vcpus", &self.max_vcpus)
            .field("max_drives", &self.max_drives)
            .field("max_metadata_entries", &self.max_metadata_entries)
            .field("serial_log_max_bytes", &self.serial_log_max_bytes)
            .field("chroot_dir", &self.chroot_dir)
            .field("netns", &self.netns)
            .field("pidns", &self.pidns)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("cpu_quota_percent", &self.cpu_quota_percent)
            .field("fd_limit", &self.fd_limit)
            .field("parent_cgroup", &self.parent_cgroup)
            .field("cgroup_version", &self.cgroup_version)
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
            chroot_base_dir: self.chroot_dir.clone(),
            exec_file: self.firecracker_binary.clone(),
            uid: self.jailer_uid,
            gid: self.jailer_gid,
            cgroup_version: self.cgroup_version,
            parent_cgroup: self.parent_cgroup.clone(),
            cpu_quota_pct: self.cpu_quota_percent,
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

/// The TOML type a key takes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    String,
    StringList,
    IntegerOrString,
}

/// A value before parsing: text (environment, flags, file scalars) or a list (file arrays).
enum Raw {
    Text(String),
    List(Vec<String>),
}

/// A value for display.
enum Shown {
    Str(String),
    Int(u64),
    Bool(bool),
    List(Vec<String>),
    Unset(&'static str),
}

/// One setting: its names, documentation, parser and printer.
pub struct KeyDef {
    /// TOML key and [`DaemonConfig`] field.
    pub key: &'static str,
    /// Environment variable suffix: read as `UNKEY_METALD_<env>` and `WARDEN_<env>`.
    pub env: &'static str,
    /// Command-line flag, if any (the token has none: argv is visible to every user).
    pub flag: Option<&'static str>,
    /// What the setting does.
    pub doc: &'static str,
    /// The default, as documented.
    pub default: &'static str,
    /// The accepted form, used in errors and the reference.
    pub expected: &'static str,
    /// Whether the value is hidden when shown.
    pub secret: bool,
    kind: Kind,
    set: fn(&mut DaemonConfig, &Raw) -> Option<()>,
    get: fn(&DaemonConfig) -> Shown,
}

impl KeyDef {
    /// The environment variables of this key, lowest precedence first.
    pub fn env_names(&self) -> [String; 2] {
        ENV_PREFIXES.map(|p| format!("{p}{}", self.env))
    }
}

fn text(raw: &Raw) -> Option<&str> {
    match raw {
        Raw::Text(s) => Some(s.trim()),
        Raw::List(_) => None,
    }
}

fn parse_bool(raw: &Raw) -> Option<bool> {
    match text(raw)?.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_u64(raw: &Raw) -> Option<u64> {
    text(raw)?.parse().ok()
}

fn parse_id(raw: &Raw) -> Option<u32> {
    text(raw)?.parse().ok().filter(|&id| id != 0)
}

fn parse_id_range(raw: &Raw) -> Option<Option<(u32, u32)>> {
    let s = text(raw)?.trim();
    if s == "off" {
        return Some(None);
    }
    let (a, b) = s.split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (1000 <= a && a <= b && b < i32::MAX as u32).then_some(Some((a, b)))
}

fn abs_path(s: &str) -> Option<PathBuf> {
    let p = Path::new(s);
    p.is_absolute().then(|| p.to_path_buf())
}

fn parse_cidr(s: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    if !(8..=30).contains(&prefix) {
        return None;
    }
    // The network address itself.
    let mask = u32::MAX << (32 - u32::from(prefix));
    Some((std::net::Ipv4Addr::from(u32::from(addr) & mask), prefix))
}

fn parse_words(raw: &Raw, ok: impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let items: Vec<String> = match raw {
        Raw::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Raw::List(v) => v.iter().map(|s| s.trim().to_owned()).collect(),
    };
    items
        .iter()
        .all(|w| !w.is_empty() && ok(w))
        .then_some(items)
}

fn parse_path(raw: &Raw) -> Option<PathBuf> {
    abs_path(text(raw)?)
}

fn parse_paths(raw: &Raw) -> Option<Vec<PathBuf>> {
    let items: Vec<&str> = match raw {
        Raw::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        Raw::List(v) => v.iter().map(|s| s.trim()).collect(),
    };
    if items.is_empty() {
        return None;
    }
    items.into_iter().map(abs_path).collect()
}

fn parse_listen(raw: &Raw) -> Option<String> {
    let s = text(raw)?;
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')?
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    host_ok.then(|| s.to_string())
}

fn parse_cgroup_path(raw: &Raw) -> Option<String> {
    let s = text(raw)?;
    let ok = !s.is_empty()
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    ok.then(|| s.to_string())
}

fn path_shown(p: &Path) -> Shown {
    Shown::Str(p.display().to_string())
}

/// Every setting, in documentation order. Parsing, `--print-config` and
/// `docs/configuration.md` all come from this table.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        key: "backend",
        env: "BACKEND",
        flag: Some("--backend"),
        doc: "VM backend.",
        default: "`firecracker`",
        expected: "\"firecracker\" (the only backend)",
        secret: false,
        kind: Kind::String,
        set: |c, r| {
            (text(r)? == "firecracker").then_some(())?;
            c.backend = "firecracker".into();
            Some(())
        },
        get: |c| Shown::Str(c.backend.clone()),
    },
    KeyDef {
        key: "jailer_enabled",
        env: "JAILER_ENABLED",
        flag: Some("--jailer-enabled"),
        doc: "Run Firecracker under the jailer; the daemon then refuses to start without a \
              working one, and never falls back to unjailed VMs. `false` runs Firecracker \
              directly (development only: no VM is sandboxed).",
        default: "`true`",
        expected: "a boolean: true/false, 1/0 or yes/no",
        secret: false,
        kind: Kind::Bool,
        set: |c, r| parse_bool(r).map(|v| c.jailer_enabled = v),
        get: |c| Shown::Bool(c.jailer_enabled),
    },
    KeyDef {
        key: "require_jailer",
        env: "REQUIRE_JAILER",
        flag: Some("--require-jailer"),
        doc: "Production mode: also run every `warden doctor` check at start and refuse to \
              start if one fails. Needs `jailer_enabled`.",
        default: "`false`",
        expected: "a boolean: true/false, 1/0 or yes/no",
        secret: false,
        kind: Kind::Bool,
        set: |c, r| parse_bool(r).map(|v| c.require_jailer = v),
        get: |c| Shown::Bool(c.require_jailer),
    },
    KeyDef {
        key: "jailer_binary",
        env: "JAILER_BINARY",
        flag: Some("--jailer-binary"),
        doc: "The jailer binary (statically linked).",
        default: "found by `warden::assets`: `$WARDEN_JAILER_BINARY`, the asset folder, \
                  `/usr/local/bin/jailer`, `/usr/bin/jailer`",
        expected: "an absolute path (e.g. /usr/bin/jailer)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_path(r).map(|v| c.jailer_binary = v),
        get: |c| path_shown(&c.jailer_binary),
    },
    KeyDef {
        key: "firecracker_binary",
        env: "FIRECRACKER_BINARY",
        flag: Some("--firecracker-binary"),
        doc: "The Firecracker binary (statically linked).",
        default: "found by `warden::assets`: `$WARDEN_FIRECRACKER_BINARY`, the asset folder, \
                  `/usr/local/bin/firecracker`, `/usr/bin/firecracker`",
        expected: "an absolute path (e.g. /usr/bin/firecracker)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_path(r).map(|v| c.firecracker_binary = v),
        get: |c| path_shown(&c.firecracker_binary),
    },
    KeyDef {
        key: "jailer_uid",
        env: "JAILER_UID",
        flag: Some("--jailer-uid"),
        doc: "User the jailed Firecracker runs as. Never 0.",
        default: "`10000`",
        expected: "a non-zero integer uid (e.g. 1000)",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_id(r).map(|v| c.jailer_uid = v),
        get: |c| Shown::Int(c.jailer_uid.into()),
    },
    KeyDef {
        key: "jailer_gid",
        env: "JAILER_GID",
        flag: Some("--jailer-gid"),
        doc: "Group the jailed Firecracker runs as. Never 0.",
        default: "`10000`",
        expected: "a non-zero integer gid (e.g. 1000)",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_id(r).map(|v| c.jailer_gid = v),
        get: |c| Shown::Int(c.jailer_gid.into()),
    },
    KeyDef {
        key: "jail_id_range",
        env: "JAIL_ID_RANGE",
        flag: Some("--jail-id-range"),
        doc: "Each VM runs as its own uid and gid (the same number), leased host-wide from this \
              range when it first boots and released when it is deleted, so no VM can signal \
              another's Firecracker or read its files. `off` runs every VM as \
              `jailer_uid`/`jailer_gid`; setting either of those turns the range off too. The \
              default lies above the subordinate-id ranges of `useradd` and systemd's container \
              ranges; `warden doctor` checks it against /etc/passwd, /etc/group, /etc/subuid and \
              /etc/subgid.",
        default: "`1900000000-1900065535`",
        expected: "FIRST-LAST with 1000 <= FIRST <= LAST < 2147483647 (e.g. 1900000000-1900065535), or off",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_id_range(r).map(|v| c.jail_id_range = v),
        get: |c| {
            Shown::Str(match c.jail_id_range {
                Some((a, b)) => format!("{a}-{b}"),
                None => "off".into(),
            })
        },
    },
    KeyDef {
        key: "chroot_dir",
        env: "JAILER_CHROOT_DIR",
        flag: Some("--chroot-dir"),
        doc: "Base directory of the jails (the jailer's `--chroot-base-dir`).",
        default: "`/srv/jailer`",
        expected: "an absolute path (e.g. /srv/jailer)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_path(r).map(|v| c.chroot_dir = v),
        get: |c| path_shown(&c.chroot_dir),
    },
    KeyDef {
        key: "netns",
        env: "JAILER_NETNS",
        flag: Some("--netns"),
        doc: "Give each VM its own network namespace.",
        default: "`false`",
        expected: "a boolean: true/false, 1/0 or yes/no",
        secret: false,
        kind: Kind::Bool,
        set: |c, r| parse_bool(r).map(|v| c.netns = v),
        get: |c| Shown::Bool(c.netns),
    },
    KeyDef {
        key: "pidns",
        env: "JAILER_PIDNS",
        flag: Some("--pidns"),
        doc: "Run Firecracker as PID 1 of a new PID namespace.",
        default: "`true`",
        expected: "a boolean: true/false, 1/0 or yes/no",
        secret: false,
        kind: Kind::Bool,
        set: |c, r| parse_bool(r).map(|v| c.pidns = v),
        get: |c| Shown::Bool(c.pidns),
    },
    KeyDef {
        key: "memory_limit_bytes",
        env: "JAILER_MEMORY_LIMIT",
        flag: Some("--memory-limit-bytes"),
        doc: "Per-VM memory cgroup cap, in bytes (rounded up to whole MiB).",
        default: "unset: guest memory + 64 MiB",
        expected: "bytes as an integer, at least 134217728 (128 MiB)",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| {
            c.memory_limit_bytes = Some(parse_u64(r).filter(|&b| b >= MIN_MEMORY_LIMIT_BYTES)?);
            Some(())
        },
        get: |c| {
            c.memory_limit_bytes
                .map_or(Shown::Unset("guest memory + 64 MiB"), Shown::Int)
        },
    },
    KeyDef {
        key: "cpu_quota_percent",
        env: "JAILER_CPU_QUOTA",
        flag: Some("--cpu-quota-percent"),
        doc: "Per-VM CPU cap in percent of one core (100 = one core, 200 = two).",
        default: "unset: 100 per vCPU",
        expected: "a positive integer percentage of one core (e.g. 50, 100 or 200)",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| {
            let pct = text(r)?.parse::<u32>().ok().filter(|&p| p > 0)?;
            c.cpu_quota_percent = Some(pct);
            Some(())
        },
        get: |c| {
            c.cpu_quota_percent
                .map_or(Shown::Unset("100 per vCPU"), |p| Shown::Int(p.into()))
        },
    },
    KeyDef {
        key: "fd_limit",
        env: "JAILER_FD_LIMIT",
        flag: Some("--fd-limit"),
        doc: "Firecracker's `no-file` rlimit (most open file descriptors).",
        default: "`2048`",
        expected: "a positive integer (e.g. 1024)",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&n| n > 0).map(|v| c.fd_limit = v),
        get: |c| Shown::Int(c.fd_limit),
    },
    KeyDef {
        key: "parent_cgroup",
        env: "PARENT_CGROUP",
        flag: Some("--parent-cgroup"),
        doc: "Parent cgroup of all VMs, relative to the cgroup root.",
        default: "`warden`",
        expected: "a relative cgroup path of letters, digits, '.', '_', '-' and '/' \
                   (e.g. warden or warden/tenant-a)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_cgroup_path(r).map(|v| c.parent_cgroup = v),
        get: |c| Shown::Str(c.parent_cgroup.clone()),
    },
    KeyDef {
        key: "cgroup_version",
        env: "CGROUP_VERSION",
        flag: Some("--cgroup-version"),
        doc: "cgroup version the jailer uses.",
        default: "unset: detected (v1 where the v1 memory controller is mounted, else v2)",
        expected: "1, 2 or auto",
        secret: false,
        kind: Kind::IntegerOrString,
        set: |c, r| {
            c.cgroup_version = match text(r)? {
                "1" => Some(CgroupVersion::V1),
                "2" => Some(CgroupVersion::V2),
                "auto" => None,
                _ => return None,
            };
            Some(())
        },
        get: |c| match c.cgroup_version {
            Some(v) => Shown::Int(if v == CgroupVersion::V1 { 1 } else { 2 }),
            None => Shown::Unset("detect"),
        },
    },
    KeyDef {
        key: "listen",
        env: "LISTEN",
        flag: Some("--listen"),
        doc: "TCP address of the API. Anything but loopback should set `auth_token`.",
        default: "`127.0.0.1:8080`",
        expected: "host:port (e.g. 127.0.0.1:8080 or [::1]:8080)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_listen(r).map(|v| c.listen = v),
        get: |c| Shown::Str(c.listen.clone()),
    },
    KeyDef {
        key: "unix_socket",
        env: "UNIX_SOCKET",
        flag: Some("--unix-socket"),
        doc: "Also serve the API on this Unix socket.",
        default: "unset",
        expected: "an absolute path (e.g. /run/warden.sock)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_path(r).map(|v| c.unix_socket = Some(v)),
        get: |c| {
            c.unix_socket
                .as_deref()
                .map_or(Shown::Unset("none"), path_shown)
        },
    },
    KeyDef {
        key: "auth_token",
        env: "AUTH_TOKEN",
        flag: None,
        doc: "Bearer token the TCP API requires. No flag: command lines are visible to every \
              user. Shown as `***`.",
        default: "unset",
        expected: "a non-empty token without whitespace",
        secret: true,
        kind: Kind::String,
        set: |c, r| {
            let t = match r {
                Raw::Text(s) => s.as_str(),
                Raw::List(_) => return None,
            };
            (!t.is_empty() && !t.chars().any(char::is_whitespace)).then_some(())?;
            c.auth_token = Some(t.to_string());
            Some(())
        },
        get: |c| {
            c.auth_token
                .as_ref()
                .map_or(Shown::Unset("none"), |_| Shown::Str("***".into()))
        },
    },
    KeyDef {
        key: "network_mode",
        env: "NETWORK_MODE",
        flag: Some("--network-mode"),
        doc: "How networked VMs (`enable_networking`) reach the host: `none` (their TAP is \
              reachable only inside their namespace) or `bridge` (a veth pair joins each VM's \
              namespace to `bridge`, with an address from `address_pool`).",
        default: "`none`",
        expected: "none or bridge",
        secret: false,
        kind: Kind::String,
        set: |c, r| text(r)?.parse().ok().map(|v| c.network_mode = v),
        get: |c| {
            Shown::Str(match c.network_mode {
                NetMode::None => "none".into(),
                NetMode::Bridge => "bridge".into(),
            })
        },
    },
    KeyDef {
        key: "bridge",
        env: "BRIDGE",
        flag: Some("--bridge"),
        doc: "Host bridge of bridge mode; created if missing, with the pool's first address as \
              the VMs' gateway.",
        default: "`warden0`",
        expected: "an interface name of 1 to 15 letters, digits, '-' or '_' (e.g. warden0)",
        secret: false,
        kind: Kind::String,
        set: |c, r| {
            let v = text(r)?;
            (!v.is_empty()
                && v.len() <= 15
                && v.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
            .then(|| c.bridge = v.to_owned())
        },
        get: |c| Shown::Str(c.bridge.clone()),
    },
    KeyDef {
        key: "address_pool",
        env: "ADDRESS_POOL",
        flag: Some("--address-pool"),
        doc: "IPv4 subnet that bridge-mode VMs get addresses from: the first address is the \
              gateway on the bridge, the rest go to VMs, one each, released on delete.",
        default: "`172.31.0.0/16`",
        expected: "an IPv4 subnet in CIDR form with a prefix of 8 to 30 (e.g. 172.31.0.0/16)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_cidr(text(r)?).map(|v| c.address_pool = v),
        get: |c| Shown::Str(format!("{}/{}", c.address_pool.0, c.address_pool.1)),
    },
    KeyDef {
        key: "state_dir",
        env: "STATE_DIR",
        flag: Some("--state-dir"),
        doc: "Where the daemon keeps its state.",
        default: "`/var/lib/warden`",
        expected: "an absolute path (e.g. /var/lib/warden)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_path(r).map(|v| c.state_dir = v),
        get: |c| path_shown(&c.state_dir),
    },
    KeyDef {
        key: "asset_dirs",
        env: "ASSET_DIRS",
        flag: Some("--asset-dirs"),
        doc: "Folders that kernels, root filesystems and drives must lie under. Comma-separated \
              in the environment and on the command line, an array in the file.",
        default:
            "the asset folder (`$WARDEN_ASSETS_DIR` or `assets/` near the executable), if found",
        expected: "one or more absolute paths (e.g. /var/lib/warden/images,/opt/kernels)",
        secret: false,
        kind: Kind::StringList,
        set: |c, r| parse_paths(r).map(|v| c.asset_dirs = v),
        get: |c| {
            Shown::List(
                c.asset_dirs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            )
        },
    },
    KeyDef {
        key: "allowed_origins",
        env: "ALLOWED_ORIGINS",
        flag: Some("--allowed-origins"),
        doc: "Web origins allowed to call the API from a browser. Any other request that carries \
              an `Origin`, or `Sec-Fetch-Site: cross-site`, is refused, so a page open on the \
              host cannot create or boot VMs. `curl` sends neither.",
        default: "none",
        expected: "origins as scheme://host[:port], comma-separated (e.g. https://console.example.com)",
        secret: false,
        kind: Kind::StringList,
        set: |c, r| parse_words(r, |w| w.contains("://")).map(|v| c.allowed_origins = v),
        get: |c| Shown::List(c.allowed_origins.clone()),
    },
    KeyDef {
        key: "allowed_hosts",
        env: "ALLOWED_HOSTS",
        flag: Some("--allowed-hosts"),
        doc: "Host names the TCP API answers to, besides IP addresses, `localhost` and the \
              listen address. A request naming any other `Host` is refused (DNS rebinding).",
        default: "none",
        expected: "host names, comma-separated (e.g. warden.internal)",
        secret: false,
        kind: Kind::StringList,
        set: |c, r| {
            parse_words(r, |w| w.chars().all(|ch| ch.is_ascii_alphanumeric() || ".-".contains(ch)))
                .map(|v| c.allowed_hosts = v)
        },
        get: |c| Shown::List(c.allowed_hosts.clone()),
    },
    KeyDef {
        key: "max_vms",
        env: "MAX_VMS",
        flag: Some("--max-vms"),
        doc: "Most VMs the daemon holds at once (any state); CreateVm beyond it is \
              `resource_exhausted`.",
        default: "`4096`",
        expected: "a positive integer",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v > 0).map(|v| c.max_vms = v),
        get: |c| Shown::Int(c.max_vms),
    },
    KeyDef {
        key: "max_concurrent_boots",
        env: "MAX_CONCURRENT_BOOTS",
        flag: Some("--max-concurrent-boots"),
        doc: "Most boots and reboots in progress at once; one more is `resource_exhausted`.",
        default: "`64`",
        expected: "a positive integer",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v > 0).map(|v| c.max_concurrent_boots = v),
        get: |c| Shown::Int(c.max_concurrent_boots),
    },
    KeyDef {
        key: "max_memory_mib",
        env: "MAX_MEMORY_MIB",
        flag: Some("--max-memory-mib"),
        doc: "Most guest memory one VM may ask for, in MiB (`invalid_argument` above it).",
        default: "`32768`",
        expected: "an integer of MiB, at least 128",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v >= 128).map(|v| c.max_memory_mib = v),
        get: |c| Shown::Int(c.max_memory_mib),
    },
    KeyDef {
        key: "max_vcpus",
        env: "MAX_VCPUS",
        flag: Some("--max-vcpus"),
        doc: "Most vCPUs one VM may ask for (Firecracker's own limit is 32).",
        default: "`32`",
        expected: "an integer from 1 to 32",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|v| (1..=32).contains(v)).map(|v| c.max_vcpus = v),
        get: |c| Shown::Int(c.max_vcpus),
    },
    KeyDef {
        key: "max_drives",
        env: "MAX_DRIVES",
        flag: Some("--max-drives"),
        doc: "Most extra drives (besides the rootfs) one VM may have.",
        default: "`16`",
        expected: "an integer from 0 to 64",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v <= 64).map(|v| c.max_drives = v),
        get: |c| Shown::Int(c.max_drives),
    },
    KeyDef {
        key: "max_metadata_entries",
        env: "MAX_METADATA_ENTRIES",
        flag: Some("--max-metadata-entries"),
        doc: "Most metadata entries one VM may carry (keys up to 256 bytes, values up to 4096).",
        default: "`64`",
        expected: "an integer from 0 to 1024",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v <= 1024).map(|v| c.max_metadata_entries = v),
        get: |c| Shown::Int(c.max_metadata_entries),
    },
    KeyDef {
        key: "serial_log_max_bytes",
        env: "SERIAL_LOG_MAX_BYTES",
        flag: Some("--serial-log-max-bytes"),
        doc: "Most serial console output kept per VM on disk (`serial.log` plus one rotated \
              `serial.log.1`), the newest bytes: a guest flooding its console fills neither the \
              disk nor the daemon's memory. Production guests that need no console can boot \
              with `8250.nr_uarts=0`.",
        default: "`16777216` (16 MiB)",
        expected: "bytes as an integer, at least 65536",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v >= 65536).map(|v| c.serial_log_max_bytes = v),
        get: |c| Shown::Int(c.serial_log_max_bytes),
    },
    KeyDef {
        key: "stop_timeout_secs",
        env: "STOP_TIMEOUT",
        flag: Some("--stop-timeout-secs"),
        doc: "Seconds a graceful VM stop may take before SIGKILL.",
        default: "`5`",
        expected: "whole seconds as an integer (e.g. 5)",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).map(|v| c.stop_timeout_secs = v),
        get: |c| Shown::Int(c.stop_timeout_secs),
    },
    KeyDef {
        key: "stop_vms_on_exit",
        env: "STOP_VMS_ON_EXIT",
        flag: Some("--stop-vms-on-exit"),
        doc: "Stop every VM when the daemon exits (otherwise they keep running).",
        default: "`false`",
        expected: "a boolean: true/false, 1/0 or yes/no",
        secret: false,
        kind: Kind::Bool,
        set: |c, r| parse_bool(r).map(|v| c.stop_vms_on_exit = v),
        get: |c| Shown::Bool(c.stop_vms_on_exit),
    },
    KeyDef {
        key: "log_format",
        env: "LOG_FORMAT",
        flag: Some("--log-format"),
        doc: "Log format.",
        default: "`json`",
        expected: "json or text",
        secret: false,
        kind: Kind::String,
        set: |c, r| {
            c.log_format = match text(r)? {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                _ => return None,
            };
            Some(())
        },
        get: |c| Shown::Str(c.log_format.as_str().into()),
    },
];

/// The definition of a key.
pub fn key_def(key: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|d| d.key == key)
}

fn apply(
    config: &mut DaemonConfig,
    def: &'static KeyDef,
    raw: &Raw,
    origin: Origin,
    shown: &str,
) -> Result<Origin, ConfigError> {
    match (def.set)(config, raw) {
        Some(()) => Ok(origin),
        None => Err(ConfigError::Invalid {
            key: def.key,
            origin,
            value: if def.secret {
                "***".into()
            } else {
                shown.to_string()
            },
            expected: def.expected,
        }),
    }
}

/// The TOML value as a [`Raw`], if its type fits the key.
fn raw_from_toml(kind: Kind, value: &toml::Value) -> Option<Raw> {
    use toml::Value as V;
    match (kind, value) {
        (Kind::Bool, V::Boolean(b)) => Some(Raw::Text(b.to_string())),
        (Kind::Integer | Kind::IntegerOrString, V::Integer(n)) => Some(Raw::Text(n.to_string())),
        (Kind::String | Kind::IntegerOrString, V::String(s)) => Some(Raw::Text(s.clone())),
        (Kind::StringList, V::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Raw::List),
        _ => None,
    }
}

/// Loads the configuration: defaults, then the file, then the environment, then the flags.
pub fn load(sources: &Sources) -> Result<Effective, ConfigError> {
    let mut config = DaemonConfig::default();
    let mut origin: BTreeMap<&'static str, Origin> =
        KEYS.iter().map(|d| (d.key, Origin::Default)).collect();
    let mut warnings = Vec::new();

    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
        for (key, value) in &table {
            let def = key_def(key).ok_or_else(|| ConfigError::UnknownKey {
                key: key.clone(),
                path: path.clone(),
            })?;
            let here = Origin::File(path.clone());
            let shown = value.to_string();
            let Some(raw) = raw_from_toml(def.kind, value) else {
                return Err(ConfigError::Invalid {
                    key: def.key,
                    origin: here,
                    value: if def.secret { "***".into() } else { shown },
                    expected: def.expected,
                });
            };
            origin.insert(def.key, apply(&mut config, def, &raw, here, &shown)?);
        }
    }

    let lookup = |name: &str| {
        sources
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    for def in KEYS {
        let [old, new] = def.env_names();
        let chosen = match (lookup(&old), lookup(&new)) {
            (Some(a), Some(b)) => {
                if a != b {
                    warnings.push(format!(
                        "{old} is ignored: {new} is also set, to another value, and takes \
                         precedence"
                    ));
                }
                Some((new, b))
            }
            (Some(v), None) => Some((old, v)),
            (None, Some(v)) => Some((new, v)),
            (None, None) => None,
        };
        if let Some((name, value)) = chosen {
            let raw = Raw::Text(value.to_string());
            origin.insert(
                def.key,
                apply(&mut config, def, &raw, Origin::Env(name), value)?,
            );
        }
    }
    let mut unknown: Vec<&str> = sources
        .env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|name| {
            ENV_PREFIXES.iter().any(|p| {
                name.strip_prefix(p)
                    .is_some_and(|suffix| !KEYS.iter().any(|d| d.env == suffix))
            }) && !OTHER_WARDEN_VARS.contains(name)
        })
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    for name in unknown {
        warnings.push(format!(
            "ignoring {name}: not a warden setting (settings: UNKEY_METALD_<NAME> or WARDEN_<NAME> \
             with NAME one of {})",
            KEYS.iter().map(|d| d.env).collect::<Vec<_>>().join(", ")
        ));
    }

    for (key, value) in &sources.flags {
        let (def, flag) = key_def(key)
            .and_then(|d| Some((d, d.flag?)))
            .ok_or_else(|| ConfigError::UnknownFlag {
                key: key.to_string(),
            })?;
        let raw = Raw::Text(value.clone());
        origin.insert(
            def.key,
            apply(&mut config, def, &raw, Origin::Flag(flag.into()), value)?,
        );
    }

    let single = ["jailer_uid", "jailer_gid"]
        .into_iter()
        .find(|k| origin[k] != Origin::Default);
    match (single, origin["jail_id_range"] != Origin::Default) {
        (Some(k), true) if config.jail_id_range.is_some() => {
            return Err(ConfigError::Conflict(format!(
                "{k} ({}) and jail_id_range ({}) contradict each other: either every VM runs as \
                 one uid, or each gets its own from the range; drop one",
                origin[k], origin["jail_id_range"]
            )))
        }
        (Some(k), _) => {
            config.jail_id_range = None;
            warnings.push(format!(
                "{k} is set ({}): every VM runs as uid {} gid {}, so a compromised VMM can signal \
                 the others and read their files; leave jailer_uid/jailer_gid unset for a uid per VM",
                origin[k], config.jailer_uid, config.jailer_gid
            ));
        }
        _ => {}
    }
    if config.require_jailer && !config.jailer_enabled {
        return Err(ConfigError::Conflict(format!(
            "require_jailer = true ({}) contradicts jailer_enabled = false ({}): production mode \
             needs the jailer; enable it or drop require_jailer",
            origin["require_jailer"], origin["jailer_enabled"]
        )));
    }
    if config.auth_token.is_none() && !is_loopback(&config.listen) {
        warnings.push(format!(
            "listen = {} ({}) accepts connections from other hosts and no auth_token is set: \
             anyone who can reach it can run VMs",
            config.listen, origin["listen"]
        ));
    }
    Ok(Effective {
        config,
        origin,
        warnings,
    })
}

fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host == "localhost"),
    }
}

impl Shown {
    fn toml(&self) -> String {
        match self {
            Self::Str(s) => toml::Value::String(s.clone()).to_string(),
            Self::Int(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::List(v) => {
                let items: Vec<String> = v
                    .iter()
                    .map(|s| toml::Value::String(s.clone()).to_string())
                    .collect();
                format!("[{}]", items.join(", "))
            }
            Self::Unset(what) => format!("(unset: {what})"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Self::Str(s) => s.clone().into(),
            Self::Int(n) => (*n).into(),
            Self::Bool(b) => (*b).into(),
            Self::List(v) => v.clone().into(),
            Self::Unset(_) => serde_json::Value::Null,
        }
    }
}

impl Effective {
    /// `warden serve --print-config`: one `key = value    # origin` line per key, the token as
    /// `***`.
    pub fn render(&self) -> String {
        let rows: Vec<(String, String)> = KEYS
            .iter()
            .map(|d| {
                let origin = self
                    .origin
                    .get(d.key)
                    .map_or_else(|| "default".into(), Origin::to_string);
                (
                    format!("{} = {}", d.key, (d.get)(&self.config).toml()),
                    origin,
                )
            })
            .collect();
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(line, origin)| format!("{line:<width$}    # {origin}\n"))
            .collect()
    }

    /// The same as JSON: `{"config": {key: value}, "origin": {key: {"source", "name"}},
    /// "warnings": [..]}`; unset values are `null`, the token `"***"`.
    pub fn render_json(&self) -> String {
        let config: serde_json::Map<String, serde_json::Value> = KEYS
            .iter()
            .map(|d| (d.key.to_string(), (d.get)(&self.config).json()))
            .collect();
        let value = serde_json::json!({
            "config": config,
            "origin": self.origin,
            "warnings": self.warnings,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The reference table of every setting, rendered from [`KEYS`]; `docs/configuration.md` holds
/// it below its marker line.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str("## Precedence\n\n");
    out.push_str(
        "1. command-line flags\n\
         2. environment variables: `WARDEN_<NAME>`, then `UNKEY_METALD_<NAME>` (when both are \
         set, `WARDEN_<NAME>` wins; if their values differ, a warning names the ignored one)\n\
         3. the TOML file given with `--config PATH` (top-level keys only; an unknown key is an \
         error)\n\
         4. the defaults below\n\n",
    );
    out.push_str(
        "An empty environment variable counts as unset. Booleans accept `true`/`false`, `1`/`0` \
         and `yes`/`no` in any case (in the file: TOML `true`/`false`). Unknown \
         `UNKEY_METALD_*` and `WARDEN_*` variables are ignored with a warning, except those \
         other parts of warden read: ",
    );
    let others: Vec<String> = OTHER_WARDEN_VARS.iter().map(|v| format!("`{v}`")).collect();
    out.push_str(&others.join(", "));
    out.push_str(
        ".\n\n`warden serve --print-config` prints every value and where it came from.\n\n",
    );
    out.push_str("## Settings\n\n");
    out.push_str("| Key | Environment | Flag | Default | Accepted | Meaning |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for d in KEYS {
        let [old, new] = d.env_names();
        out.push_str(&format!(
            "| `{}` | `{old}`<br>`{new}` | {} | {} | {} | {} |\n",
            d.key,
            d.flag.map_or_else(|| "none".into(), |f| format!("`{f}`")),
            md_cell(d.default),
            md_cell(d.expected),
            md_cell(d.doc),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Sources {
        Sources {
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Sources::default()
        }
    }

    fn load_env(vars: &[(&str, &str)]) -> Result<Effective, ConfigError> {
        load(&env(vars))
    }

    fn write_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn env_origin(name: &str) -> Origin {
        Origin::Env(name.into())
    }

    #[test]
    fn defaults() {
        let e = load(&Sources::default()).unwrap();
        let c = &e.config;
        assert_eq!(c.backend, "firecracker");
        assert!(c.jailer_enabled && !c.require_jailer && c.pidns && !c.netns);
        assert_eq!((c.jailer_uid, c.jailer_gid), (10000, 10000));
        assert_eq!(c.chroot_dir, Path::new("/srv/jailer"));
        assert_eq!(c.memory_limit_bytes, None);
        assert_eq!(c.cpu_quota_percent, None);
        assert_eq!(c.fd_limit, 2048);
        assert_eq!(c.parent_cgroup, "warden");
        assert_eq!(c.cgroup_version, None);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.state_dir, Path::new("/var/lib/warden"));
        assert_eq!(c.stop_timeout_secs, 5);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(e.origin.values().all(|o| *o == Origin::Default));
        assert_eq!(e.origin.len(), KEYS.len());
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn the_seed_environment_block_sets_every_field() {
        let seed = [
            ("UNKEY_METALD_JAILER_ENABLED", "true"),
            ("UNKEY_METALD_JAILER_BINARY", "/usr/bin/jailer"),
            ("UNKEY_METALD_FIRECRACKER_BINARY", "/usr/bin/firecracker"),
            ("UNKEY_METALD_JAILER_UID", "1000"),
            ("UNKEY_METALD_JAILER_GID", "1000"),
            ("UNKEY_METALD_JAILER_CHROOT_DIR", "/srv/jailer"),
            ("UNKEY_METALD_JAILER_NETNS", "true"),
            ("UNKEY_METALD_JAILER_PIDNS", "true"),
            ("UNKEY_METALD_JAILER_MEMORY_LIMIT", "134217728"),
            ("UNKEY_METALD_JAILER_CPU_QUOTA", "100"),
            ("UNKEY_METALD_JAILER_FD_LIMIT", "1024"),
            ("UNKEY_METALD_BACKEND", "firecracker"),
        ];
        let e = load_env(&seed).unwrap();
        let c = &e.config;
        assert!(c.jailer_enabled);
        assert_eq!(c.jailer_binary, Path::new("/usr/bin/jailer"));
        assert_eq!(c.firecracker_binary, Path::new("/usr/bin/firecracker"));
        assert_eq!((c.jailer_uid, c.jailer_gid), (1000, 1000));
        assert_eq!(c.chroot_dir, Path::new("/srv/jailer"));
        assert!(c.netns && c.pidns);
        assert_eq!(c.memory_limit_bytes, Some(134_217_728));
        assert_eq!(c.memory_limit_mb(512), Some(128));
        assert_eq!(c.cpu_quota_percent, Some(100));
        assert_eq!(c.fd_limit, 1024);
        assert_eq!(c.backend, "firecracker");
        for (var, _) in seed {
            let def = KEYS
                .iter()
                .find(|d| var.strip_prefix("UNKEY_METALD_") == Some(d.env))
                .unwrap();
            assert_eq!(e.origin[def.key], env_origin(var), "{var}");
        }
        // The seed sets one uid for all VMs: honoured, with a warning that it is shared.
        assert_eq!(c.jail_id_range, None);
        assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
        assert!(
            e.warnings[0].contains("every VM runs as uid 1000"),
            "{:?}",
            e.warnings
        );
    }

    #[test]
    fn jail_id_range_takes_a_range_or_off_and_conflicts_with_a_single_uid() {
        assert_eq!(
            load_env(&[("WARDEN_JAIL_ID_RANGE", "off")])
                .unwrap()
                .config
                .jail_id_range,
            None
        );
        for bad in ["5-1", "0-10", "abc", "1000-4294967295", "999-2000"] {
            let e = load_env(&[("WARDEN_JAIL_ID_RANGE", bad)]).unwrap_err();
            assert!(e.to_string().contains("WARDEN_JAIL_ID_RANGE"), "{bad}: {e}");
        }
        let e = load_env(&[
            ("WARDEN_JAIL_ID_RANGE", "2000000-2000100"),
            ("WARDEN_JAILER_UID", "1234"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("contradict"), "{e}");
        assert_eq!(
            load_env(&[]).unwrap().config.jail_id_range,
            Some(DEFAULT_JAIL_ID_RANGE),
            "per-VM uids by default"
        );
    }

    /// A value differing from the default for every key, as text, and how it is shown.
    const SAMPLES: &[(&str, &str, &str)] = &[
        ("backend", "firecracker", "\"firecracker\""),
        ("jailer_enabled", "no", "false"),
        ("require_jailer", "YES", "true"),
        ("jailer_binary", "/opt/jailer", "\"/opt/jailer\""),
        ("firecracker_binary", "/opt/fc", "\"/opt/fc\""),
        ("jailer_uid", "1234", "1234"),
        ("jailer_gid", "4321", "4321"),
        ("chroot_dir", "/tmp/jails", "\"/tmp/jails\""),
        ("netns", "1", "true"),
        ("pidns", "False", "false"),
        ("memory_limit_bytes", "268435456", "268435456"),
        ("cpu_quota_percent", "50", "50"),
        ("fd_limit", "4096", "4096"),
        ("parent_cgroup", "warden/tenant-a", "\"warden/tenant-a\""),
        ("cgroup_version", "2", "2"),
        ("listen", "[::1]:9000", "\"[::1]:9000\""),
        ("unix_socket", "/run/w.sock", "\"/run/w.sock\""),
        ("auth_token", "s3cret", "\"***\""),
        ("network_mode", "bridge", "\"bridge\""),
        ("bridge", "br-test", "\"br-test\""),
        ("address_pool", "10.9.8.7/24", "\"10.9.8.0/24\""),
        ("state_dir", "/tmp/state", "\"/tmp/state\""),
        ("asset_dirs", "/a, /b", "[\"/a\", \"/b\"]"),
        ("stop_timeout_secs", "9", "9"),
        ("stop_vms_on_exit", "true", "true"),
        ("log_format", "text", "\"text\""),
        ("jail_id_range", "2000000-2000099", "\"2000000-2000099\""),
        (
            "allowed_origins",
            "https://a.example",
            "[\"https://a.example\"]",
        ),
        ("allowed_hosts", "warden.internal", "[\"warden.internal\"]"),
        ("max_vms", "10", "10"),
        ("max_concurrent_boots", "3", "3"),
        ("max_memory_mib", "1024", "1024"),
        ("max_vcpus", "4", "4"),
        ("max_drives", "2", "2"),
        ("max_metadata_entries", "5", "5"),
        ("serial_log_max_bytes", "65536", "65536"),
    ];

    #[test]
    fn every_key_is_set_by_both_env_prefixes_and_its_flag() {
        assert_eq!(SAMPLES.len(), KEYS.len());
        for def in KEYS {
            let (_, value, shown) = SAMPLES.iter().find(|s| s.0 == def.key).unwrap();
            let line = format!("{} = {shown}", def.key);
            // require_jailer needs the jailer enabled; jailer_enabled=no conflicts with nothing.
            for name in def.env_names() {
                let e = load_env(&[(&name, value)]).unwrap();
                assert_eq!(e.origin[def.key], env_origin(&name));
                let rendered = e.render();
                assert!(rendered.contains(&line), "{line} not in\n{rendered}");
                assert!(
                    rendered.contains(&format!("# from env {name}\n")),
                    "{rendered}"
                );
            }
            if let Some(flag) = def.flag {
                let e = load(&Sources {
                    flags: vec![(def.key, value.to_string())],
                    ..Sources::default()
                })
                .unwrap();
                assert_eq!(e.origin[def.key], Origin::Flag(flag.into()));
                assert!(e.render().contains(&line));
            }
        }
    }

    #[test]
    fn warden_prefix_beats_unkey_metald() {
        let e = load_env(&[
            ("WARDEN_JAILER_UID", "2000"),
            ("UNKEY_METALD_JAILER_UID", "1000"),
        ])
        .unwrap();
        assert_eq!(e.config.jailer_uid, 2000);
        assert_eq!(e.origin["jailer_uid"], env_origin("WARDEN_JAILER_UID"));
        assert!(
            e.warnings
                .iter()
                .any(|w| w.contains("UNKEY_METALD_JAILER_UID is ignored")),
            "{:?}",
            e.warnings
        );
        // The shadowed variable is not even parsed.
        let e = load_env(&[
            ("UNKEY_METALD_JAILER_UID", "abc"),
            ("WARDEN_JAILER_UID", "2000"),
        ])
        .unwrap();
        assert_eq!(e.config.jailer_uid, 2000);
        // An empty variable counts as unset.
        let e = load_env(&[
            ("UNKEY_METALD_JAILER_UID", "1000"),
            ("WARDEN_JAILER_UID", ""),
        ])
        .unwrap();
        assert_eq!(e.config.jailer_uid, 1000);
        assert_eq!(
            e.origin["jailer_uid"],
            env_origin("UNKEY_METALD_JAILER_UID")
        );
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_dir, path) =
            write_file("listen = \"10.0.0.1:1\"\njailer_uid = 3000\nfd_limit = 99\n");
        let sources = Sources {
            file: Some(path.clone()),
            env: vec![
                ("WARDEN_LISTEN".into(), "10.0.0.2:2".into()),
                ("UNKEY_METALD_JAILER_UID".into(), "4000".into()),
                ("WARDEN_AUTH_TOKEN".into(), "t".into()),
            ],
            flags: vec![("listen", "10.0.0.3:3".into())],
        };
        let e = load(&sources).unwrap();
        assert_eq!(e.config.listen, "10.0.0.3:3");
        assert_eq!(e.origin["listen"], Origin::Flag("--listen".into()));
        assert_eq!(e.config.jailer_uid, 4000);
        assert_eq!(
            e.origin["jailer_uid"],
            env_origin("UNKEY_METALD_JAILER_UID")
        );
        assert_eq!(e.config.fd_limit, 99);
        assert_eq!(e.origin["fd_limit"], Origin::File(path.clone()));
        assert_eq!(e.config.stop_timeout_secs, 5);
        assert_eq!(e.origin["stop_timeout_secs"], Origin::Default);

        let r = e.render();
        assert!(r.contains("listen = \"10.0.0.3:3\""), "{r}");
        assert!(r.contains("# flag --listen\n"));
        assert!(r.contains("# from env UNKEY_METALD_JAILER_UID\n"));
        assert!(r.contains(&format!("# file {}\n", path.display())));
        assert!(r.contains("stop_timeout_secs = 5"));
        assert!(r.contains("# default\n"));
        assert_eq!(r.lines().count(), KEYS.len());
    }

    #[test]
    fn file_values_of_every_type() {
        let (_dir, path) = write_file(
            "netns = true\ncgroup_version = \"1\"\nasset_dirs = [\"/x\", \"/y\"]\n\
             memory_limit_bytes = 200000000\nlog_format = \"text\"\n",
        );
        let e = load(&Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap();
        assert!(e.config.netns);
        assert_eq!(e.config.cgroup_version, Some(CgroupVersion::V1));
        assert_eq!(
            e.config.asset_dirs,
            [PathBuf::from("/x"), PathBuf::from("/y")]
        );
        assert_eq!(e.config.memory_limit_mb(1), Some(191)); // 190.73 MiB, rounded up
        assert_eq!(e.config.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_accepted_form() {
        let err = load_env(&[("UNKEY_METALD_JAILER_UID", "abc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "UNKEY_METALD_JAILER_UID=\"abc\" is not valid: expected a non-zero integer uid (e.g. 1000)"
        );
        let err = load_env(&[("UNKEY_METALD_JAILER_MEMORY_LIMIT", "128MB")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "UNKEY_METALD_JAILER_MEMORY_LIMIT=\"128MB\" is not valid: expected bytes as an integer, \
             at least 134217728 (128 MiB)"
        );
        let bad: &[(&str, &str)] = &[
            ("BACKEND", "qemu"),
            ("JAILER_ENABLED", "maybe"),
            ("REQUIRE_JAILER", "2"),
            ("JAILER_BINARY", "jailer"),
            ("FIRECRACKER_BINARY", ""),
            ("JAILER_UID", "0"),
            ("JAILER_GID", "0"),
            ("JAILER_GID", "-5"),
            ("JAILER_CHROOT_DIR", "srv/jailer"),
            ("JAILER_NETNS", "on"),
            ("JAILER_PIDNS", "y"),
            ("JAILER_MEMORY_LIMIT", "1000"),
            ("JAILER_CPU_QUOTA", "0"),
            ("JAILER_CPU_QUOTA", "1.5"),
            ("JAILER_FD_LIMIT", "0"),
            ("PARENT_CGROUP", "/warden"),
            ("PARENT_CGROUP", "a/../b"),
            ("CGROUP_VERSION", "3"),
            ("LISTEN", "8080"),
            ("LISTEN", "localhost:http"),
            ("UNIX_SOCKET", "w.sock"),
            ("AUTH_TOKEN", "has space"),
            ("STATE_DIR", "state"),
            ("ASSET_DIRS", "/a,b"),
            ("ASSET_DIRS", ","),
            ("STOP_TIMEOUT", "5s"),
            ("STOP_VMS_ON_EXIT", "sure"),
            ("LOG_FORMAT", "JSONL"),
        ];
        for (suffix, value) in bad {
            if value.is_empty() {
                continue; // empty is unset, checked elsewhere
            }
            for prefix in ENV_PREFIXES {
                let name = format!("{prefix}{suffix}");
                let def = KEYS.iter().find(|d| d.env == *suffix).unwrap();
                let msg = load_env(&[(&name, value)]).unwrap_err().to_string();
                assert!(msg.starts_with(&format!("{name}=")), "{msg}");
                assert!(
                    msg.ends_with(&format!("is not valid: expected {}", def.expected)),
                    "{msg}"
                );
                if def.secret {
                    assert!(!msg.contains(value), "{msg}");
                }
            }
        }
        // Flags name the flag, the file names the key and the file.
        let err = load(&Sources {
            flags: vec![("jailer_gid", "0".into())],
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--jailer-gid \"0\" is not valid: expected a non-zero integer gid (e.g. 1000)"
        );
        let (_dir, path) = write_file("jailer_uid = \"1000\"\n");
        let err = load(&Sources {
            file: Some(path.clone()),
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "jailer_uid = \"1000\" in {} is not valid: expected a non-zero integer uid (e.g. 1000)",
                path.display()
            )
        );
    }

    #[test]
    fn uid_and_gid_zero_are_refused() {
        for key in ["jailer_uid", "jailer_gid"] {
            let (_dir, path) = write_file(&format!("{key} = 0\n"));
            let err = load(&Sources {
                file: Some(path),
                ..Sources::default()
            })
            .unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { key: k, .. } if k == key),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_file_keys_and_bad_toml_are_refused() {
        let (_dir, path) = write_file("foo = 1\n");
        let err = load(&Sources {
            file: Some(path.clone()),
            ..Sources::default()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "unknown key \"foo\" in {}; known keys: backend, ",
                path.display()
            )),
            "{msg}"
        );
        assert!(msg.ends_with("log_format"), "{msg}");

        let (_dir, path) = write_file("[jailer]\nuid = 1\n");
        assert!(matches!(
            load(&Sources { file: Some(path), ..Sources::default() }),
            Err(ConfigError::UnknownKey { key, .. }) if key == "jailer"
        ));
        let (_dir, path) = write_file("listen = \n");
        assert!(matches!(
            load(&Sources {
                file: Some(path),
                ..Sources::default()
            }),
            Err(ConfigError::Parse { .. })
        ));
        let missing = Sources {
            file: Some("/nonexistent/warden.toml".into()),
            ..Sources::default()
        };
        assert!(load(&missing)
            .unwrap_err()
            .to_string()
            .starts_with("cannot read config file /nonexistent/warden.toml"));
    }

    #[test]
    fn unknown_env_variables_are_warnings_except_warden_s_own() {
        let mut vars: Vec<(&str, &str)> = vec![
            ("UNKEY_METALD_PORT", "1"),
            ("WARDEN_JAILER_UIDD", "1"),
            ("PATH", "/bin"),
            ("WARDENX", "1"),
        ];
        vars.extend(OTHER_WARDEN_VARS.iter().map(|v| (*v, "/x")));
        let e = load_env(&vars).unwrap();
        assert_eq!(e.warnings.len(), 2, "{:?}", e.warnings);
        assert!(e.warnings[0].starts_with("ignoring UNKEY_METALD_PORT: not a warden setting"));
        assert!(e.warnings[1].starts_with("ignoring WARDEN_JAILER_UIDD: not a warden setting"));
    }

    #[test]
    fn render_shows_origins_and_hides_the_token() {
        let e = load_env(&[
            ("UNKEY_METALD_AUTH_TOKEN", "hunter2"),
            ("UNKEY_METALD_JAILER_UID", "1000"),
        ])
        .unwrap();
        assert_eq!(e.config.auth_token.as_deref(), Some("hunter2"));
        let r = e.render();
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("auth_token = \"***\""), "{r}");
        let uid = r.lines().find(|l| l.starts_with("jailer_uid")).unwrap();
        assert!(uid.starts_with("jailer_uid = 1000 "), "{uid}");
        assert!(
            uid.ends_with("    # from env UNKEY_METALD_JAILER_UID"),
            "{uid}"
        );
        assert!(
            r.contains("memory_limit_bytes = (unset: guest memory + 64 MiB)"),
            "{r}"
        );
        // All origin comments start in the same column.
        let cols: Vec<usize> = r.lines().map(|l| l.find("    # ").unwrap()).collect();
        assert!(cols.windows(2).all(|w| w[0] == w[1]), "{r}");

        let json = e.render_json();
        assert!(!json.contains("hunter2"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["config"]["auth_token"], "***");
        assert_eq!(v["config"]["jailer_uid"], 1000);
        assert_eq!(v["config"]["memory_limit_bytes"], serde_json::Value::Null);
        assert_eq!(v["origin"]["jailer_uid"]["source"], "env");
        assert_eq!(v["origin"]["jailer_uid"]["name"], "UNKEY_METALD_JAILER_UID");
        assert_eq!(v["origin"]["listen"]["source"], "default");
        assert!(!format!("{:?}", e.config).contains("hunter2"));
    }

    #[test]
    fn require_jailer_without_the_jailer_is_a_conflict() {
        let err = load_env(&[
            ("WARDEN_REQUIRE_JAILER", "true"),
            ("WARDEN_JAILER_ENABLED", "false"),
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::Conflict(_)));
        assert!(
            err.to_string().contains("from env WARDEN_JAILER_ENABLED"),
            "{err}"
        );
    }

    #[test]
    fn unauthenticated_public_listener_warns() {
        assert!(load_env(&[("WARDEN_LISTEN", "0.0.0.0:8080")])
            .unwrap()
            .warnings[0]
            .contains("no auth_token"));
        for quiet in [
            &[("WARDEN_LISTEN", "localhost:1")][..],
            &[("WARDEN_LISTEN", "0.0.0.0:1"), ("WARDEN_AUTH_TOKEN", "t")],
        ] {
            assert!(load_env(quiet).unwrap().warnings.is_empty());
        }
    }

    #[test]
    fn flags_for_unknown_keys_are_a_bug() {
        for key in ["nope", "auth_token"] {
            let err = load(&Sources {
                flags: vec![(key, "x".into())],
                ..Sources::default()
            })
            .unwrap_err();
            assert_eq!(err, ConfigError::UnknownFlag { key: key.into() });
        }
    }

    #[test]
    fn helpers_for_the_daemon() {
        let e = load_env(&[
            ("WARDEN_JAILER_UID", "1000"),
            ("WARDEN_JAILER_GID", "1001"),
            ("WARDEN_JAILER_CHROOT_DIR", "/tmp/j"),
            ("WARDEN_JAILER_PIDNS", "no"),
            ("WARDEN_JAILER_FD_LIMIT", "512"),
            ("WARDEN_JAILER_CPU_QUOTA", "150"),
            ("WARDEN_PARENT_CGROUP", "warden/a"),
            ("WARDEN_CGROUP_VERSION", "2"),
            ("WARDEN_JAILER_BINARY", "/j"),
            ("WARDEN_FIRECRACKER_BINARY", "/f"),
        ])
        .unwrap();
        let j = e.config.jailer_config();
        assert_eq!((j.uid, j.gid), (1000, 1001));
        assert_eq!(j.chroot_base_dir, Path::new("/tmp/j"));
        assert!(!j.new_pid_ns);
        assert_eq!(j.resource_limits.no_file, Some(512));
        assert_eq!(j.cpu_quota_pct, Some(150));
        assert_eq!(j.parent_cgroup, "warden/a");
        assert_eq!(j.cgroup_version, Some(CgroupVersion::V2));
        assert_eq!(j.jailer_binary, Path::new("/j"));
        assert_eq!(j.exec_file, Path::new("/f"));
        assert_eq!(j.netns, None);

        let mut c = e.config;
        assert_eq!(
            c.jailer_mode(),
            JailerMode::Required,
            "never a silent fallback"
        );
        c.require_jailer = true;
        assert_eq!(c.jailer_mode(), JailerMode::Required);
        c.jailer_enabled = false;
        assert_eq!(c.jailer_mode(), JailerMode::Disabled);

        assert_eq!(c.memory_limit_mb(256), Some(256 + VMM_OVERHEAD_MB));
        c.memory_limit_bytes = Some(MIN_MEMORY_LIMIT_BYTES + 1);
        assert_eq!(c.memory_limit_mb(256), Some(129));
        c.memory_limit_bytes = Some(u64::MAX);
        assert_eq!(c.memory_limit_mb(256), Some(u32::MAX));
    }

    const MARKER: &str = "<!-- Generated from crates/warden/src/daemon/config.rs (KEYS); do not edit below this line. -->\n";

    #[test]
    fn docs_configuration_md_matches_the_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let (intro, generated) = doc.split_once(MARKER).unwrap_or((doc.as_str(), ""));
        let expected = reference_markdown();
        if std::env::var_os("WARDEN_BLESS_DOCS").is_some() {
            std::fs::write(&path, format!("{intro}{MARKER}\n{expected}")).unwrap();
            return;
        }
        assert_eq!(
            generated.strip_prefix('\n').unwrap_or(generated),
            expected,
            "{} is out of date with KEYS; rerun this test with WARDEN_BLESS_DOCS=1 to rewrite it",
            path.display()
        );
    }
}

/// Property tests of [`load`]: any value for any key, from the environment (either prefix or
/// both), the file (any TOML text, any value of any type) and flags, gives a configuration or an
/// error whose text names the variable, key or flag at fault, and that value alone gives the same
/// error. Never a panic.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use proptest::sample::select;

    /// Values near and far from what the keys accept.
    fn text_value() -> impl Strategy<Value = String> {
        let interesting = select(vec![
            "",
            " ",
            "true",
            "false",
            "YES",
            "No",
            "1",
            "0",
            "-1",
            "2",
            "+5",
            " 7 ",
            "1.5",
            "1e3",
            "1000",
            "65536",
            "134217728",
            "4294967295",
            "4294967296",
            "2147483647",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "/abs",
            "/a,/b",
            "/a, b",
            "rel",
            "a,b",
            ",",
            " , ",
            "/",
            "//",
            "/a/../b",
            "127.0.0.1:8080",
            "0.0.0.0:1",
            "[::1]:1",
            "[::1]",
            "[::1:1",
            "[]:1",
            "h:99999",
            ":80",
            "localhost:http",
            "localhost:1",
            "a b:1",
            "1900000000-1900065535",
            "off",
            "OFF",
            "5-1",
            "1000-2147483646",
            "1000-2147483647",
            "999-2000",
            "-",
            "1-",
            "-1-2",
            "10.0.0.0/8",
            "10.0.0.1/31",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/07",
            "/16",
            "256.1.1.1/16",
            "bridge",
            "none",
            "Bridge",
            "json",
            "text",
            "firecracker",
            "warden",
            "warden/a",
            "a/../b",
            "/warden",
            "warden/",
            "a//b",
            "https://x.example",
            "x.example",
            "http://",
            "auto",
            "\0",
            "\u{0}1",
            "é",
            "\t1\t",
            "1\n",
            "***",
            "toolongbridgename0",
            "br_0-1",
        ])
        .prop_map(str::to_owned);
        prop_oneof![
            6 => interesting,
            3 => "\\PC{0,20}",
            1 => any::<String>(),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("{a}-{b}")),
            1 => (any::<[u8; 4]>(), any::<u8>())
                .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
            1 => ("[a-z0-9.-]{0,10}", any::<u32>()).prop_map(|(h, p)| format!("{h}:{p}")),
        ]
    }

    /// Values `key` accepts, in their text form (environment, flags).
    fn valid_text(key: &str) -> BoxedStrategy<String> {
        fn num(r: std::ops::RangeInclusive<u64>) -> BoxedStrategy<String> {
            prop_oneof![
                r.clone().prop_map(|n| n.to_string()),
                Just(r.start().to_string()),
                Just(r.end().to_string()),
            ]
            .boxed()
        }
        let words = |w: Vec<&'static str>| select(w).prop_map(str::to_owned).boxed();
        match key {
            "backend" => words(vec!["firecracker", " firecracker "]),
            "jailer_enabled" | "require_jailer" | "netns" | "pidns" | "stop_vms_on_exit" => {
                words(vec!["true", "false", "1", "0", "yes", "no", "TRUE", " No "])
            }
            "jailer_binary" | "firecracker_binary" | "chroot_dir" | "unix_socket" | "state_dir" => {
                "/[a-z0-9._/ -]{0,12}".boxed()
            }
            "jailer_uid" | "jailer_gid" | "cpu_quota_percent" => num(1..=u64::from(u32::MAX)),
            "jail_id_range" => prop_oneof![
                1 => Just("off".to_owned()),
                4 => (1000u32..i32::MAX as u32)
                    .prop_flat_map(|a| (Just(a), a..i32::MAX as u32))
                    .prop_map(|(a, b)| format!("{a}-{b}")),
            ]
            .boxed(),
            "memory_limit_bytes" => num(MIN_MEMORY_LIMIT_BYTES..=u64::MAX),
            "fd_limit" | "max_vms" | "max_concurrent_boots" => num(1..=u64::MAX),
            "max_memory_mib" => num(128..=u64::MAX),
            "max_vcpus" => num(1..=32),
            "max_drives" => num(0..=64),
            "max_metadata_entries" => num(0..=1024),
            "serial_log_max_bytes" => num(65536..=u64::MAX),
            "stop_timeout_secs" => num(0..=u64::MAX),
            "parent_cgroup" => "[a-z0-9_-][a-z0-9._-]{0,5}(/[a-z0-9_-][a-z0-9._-]{0,5}){0,2}"
                .prop_filter("dot names", |s| s.split('/').all(|c| c != "." && c != ".."))
                .boxed(),
            "cgroup_version" => words(vec!["1", "2", "auto"]),
            "listen" => prop_oneof![
                words(vec![
                    "127.0.0.1:8080",
                    "[::1]:1",
                    "localhost:0",
                    "0.0.0.0:65535"
                ]),
                ("[a-z0-9.-]{1,10}", any::<u16>()).prop_map(|(h, p)| format!("{h}:{p}")),
            ]
            .boxed(),
            "auth_token" => "[!-~]{1,20}".boxed(),
            "network_mode" => words(vec!["none", "bridge"]),
            "bridge" => "[A-Za-z0-9_-]{1,15}".boxed(),
            "address_pool" => (any::<[u8; 4]>(), 8u8..=30)
                .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3]))
                .boxed(),
            "asset_dirs" => vec("/[a-z0-9._/-]{0,8}", 1..3)
                .prop_map(|v| v.join(","))
                .boxed(),
            "allowed_origins" => vec("(https?|ftp)://[a-z0-9.-]{1,8}(:[0-9]{1,5})?", 0..3)
                .prop_map(|v| v.join(", "))
                .boxed(),
            "allowed_hosts" => vec("[a-z0-9.-]{1,10}", 0..3)
                .prop_map(|v| v.join(","))
                .boxed(),
            "log_format" => words(vec!["json", "text"]),
            other => panic!("no valid values for {other}: add them"),
        }
    }

    /// A value for `key`: mostly one it accepts, else anything.
    fn value_for(key: &'static str) -> BoxedStrategy<String> {
        prop_oneof![3 => valid_text(key), 1 => text_value()].boxed()
    }

    /// A name of `def`'s variables, or both, with values.
    fn env_vars() -> impl Strategy<Value = Vec<(String, String)>> {
        let setting = (0..KEYS.len())
            .prop_flat_map(|i| {
                (
                    Just(i),
                    0u8..4,
                    value_for(KEYS[i].key),
                    value_for(KEYS[i].key),
                )
            })
            .prop_map(|(i, which, a, b)| {
                let [old, new] = KEYS[i].env_names();
                match which {
                    0 => vec![(old, a)],
                    1 => vec![(new, a)],
                    2 => vec![(old, a.clone()), (new, a)],
                    _ => vec![(old, a), (new, b)],
                }
            });
        let other = prop_oneof![
            "(WARDEN_|UNKEY_METALD_)[A-Z_]{0,12}",
            select(OTHER_WARDEN_VARS.to_vec()).prop_map(str::to_owned),
            Just("PATH".to_owned()),
        ];
        (vec(setting, 0..8), btree_map(other, text_value(), 0..3)).prop_map(|(settings, other)| {
            // One value per name, as in a real environment.
            let mut vars: BTreeMap<String, String> = other.into_iter().collect();
            for (name, value) in settings.into_iter().flatten() {
                vars.insert(name, value);
            }
            vars.into_iter().collect()
        })
    }

    /// Flags, by key: every key with a flag, plus keys that have none.
    fn flags() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let known = select(KEYS.iter().map(|d| d.key).collect::<Vec<_>>())
            .prop_flat_map(|k| (Just(k), value_for(k)));
        let unknown = (
            select(vec!["nope", "", "LISTEN", "--listen", "auth_token"]),
            text_value(),
        );
        vec(prop_oneof![20 => known, 1 => unknown], 0..6)
    }

    /// Any TOML value, nested a little.
    fn toml_value() -> impl Strategy<Value = toml::Value> {
        use toml::Value as V;
        let leaf = prop_oneof![
            any::<bool>().prop_map(V::Boolean),
            any::<i64>().prop_map(V::Integer),
            (0i64..100_000).prop_map(V::Integer),
            any::<f64>().prop_map(V::Float),
            text_value().prop_map(V::String),
            select(vec!["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"])
                .prop_map(|d| V::Datetime(d.parse().unwrap())),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(V::Array),
                btree_map("[a-z_]{1,8}", inner, 0..3)
                    .prop_map(|m| V::Table(m.into_iter().collect())),
            ]
        })
    }

    /// A value of the TOML type `kind` takes (the parser then judges its content).
    fn typed_value(kind: Kind) -> BoxedStrategy<toml::Value> {
        use toml::Value as V;
        match kind {
            Kind::Bool => any::<bool>().prop_map(V::Boolean).boxed(),
            Kind::Integer => prop_oneof![any::<i64>(), 0i64..100_000, 1i64 << 27..1i64 << 33]
                .prop_map(V::Integer)
                .boxed(),
            Kind::String => text_value().prop_map(V::String).boxed(),
            Kind::StringList => vec(text_value(), 0..3)
                .prop_map(|v| V::Array(v.into_iter().map(V::String).collect()))
                .boxed(),
            Kind::IntegerOrString => prop_oneof![
                (0i64..4).prop_map(V::Integer),
                text_value().prop_map(V::String),
            ]
            .boxed(),
        }
    }

    /// A TOML value of `def`'s type from its text form (the parser then judges its content).
    fn as_toml(def: &KeyDef, text: &str) -> toml::Value {
        use toml::Value as V;
        let int = || text.trim().parse::<i64>().ok().map(V::Integer);
        let string = || V::String(text.to_owned());
        match def.kind {
            Kind::Bool => parse_bool(&Raw::Text(text.to_owned())).map_or_else(string, V::Boolean),
            Kind::Integer => int().unwrap_or_else(string),
            Kind::String => string(),
            Kind::StringList => V::Array(
                text.split(',')
                    .map(|s| V::String(s.trim().to_owned()))
                    .collect(),
            ),
            Kind::IntegerOrString => int().unwrap_or_else(string),
        }
    }

    /// A table of settings: values the key accepts, values of its type, values of any type,
    /// and unknown keys.
    fn toml_table() -> impl Strategy<Value = toml::Table> {
        let entry = prop_oneof![
            6 => (0..KEYS.len()).prop_flat_map(|i| (Just(KEYS[i].key.to_owned()),
                valid_text(KEYS[i].key).prop_map(move |t| as_toml(&KEYS[i], &t)))),
            3 => (0..KEYS.len()).prop_flat_map(|i| (Just(KEYS[i].key.to_owned()),
                typed_value(KEYS[i].kind))),
            3 => (select(KEYS.iter().map(|d| d.key).collect::<Vec<_>>()).prop_map(str::to_owned),
                toml_value()),
            1 => ("[a-z_]{1,12}", toml_value()),
        ];
        vec(entry, 0..8).prop_map(|entries| entries.into_iter().collect())
    }

    /// TOML-ish text: lines of keys, values, headers, comments and junk.
    fn toml_text() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            4 => select(KEYS.iter().map(|d| d.key).collect::<Vec<_>>()).prop_map(str::to_owned),
            1 => "[a-z_.\"' -]{0,12}",
        ];
        let literal = select(vec![
            "\"x\"",
            "'lit'",
            "\"\"\"multi\nline\"\"\"",
            "'''raw'''",
            "1",
            "-0",
            "+1",
            "0x1F",
            "0o17",
            "0b101",
            "1_000",
            "1__0",
            "01",
            "1e5",
            "-1.5",
            "inf",
            "-inf",
            "nan",
            "true",
            "false",
            "True",
            "[1, \"a\"]",
            "[\"/a\", \"/b\"]",
            "[]",
            "[[1], [2]]",
            "{a = 1}",
            "{}",
            "1979-05-27",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "\"\\u0000\"",
            "\"\\uD800\"",
            "\"\\x\"",
            "\"unterminated",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "",
            "=",
        ]);
        let line = prop_oneof![
            6 => (key.clone(), prop_oneof![
                    3 => literal.prop_map(str::to_owned),
                    1 => text_value().prop_map(|v| toml::Value::String(v).to_string()),
                ])
                .prop_map(|(k, v)| format!("{k} = {v}")),
            1 => key.clone().prop_map(|k| format!("[{k}]")),
            1 => key.prop_map(|k| format!("[[{k}]]")),
            1 => "#\\PC{0,10}",
            1 => "\\PC{0,20}",
        ];
        vec(line, 0..8).prop_map(|lines| lines.join("\n"))
    }

    /// A file path of this test thread's own, for the file under test.
    fn file_path() -> PathBuf {
        thread_local! {
            static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
        }
        DIR.with(|d| d.path().join("warden.toml"))
    }

    /// Whether the text of `err` names what was given: the variable, the key and file, or the
    /// flag; and, for an invalid value, whether that value alone gives the same error.
    fn names_its_source(
        err: &ConfigError,
        sources: &Sources,
        file_text: Option<&[u8]>,
    ) -> Result<(), TestCaseError> {
        let msg = err.to_string();
        match err {
            ConfigError::Invalid {
                key,
                origin,
                value,
                expected,
            } => {
                let def = key_def(key).unwrap();
                prop_assert!(
                    msg.ends_with(&format!("is not valid: expected {expected}")),
                    "{msg}"
                );
                prop_assert_eq!(*expected, def.expected);
                let alone = match origin {
                    Origin::Env(name) => {
                        prop_assert!(msg.starts_with(&format!("{name}=")), "{msg}");
                        prop_assert!(def.env_names().contains(name), "{name} is not {key}'s");
                        let given = sources.env.iter().rev().find(|(k, _)| k == name);
                        let Some((_, given)) = given else {
                            return Err(TestCaseError::fail(format!("{name} was not set: {msg}")));
                        };
                        prop_assert!(!given.is_empty(), "empty {name} was read: {msg}");
                        // A variable shadowed by its WARDEN_ twin is never read.
                        let [old, new] = def.env_names();
                        if *name == old {
                            prop_assert!(
                                !sources.env.iter().any(|(k, v)| *k == new && !v.is_empty()),
                                "{old} was read although {new} is set: {msg}"
                            );
                        }
                        if def.secret && given != "***" {
                            prop_assert!(!msg.contains(&format!("{given:?}")), "{msg}");
                        }
                        Sources {
                            env: vec![(name.clone(), given.clone())],
                            ..Sources::default()
                        }
                    }
                    Origin::Flag(flag) => {
                        prop_assert_eq!(Some(flag.as_str()), def.flag);
                        prop_assert!(msg.starts_with(&format!("{flag} {value:?}")), "{msg}");
                        let given = sources.flags.iter().find(|(k, v)| k == key && v == value);
                        prop_assert!(given.is_some(), "{} was not given: {}", flag, msg);
                        Sources {
                            flags: vec![(def.key, value.clone())],
                            ..Sources::default()
                        }
                    }
                    Origin::File(path) => {
                        prop_assert_eq!(Some(path), sources.file.as_ref());
                        prop_assert!(msg.starts_with(&format!("{key} = ")), "{msg}");
                        prop_assert!(msg.contains(&format!(" in {}", path.display())), "{msg}");
                        if def.secret {
                            prop_assert_eq!(value.as_str(), "***");
                        }
                        // The key alone, in a file of its own.
                        let text = String::from_utf8_lossy(file_text.unwrap_or_default());
                        let table: toml::Table = text.parse().unwrap();
                        let mut one = toml::Table::new();
                        one.insert(key.to_string(), table[*key].clone());
                        let alone = file_path().with_file_name("alone.toml");
                        std::fs::write(&alone, toml::to_string(&one).unwrap()).unwrap();
                        let e = load(&Sources {
                            file: Some(alone.clone()),
                            ..Sources::default()
                        })
                        .unwrap_err()
                        .to_string();
                        let shown = alone.display().to_string();
                        prop_assert_eq!(e.replace(&shown, &path.display().to_string()), msg);
                        return Ok(());
                    }
                    Origin::Default => {
                        return Err(TestCaseError::fail(format!("a default is invalid: {msg}")))
                    }
                };
                let e = load(&alone).err().map(|e| e.to_string());
                prop_assert_eq!(e.as_deref(), Some(msg.as_str()), "not the value alone");
            }
            ConfigError::UnknownKey { key, path } => {
                prop_assert_eq!(Some(path), sources.file.as_ref());
                prop_assert!(key_def(key).is_none(), "{key} is a key");
                prop_assert!(
                    msg.starts_with(&format!("unknown key {key:?} in {}", path.display())),
                    "{msg}"
                );
            }
            ConfigError::UnknownFlag { key } => {
                prop_assert!(sources.flags.iter().any(|(k, _)| k == key));
                prop_assert!(
                    key_def(key).and_then(|d| d.flag).is_none(),
                    "{key} has a flag"
                );
                let want = format!("no command-line flag sets {key:?}");
                prop_assert!(msg.starts_with(&want), "{}", msg);
            }
            ConfigError::Read { path, .. } => {
                prop_assert_eq!(Some(path), sources.file.as_ref());
                prop_assert!(std::str::from_utf8(file_text.unwrap_or_default()).is_err());
                let want = format!("cannot read config file {}", path.display());
                prop_assert!(msg.starts_with(&want), "{}", msg);
            }
            ConfigError::Parse { path, message } => {
                prop_assert_eq!(Some(path), sources.file.as_ref());
                prop_assert!(!message.trim().is_empty());
                let want = format!("{} is not valid TOML: ", path.display());
                prop_assert!(msg.starts_with(&want), "{}", msg);
            }
            ConfigError::Conflict(_) => {
                let pair = [
                    ("jail_id_range", ["jailer_uid", "jailer_gid"].as_slice()),
                    ("require_jailer", ["jailer_enabled"].as_slice()),
                ];
                prop_assert!(
                    pair.iter()
                        .any(|(a, bs)| msg.contains(a) && bs.iter().any(|b| msg.contains(b))),
                    "{msg}"
                );
                // Each side names where it came from.
                prop_assert!(
                    ["from env ", "flag --", "file "]
                        .iter()
                        .any(|o| msg.contains(o)),
                    "{msg}"
                );
            }
        }
        Ok(())
    }

    /// What a successful load must show: every given value's origin, and a printable result.
    fn loaded_as_given(e: &Effective, sources: &Sources) -> Result<(), TestCaseError> {
        for def in KEYS {
            let [old, new] = def.env_names();
            let set = |n: &str| sources.env.iter().any(|(k, v)| k == n && !v.is_empty());
            let flag = sources.flags.iter().any(|(k, _)| *k == def.key);
            let want = if flag {
                Some(Origin::Flag(def.flag.unwrap().into()))
            } else if set(&new) {
                Some(Origin::Env(new.clone()))
            } else if set(&old) {
                Some(Origin::Env(old.clone()))
            } else {
                None
            };
            if let Some(want) = want {
                prop_assert_eq!(&e.origin[def.key], &want, "{}", def.key);
            }
            let shadowed = sources.env.iter().find(|(k, v)| *k == old && !v.is_empty());
            let winner = sources.env.iter().find(|(k, v)| *k == new && !v.is_empty());
            if let (Some((_, a)), Some((_, b))) = (shadowed, winner) {
                prop_assert_eq!(
                    a != b,
                    e.warnings
                        .iter()
                        .any(|w| w.starts_with(&format!("{old} is ignored"))),
                    "{:?}",
                    e.warnings
                );
            }
        }
        prop_assert_eq!(e.render().lines().count(), KEYS.len());
        let json: serde_json::Value = serde_json::from_str(&e.render_json()).unwrap();
        prop_assert!(json["config"].is_object());
        // The token is never shown.
        if e.config.auth_token.is_some() {
            let rendered = e.render();
            let line = rendered.lines().find(|l| l.starts_with("auth_token = "));
            prop_assert!(
                line.is_some_and(|l| l.starts_with("auth_token = \"***\" ")),
                "{:?}",
                line
            );
            prop_assert_eq!(&json["config"]["auth_token"], "***");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any values in the environment, under either prefix or both.
        #[test]
        fn any_environment_loads_or_names_the_variable(env in env_vars()) {
            let sources = Sources { env, ..Sources::default() };
            match load(&sources) {
                Ok(e) => loaded_as_given(&e, &sources)?,
                Err(err) => names_its_source(&err, &sources, None)?,
            }
        }

        /// Any flags, for keys with a flag or without.
        #[test]
        fn any_flags_load_or_name_the_flag(flags in flags()) {
            let sources = Sources { flags, ..Sources::default() };
            match load(&sources) {
                Ok(e) => loaded_as_given(&e, &sources)?,
                Err(err) => names_its_source(&err, &sources, None)?,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A file of settings with values of any type: loaded, or an error naming the key (and
        /// the file) that the key alone also gives.
        #[test]
        fn any_settings_file_loads_or_names_the_key(table in toml_table()) {
            let path = file_path();
            let text = toml::to_string(&table).unwrap();
            std::fs::write(&path, &text).unwrap();
            let sources = Sources { file: Some(path), ..Sources::default() };
            match load(&sources) {
                Ok(e) => {
                    for key in table.keys() {
                        prop_assert_eq!(&e.origin[key.as_str()], &Origin::File(file_path()));
                    }
                    loaded_as_given(&e, &sources)?;
                }
                Err(err) => {
                    prop_assert!(!matches!(err, ConfigError::Parse { .. } | ConfigError::Read { .. }),
                        "{err} for {text}");
                    names_its_source(&err, &sources, Some(text.as_bytes()))?;
                }
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2500))]

        /// Any text (TOML-like, arbitrary, or not UTF-8) as the file.
        #[test]
        fn any_file_text_loads_or_names_the_file(bytes in prop_oneof![
            4 => toml_text().prop_map(String::into_bytes),
            1 => vec(any::<u8>(), 0..64),
        ]) {
            let path = file_path();
            std::fs::write(&path, &bytes).unwrap();
            let sources = Sources { file: Some(path), ..Sources::default() };
            match load(&sources) {
                Ok(e) => loaded_as_given(&e, &sources)?,
                Err(err) => names_its_source(&err, &sources, Some(&bytes))?,
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// Everything at once: the error names one of the sources given.
        #[test]
        fn file_environment_and_flags_together_load_or_name_the_source(
            table in toml_table(),
            env in env_vars(),
            flags in flags(),
        ) {
            let path = file_path();
            let text = toml::to_string(&table).unwrap();
            std::fs::write(&path, &text).unwrap();
            let sources = Sources { file: Some(path), env, flags };
            match load(&sources) {
                Ok(e) => loaded_as_given(&e, &sources)?,
                Err(err) => names_its_source(&err, &sources, Some(text.as_bytes()))?,
            }
        }
    }
}
