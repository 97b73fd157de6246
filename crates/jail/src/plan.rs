//! From a validated [`JailSpec`] to a [`JailPlan`]: every path, argument, cgroup file and staged
//! file a jail will have, computed without changing anything on the host.
//!
//! The layout is the real jailer's (see design.md): `<base>/<exec-file-name>/<id>/root` is the
//! chroot, the API socket is `<root>/run/firecracker.socket`, the pid file is
//! `<root>/<exec-file-name>.pid`. Unjailed (development) VMs use the same layout without the
//! chroot, so that cleanup has one code path.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupVersion, Derived, Hierarchy, LimitOff, Setting};
use crate::layout::Layout;
use crate::layout::MAX_SOCKET_PATH;
pub use crate::layout::{LOG_IN_JAIL, SOCKET_IN_JAIL};
use crate::spec::{JailSpec, SpecError};

/// How a file reaches the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageMethod {
    /// A hard link: read-only, same filesystem, and already readable by the jail user, so the
    /// caller's file needs no change.
    HardLink,
    /// A private copy (a reflink where the filesystem supports it), owned by the jail user.
    Copy,
}

impl StageMethod {
    /// The name, as in plan JSON and on the API: `hard-link` or `copy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HardLink => "hard-link",
            Self::Copy => "copy",
        }
    }
}

impl std::fmt::Display for StageMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file placed in the jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// The caller's file.
    pub source: PathBuf,
    /// Where it lands on the host.
    pub dest: PathBuf,
    /// The path Firecracker is given (inside the chroot when jailed).
    pub path_in_jail: PathBuf,
    /// Link or copy.
    pub method: StageMethod,
    /// Owner after staging.
    pub uid: u32,
    /// Group after staging.
    pub gid: u32,
    /// Permission bits after staging.
    pub mode: u32,
    /// Whether the VM may write it.
    pub writable: bool,
    /// The open source file staging works from (never the path again).
    #[serde(skip)]
    pub file: Option<crate::source::Source>,
}

/// Everything a jail will be, before any of it exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JailPlan {
    /// The jail id.
    pub id: String,
    /// Under the jailer or not.
    pub jailed: bool,
    /// The full command: argv\[0\] is the jailer (or Firecracker when unjailed).
    pub argv: Vec<String>,
    /// `<base>/<exec-file-name>/<id>`: removed as a whole at cleanup.
    pub jail_dir: PathBuf,
    /// The chroot (`<jail_dir>/root`).
    pub root_dir: PathBuf,
    /// The API socket as seen from the host.
    pub socket_path: PathBuf,
    /// The pid file the jailer writes.
    pub pid_file: PathBuf,
    /// Firecracker's log, as seen from the host.
    pub log_file: PathBuf,
    /// The owner record's copy in the jail directory.
    pub owner_file: PathBuf,
    /// User Firecracker runs as.
    pub uid: u32,
    /// Group Firecracker runs as.
    pub gid: u32,
    /// cgroup API in use.
    pub cgroup_version: CgroupVersion,
    /// cgroup files and values the jailer writes.
    pub cgroups: Vec<Setting>,
    /// The VM's cgroup directories (removed at cleanup).
    pub cgroup_dirs: Vec<PathBuf>,
    /// A v1 `cpuacct` directory warden creates and moves Firecracker into itself (see
    /// [`Hierarchy::v1_accounting_dir`]); also listed in `cgroup_dirs`.
    pub cgroup_accounting_dir: Option<PathBuf>,
    /// The VM's v2 directory when no limit needs the jailer's `--cgroup`: warden creates it and
    /// passes it as `--parent-cgroup`, which the jailer joins (also listed in `cgroup_dirs`).
    #[serde(default)]
    pub cgroup_leaf: Option<PathBuf>,
    /// Derived limits left out because the hierarchy lacks their controller, and why.
    #[serde(default)]
    pub cgroups_off: Vec<crate::cgroup::LimitOff>,
    /// rlimits as `(name, value)`.
    pub rlimits: Vec<(String, u64)>,
    /// New PID namespace.
    pub new_pid_ns: bool,
    /// Network namespace joined.
    pub netns: Option<PathBuf>,
    /// Whether warden makes (and removes) the namespace at `netns` itself; false when it was
    /// made by someone else, or belongs to `net`.
    pub netns_owned: bool,
    /// The VM's own network, if it has one.
    pub net: Option<crate::net::NetPlan>,
    /// Files staged into the jail.
    pub staged: Vec<StagedFile>,
}

impl JailPlan {
    /// The path Firecracker is given for the staged file called `name`.
    pub fn path_in_jail(&self, name: &str) -> Option<&Path> {
        self.staged
            .iter()
            .find(|f| f.dest.file_name().is_some_and(|n| n == name))
            .map(|f| f.path_in_jail.as_path())
    }
}

