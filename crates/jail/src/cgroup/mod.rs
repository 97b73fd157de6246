//! cgroups: which version the host offers, what a VM's limits become as cgroup files, where the
//! jailer puts a VM's cgroup directories, what they report, and how they are removed.
//!
//! The jailer writes the limits and moves Firecracker into the cgroup itself (we pass
//! `--cgroup <file>=<value>`), but it never removes the directories it made: that is ours. The
//! version-specific knowledge lives in [`v1`] and [`v2`]; this module picks one at run time from
//! the host's mount table, which is an argument so that tests can hand in a fake one.

pub mod cpuset;
pub mod delegation;
pub mod disk;
mod mounts;
pub mod v1;
pub mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The cgroup API the jailer is told to use (`--cgroup-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

impl CgroupVersion {
    /// The value of the jailer's `--cgroup-version`.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::V1 => "1",
            Self::V2 => "2",
        }
    }
}

impl std::str::FromStr for CgroupVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1" | "v1" => Ok(Self::V1),
            "2" | "v2" => Ok(Self::V2),
            other => Err(format!("unknown cgroup version {other:?}; use 1 or 2")),
        }
    }
}

/// Whether `path` can be the parent cgroup of VMs: a relative path of non-empty components, none
/// `.` or `..`, of ASCII letters, digits, '.', '_', '-' and '/' (it becomes both a jailer
/// argument and a directory under every hierarchy).
pub fn valid_parent(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (often with no controllers).
    Hybrid,
    /// Only the v2 hierarchy.
    Unified,
}

/// The host's cgroup mounts, as found in a mount table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hierarchy {
    /// How cgroups are mounted.
    pub layout: Layout,
    /// v1 controllers and their mount points (a co-mounted `cpu,cpuacct` appears twice).
    pub v1: Vec<(String, PathBuf)>,
    /// The cgroup2 mount point, if any.
    pub v2: Option<PathBuf>,
    /// Controllers enabled in the cgroup2 root (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
    /// The host's huge page sizes as cgroup file names spell them (`2MB`, `1GB`), from
    /// `/sys/kernel/mm/hugepages`; empty when not read.
    pub hugepage_sizes: Vec<String>,
}

/// Errors from reading or changing cgroups. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The host has no cgroup mount at all.
    #[error("no cgroup filesystem is mounted (looked in {mounts}); mount cgroup2 at /sys/fs/cgroup or the v1 controllers")]
    NotMounted {
        /// The mount table read.
        mounts: PathBuf,
    },
    /// A controller warden needs is not available in the chosen version.
    #[error("cgroup {version:?} has no {controller} controller on this host; enable it or choose the other cgroup version")]
    MissingController {
        /// The version chosen.
        version: CgroupVersion,
        /// The missing controller.
        controller: String,
    },
    /// Reading a cgroup or mount file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating a cgroup directory or writing a cgroup file failed.
    #[error("cannot write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("cannot remove cgroup directory {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl Hierarchy {
    /// A host without cgroups, for plans that use none (unjailed VMs).
    pub fn empty() -> Self {
        Self {
            layout: Layout::Legacy,
            v1: Vec::new(),
            v2: None,
            v2_controllers: Vec::new(),
            hugepage_sizes: Vec::new(),
        }
    }

    /// The host's cgroup mounts (from `/proc/self/mounts`) and huge page sizes. The table is
    /// read again only after a mount or unmount (see `mounts.rs`).
    pub fn host() -> Result<Self, CgroupError> {
        mounts::host()
    }

    /// Whether `controller` can be used in `version` on this host.
    pub fn has(&self, version: CgroupVersion, controller: &str) -> bool {
        match version {
            CgroupVersion::V1 => self.v1_mount(controller).is_some(),
            CgroupVersion::V2 => {
                self.v2.is_some() && self.v2_controllers.iter().any(|c| c == controller)
            }
        }
    }

    /// What `version` offers here, for messages: `cgroup v2 at /sys/fs/cgroup/unified (it
    /// offers: hugetlb)`.
    pub fn describe(&self, version: CgroupVersion) -> String {
        match version {
            CgroupVersion::V1 => {
                let mut names: Vec<&str> = self.v1.iter().map(|(c, _)| c.as_str()).collect();
                names.dedup();
                format!("cgroup v1 (mounted: {})", names.join(" "))
            }
            CgroupVersion::V2 => match &self.v2 {
                None => "cgroup v2 (not mounted)".to_owned(),
                Some(root) => format!(
                    "cgroup v2 at {} (it offers: {})",
                    root.display(),
                    if self.v2_controllers.is_empty() {
                        "no controllers".to_owned()
                    } else {
                        self.v2_controllers.join(" ")
                    }
                ),
            },
        }
    }

    /// Reads a mount table in `/proc/mounts` format from `path`.
    pub fn from_mounts_file(path: &Path) -> Result<Self, CgroupError> {
        let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).ok_or_else(|| CgroupError::NotMounted {
            mounts: path.to_owned(),
        })
    }

    /// Parses a mount table; `None` when it has no cgroup mount. Reads the cgroup2 root's
    /// `cgroup.controllers` (a missing file counts as no controllers).
    pub fn parse(mounts: &str) -> Option<Self> {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let mount_point = PathBuf::from(unescape_mount_path(f[1]));
            match f[2] {
                "cgroup2" => v2 = v2.or(Some(mount_point)),
                "cgroup" => {
                    for opt in f[3].split(',') {
                        if v1::CONTROLLERS.contains(&opt) {
                            v1.push((opt.to_owned(), mount_point.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        let layout = match (v1.is_empty(), &v2) {
            (true, None) => return None,
            (true, Some(_)) => Layout::Unified,
            (false, None) => Layout::Legacy,
            (false, Some(_)) => Layout::Hybrid,
        };
        let v2_controllers = v2_controllers(v2.as_deref());
        Some(Self {
            layout,
            v1,
            v2,
            v2_controllers,
            hugepage_sizes: Vec::new(),
        })
    }

    /// The version warden uses when none is configured: v1 when the v1 memory controller is
    /// mounted (legacy and hybrid hosts, where the v2 mount usually has no controllers), else v2.
    pub fn default_version(&self) -> CgroupVersion {
        if self.v1_mount("memory").is_some() {
            CgroupVersion::V1
        } else {
            CgroupVersion::V2
        }
    }

    /// The mount point of a v1 controller.
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, p)| p.as_path())
    }

    /// Checks that every controller the settings need is available in `version`.
    pub fn check(&self, version: CgroupVersion, settings: &[Setting]) -> Result<(), CgroupError> {
        for s in settings {
            let controller = s.controller();
            if !self.has(version, controller) {
                return Err(CgroupError::MissingController {
                    version,
                    controller: controller.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The VM's directory holding a setting's file.
    pub fn setting_dir(
        &self,
        version: CgroupVersion,
        parent: &str,
        id: &str,
        setting: &Setting,
    ) -> Option<PathBuf> {
        match version {
            CgroupVersion::V1 => self
                .v1_mount(setting.controller())
                .map(|m| m.join(parent).join(id)),
            CgroupVersion::V2 => self.v2.as_ref().map(|root| root.join(parent).join(id)),
        }
    }

    /// Where v1 accounts a VM's CPU time when the jailer does not put it there: the `cpuacct`
    /// directory, if `cpuacct` is mounted apart from `cpu`. The jailer only joins hierarchies it
    /// writes a limit to, and `cpuacct` has no limit to write (its one writable file,
    /// `cpuacct.usage`, only accepts 0, and the jailer copies the parent's value into new
    /// directories, which the kernel refuses), so warden creates this directory and moves
    /// Firecracker into it itself.
    pub fn v1_accounting_dir(
        &self,
        version: CgroupVersion,
        parent: &str,
        id: &str,
    ) -> Option<PathBuf> {
        if version != CgroupVersion::V1 {
            return None;
        }
        let acct = self.v1_mount("cpuacct")?;
        (self.v1_mount("cpu") != Some(acct)).then(|| acct.join(parent).join(id))
    }

    /// The directories the jailer creates for a VM with these settings: one per v1 controller
    /// named, or the single v2 directory. Sorted and without duplicates.
    pub fn vm_dirs(
        &self,
        version: CgroupVersion,
        parent: &str,
        id: &str,
        settings: &[Setting],
    ) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = settings
            .iter()
            .filter_map(|s| self.setting_dir(version, parent, id, s))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// The controllers a cgroup2 root offers (`cgroup.controllers`; none when missing).
fn v2_controllers(root: Option<&Path>) -> Vec<String> {
    root.and_then(|root| read_small(&root.join("cgroup.controllers")))
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The huge page sizes under `dir` (`hugepages-2048kB` ...) as the hugetlb controller's file
/// names spell them: `2MB`, `1GB`.
pub fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let mut kib: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("hugepages-")?
                    .strip_suffix("kB")?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default();
    kib.sort_unstable();
    kib.into_iter()
        .map(|k| match k {
            k if k >= 1 << 20 => format!("{}GB", k >> 20),
            k if k >= 1 << 10 => format!("{}MB", k >> 10),
            k => format!("{k}KB"),
        })
        .collect()
}

/// `/proc/mounts` escapes spaces and a few other bytes as octal.
pub(crate) fn unescape_mount_path(s: &str) -> String {
    // Works on bytes: an escaped byte may be part of a multi-byte UTF-8 character.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resource limits for one VM, before they are mapped to a cgroup version's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupLimits {
    /// Hard memory limit in bytes (guest memory plus VMM overhead).
    pub memory_bytes: Option<u64>,
    /// CPU time per period, in percent of one core (100 = one core, 50 = half a core).
    pub cpu_quota_pct: Option<u32>,
    /// Most tasks (threads) the VM's processes may have.
    pub pids_max: Option<u64>,
    /// Huge page sizes (`2MB`, `1GB`) the VM may not use at all: warden never gives
    /// Firecracker huge pages, so their pool stays the host's.
    pub hugetlb_deny: Vec<String>,
    /// CPUs (and memory nodes) the VM is pinned to; `None` is unpinned.
    pub cpuset: Option<cpuset::Cpuset>,
    /// Disk I/O limits, applied on `io_device`.
    pub io: disk::IoLimits,
    /// The disk holding the VM's drives; filled in by the plan when `io` has a limit.
    pub io_device: Option<disk::BlockDevice>,
}

/// A limit warden sets by default, and may leave out where its controller is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Derived {
    /// Memory, from the VM's size.
    Memory,
    /// CPU time, from its vCPUs.
    Cpu,
    /// Tasks.
    Pids,
    /// No huge pages.
    Hugetlb,
}

impl Derived {
    /// Every derived limit.
    pub const ALL: [Derived; 4] = [Self::Memory, Self::Cpu, Self::Pids, Self::Hugetlb];

    /// The controller it needs (the same name in v1 and v2).
    pub fn controller(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::Pids => "pids",
            Self::Hugetlb => "hugetlb",
        }
    }

    /// The limit whose files belong to `controller`, if warden derives one.
    pub fn of(controller: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.controller() == controller)
    }
}

/// A limit that is not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOff {
    /// The controller (`memory`, `cpu`, `pids`, `hugetlb`).
    pub controller: String,
    /// Why, e.g. `cgroup v2 at /sys/fs/cgroup/unified has no memory controller`.
    pub why: String,
}

/// Scheduler period used for CPU quotas, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// One cgroup file the jailer writes: `--cgroup <file>=<value>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// File name inside the VM's cgroup directory, e.g. `memory.limit_in_bytes`.
    pub file: String,
    /// Value written to it.
    pub value: String,
    /// Where the file is on this host, once planned.
    pub path: Option<PathBuf>,
    /// Written by warden into the directory the jailer made, before InstanceStart, instead of
    /// by the jailer: v2's `io.max` value has several `=`, and the jailer accepts exactly one
    /// in a `--cgroup` argument.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_warden: bool,
}

impl Setting {
    fn new(file: &str, value: impl ToString) -> Self {
        Self {
            file: file.to_owned(),
            value: value.to_string(),
            path: None,
            by_warden: false,
        }
    }

    fn by_warden(file: &str, value: impl ToString) -> Self {
        Self {
            by_warden: true,
            ..Self::new(file, value)
        }
    }

    /// The controller a file belongs to (the part before the first `.`), as the jailer reads it.
    pub fn controller(&self) -> &str {
        self.file.split('.').next().unwrap_or(&self.file)
    }

    /// The jailer argument value, `file=value`.
    pub fn as_arg(&self) -> String {
        format!("{}={}", self.file, self.value)
    }
}

impl CgroupLimits {
    /// The files and values that express these limits in `version`.
    pub fn settings(&self, version: CgroupVersion) -> Vec<Setting> {
        match version {
            CgroupVersion::V1 => v1::settings(self),
            CgroupVersion::V2 => v2::settings(self),
        }
    }
}

/// What a VM's cgroup reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    /// Memory charged now, in bytes.
    pub memory_bytes: Option<u64>,
    /// Most memory ever charged, in bytes.
    pub memory_peak_bytes: Option<u64>,
    /// How many times the OOM killer killed a task in this cgroup.
    pub oom_kills: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Tasks in the cgroup now.
    pub pids_current: Option<u64>,
}

/// Reads what the cgroup directories of one VM report. Missing files are `None`.
pub fn stats(version: CgroupVersion, dirs: &[PathBuf]) -> CgroupStats {
    match version {
        CgroupVersion::V1 => v1::stats(dirs),
        CgroupVersion::V2 => v2::stats(dirs),
    }
}

/// Creates a cgroup directory (and its parents).
pub fn create(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Creates `dir` and moves process `pid` (all its threads) into it.
pub fn attach(dir: &Path, pid: u32) -> Result<(), CgroupError> {
    let write = |path: &Path, f: &dyn Fn() -> io::Result<()>| {
        f().map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(dir, &|| std::fs::create_dir_all(dir))?;
    let procs = dir.join("cgroup.procs");
    write(&procs, &|| std::fs::write(&procs, pid.to_string()))
}

/// Writes the settings the jailer cannot pass (`Setting::by_warden`: v1 `blkio.throttle.*`,
/// v2 `io.max`) and moves Firecracker (`pid`, every thread) into each directory holding one.
/// On v2 that is the directory the jailer made and Firecracker is already in; on v1 it is the
/// `blkio` directory, which the jailer never joins. Call it before InstanceStart: Firecracker
/// does no disk I/O until then, so the limits hold from the first read. Each setting's `path`
/// must be planned.
pub fn write_by_warden(settings: &[Setting], pid: u32) -> Result<(), CgroupError> {
    let mut dirs: Vec<&Path> = Vec::new();
    for s in settings.iter().filter(|s| s.by_warden) {
        let Some((path, dir)) = s.path.as_deref().and_then(|p| Some((p, p.parent()?))) else {
            continue;
        };
        create(dir)?;
        std::fs::write(path, &s.value).map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            source,
        })?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        attach(dir, pid)?;
    }
    Ok(())
}

/// Writes again the values of the settings the jailer wrote (those not [`Setting::by_warden`]),
/// into the directories it made: a warm jail's limits become its VM's (see
/// [`crate::Jail::take_over`]). Each setting's `path` must be planned.
pub fn rewrite_values(settings: &[Setting]) -> Result<(), CgroupError> {
    for s in settings.iter().filter(|s| !s.by_warden) {
        if let Some(path) = &s.path {
            std::fs::write(path, &s.value).map_err(|source| CgroupError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Removes a VM's cgroup directories, deepest first. A directory that is already gone is fine.
/// `rmdir` fails with `EBUSY` while the kernel still counts a dying task: that is retried until
/// `deadline` passes.
pub fn remove(dirs: &[PathBuf], deadline: Duration) -> Result<(), CgroupError> {
    let start = Instant::now();
    for dir in dirs {
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// SIGKILLs every task in these cgroup directories and waits up to `deadline` until none is
/// left. On v2, where the kernel has `cgroup.kill` (5.14), one write kills the whole subtree at
/// once, including tasks forked meanwhile; elsewhere (v1, older kernels) each pid in
/// `cgroup.procs` is signalled. Each directory must be exactly one owner's, so that every task
/// in it is theirs. This is the workspace's only cgroup kill loop.
pub fn kill_tasks(dirs: &[PathBuf], deadline: Duration) {
    let start = Instant::now();
    let tasks = |dir: &Path| -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    // Whether anything may be left to wait for: the usual end, a VM whose Firecracker is gone
    // already, finds every directory empty and waits for nothing.
    let mut signalled = false;
    for dir in dirs {
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() && std::fs::write(&kill_file, "1").is_ok() {
            signalled = true;
            continue;
        }
        for pid in tasks(dir) {
            signalled = true;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    while signalled && dirs.iter().any(|d| !tasks(d).is_empty()) && start.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_small(path)?.trim().parse().ok()
}

/// Reads `key value` lines (as in `memory.events`, `memory.oom_control`, `cpu.stat`).
pub(crate) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = read_small(path)?;
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// A small file's text, with four system calls (open, read, the read that finds the end,
/// close): `fs::read_to_string` also asks for the size and the position first, which for a
/// cgroup file say nothing. ListVms' refresh reads five files of every VM.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(text).ok()
}

/// Mount tables shared by tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// This machine's layout: v1 controllers (cpu and cpuacct apart) plus an empty cgroup2.
    pub(crate) const HYBRID_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
}

#[cfg(test)]
mod tests {
    use super::tests_support::HYBRID_MOUNTS;
    use super::*;

    #[test]
    fn parent_cgroups_are_relative_paths_of_plain_names() {
        for ok in ["warden", "warden/tenant-a", "a.b_c"] {
            assert!(valid_parent(ok), "{ok}");
        }
        for bad in [
            "", "/warden", "warden/", "a//b", "..", "a/../b", "./a", "a b", "a\nb",
        ] {
            assert!(!valid_parent(bad), "{bad:?}");
        }
    }

    #[test]
    fn detects_hybrid_and_prefers_v1() {
        let h = Hierarchy::parse(HYBRID_MOUNTS).unwrap();
        assert_eq!(h.layout, Layout::Hybrid);
        assert_eq!(h.default_version(), CgroupVersion::V1);
        assert_eq!(
            h.v1_mount("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert!(
            h.v1_mount("systemd").is_none(),
            "named hierarchies are not controllers"
        );
        assert_eq!(
            h.v1_accounting_dir(CgroupVersion::V1, "warden", "vm"),
            Some(PathBuf::from("/sys/fs/cgroup/cpuacct/warden/vm"))
        );
    }

    #[test]
    fn detects_legacy_with_comounted_cpu_cpuacct() {
        let h = Hierarchy::parse(
            "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
             cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n",
        )
        .unwrap();
        assert_eq!(h.layout, Layout::Legacy);
        assert_eq!(h.v1_mount("cpu"), h.v1_mount("cpuacct"));
        assert_eq!(
            h.v1_accounting_dir(CgroupVersion::V1, "warden", "vm"),
            None,
            "the cpu directory accounts"
        );
    }

    #[test]
    fn detects_unified_and_reads_its_controllers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let mounts = format!(
            "cgroup2 {} cgroup2 rw,nsdelegate 0 0\n",
            dir.path().display()
        );
        let h = Hierarchy::parse(&mounts).unwrap();
        assert_eq!(h.layout, Layout::Unified);
        assert_eq!(h.default_version(), CgroupVersion::V2);
        assert_eq!(h.v2_controllers, ["cpuset", "cpu", "io", "memory", "pids"]);
    }

    #[test]
    fn no_cgroup_mount_is_none() {
        assert!(Hierarchy::parse("proc /proc proc rw 0 0\n").is_none());
    }

    #[test]
    fn check_refuses_v2_without_controllers_as_on_hybrid_hosts() {
        let h = Hierarchy::parse(HYBRID_MOUNTS).unwrap();
        let limits = CgroupLimits {
            memory_bytes: Some(1 << 28),
            ..Default::default()
        };
        let err = h
            .check(CgroupVersion::V2, &limits.settings(CgroupVersion::V2))
            .unwrap_err();
        assert!(err.to_string().contains("no memory controller"), "{err}");
        h.check(CgroupVersion::V1, &limits.settings(CgroupVersion::V1))
            .unwrap();
    }

    #[test]
    fn v1_dirs_are_one_per_controller_named() {
        let h = Hierarchy::parse(HYBRID_MOUNTS).unwrap();
        let limits = CgroupLimits {
            memory_bytes: Some(1 << 28),
            cpu_quota_pct: Some(50),
            pids_max: Some(64),
            ..Default::default()
        };
        let dirs = h.vm_dirs(
            CgroupVersion::V1,
            "warden",
            "vm1",
            &limits.settings(CgroupVersion::V1),
        );
        let want: Vec<PathBuf> = ["cpu", "memory", "pids"]
            .iter()
            .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}/warden/vm1")))
            .collect();
        assert_eq!(dirs, want);
    }

    #[test]
    fn unescapes_octal_in_mount_paths() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/données\\040x"), "/données x");
        assert_eq!(unescape_mount_path("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn kill_tasks_writes_cgroup_kill_where_it_exists_and_signals_each_task_elsewhere() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("v2/warden/vm1");
        let v1 = root.path().join("v1/pids/warden/vm1");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v2.join("cgroup.kill"), "").unwrap();
        std::fs::write(v2.join("cgroup.procs"), "").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(v1.join("cgroup.procs"), format!("{}\n", child.id())).unwrap();
        // The fake procs file never empties: the wait ends at the deadline.
        kill_tasks(&[v2.clone(), v1], Duration::from_millis(50));
        assert_eq!(
            std::fs::read_to_string(v2.join("cgroup.kill")).unwrap(),
            "1"
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
