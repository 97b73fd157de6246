//! The narrow seam between warden's decisions and the host: every side effect of removing a VM
//! (directories, cgroups, namespaces, links, signals) goes through [`Host`]. [`RealHost`] does
//! it; [`RecordingHost`] records typed calls and fails where told, so removal, the orphan scan
//! and the daemon's recovery are tested fast and exhaustively without root or KVM.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::cgroup::{self, CgroupError};
use crate::net::{self, netns::NetnsError, NetError};
use crate::owner::ProcessRef;

/// Host side effects used to tear a VM down.
pub trait Host: Send + Sync + std::fmt::Debug {
    /// Removes a directory tree without following symlinks; a missing one is fine.
    fn remove_tree(&self, dir: &Path) -> io::Result<()>;
    /// SIGKILLs every task in these cgroup directories and waits (briefly) until they are gone.
    fn kill_cgroup_tasks(&self, dirs: &[PathBuf]);
    /// Removes one cgroup directory (retrying while the kernel releases a dying task).
    fn remove_cgroup(&self, dir: &Path) -> Result<(), CgroupError>;
    /// Removes a network namespace file (unmount, unlink); a missing one is fine.
    fn remove_netns(&self, path: &Path) -> Result<(), NetnsError>;
    /// Deletes a link in the host namespace; a missing one is fine.
    fn delete_link(&self, name: &str) -> Result<(), NetError>;
    /// SIGKILLs the process if it is still the one named (pid and start time), and waits until
    /// it has exited.
    fn kill_process(&self, p: ProcessRef);
    /// Whether the process named still runs.
    fn is_running(&self, p: ProcessRef) -> bool;
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

impl Host for RealHost {
    fn remove_tree(&self, dir: &Path) -> io::Result<()> {
        // remove_dir_all does not follow symlinks, so nothing planted in a chroot can redirect
        // the removal outside it.
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn kill_cgroup_tasks(&self, dirs: &[PathBuf]) {
        cgroup::kill_tasks(dirs, Duration::from_secs(2));
    }

    fn remove_cgroup(&self, dir: &Path) -> Result<(), CgroupError> {
        cgroup::remove(
            std::slice::from_ref(&dir.to_owned()),
            Duration::from_secs(2),
        )
    }

    fn remove_netns(&self, path: &Path) -> Result<(), NetnsError> {
        net::netns::remove(path)
    }

    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        net::link::delete(name)
    }

    fn kill_process(&self, p: ProcessRef) {
        let proc_root = Path::new(crate::proc::PROC);
        if !crate::proc::is_running(proc_root, p.pid, p.start_time) {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        for _ in 0..400 {
            if !crate::proc::is_running(proc_root, p.pid, p.start_time) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn is_running(&self, p: ProcessRef) -> bool {
        crate::proc::is_running(Path::new(crate::proc::PROC), p.pid, p.start_time)
    }
}

/// One call made to a [`RecordingHost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`Host::remove_tree`].
    RemoveTree(PathBuf),
    /// [`Host::kill_cgroup_tasks`].
    KillCgroupTasks(Vec<PathBuf>),
    /// [`Host::remove_cgroup`].
    RemoveCgroup(PathBuf),
    /// [`Host::remove_netns`].
    RemoveNetns(PathBuf),
    /// [`Host::delete_link`].
    DeleteLink(String),
    /// [`Host::kill_process`].
    KillProcess(ProcessRef),
}

/// A fake host: records every call, fails the ones whose path or name is in `fail`, and says a
/// process runs when it is in `running`.
#[derive(Debug, Default)]
pub struct RecordingHost {
    /// Calls made so far, in order.
    pub calls: Mutex<Vec<Call>>,
    /// Paths or names whose operation fails (with EBUSY).
    pub fail: Vec<String>,
    /// Processes that run.
    pub running: Vec<ProcessRef>,
}

impl RecordingHost {
    /// The calls made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, c: Call, what: &str) -> io::Result<()> {
        self.calls.lock().unwrap().push(c);
        if self.fail.iter().any(|f| f == what) {
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        } else {
            Ok(())
        }
    }
}

impl Host for RecordingHost {
    fn remove_tree(&self, dir: &Path) -> io::Result<()> {
        self.record(Call::RemoveTree(dir.to_owned()), &dir.display().to_string())
    }

    fn kill_cgroup_tasks(&self, dirs: &[PathBuf]) {
        let _ = self.record(Call::KillCgroupTasks(dirs.to_vec()), "");
    }

    fn remove_cgroup(&self, dir: &Path) -> Result<(), CgroupError> {
        self.record(
            Call::RemoveCgroup(dir.to_owned()),
            &dir.display().to_string(),
        )
        .map_err(|source| CgroupError::Remove {
            path: dir.to_owned(),
            source,
        })
    }

    fn remove_netns(&self, path: &Path) -> Result<(), NetnsError> {
        self.record(
            Call::RemoveNetns(path.to_owned()),
            &path.display().to_string(),
        )
        .map_err(|source| NetnsError {
            action: "remove",
            path: path.to_owned(),
            source,
            hint: None,
        })
    }

    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        self.record(Call::DeleteLink(name.to_owned()), name)
            .map_err(|e| NetError::new("delete", name, e))
    }

    fn kill_process(&self, p: ProcessRef) {
        let _ = self.record(Call::KillProcess(p), "");
    }

    fn is_running(&self, p: ProcessRef) -> bool {
        self.running.contains(&p)
    }
}
