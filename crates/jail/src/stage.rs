//! Staging: the jail's directories and the VM's files, placed where Firecracker will look.
//!
//! The jailer creates the chroot, device nodes and the Firecracker copy, but it does not bring
//! the kernel or drives: we place them in the chroot's root before the jailer runs. The caller's
//! files are never modified or chowned: a read-only file that the jail user can already read is
//! hard-linked; anything else is copied (reflinked when the filesystem can) and the copy is given
//! to the jail user. A writable drive is therefore always a private copy.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
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
    stage_files(plan)
}

/// Stages the plan's files into a chroot that exists (by [`stage_into`], or into a warm jail
/// whose jailer already ran: see [`crate::Jail::take_over`]).
pub fn stage_files(plan: &JailPlan) -> Result<(), StageError> {
    for f in &plan.staged {
        stage_file(f)?;
    }
    Ok(())
}

fn stage_file(f: &StagedFile) -> Result<(), StageError> {
    let src = f.file.as_ref().ok_or_else(|| StageError {
        action: "stage (its source was never opened)",
        path: f.dest.clone(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    if f.method == StageMethod::HardLink {
        // Link the inode that was opened and checked, not whatever the path names now.
        let from = format!("/proc/self/fd/{}", src.file().as_raw_fd());
        match nix::unistd::linkat(
            None,
            Path::new(&from),
            None,
            &f.dest,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => return Ok(()),
            // Another filesystem after all, or links forbidden (protected_hardlinks): copy.
            Err(nix::errno::Errno::EXDEV) | Err(nix::errno::Errno::EPERM) => {}
            Err(e) => return Err(e.into()).ctx("hard-link", &f.dest),
        }
    }
    copy(src, f)
}

/// Copies an open source into a new file that has its final mode and owner before any byte is
/// written: a reflink where the filesystem can (`FICLONE`), else a sparse copy (holes stay
/// holes). Refused up front when the filesystem lacks the space.
fn copy(src: &crate::source::Source, f: &StagedFile) -> Result<(), StageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dest = &f.dest;
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|v| v.blocks_available() * v.fragment_size())
        .map_err(io::Error::from)
        .ctx("measure free space for", dir)?;
    if src.meta.allocated > free {
        return Err(StageError {
            action: "copy into (not enough space: free some, or use a smaller or sparse image)",
            path: dest.clone(),
            source: io::Error::other(format!(
                "needs {} bytes, {} free on the chroot base's filesystem",
                src.meta.allocated, free
            )),
        });
    }
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(f.mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dest)
        .ctx("create", dest)?;
    // The mode is set at creation (the umask may only narrow it); restate it exactly.
    to.set_permissions(fs::Permissions::from_mode(f.mode))
        .ctx("chmod", dest)?;
    std::os::unix::fs::fchown(&to, Some(f.uid), Some(f.gid)).ctx("chown", dest)?;
    let from = src.file();
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the call.
    if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    sparse_copy(from, &to, src.meta.len).ctx("copy into", dest)
}

/// Copies the data ranges of `from` (found with `SEEK_DATA`/`SEEK_HOLE`) and sets the length, so
/// a sparse image stays sparse.
fn sparse_copy(from: &fs::File, to: &fs::File, len: u64) -> io::Result<()> {
    let (fd_in, fd_out) = (from.as_raw_fd(), to.as_raw_fd());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an open fd.
        let data = unsafe { libc::lseek(fd_in, pos, libc::SEEK_DATA) };
        if data < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole is left
                _ => return Err(io::Error::last_os_error()),
            }
        }
        // SAFETY: lseek on an open fd.
        let hole = unsafe { libc::lseek(fd_in, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            // SAFETY: both fds are open; the offsets are ours and live for the call.
            let n = unsafe {
                libc::copy_file_range(
                    fd_in,
                    &mut off_in,
                    fd_out,
                    &mut off_out,
                    (hole - off_in) as usize,
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    to.set_len(len)
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
            explicit_limits: vec![],
            strict_cgroups: false,
            resource_limits: ResourceLimits::default(),
            new_pid_ns: false,
            netns: None,
            make_netns: false,
            fsize_headroom: None,
            net: None,
            files,
            sys_root: crate::spec::SYS.into(),
        }
    }

    fn req(source: &Path, name: &str, writable: bool) -> StageRequest {
        StageRequest {
            source: source.to_owned(),
            name: name.into(),
            writable,
            field: name.into(),
            opened: None,
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
    fn sources_are_opened_at_plan_time_and_a_later_swap_changes_nothing() {
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
        // The file is swapped for a symlink to a secret after the plan: staging still copies the
        // file that was opened.
        let secret = tmp.path().join("secret");
        fs::write(&secret, b"secret").unwrap();
        fs::remove_file(&real).unwrap();
        std::os::unix::fs::symlink(&secret, &real).unwrap();
        stage(&plan).unwrap();
        let staged = base.join("firecracker/stage-test/root/rootfs");
        assert_eq!(fs::read(&staged).unwrap(), b"disk");
    }

    #[test]
    fn copies_keep_sparse_files_sparse_and_have_their_owner_from_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("sparse.img");
        let f = fs::File::create(&img).unwrap();
        f.set_len(1 << 30).unwrap();
        use std::io::{Seek, Write};
        let mut f = f;
        f.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"data in the middle").unwrap();
        drop(f);
        let base = tmp.path().join("jail");
        let h = Hierarchy::parse("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n").unwrap();
        let plan = spec(&base, vec![req(&img, "rootfs", true)])
            .plan(&h)
            .unwrap();
        stage(&plan).unwrap();
        let staged = base.join("firecracker/stage-test/root/rootfs");
        let m = fs::metadata(&staged).unwrap();
        assert_eq!(m.len(), 1 << 30);
        assert!(
            m.blocks() * 512 < 1 << 24,
            "allocated {} bytes",
            m.blocks() * 512
        );
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (4242, 4343, 0o600));
        let data = fs::read(&staged).unwrap();
        assert_eq!(&data[1 << 20..(1 << 20) + 18], b"data in the middle");
    }

    #[test]
    fn only_root_owned_files_nobody_else_can_write_are_hard_linked() {
        let tmp = tempfile::tempdir().unwrap();
        let world = tmp.path().join("world-writable.img");
        fs::write(&world, b"shared").unwrap();
        fs::set_permissions(&world, fs::Permissions::from_mode(0o666)).unwrap();
        let jailuser = tmp.path().join("jail-owned.img");
        fs::write(&jailuser, b"mine").unwrap();
        fs::set_permissions(&jailuser, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&jailuser, Some(4242), Some(4343)).unwrap();
        let base = tmp.path().join("jail");
        let h = Hierarchy::parse("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n").unwrap();
        let plan = spec(
            &base,
            vec![
                req(&world, "drive1", false),
                req(&jailuser, "drive2", false),
            ],
        )
        .plan(&h)
        .unwrap();
        assert_eq!(
            plan.staged[0].method,
            StageMethod::Copy,
            "world-writable: copied"
        );
        assert_eq!(
            plan.staged[1].method,
            StageMethod::Copy,
            "not root's: copied"
        );
        stage(&plan).unwrap();
        let root = base.join("firecracker/stage-test/root");
        assert_ne!(
            fs::metadata(root.join("drive1")).unwrap().ino(),
            fs::metadata(&world).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(root.join("drive1")).unwrap().mode() & 0o777,
            0o400
        );
    }
}
