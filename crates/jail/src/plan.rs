//! From a validated [`JailSpec`] to a [`JailPlan`]: every path, argument, cgroup file and staged
//! file a jail will have, computed without changing anything on the host.
//!
//! The layout is the real jailer's (see design.md): `<base>/<exec-file-name>/<id>/root` is the
//! chroot, the API socket is `<root>/run/firecracker.socket`, the pid file is
//! `<root>/<exec-file-name>.pid`. Unjailed (development) VMs use the same layout without the
//! chroot, so that cleanup has one code path.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroup::{CgroupVersion, Hierarchy, Setting};
use crate::spec::{JailSpec, SpecError};
use crate::MAX_SOCKET_PATH;

/// The API socket's path inside the jail.
pub const SOCKET_IN_JAIL: &str = "/run/firecracker.socket";
/// Firecracker's log file inside the jail (created by us: Firecracker only opens it).
pub const LOG_IN_JAIL: &str = "/firecracker.log";

/// How a file reaches the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageMethod {
    /// A hard link: read-only, same filesystem, and already readable by the jail user, so the
    /// caller's file needs no change.
    HardLink,
    /// A private copy (a reflink where the filesystem supports it), owned by the jail user.
    Copy,
}

/// One file placed in the jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// Everything a jail will be, before any of it exists.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// rlimits as `(name, value)`.
    pub rlimits: Vec<(String, u64)>,
    /// New PID namespace.
    pub new_pid_ns: bool,
    /// Network namespace joined.
    pub netns: Option<PathBuf>,
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
    /// Validates the spec and computes its plan against the host's cgroup hierarchy.
    pub fn plan(&self, hierarchy: &Hierarchy) -> Result<JailPlan, SpecError> {
        self.validate()?;
        let exec_name = self.exec_file.file_name().expect("validated").to_string_lossy().into_owned();
        let jail_dir = self.chroot_base_dir.join(&exec_name).join(self.id.as_str());
        let root_dir = jail_dir.join("root");
        let in_root = |p: &str| root_dir.join(p.trim_start_matches('/'));
        let socket_path = in_root(SOCKET_IN_JAIL);
        let log_file = in_root(LOG_IN_JAIL);
        let pid_file = root_dir.join(format!("{exec_name}.pid"));

        let socket_len = socket_path.as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(SpecError::new(
                "chroot_base_dir",
                format!(
                    "makes the API socket path {} bytes long ({}), over the kernel's limit of {MAX_SOCKET_PATH}; \
                     use a shorter chroot base directory or a shorter VM id",
                    socket_len,
                    socket_path.display()
                ),
            ));
        }

        let (uid, gid) = if self.jailed { (self.uid, self.gid) } else { (0, 0) };
        let base_dev = nearest_existing(&self.chroot_base_dir).and_then(|p| std::fs::metadata(p).ok()).map(|m| m.dev());
        let mut staged = Vec::new();
        for f in &self.files {
            if f.name.is_empty() || f.name.contains('/') || f.name == "." || f.name == ".." {
                return Err(SpecError::new(&f.field, format!("staged name {:?} is not a single file name", f.name)));
            }
            if staged.iter().any(|s: &StagedFile| s.dest.file_name().is_some_and(|n| n == f.name.as_str())) {
                return Err(SpecError::new(&f.field, format!("staged name {:?} is used twice; give each drive its own id", f.name)));
            }
            let meta = std::fs::metadata(&f.source)
                .map_err(|e| SpecError::new(&f.field, format!("{} cannot be read ({e})", f.source.display())))?;
            let linkable = !f.writable
                && base_dev == Some(meta.dev())
                && readable_by(&meta, uid, gid);
            let dest = root_dir.join(&f.name);
            let path_in_jail = if self.jailed { Path::new("/").join(&f.name) } else { dest.clone() };
            staged.push(if linkable {
                StagedFile {
                    source: f.source.clone(),
                    dest,
                    path_in_jail,
                    method: StageMethod::HardLink,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode() & 0o7777,
                    writable: false,
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
                }
            });
        }

        let mut rlimits = Vec::new();
        if let Some(n) = self.resource_limits.no_file {
            rlimits.push(("no-file".to_owned(), n));
        }
        if let Some(n) = self.resource_limits.fsize {
            rlimits.push(("fsize".to_owned(), n));
        }

        let mut accounting = None;
        let (cgroups, cgroup_dirs) = if self.jailed {
            let mut settings = self.limits.settings(self.cgroup_version);
            hierarchy
                .check(self.cgroup_version, &settings)
                .map_err(|e| SpecError::new("cgroup_version", e.to_string()))?;
            let mut dirs = hierarchy.vm_dirs(self.cgroup_version, &self.parent_cgroup, self.id.as_str(), &settings);
            accounting = hierarchy.v1_accounting_dir(self.cgroup_version, &self.parent_cgroup, self.id.as_str());
            dirs.extend(accounting.clone());
            dirs.sort();
            for s in &mut settings {
                s.path = hierarchy
                    .setting_dir(self.cgroup_version, &self.parent_cgroup, self.id.as_str(), s)
                    .map(|d| d.join(&s.file));
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
                self.parent_cgroup.clone(),
            ];
            for s in &cgroups {
                a.push("--cgroup".into());
                a.push(s.as_arg());
            }
            for (name, value) in &rlimits {
                a.push("--resource-limit".into());
                a.push(format!("{name}={value}"));
            }
            if let Some(ns) = &self.netns {
                a.push("--netns".into());
                a.push(ns.display().to_string());
            }
            if self.new_pid_ns {
                a.push("--new-pid-ns".into());
            }
            a.extend(["--".into(), "--api-sock".into(), SOCKET_IN_JAIL.into(), "--log-path".into(), LOG_IN_JAIL.into()]);
            a
        } else {
            vec![
                self.exec_file.display().to_string(),
                "--id".into(),
                self.id.to_string(),
                "--api-sock".into(),
                socket_path.display().to_string(),
                "--log-path".into(),
                log_file.display().to_string(),
            ]
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
            uid,
            gid,
            cgroup_version: self.cgroup_version,
            cgroups,
            cgroup_dirs,
            cgroup_accounting_dir: accounting,
            rlimits,
            new_pid_ns: self.jailed && self.new_pid_ns,
            netns: self.netns.clone().filter(|_| self.jailed),
            staged,
        })
    }
}

/// The path itself or its closest existing ancestor.
fn nearest_existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Whether a file with this metadata can be read by `uid`/`gid` without changing it.
fn readable_by(meta: &std::fs::Metadata, uid: u32, gid: u32) -> bool {
    let mode = meta.mode();
    if uid == 0 {
        return true;
    }
    if meta.uid() == uid {
        mode & 0o400 != 0
    } else if meta.gid() == gid {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    }
}
