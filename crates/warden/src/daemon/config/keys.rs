//! [`KEYS`]: every setting's names, documentation, parser and printer, in documentation order.
//! A table, long by nature: one entry per setting.

use jail::cgroup::CgroupVersion;
use jail::net::NetMode;

use super::value::*;
use super::{DaemonConfig, Delegation, LogFormat, ENV_PREFIXES, MIN_MEMORY_LIMIT_BYTES};

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
    pub(super) kind: Kind,
    pub(super) set: fn(&mut DaemonConfig, &Raw) -> Option<()>,
    pub(super) get: fn(&DaemonConfig) -> Shown,
}

impl KeyDef {
    /// The environment variables of this key, lowest precedence first.
    pub fn env_names(&self) -> [String; 2] {
        ENV_PREFIXES.map(|p| format!("{p}{}", self.env))
    }

    /// Earlier names of this key, still accepted in the file, as [`Sources::flags`] keys and
    /// (spelled `--old-name`) as flags.
    ///
    /// [`Sources::flags`]: super::Sources::flags
    pub fn old_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        RENAMED
            .iter()
            .filter(move |(_, new)| *new == self.key)
            .map(|(old, _)| *old)
    }

    /// Whether the value is a boolean (a bare flag means `true`).
    pub fn is_bool(&self) -> bool {
        self.kind == Kind::Bool
    }

    /// Whether the value is a list (comma-separated outside the file).
    pub fn is_list(&self) -> bool {
        self.kind == Kind::StringList
    }

    /// A placeholder for the value in `--help`: `BOOL`, `N`, `LIST` or `VALUE`.
    pub fn value_name(&self) -> &'static str {
        match self.kind {
            Kind::Bool => "BOOL",
            Kind::Integer => "N",
            Kind::StringList => "LIST",
            Kind::String | Kind::IntegerOrString => "VALUE",
        }
    }
}

