//! Host preflight checks (`warden doctor`): can this machine run jailed Firecracker VMs?
//!
//! [`run`] inspects the host as a VM start would use it (KVM, cgroups, the jailer and Firecracker
//! binaries, the chroot base directory, the VMs' parent cgroup, the jail user, the API socket length, networking and the
//! state directory) and returns a [`Report`]. Every [`Check`] names the path or value involved;
//! every warning or failure carries a concrete command that fixes it. Nothing on the host is
//! changed, apart from a temporary file in the state directory (removed again) and a network
//! namespace that lives only as long as a short-lived thread.
//!
//! Host paths (`/dev/kvm`, `/dev/net/tun`, the mount table) are fields of [`DoctorInput`], so
//! tests can point a check at something else.

mod binaries;
mod cgroups;
mod fs;
mod kvm;
mod net;
mod user;

use std::fmt::Write as _;
use std::path::PathBuf;

use jail::CgroupVersion;
use serde::Serialize;

use crate::vm::jailer::JailerConfig;

pub use binaries::{elf_linkage, Linkage};

/// What to check: the configuration a VM start would use, and the host paths to look at.
#[derive(Debug, Clone, PartialEq)]
pub struct DoctorInput {
    /// The jailer binary.
    pub jailer_binary: PathBuf,
    /// The Firecracker binary (its file name becomes part of every chroot path).
    pub firecracker_binary: PathBuf,
    /// Base directory of the jails (`--chroot-base-dir`).
    pub chroot_base_dir: PathBuf,
    /// Directories holding kernels and drive images; staging hard-links from them when they
    /// are on the chroot base's filesystem.
    pub asset_dirs: Vec<PathBuf>,
    /// User Firecracker runs as.
    pub uid: u32,
    /// Group Firecracker runs as.
    pub gid: u32,
    /// Name of the jail user, when one is configured: it must exist and have `uid`/`gid`.
    pub user_name: Option<String>,
    /// The daemon's state directory, if one is configured.
    pub state_dir: Option<PathBuf>,
    /// The cgroup version to use; `None` means the one warden detects.
    pub cgroup_version: Option<CgroupVersion>,
    /// The VMs' parent cgroup, relative to each hierarchy's root.
    pub parent_cgroup: String,
    /// The KVM device.
    pub kvm_path: PathBuf,
    /// The TUN/TAP clone device.
    pub tun_path: PathBuf,
    /// The mount table cgroups are detected from.
    pub mounts_file: PathBuf,
    /// The range per-VM uids/gids come from; `None` when every VM runs as `uid`/`gid`.
    pub id_range: Option<(u32, u32)>,
    /// Where `passwd`, `group`, `subuid` and `subgid` are read.
    pub etc_dir: PathBuf,
    /// The mount table with mount ids (`/proc/self/mountinfo`), read for hidden namespaces.
    pub mountinfo_file: PathBuf,
    /// Production mode (`require_jailer`): a missing controller for any limit is a failure, not
    /// a warning that the limit will be left out.
    pub production: bool,
    /// The daemon's `cgroup_delegation` setting.
    pub delegation: crate::daemon::config::Delegation,
    /// The CPUs VMs may be pinned to (the daemon's `cpuset`), checked to be online.
    pub cpuset: Option<jail::cgroup::cpuset::CpuList>,
    /// The sysfs root the online CPUs are read from.
    pub sys_root: PathBuf,
}

impl Default for DoctorInput {
    /// The real host paths and [`JailerConfig::default`]'s binaries, chroot base and ids.
    fn default() -> Self {
        let jailer = JailerConfig::default();
        Self {
            jailer_binary: jailer.jailer_binary,
            firecracker_binary: jailer.exec_file,
            chroot_base_dir: jailer.chroot_base_dir,
            asset_dirs: crate::assets::dir().into_iter().collect(),
            uid: jailer.uid,
            gid: jailer.gid,
            user_name: None,
            state_dir: None,
            cgroup_version: jailer.cgroup_version,
            parent_cgroup: jailer.parent_cgroup,
            kvm_path: PathBuf::from("/dev/kvm"),
            tun_path: PathBuf::from("/dev/net/tun"),
            mounts_file: PathBuf::from("/proc/self/mounts"),
            mountinfo_file: PathBuf::from("/proc/self/mountinfo"),
            id_range: None,
            etc_dir: PathBuf::from("/etc"),
            production: false,
            delegation: crate::daemon::config::Delegation::Auto,
            cpuset: None,
            sys_root: PathBuf::from("/sys"),
        }
    }
}