impl JailSpec {
    /// The layout of this spec's jails on a host with these cgroup mounts.
    pub fn layout(&self, hierarchy: &Hierarchy) -> Layout {
        Layout::new(
            &self.chroot_base_dir,
            &self.exec_file,
            &self.parent_cgroup,
            self.cgroup_version,
            hierarchy.clone(),
        )
    }

    /// Validates the spec and computes its plan against the host's cgroup hierarchy.
    pub fn plan(&self, hierarchy: &Hierarchy) -> Result<JailPlan, SpecError> {
        self.plan_inner(hierarchy, None)
    }

    /// The same plan, with other arguments for Firecracker than the API socket and log file
    /// (after the jailer's `--` when jailed): for a baseline that boots Firecracker from a
    /// config file (`--no-api --config-file ...`) with exactly the jailer arguments warden uses.
    pub fn plan_with_firecracker_args(
        &self,
        hierarchy: &Hierarchy,
        firecracker_args: &[&str],
    ) -> Result<JailPlan, SpecError> {
        self.plan_inner(
            hierarchy,
            Some(firecracker_args.iter().map(|a| a.to_string()).collect()),
        )
    }

    /// The cgroup settings of this spec that the hierarchy can take. A derived limit whose
    /// controller is missing is left out and listed with the reason; an explicit one (or any, in
    /// strict mode) refuses the plan, naming the controller and the fix.
    fn available_settings(
        &self,
        hierarchy: &Hierarchy,
        limits: &crate::cgroup::CgroupLimits,
    ) -> Result<(Vec<Setting>, Vec<LimitOff>), SpecError> {
        let version = self.cgroup_version;
        let mut kept = Vec::new();
        let mut off: Vec<LimitOff> = Vec::new();
        for s in limits.settings(version) {
            let controller = s.controller().to_owned();
            if hierarchy.has(version, &controller) {
                kept.push(s);
                continue;
            }
            if off.iter().any(|o| o.controller == controller) {
                continue;
            }
            let derived = Derived::of(&controller);
            if derived == Some(Derived::Hugetlb) {
                // Huge pages are denied where the controller exists: a hardening extra that
                // nothing needs, so its absence is not worth a warning.
                continue;
            }
            let skippable = derived.is_some_and(|d| !self.explicit_limits.contains(&d));
            let here = hierarchy.describe(version);
            if !skippable || self.strict_cgroups {
                let field = match derived {
                    Some(Derived::Memory) if !skippable => "memory_limit_mb",
                    Some(Derived::Cpu) if !skippable => "cpu_quota_pct",
                    Some(Derived::Pids) if !skippable => "pids_max",
                    _ if !skippable => limit_field(&controller, limits),
                    _ => "cgroup_version",
                };
                let fix = if version == CgroupVersion::V2 {
                    format!(
                        "enable it for warden's cgroups (echo +{controller} > cgroup.subtree_control \
                         in every ancestor; under systemd, Delegate=yes or Delegate={controller}), \
                         or use cgroup version 1 where it is mounted"
                    )
                } else {
                    format!("mount the v1 {controller} controller, or use cgroup version 2")
                };
                let why = if skippable {
                    "production mode (require_jailer) refuses a VM without it"
                } else {
                    "the limit was asked for explicitly"
                };
                return Err(SpecError::new(
                    field,
                    format!("needs the {controller} controller, which {here} does not have ({why}); {fix}"),
                ));
            }
            off.push(LimitOff {
                why: format!("{here} has no {controller} controller"),
                controller,
            });
        }
        Ok((kept, off))
    }

    fn plan_inner(
        &self,
        hierarchy: &Hierarchy,
        firecracker_args: Option<Vec<String>>,
    ) -> Result<JailPlan, SpecError> {
        self.validate()?;
        let layout = self.layout(hierarchy);
        let id = self.id.as_str();
        let jail_dir = layout.jail_dir(id);
        let root_dir = layout.root_dir(id);
        let socket_path = layout.checked_socket_path(id).map_err(|e| {
            SpecError::new(
                "chroot_base_dir",
                format!(
                    "makes the API socket path {} bytes long ({}), over the kernel's limit of {MAX_SOCKET_PATH}; \
                     use a shorter chroot base directory or a shorter VM id",
                    e.len,
                    e.path.display()
                ),
            )
        })?;
        let log_file = layout.log_file(id);
        let pid_file = layout.pid_file(id);

        let (uid, gid) = if self.jailed {
            (self.uid, self.gid)
        } else {
            (0, 0)
        };
        let base_dev = nearest_existing(&self.chroot_base_dir)
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.dev());
        let mut staged = Vec::new();
        for f in &self.files {
            // One file name on Linux: not empty, `.` or `..`, no `/` or NUL, at most NAME_MAX
            // (255) bytes.
            if f.name.is_empty()
                || f.name.contains(['/', '\0'])
                || f.name == "."
                || f.name == ".."
                || f.name.len() > 255
            {
                return Err(SpecError::new(
                    &f.field,
                    format!("staged name {:?} is not a single file name", f.name),
                ));
            }
            if staged
                .iter()
                .any(|s: &StagedFile| s.dest.file_name().is_some_and(|n| n == f.name.as_str()))
            {
                return Err(SpecError::new(
                    &f.field,
                    format!(
                        "staged name {:?} is used twice; give each drive its own id",
                        f.name
                    ),
                ));
            }
            // Opened once, here: staging works from this file, never from the path again.
            let file = match &f.opened {
                Some(s) => s.clone(),
                None => crate::source::Source::open(&f.field, &f.source)?,
            };
            let meta = file.meta;
            // A hard link shares the inode with every later VM: only for files root owns and
            // nobody else can write, that the jail user can already read.
            let linkable = !f.writable
                && base_dev == Some(meta.dev)
                && meta.uid == 0
                && meta.mode & 0o022 == 0
                && readable_by(&meta, uid, gid);
            let dest = root_dir.join(&f.name);
            let path_in_jail = if self.jailed {
                Path::new("/").join(&f.name)
            } else {
                dest.clone()
            };
            staged.push(if linkable {
                StagedFile {
                    source: f.source.clone(),
                    dest,
                    path_in_jail,
                    method: StageMethod::HardLink,
                    uid: meta.uid,
                    gid: meta.gid,
                    mode: meta.mode,
                    writable: false,
                    file: Some(file),
                }
            } else {
                StagedFile {
                    source: f.source.clone(),
                    dest,
                    path_in_jail,
                    method: StageMethod::Copy,
                    uid,
                    gid,
                    mode: if f.writable { 0o600 } else { 0o400 },
                    writable: f.writable,
                    file: Some(file),
                }
            });
        }