/// Keys that were renamed, as (old, new): the old name keeps working so existing
/// configuration files and scripts do.
pub const RENAMED: &[(&str, &str)] = &[("chroot_dir", "chroot_base")];

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
        key: "chroot_base",
        env: "JAILER_CHROOT_DIR",
        flag: Some("--chroot-base"),
        doc: "Base directory of the jails (the jailer's `--chroot-base-dir`). Was `chroot_dir` \
              (`--chroot-dir`), still accepted; the environment keeps the seed's \
              `JAILER_CHROOT_DIR`.",
        default: "`/srv/jailer`",
        expected: "an absolute path (e.g. /srv/jailer)",
        secret: false,
        kind: Kind::String,
        set: |c, r| parse_path(r).map(|v| c.chroot_base = v),
        get: |c| path_shown(&c.chroot_base),
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
        key: "cpuset",
        env: "CPUSET",
        flag: Some("--cpuset"),
        doc: "CPUs every VM is pinned to by default, and the only ones a request may pin to (a subset, `invalid_argument` otherwise). Each VM also gets every online memory node. cgroup `cpuset.cpus`/`cpuset.mems`.",
        default: "unset: unpinned, and a request may pin to any online CPU",
        expected: "a CPU list such as 0-3,5",
        secret: false,
        kind: Kind::IntegerOrString,
        set: |c, r| {
            c.cpuset = Some(jail::cgroup::cpuset::CpuList::parse(text(r)?)?);
            Some(())
        },
        get: |c| {
            c.cpuset
                .as_ref()
                .map_or(Shown::Unset("unpinned"), |l| Shown::Str(l.to_string()))
        },
    },
    KeyDef {
        key: "io_read_bps",
        env: "IO_READ_BPS",
        flag: Some("--io-read-bps"),
        doc: "Per-VM disk read limit in bytes per second, on the disk under the chroot base (which holds every drive's backing file): the default for each VM and the most a request may ask for (`invalid_argument` above it). cgroup v1 `blkio.throttle.*`, v2 `io.max`.",
        default: "unset: unlimited",
        expected: "a positive integer",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| {
            c.io_limits.read_bps = Some(parse_u64(r).filter(|&n| n > 0)?);
            Some(())
        },
        get: |c| c.io_limits.read_bps.map_or(Shown::Unset("unlimited"), Shown::Int),
    },
    KeyDef {
        key: "io_write_bps",
        env: "IO_WRITE_BPS",
        flag: Some("--io-write-bps"),
        doc: "Per-VM disk write limit in bytes per second, on the disk under the chroot base (which holds every drive's backing file): the default for each VM and the most a request may ask for (`invalid_argument` above it). cgroup v1 `blkio.throttle.*`, v2 `io.max`.",
        default: "unset: unlimited",
        expected: "a positive integer",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| {
            c.io_limits.write_bps = Some(parse_u64(r).filter(|&n| n > 0)?);
            Some(())
        },
        get: |c| c.io_limits.write_bps.map_or(Shown::Unset("unlimited"), Shown::Int),
    },
    KeyDef {
        key: "io_read_iops",
        env: "IO_READ_IOPS",
        flag: Some("--io-read-iops"),
        doc: "Per-VM disk read limit in operations per second, on the disk under the chroot base (which holds every drive's backing file): the default for each VM and the most a request may ask for (`invalid_argument` above it). cgroup v1 `blkio.throttle.*`, v2 `io.max`.",
        default: "unset: unlimited",
        expected: "a positive integer",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| {
            c.io_limits.read_iops = Some(parse_u64(r).filter(|&n| n > 0)?);
            Some(())
        },
        get: |c| c.io_limits.read_iops.map_or(Shown::Unset("unlimited"), Shown::Int),
    },
    KeyDef {
        key: "io_write_iops",
        env: "IO_WRITE_IOPS",
        flag: Some("--io-write-iops"),
        doc: "Per-VM disk write limit in operations per second, on the disk under the chroot base (which holds every drive's backing file): the default for each VM and the most a request may ask for (`invalid_argument` above it). cgroup v1 `blkio.throttle.*`, v2 `io.max`.",
        default: "unset: unlimited",
        expected: "a positive integer",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| {
            c.io_limits.write_iops = Some(parse_u64(r).filter(|&n| n > 0)?);
            Some(())
        },
        get: |c| c.io_limits.write_iops.map_or(Shown::Unset("unlimited"), Shown::Int),
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
        key: "cgroup_delegation",
        env: "CGROUP_DELEGATION",
        flag: Some("--cgroup-delegation"),
        doc: "With cgroup v2, a daemon started outside the root cgroup (systemd `Delegate=yes`, \
              or any delegated subtree) moves itself into a `supervisor` leaf of its own cgroup \
              and puts every VM beside it, under `<own cgroup>/<parent_cgroup>/<id>`, so the \
              jailer may enable controllers on the way (the kernel refuses that above a cgroup \
              with processes). `auto` does it when that is the case, `on` requires it, `off` \
              never does it.",
        default: "auto",
        expected: "auto, on or off",
        secret: false,
        kind: Kind::String,
        set: |c, r| {
            c.cgroup_delegation = match text(r)? {
                "auto" => Delegation::Auto,
                "on" => Delegation::On,
                "off" => Delegation::Off,
                _ => return None,
            };
            Some(())
        },
        get: |c| Shown::Str(c.cgroup_delegation.as_str().into()),
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
        doc: "How networked VMs (an interface in `config.network`) reach the host: `none` (their TAP is \
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
            jail::net::valid_ifname(v).then(|| c.bridge = v.to_owned())
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
        set: |c, r| parse_subnet(r).map(|v| c.address_pool = v),
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
        key: "pool_size",
        env: "POOL_SIZE",
        flag: Some("--pool-size"),
        doc: "Warm jails kept ready (the jailer run and Firecracker's API up, no VM yet), refilled \
              in the background; a first boot of a VM without networking takes one when it fits \
              (same daemon settings, no per-VM pinning or I/O limits of its own), which skips \
              the jailer's start. `0`: no pool.",
        default: "`0`",
        expected: "an integer, 0 to 1024",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v <= 1024).map(|v| c.pool_size = v),
        get: |c| Shown::Int(c.pool_size),
    },
    KeyDef {
        key: "pool_memory_mib",
        env: "POOL_MEMORY_MIB",
        flag: Some("--pool-memory-mib"),
        doc: "The largest guest memory, in MiB, a warm jail of the pool serves: its file-size cap \
              (the jailer's `fsize`, set before Firecracker starts and fixed after) is that of a \
              VM of this size, so a smaller VM in it keeps that cap and a larger one boots the \
              normal way.",
        default: "`512`",
        expected: "an integer of MiB, at least 128",
        secret: false,
        kind: Kind::Integer,
        set: |c, r| parse_u64(r).filter(|&v| v >= 128).map(|v| c.pool_memory_mib = v),
        get: |c| Shown::Int(c.pool_memory_mib),
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

/// The definition of a key, by its name or an old name (see [`RENAMED`]).
pub fn key_def(key: &str) -> Option<&'static KeyDef> {
    let key = RENAMED
        .iter()
        .find(|(old, _)| *old == key)
        .map_or(key, |(_, new)| new);
    KEYS.iter().find(|d| d.key == key)
}