impl DoctorInput {
    /// What the daemon with this configuration would run: its binaries, chroot base, asset
    /// folders, jail uid/gid or uid range, cgroup version and state directory, on the real
    /// host paths. `warden serve` checks this at start; `warden doctor` checks it for the same
    /// configuration (`--config`, the environment, the setting flags).
    pub fn from_config(cfg: &crate::daemon::config::DaemonConfig) -> Self {
        Self {
            jailer_binary: cfg.jailer_binary.clone(),
            firecracker_binary: cfg.firecracker_binary.clone(),
            chroot_base_dir: cfg.chroot_base.clone(),
            asset_dirs: cfg.asset_dirs.clone(),
            uid: cfg.jailer_uid,
            gid: cfg.jailer_gid,
            state_dir: Some(cfg.state_dir.clone()),
            cgroup_version: cfg.cgroup_version,
            parent_cgroup: cfg.parent_cgroup.clone(),
            id_range: cfg.jail_id_range,
            production: cfg.require_jailer,
            delegation: cfg.cgroup_delegation,
            cpuset: cfg.cpuset.clone(),
            ..Self::default()
        }
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but not as well as it could (e.g. staging will copy instead of link).
    Warn,
    /// A VM start will fail, or run less isolated than configured.
    Fail,
}

impl Status {
    /// `PASS`, `WARN` or `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name, e.g. `kvm`, `cgroup-memory`, `jailer`.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found, naming the path or value involved.
    pub detail: String,
    /// A command (or configuration change) that fixes a warning or failure.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A warning with its fix.
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure with its fix.
    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check's outcome, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The findings.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed.
    pub fn has_failures(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// Whether any check warned.
    pub fn has_warnings(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Warn)
    }

    /// The checks called `name`.
    pub fn named(&self, name: &str) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.name == name).collect()
    }

    /// The worst status, `Pass` for an empty report.
    pub fn status(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// One line per check (`PASS kvm  /dev/kvm usable (KVM API version 12)`), names aligned;
    /// a warning or failure is followed by an indented `fix: ...` line.
    pub fn render_human(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(out, "{} {:width$}  {}", c.status.label(), c.name, c.detail);
            if c.status != Status::Pass {
                if let Some(fix) = &c.fix {
                    let _ = writeln!(out, "     {:width$}  fix: {fix}", "");
                }
            }
        }
        out
    }
}

/// The operator's `cpuset`: every CPU in it must be online, or every VM's boot fails.
fn cpuset_check(set: &jail::cgroup::cpuset::CpuList, sys: &std::path::Path) -> Check {
    const NAME: &str = "cpuset";
    match jail::cgroup::cpuset::Online::read(sys) {
        Err(file) => Check::warn(
            NAME,
            format!("cannot read {} to check cpuset {set}", file.display()),
            "run where sysfs is mounted at /sys",
        ),
        Ok(online) if set.is_subset(&online.cpus) => Check::pass(
            NAME,
            format!(
                "cpuset {set}: every CPU is online (online: {})",
                online.cpus
            ),
        ),
        Ok(online) => Check::fail(
            NAME,
            format!(
                "cpuset {set} names CPUs that are not online ({}); online: {}",
                set.missing_from(&online.cpus),
                online.cpus
            ),
            format!("set cpuset to CPUs of {} (or leave it unset)", online.cpus),
        ),
    }
}

/// Runs every check against the host. Takes a few hundred milliseconds (it runs both binaries
/// with `--version`, each with a 5 second timeout).
pub fn run(input: &DoctorInput) -> Report {
    let mut checks = vec![kvm::check(&input.kvm_path)];
    checks.extend(cgroups::check(
        &input.mounts_file,
        input.cgroup_version,
        &input.parent_cgroup,
        input.production,
        input.delegation,
    ));
    if let Some(set) = &input.cpuset {
        checks.push(cpuset_check(set, &input.sys_root));
    }
    checks.extend(binaries::check(
        &input.jailer_binary,
        &input.firecracker_binary,
    ));
    checks.extend(fs::chroot_base(&input.chroot_base_dir, &input.asset_dirs));
    checks.push(user::check(
        input.uid,
        input.gid,
        input.user_name.as_deref(),
    ));
    checks.push(user::id_range(
        input.id_range,
        input.uid,
        input.gid,
        &input.etc_dir,
    ));
    checks.push(fs::socket_path(
        &input.chroot_base_dir,
        &input.firecracker_binary,
    ));
    checks.push(net::tun(&input.tun_path));
    checks.push(net::netns());
    checks.push(net::netns_dir(&input.mountinfo_file));
    if let Some(dir) = &input.state_dir {
        checks.push(fs::state_dir(dir));
    }
    Report { checks }
}

/// `errno` text of an I/O error without Rust's "(os error N)" suffix.
pub(crate) fn os_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
