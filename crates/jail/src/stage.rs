//! Staging: the jail's directories and the VM's files, placed where Firecracker will look.
//!
//! The jailer creates the chroot, device nodes and the Firecracker copy, but it does not bring
//! the kernel or drives: we place them in the chroot's root before the jailer runs. The caller's
//! files are never modified or chowned: a read-only file that the jail user can already read is
//! hard-linked; anything else is copied (reflinked when the filesystem can) and the copy is given
//! to the jail user. A writable drive is therefore always a private copy.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::plan::{JailPlan, StageMethod, StagedFile};

/// A staging step failed. Names the path and the step.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}")]
pub struct StageError {
    /// What was being done.
    pub action: &'static str,
    /// The path involved.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

trait Ctx<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, StageError>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, StageError> {
        self.map_err(|source| StageError {
            action,
            path: path.to_owned(),
            source,
        })
    }
}

/// Creates the jail's root, its `run/` directory and log file, and stages every file. Fails if
/// the jail directory already exists (an id in use, or a leftover that must be cleaned first).
pub fn stage(plan: &JailPlan) -> Result<(), StageError> {
    create_jail_dir(plan)?;
    stage_into(plan)
}

/// Creates the jail directory (and its parents). Fails if it already exists: it is then someone
/// else's, and must not be touched.
pub fn create_jail_dir(plan: &JailPlan) -> Result<(), StageError> {
    if let Some(parent) = plan.jail_dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .ctx("create directory", parent)?;
    }
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&plan.jail_dir)
        .ctx("create jail directory", &plan.jail_dir)
}

/// Fills a jail directory made by [`create_jail_dir`]: the chroot, `run/`, the log file and the
/// staged files.
pub fn stage_into(plan: &JailPlan) -> Result<(), StageError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&plan.root_dir)
        .ctx("create chroot", &plan.root_dir)?;
    let run = plan.socket_path.parent().expect("socket has a parent");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(run)
        .ctx("create socket directory", run)?;
    chown(run, plan.uid, plan.gid)?;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&plan.log_file)
        .ctx("create log file", &plan.log_file)?;
    fs::set_permissions(&plan.log_file, fs::Permissions::from_mode(0o600))
        .ctx("chmod", &plan.log_file)?;
    chown(&plan.log_file, plan.uid, plan.gid)?;
    for f in &plan.staged {
        stage_file(f)?;
    }
    Ok(())
}

fn stage_file(f: &StagedFile) -> Result<(), StageError> {
    if f.method == StageMethod::HardLink {
        match fs::hard_link(&f.source, &f.dest) {
            Ok(()) => return Ok(()),
            // Another filesystem after all, or links forbidden (protected_hardlinks): copy.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => {}
            Err(e) => return Err(e).ctx("hard-link", &f.dest),
        }
    }
    copy(&f.source, &f.dest)?;
    fs::set_permissions(&f.dest, fs::Permissions::from_mode(f.mode)).ctx("chmod", &f.dest)?;
    chown(&f.dest, f.uid, f.gid)
}