        let mut rlimits = Vec::new();
        if let Some(n) = self.resource_limits.no_file {
            rlimits.push(("no-file".to_owned(), n));
        }
        let fsize = self.resource_limits.fsize.or_else(|| {
            let largest = staged
                .iter()
                .filter_map(|f| f.file.as_ref().map(|s| s.meta.len))
                .chain(self.limits.memory_bytes)
                .max()
                .unwrap_or(0);
            self.fsize_headroom.map(|h| largest.saturating_add(h))
        });
        if let Some(n) = fsize {
            rlimits.push(("fsize".to_owned(), n));
        }

        let limits = self.placed_limits(hierarchy, base_dev)?;
        let mut accounting = None;
        let mut leaf = None;
        let mut cgroups_off = Vec::new();
        let mut parent_arg = self.parent_cgroup.clone();
        let (cgroups, cgroup_dirs) = if self.jailed {
            let (mut settings, off) = self.available_settings(hierarchy, &limits)?;
            cgroups_off = off;
            let mut dirs = layout.cgroup_dirs(id, &settings);
            accounting = layout.accounting_dir(id);
            dirs.extend(accounting.clone());
            if self.cgroup_version == CgroupVersion::V2 && settings.iter().all(|s| s.by_warden) {
                // Without a `--cgroup`, the v2 jailer joins `--parent-cgroup` itself: the
                // VM's own directory, made by warden, so the VM is still placed alone (and
                // what warden writes itself goes there).
                if let Some(root) = &hierarchy.v2 {
                    let dir = root.join(&self.parent_cgroup).join(id);
                    parent_arg = format!("{}/{id}", self.parent_cgroup);
                    dirs.push(dir.clone());
                    leaf = Some(dir);
                }
            }
            dirs.sort();
            dirs.dedup();
            for s in &mut settings {
                s.path = layout.setting_dir(id, s).map(|d| d.join(&s.file));
            }
            (settings, dirs)
        } else {
            (Vec::new(), Vec::new())
        };

        let argv = if self.jailed {
            let mut a = vec![
                self.jailer_binary.display().to_string(),
                "--id".into(),
                self.id.to_string(),
                "--exec-file".into(),
                self.exec_file.display().to_string(),
                "--uid".into(),
                uid.to_string(),
                "--gid".into(),
                gid.to_string(),
                "--chroot-base-dir".into(),
                self.chroot_base_dir.display().to_string(),
                "--cgroup-version".into(),
                self.cgroup_version.as_arg().into(),
                "--parent-cgroup".into(),
                parent_arg.clone(),
            ];
            for s in cgroups.iter().filter(|s| !s.by_warden) {
                a.push("--cgroup".into());
                a.push(s.as_arg());
            }
            for (name, value) in &rlimits {
                a.push("--resource-limit".into());
                a.push(format!("{name}={value}"));
            }
            if let Some(ns) = self
                .net
                .as_ref()
                .map(|n| &n.netns_path)
                .or(self.netns.as_ref())
            {
                a.push("--netns".into());
                a.push(ns.display().to_string());
            }
            if self.new_pid_ns {
                a.push("--new-pid-ns".into());
            }
            a.push("--".into());
            a.extend(firecracker_args.unwrap_or_else(|| {
                vec![
                    "--api-sock".into(),
                    SOCKET_IN_JAIL.into(),
                    "--log-path".into(),
                    LOG_IN_JAIL.into(),
                ]
            }));
            a
        } else {
            let mut a = vec![
                self.exec_file.display().to_string(),
                "--id".into(),
                self.id.to_string(),
            ];
            a.extend(firecracker_args.unwrap_or_else(|| {
                vec![
                    "--api-sock".into(),
                    socket_path.display().to_string(),
                    "--log-path".into(),
                    log_file.display().to_string(),
                ]
            }));
            a
        };

        Ok(JailPlan {
            id: self.id.to_string(),
            jailed: self.jailed,
            argv,
            jail_dir,
            root_dir,
            socket_path,
            pid_file,
            log_file,
            owner_file: layout.owner_file(id),
            uid,
            gid,
            cgroup_version: self.cgroup_version,
            cgroups,
            cgroup_dirs,
            cgroup_accounting_dir: accounting,
            cgroup_leaf: leaf,
            cgroups_off,
            rlimits,
            new_pid_ns: self.jailed && self.new_pid_ns,
            netns: self
                .net
                .as_ref()
                .map(|n| n.netns_path.clone())
                .or_else(|| self.netns.clone())
                .filter(|_| self.jailed),
            netns_owned: self.jailed
                && self.net.is_none()
                && self.netns.is_some()
                && self.make_netns,
            net: self.net.clone(),
            staged,
        })
    }
}

impl JailSpec {
    /// The limits with what the host decides filled in: a cpuset's memory nodes (every online
    /// node) and the disk the I/O limits apply to (the one under the chroot base, `base_dev`).
    /// Checks what was asked against the host: CPUs online, a block device to throttle, the
    /// controllers in the chosen cgroup version. Unjailed VMs have no cgroups: nothing to place.
    fn placed_limits(
        &self,
        hierarchy: &Hierarchy,
        base_dev: Option<u64>,
    ) -> Result<crate::cgroup::CgroupLimits, SpecError> {
        use crate::cgroup::{cpuset::Online, disk};
        let mut limits = self.limits.clone();
        if let Some((field, _)) = limits.io.fields().into_iter().find(|f| f.1 == Some(0)) {
            return Err(SpecError::new(
                field,
                "is 0; give a positive limit, or leave it unset for no limit",
            ));
        }
        if !self.jailed {
            return Ok(limits);
        }
        if let Some(set) = &mut limits.cpuset {
            let online = Online::read(&self.sys_root).map_err(|file| {
                SpecError::new(
                    "cpuset",
                    format!(
                        "cannot be checked: {} is unreadable; drop the cpuset or run where sysfs is mounted",
                        file.display()
                    ),
                )
            })?;
            if set.cpus.is_empty() || !set.cpus.is_subset(&online.cpus) {
                return Err(SpecError::new(
                    "cpuset",
                    format!(
                        "names CPUs that are not online ({}; online: {}); pin to online CPUs only",
                        set.cpus.missing_from(&online.cpus),
                        online.cpus
                    ),
                ));
            }
            set.mems.get_or_insert(online.mems);
        }
        if let Some((field, _)) = limits.io.fields().into_iter().find(|f| f.1.is_some()) {
            let not_block = |why: String| {
                SpecError::new(
                    field,
                    format!(
                        "cannot be applied: the chroot base {} {why}, so its disk I/O cannot be throttled; put the chroot base on a disk-backed filesystem (e.g. ext4 or xfs) or drop the I/O limits",
                        self.chroot_base_dir.display()
                    ),
                )
            };
            let dev = base_dev.ok_or_else(|| not_block("does not exist".into()))?;
            let disk =
                disk::disk_of(&self.sys_root, disk::BlockDevice::from_dev(dev)).map_err(|e| {
                    not_block(format!(
                        "is on a filesystem without a block device ({e}; tmpfs or overlay?)"
                    ))
                })?;
            limits.io_device = Some(disk);
        }
        // Pinning and throttling are never derived: a cgroup version without their controller
        // is an error naming the request's own field.
        let asked = crate::cgroup::CgroupLimits {
            cpuset: limits.cpuset.clone(),
            io: limits.io,
            io_device: limits.io_device,
            ..Default::default()
        };
        for s in asked.settings(self.cgroup_version) {
            hierarchy
                .check(self.cgroup_version, std::slice::from_ref(&s))
                .map_err(|e| {
                    let field = if s.controller() == "cpuset" {
                        "cpuset"
                    } else {
                        asked
                            .io
                            .fields()
                            .into_iter()
                            .find(|f| f.1.is_some())
                            .map_or("io", |f| f.0)
                    };
                    SpecError::new(field, format!("cannot be applied: {e}, or drop {field}"))
                })?;
        }
        let by_jailer = limits
            .settings(self.cgroup_version)
            .iter()
            .any(|s| !s.by_warden);
        let first_io = limits.io.fields().into_iter().find(|f| f.1.is_some());
        if let (false, Some((field, _)), crate::CgroupVersion::V2) =
            (by_jailer, first_io, self.cgroup_version)
        {
            // The jailer makes no v2 cgroup without a value of its own to write.
            return Err(SpecError::new(
                field,
                "needs a cgroup the jailer makes; set a memory, CPU or pids limit too",
            ));
        }
        Ok(limits)
    }
}