/// Copies with a reflink where the filesystem supports it (`FICLONE`), else a plain copy
/// (`copy_file_range`, which some filesystems also turn into a shared-extent copy).
fn copy(src: &Path, dest: &Path) -> Result<(), StageError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOFOLLOW: a file swapped for a symlink after validation is refused, never followed
    // (the caller's allowlist was checked on the resolved path).
    let from = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .ctx("open", src)?;
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .ctx("create", dest)?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the call.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if rc == 0 {
        return Ok(());
    }
    let mut from = from;
    let mut to = to;
    io::copy(&mut from, &mut to).ctx("copy into", dest)?;
    Ok(())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), StageError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).ctx("chown", path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CgroupVersion, Hierarchy};
    use crate::spec::{JailSpec, ResourceLimits, StageRequest};
    use crate::JailId;
    use std::os::unix::fs::MetadataExt;

    fn spec(base: &Path, files: Vec<StageRequest>) -> JailSpec {
        JailSpec {
            id: JailId::new("stage-test").unwrap(),
            jailed: true,
            jailer_binary: "/usr/bin/jailer".into(),
            exec_file: "/usr/bin/firecracker".into(),
            uid: 4242,
            gid: 4343,
            chroot_base_dir: base.to_owned(),
            cgroup_version: CgroupVersion::V1,
            parent_cgroup: "warden".into(),
            limits: Default::default(),
            resource_limits: ResourceLimits::default(),
            new_pid_ns: false,
            netns: None,
            make_netns: false,
            net: None,
            files,
        }
    }

    fn req(source: &Path, name: &str, writable: bool) -> StageRequest {
        StageRequest {
            source: source.to_owned(),
            name: name.into(),
            writable,
            field: name.into(),
        }
    }

    #[test]
    fn links_shared_read_only_files_and_copies_the_rest_without_touching_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let kernel = tmp.path().join("vmlinux");
        let disk = tmp.path().join("disk.img");
        let secret = tmp.path().join("private.img");
        fs::write(&kernel, b"kernel").unwrap();
        fs::write(&disk, b"disk").unwrap();
        fs::write(&secret, b"secret").unwrap();
        fs::set_permissions(&kernel, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&disk, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let before: Vec<_> = [&kernel, &disk, &secret]
            .iter()
            .map(|p| fs::metadata(p).unwrap())
            .collect();

        let base = tmp.path().join("jail");
        let h = Hierarchy::parse("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n").unwrap();
        let plan = spec(
            &base,
            vec![
                req(&kernel, "kernel", false),
                req(&disk, "rootfs", true),
                req(&secret, "data", false),
            ],
        )
        .plan(&h)
        .unwrap();
        assert_eq!(plan.staged[0].method, StageMethod::HardLink);
        assert_eq!(
            plan.staged[1].method,
            StageMethod::Copy,
            "writable drives are private copies"
        );
        assert_eq!(
            plan.staged[2].method,
            StageMethod::Copy,
            "unreadable by the jail user: copied"
        );
        stage(&plan).unwrap();

        let root = base.join("firecracker/stage-test/root");
        assert_eq!(
            fs::metadata(root.join("kernel")).unwrap().ino(),
            before[0].ino()
        );
        let rootfs = fs::metadata(root.join("rootfs")).unwrap();
        assert_ne!(rootfs.ino(), before[1].ino());
        assert_eq!(
            (rootfs.uid(), rootfs.gid(), rootfs.mode() & 0o777),
            (4242, 4343, 0o600)
        );
        let data = fs::metadata(root.join("data")).unwrap();
        assert_eq!(
            (data.uid(), data.gid(), data.mode() & 0o777),
            (4242, 4343, 0o400)
        );
        assert_eq!(fs::read(root.join("data")).unwrap(), b"secret");
        let run = fs::metadata(root.join("run")).unwrap();
        assert_eq!((run.uid(), run.mode() & 0o777), (4242, 0o700));
        for (p, m) in [&kernel, &disk, &secret].iter().zip(&before) {
            let now = fs::metadata(p).unwrap();
            assert_eq!(
                (now.uid(), now.gid(), now.mode()),
                (m.uid(), m.gid(), m.mode()),
                "{p:?} changed"
            );
        }
        let err = stage(&plan).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot create jail directory"),
            "{err}"
        );
    }

    #[test]
    fn symlinked_sources_are_resolved_at_plan_time_and_never_followed_at_stage_time() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("rootfs.img");
        fs::write(&real, b"disk").unwrap();
        let link = tmp.path().join("current.img");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let base = tmp.path().join("jail");
        let h = Hierarchy::parse("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n").unwrap();
        let plan = spec(&base, vec![req(&link, "rootfs", true)])
            .plan(&h)
            .unwrap();
        assert_eq!(plan.staged[0].source, real.canonicalize().unwrap());
        // The file is swapped for a symlink to a secret after the plan: staging refuses it.
        let secret = tmp.path().join("secret");
        fs::write(&secret, b"secret").unwrap();
        fs::remove_file(&real).unwrap();
        std::os::unix::fs::symlink(&secret, &real).unwrap();
        let err = stage(&plan).unwrap_err();
        assert_eq!(err.action, "open");
        assert_eq!(err.source.raw_os_error(), Some(libc::ELOOP));
    }
}