/// The path itself or its closest existing ancestor.
fn nearest_existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Whether a file with this metadata can be read by `uid`/`gid` without changing it.
fn readable_by(meta: &crate::source::SourceMeta, uid: u32, gid: u32) -> bool {
    let mode = meta.mode;
    if uid == 0 {
        return true;
    }
    if meta.uid == uid {
        mode & 0o400 != 0
    } else if meta.gid == gid {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    }
}

/// The spec field of a limit that is always explicit, by its controller: for disk I/O, the
/// first limit that is set.
fn limit_field(controller: &str, limits: &crate::cgroup::CgroupLimits) -> &'static str {
    match controller {
        "cpuset" => "cpuset",
        "blkio" | "io" => limits
            .io
            .fields()
            .into_iter()
            .find(|f| f.1.is_some())
            .map_or("io_limits", |f| f.0),
        _ => "cgroup_version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupLimits;
    use crate::spec::{ResourceLimits, StageRequest};
    use crate::JailId;

    fn spec(version: CgroupVersion, kernel: &Path) -> JailSpec {
        JailSpec {
            id: JailId::new("vm-golden").unwrap(),
            jailed: true,
            jailer_binary: "/usr/local/bin/jailer".into(),
            exec_file: "/usr/local/bin/firecracker".into(),
            uid: 10000,
            gid: 10001,
            chroot_base_dir: "/srv/jailer".into(),
            cgroup_version: version,
            parent_cgroup: "warden".into(),
            limits: CgroupLimits {
                memory_bytes: Some(192 << 20),
                cpu_quota_pct: Some(50),
                pids_max: Some(64),
                ..Default::default()
            },
            explicit_limits: vec![],
            strict_cgroups: false,
            resource_limits: ResourceLimits {
                no_file: Some(1024),
                fsize: Some(1 << 30),
            },
            new_pid_ns: true,
            netns: None,
            make_netns: false,
            fsize_headroom: None,
            net: None,
            sys_root: crate::spec::SYS.into(),
            files: vec![StageRequest {
                source: kernel.to_owned(),
                name: "kernel".into(),
                writable: true,
                field: "kernel_path".into(),
                opened: None,
            }],
        }
    }

    fn kernel() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().unwrap()
    }

    #[test]
    fn golden_v1_argv_and_paths() {
        let k = kernel();
        let h = Hierarchy::parse(crate::cgroup::tests_support::HYBRID_MOUNTS).unwrap();
        let plan = spec(CgroupVersion::V1, k.path()).plan(&h).unwrap();
        assert_eq!(
            plan.argv,
            [
                "/usr/local/bin/jailer",
                "--id",
                "vm-golden",
                "--exec-file",
                "/usr/local/bin/firecracker",
                "--uid",
                "10000",
                "--gid",
                "10001",
                "--chroot-base-dir",
                "/srv/jailer",
                "--cgroup-version",
                "1",
                "--parent-cgroup",
                "warden",
                "--cgroup",
                "memory.limit_in_bytes=201326592",
                "--cgroup",
                "cpu.cfs_period_us=100000",
                "--cgroup",
                "cpu.cfs_quota_us=50000",
                "--cgroup",
                "pids.max=64",
                "--resource-limit",
                "no-file=1024",
                "--resource-limit",
                "fsize=1073741824",
                "--new-pid-ns",
                "--",
                "--api-sock",
                "/run/firecracker.socket",
                "--log-path",
                "/firecracker.log",
            ]
        );
        assert_eq!(
            plan.jail_dir,
            Path::new("/srv/jailer/firecracker/vm-golden")
        );
        assert_eq!(
            plan.root_dir,
            Path::new("/srv/jailer/firecracker/vm-golden/root")
        );
        assert_eq!(
            plan.socket_path,
            Path::new("/srv/jailer/firecracker/vm-golden/root/run/firecracker.socket")
        );
        assert_eq!(
            plan.pid_file,
            Path::new("/srv/jailer/firecracker/vm-golden/root/firecracker.pid")
        );
        let dirs: Vec<String> = plan
            .cgroup_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu/warden/vm-golden",
                "/sys/fs/cgroup/cpuacct/warden/vm-golden",
                "/sys/fs/cgroup/memory/warden/vm-golden",
                "/sys/fs/cgroup/pids/warden/vm-golden",
            ]
        );
        assert_eq!(
            plan.cgroup_accounting_dir.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpuacct/warden/vm-golden"))
        );
        assert_eq!(
            plan.cgroups[0].path.as_deref(),
            Some(Path::new(
                "/sys/fs/cgroup/memory/warden/vm-golden/memory.limit_in_bytes"
            ))
        );
        let staged = &plan.staged[0];
        assert_eq!(staged.path_in_jail, Path::new("/kernel"));
        assert_eq!(
            (staged.method, staged.uid, staged.gid, staged.mode),
            (StageMethod::Copy, 10000, 10001, 0o600)
        );
        assert_eq!(
            plan.rlimits,
            [("no-file".to_owned(), 1024), ("fsize".to_owned(), 1 << 30)]
        );
    }

    #[test]
    fn golden_v2_argv_and_paths_on_a_fake_unified_tree() {
        let k = kernel();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let h = Hierarchy::parse(&format!(
            "cgroup2 {} cgroup2 rw 0 0\n",
            root.path().display()
        ))
        .unwrap();
        let plan = spec(CgroupVersion::V2, k.path()).plan(&h).unwrap();
        let cg: Vec<&str> = plan
            .argv
            .iter()
            .map(String::as_str)
            .skip_while(|a| *a != "--cgroup-version")
            .take(10)
            .collect();
        assert_eq!(
            cg,
            [
                "--cgroup-version",
                "2",
                "--parent-cgroup",
                "warden",
                "--cgroup",
                "memory.max=201326592",
                "--cgroup",
                "cpu.max=50000 100000",
                "--cgroup",
                "pids.max=64",
            ]
        );
        assert_eq!(plan.cgroup_dirs, [root.path().join("warden/vm-golden")]);
        assert_eq!(plan.cgroup_accounting_dir, None);
    }

    #[test]
    fn the_default_fsize_clears_the_memory_cap_and_every_drive() {
        let big = kernel();
        big.as_file().set_len(5 << 30).unwrap();
        let h = Hierarchy::parse(crate::cgroup::tests_support::HYBRID_MOUNTS).unwrap();
        let mut s = spec(CgroupVersion::V1, big.path());
        s.resource_limits.fsize = None;
        s.fsize_headroom = Some(1 << 30);
        let plan = s.plan(&h).unwrap();
        assert!(plan
            .rlimits
            .contains(&("fsize".to_owned(), (5 << 30) + (1 << 30))));
        s.resource_limits.fsize = Some(4096);
        let plan = s.plan(&h).unwrap();
        assert!(
            plan.rlimits.contains(&("fsize".to_owned(), 4096)),
            "an explicit one wins"
        );
    }

    /// A fake cgroup2 mount offering `controllers`.
    fn v2_tree(controllers: &str) -> (tempfile::TempDir, Hierarchy) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), controllers).unwrap();
        let h = Hierarchy::parse(&format!(
            "cgroup2 {} cgroup2 rw 0 0\n",
            root.path().display()
        ))
        .unwrap();
        (root, h)
    }

    #[test]
    fn derived_limits_whose_v2_controller_is_missing_are_left_out_and_named() {
        let k = kernel();
        let (root, h) = v2_tree("hugetlb\n");
        let plan = spec(CgroupVersion::V2, k.path()).plan(&h).unwrap();
        let off: Vec<&str> = plan
            .cgroups_off
            .iter()
            .map(|o| o.controller.as_str())
            .collect();
        assert_eq!(off, ["memory", "cpu", "pids"]);
        assert!(plan.cgroups_off[0].why.contains("has no memory controller"));
        assert!(plan.cgroups.is_empty());
        // No `--cgroup`: the VM's own directory is made by warden and joined by the jailer.
        let dir = root.path().join("warden/vm-golden");
        assert_eq!(plan.cgroup_leaf.as_deref(), Some(dir.as_path()));
        assert_eq!(plan.cgroup_dirs, [dir]);
        let parent = plan
            .argv
            .iter()
            .position(|a| a == "--parent-cgroup")
            .unwrap();
        assert_eq!(plan.argv[parent + 1], "warden/vm-golden");
        assert!(!plan.argv.iter().any(|a| a == "--cgroup"));
    }

    #[test]
    fn an_explicit_limit_or_production_mode_is_refused_naming_the_controller() {
        let k = kernel();
        let (_root, h) = v2_tree("pids\n");
        let mut s = spec(CgroupVersion::V2, k.path());
        s.explicit_limits = vec![Derived::Memory];
        let err = s.plan(&h).unwrap_err();
        assert_eq!(err.field, "memory_limit_mb");
        assert!(err.problem.contains("needs the memory controller"), "{err}");
        assert!(err.problem.contains("subtree_control"), "the fix: {err}");
        let mut s = spec(CgroupVersion::V2, k.path());
        s.strict_cgroups = true;
        let err = s.plan(&h).unwrap_err();
        assert_eq!(err.field, "cgroup_version");
        assert!(err.problem.contains("production mode"), "{err}");
        // With the controllers there, the same specs plan, and pids is kept where it exists.
        let plan = spec(CgroupVersion::V2, k.path()).plan(&h).unwrap();
        assert!(plan.cgroups.iter().any(|c| c.file == "pids.max"));
        assert_eq!(plan.cgroup_leaf, None, "the jailer makes the directory");
    }

    #[test]
    fn huge_pages_are_denied_where_hugetlb_exists_and_silently_skipped_elsewhere() {
        let k = kernel();
        let (_root, h) = v2_tree("cpu memory pids hugetlb\n");
        let mut s = spec(CgroupVersion::V2, k.path());
        s.limits.hugetlb_deny = vec!["2MB".into(), "1GB".into()];
        let plan = s.plan(&h).unwrap();
        let files: Vec<String> = plan.cgroups.iter().map(|c| c.as_arg()).collect();
        assert!(files.contains(&"hugetlb.2MB.max=0".to_owned()), "{files:?}");
        assert!(files.contains(&"hugetlb.1GB.max=0".to_owned()), "{files:?}");
        let (_root, h) = v2_tree("cpu memory pids\n");
        let plan = s.plan(&h).unwrap();
        assert!(plan.cgroups_off.is_empty(), "{:?}", plan.cgroups_off);
        assert!(!plan.cgroups.iter().any(|c| c.controller() == "hugetlb"));
    }

    #[test]
    fn unjailed_plan_runs_firecracker_directly_with_host_paths() {
        let k = kernel();
        let h = Hierarchy::parse(crate::cgroup::tests_support::HYBRID_MOUNTS).unwrap();
        let mut s = spec(CgroupVersion::V1, k.path());
        s.jailed = false;
        let plan = s.plan(&h).unwrap();
        assert_eq!(plan.argv[0], "/usr/local/bin/firecracker");
        assert!(plan
            .argv
            .contains(&"/srv/jailer/firecracker/vm-golden/root/run/firecracker.socket".to_owned()));
        assert!(plan.cgroups.is_empty() && plan.cgroup_dirs.is_empty());
        assert_eq!(
            plan.staged[0].path_in_jail,
            Path::new("/srv/jailer/firecracker/vm-golden/root/kernel")
        );
        assert!(!plan.new_pid_ns);
    }

    #[test]
    fn other_firecracker_args_replace_only_what_follows_the_jailers_separator() {
        let k = kernel();
        let h = Hierarchy::parse(crate::cgroup::tests_support::HYBRID_MOUNTS).unwrap();
        let s = spec(CgroupVersion::V1, k.path());
        let api = s.plan(&h).unwrap();
        let args = ["--no-api", "--config-file", "/vm.json"];
        let own = s.plan_with_firecracker_args(&h, &args).unwrap();
        let sep = api.argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(own.argv[..=sep], api.argv[..=sep]);
        assert_eq!(own.argv[sep + 1..], args);
        assert_eq!(own.cgroup_dirs, api.cgroup_dirs);
        let mut unjailed = s.clone();
        unjailed.jailed = false;
        let own = unjailed.plan_with_firecracker_args(&h, &args).unwrap();
        assert_eq!(
            own.argv,
            [
                "/usr/local/bin/firecracker",
                "--id",
                "vm-golden",
                "--no-api",
                "--config-file",
                "/vm.json"
            ]
        );
    }

    /// A spec pinned to CPU 1 with read and write limits, planned on a fake sysfs whose disk
    /// holds the chroot base (the kernel's temp dir) as partition 254:1 of disk 254:0.
    fn pinned(version: CgroupVersion, k: &Path, sys: &Path) -> JailSpec {
        use crate::cgroup::cpuset::{CpuList, Cpuset};
        crate::cgroup::disk::tests_support::fake_sys(sys);
        let mut s = spec(version, k);
        s.sys_root = sys.to_owned();
        s.limits.cpuset = Some(Cpuset {
            cpus: CpuList::parse("1").unwrap(),
            mems: None,
        });
        s.limits.io.read_bps = Some(1 << 20);
        s.limits.io.write_iops = Some(200);
        s
    }

    /// The fake sysfs's `dev/block` entry for the chroot base's device, removed.
    fn base_entry(s: &JailSpec, sys: &Path) -> PathBuf {
        let dev = std::fs::metadata(nearest_existing(&s.chroot_base_dir).unwrap())
            .unwrap()
            .dev();
        let entry = sys
            .join("dev/block")
            .join(crate::cgroup::disk::BlockDevice::from_dev(dev).to_string());
        let _ = std::fs::remove_file(&entry);
        entry
    }

    /// Points the fake sysfs's entry for the chroot base's device at the partition.
    fn base_is_partition(s: &JailSpec, sys: &Path) {
        let entry = base_entry(s, sys);
        std::os::unix::fs::symlink("../../devices/virtual/block/vda/vda1", entry).unwrap();
    }

    #[test]
    fn golden_v1_pinning_goes_through_the_jailer_and_blkio_throttles_on_the_disk_are_warden_s() {
        let k = kernel();
        let sys = tempfile::tempdir().unwrap();
        let mut s = pinned(CgroupVersion::V1, k.path(), sys.path());
        s.chroot_base_dir = std::env::temp_dir();
        base_is_partition(&s, sys.path());
        let h = Hierarchy::parse(crate::cgroup::tests_support::HYBRID_MOUNTS).unwrap();
        let plan = s.plan(&h).unwrap();
        let args: Vec<&str> = plan
            .argv
            .windows(2)
            .filter(|w| w[0] == "--cgroup")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(args[4..], ["cpuset.cpus=1", "cpuset.mems=0"]);
        let by_warden: Vec<String> = plan
            .cgroups
            .iter()
            .filter(|c| c.by_warden)
            .map(|c| format!("{}={}", c.path.as_ref().unwrap().display(), c.value))
            .collect();
        assert_eq!(
            by_warden,
            [
                "/sys/fs/cgroup/blkio/warden/vm-golden/blkio.throttle.read_bps_device=254:0 1048576",
                "/sys/fs/cgroup/blkio/warden/vm-golden/blkio.throttle.write_iops_device=254:0 200",
            ]
        );
        assert!(plan
            .cgroup_dirs
            .contains(&"/sys/fs/cgroup/cpuset/warden/vm-golden".into()));
        assert!(plan
            .cgroup_dirs
            .contains(&"/sys/fs/cgroup/blkio/warden/vm-golden".into()));
    }

    #[test]
    fn golden_v2_io_max_is_planned_for_warden_and_kept_out_of_the_jailer_argv() {
        let k = kernel();
        let sys = tempfile::tempdir().unwrap();
        let mut s = pinned(CgroupVersion::V2, k.path(), sys.path());
        s.chroot_base_dir = std::env::temp_dir();
        base_is_partition(&s, sys.path());
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let h = Hierarchy::parse(&format!(
            "cgroup2 {} cgroup2 rw 0 0\n",
            root.path().display()
        ))
        .unwrap();
        let plan = s.plan(&h).unwrap();
        let args: Vec<&str> = plan
            .argv
            .windows(2)
            .filter(|w| w[0] == "--cgroup")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(
            args,
            [
                "memory.max=201326592",
                "cpu.max=50000 100000",
                "pids.max=64",
                "cpuset.cpus=1",
                "cpuset.mems=0",
            ]
        );
        let io = plan.cgroups.iter().find(|c| c.file == "io.max").unwrap();
        assert!(io.by_warden);
        assert_eq!(io.value, "254:0 rbps=1048576 wiops=200");
        assert_eq!(
            io.path.as_deref(),
            Some(root.path().join("warden/vm-golden/io.max").as_path())
        );
        // Shown in plan JSON, with who writes it.
        let json = serde_json::to_value(&plan).unwrap();
        let shown = json["cgroups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["file"] == "io.max")
            .unwrap();
        assert_eq!(shown["by_warden"], true);
    }

    #[test]
    fn pinning_and_io_limits_are_checked_against_the_host_naming_the_field() {
        let k = kernel();
        let sys = tempfile::tempdir().unwrap();
        let h = Hierarchy::parse(crate::cgroup::tests_support::HYBRID_MOUNTS).unwrap();
        let mut s = pinned(CgroupVersion::V1, k.path(), sys.path());
        s.chroot_base_dir = std::env::temp_dir();
        s.limits.io = Default::default();
        s.limits.cpuset.as_mut().unwrap().cpus =
            crate::cgroup::cpuset::CpuList::parse("1-3").unwrap();
        let err = s.plan(&h).unwrap_err();
        assert_eq!(err.field, "cpuset");
        assert!(err.problem.contains("(2-3; online: 0-1)"), "{err}");

        // The fake sysfs has no entry for the temp dir's device: like tmpfs or overlay.
        let mut s = pinned(CgroupVersion::V1, k.path(), sys.path());
        s.chroot_base_dir = std::env::temp_dir();
        base_entry(&s, sys.path());
        s.limits.cpuset = None;
        s.limits.io.read_bps = None;
        let err = s.plan(&h).unwrap_err();
        assert_eq!(err.field, "io_write_iops");
        assert!(err.problem.contains("without a block device"), "{err}");
        assert!(err.problem.contains("drop the I/O limits"), "{err}");

        s.limits.io.write_iops = Some(0);
        assert_eq!(s.plan(&h).unwrap_err().field, "io_write_iops");

        // v2 without cpuset/io controllers (this host's empty cgroup2): refused, naming them.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let v2 = Hierarchy::parse(&format!(
            "cgroup2 {} cgroup2 rw 0 0\n",
            root.path().display()
        ))
        .unwrap();
        let mut s = pinned(CgroupVersion::V2, k.path(), sys.path());
        s.limits.io = Default::default();
        let err = s.plan(&v2).unwrap_err();
        assert_eq!(err.field, "cpuset");
        assert!(err.problem.contains("no cpuset controller"), "{err}");

        // Unjailed VMs have no cgroups: nothing is checked against the host.
        let mut s = pinned(CgroupVersion::V1, k.path(), sys.path());
        s.jailed = false;
        s.sys_root = "/nonexistent".into();
        assert!(s.plan(&h).unwrap().cgroups.is_empty());
    }

    #[test]
    fn stage_methods_have_one_name_in_json_and_on_the_api() {
        for m in [StageMethod::HardLink, StageMethod::Copy] {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
    }
}
