//! A spawned Firecracker (under the jailer or not) and its supervision.
//!
//! We hold a pidfd on Firecracker, so signals never hit a recycled pid and its exit wakes us
//! without polling. A supervisor task waits for that exit, records why it happened (exit
//! status, OOM kills from the cgroup, or our own stop), keeps the tail of Firecracker's output,
//! and then removes the jail and its cgroups: the same cleanup for a guest power-off, a stop, a
//! crash or a kill from outside. Dropping the handle without stopping kills the VM and cleans
//! up synchronously, so nothing outlives its owner. Why it ended is decided by
//! [`super::exit::classify`]; the console and output buffers are [`super::console`]'s, and the
//! pidfd system calls [`super::pidfd`]'s.
//!
//! With `--new-pid-ns` the jailer forks Firecracker and exits; Firecracker would be reparented
//! to init and its exit status lost, so we become a child subreaper first
//! (`PR_SET_CHILD_SUBREAPER`) and reap it ourselves.
//!
//! A parent-death signal cannot tie Firecracker to its owner: the kernel clears it when the
//! jailer drops to the jail uid. So an owner whose VMs must end with it (`warden run`, library
//! users) hands each Firecracker to its watchdog ([`super::watchdog`]), a process that holds a
//! pidfd on the owner and on each VM: when the owner dies, even by SIGKILL, the watchdog kills
//! them. The owner record then names a dead owner, and the next `gc` removes the rest.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jail::{Jail, JailPlan};
use tokio::sync::watch;

use super::config::Serial;
use super::console::{
    read_tail, spawn_serial_reader, spawn_stderr_reader, tail, SerialBuf, TAIL_BYTES,
};
use super::exit::WaitStatus;
use super::exit::{classify, Ended, Exit, ExitReason};
use super::pidfd;
use super::spawn;
use super::watchdog::{self, Watched};
use crate::error::Error;

#[derive(Debug, Default)]
struct Flags {
    stop_requested: bool,
    killed: bool,
    detached: bool,
}

/// A running Firecracker process and everything needed to end it cleanly.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) pid: u32,
    pub(crate) plan: JailPlan,
    jail: Arc<Jail>,
    watchdog: Arc<Mutex<Option<Watched>>>,
    pidfd: Arc<OwnedFd>,
    flags: Arc<Mutex<Flags>>,
    pub(crate) serial: Arc<SerialBuf>,
    exit: watch::Receiver<Option<Exit>>,
    cleanup_done: Arc<Mutex<bool>>,
}

impl Process {
    /// Runs the plan's argv and returns once Firecracker's pid is known. On error, whatever was
    /// started is killed; the caller removes the jail.
    pub(crate) async fn spawn(
        jail: Arc<Jail>,
        serial: Serial,
        serial_max: usize,
        wait_timeout: Duration,
        die_with_owner: bool,
    ) -> Result<Self, Error> {
        let plan = jail.plan();
        let program = PathBuf::from(&plan.argv[0]);
        if plan.new_pid_ns {
            become_subreaper()?;
        }
        let (stdout, stderr_to) = match &serial {
            Serial::Discard => (spawn::Stdio::Null, spawn::Stdio::Pipe),
            Serial::Capture | Serial::CaptureAndEcho => (spawn::Stdio::Pipe, spawn::Stdio::Pipe),
            Serial::File(path) => (
                spawn::Stdio::Fd(append(path)?.into()),
                spawn::Stdio::Fd(append(&Serial::stderr_path(path))?.into()),
            ),
        };
        // In its own process group (a Ctrl-C at our terminal is ours to handle, not the VM's),
        // without a copy of this process (see `spawn`). If we die while the jailer is still
        // setting up (before it is in the VM's cgroups and has dropped to the jail uid, which
        // clears this), it dies too: no half-made jail is finished after its owner's removal
        // ran. Firecracker itself is unaffected.
        let mut child =
            spawn::spawn(&program, &plan.argv[1..], stdout, stderr_to).map_err(|source| {
                Error::Spawn {
                    program: program.clone(),
                    source,
                }
            })?;
        let serial_buf = Arc::new(SerialBuf::new(
            match &serial {
                Serial::File(p) => Some(p.clone()),
                _ => None,
            },
            serial_max,
        ));
        if let Some(out) = child.stdout.take() {
            spawn_serial_reader(
                out.into(),
                serial_buf.clone(),
                serial == Serial::CaptureAndEcho,
            );
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_done = child
            .stderr
            .take()
            .map(|err| spawn_stderr_reader(err.into(), stderr.clone()));
        let stderr_file = match &serial {
            Serial::File(p) => Some(Serial::stderr_path(p)),
            _ => None,
        };

        let pid = if plan.new_pid_ns {
            // The jailer forks Firecracker into the new namespace, writes its pid and exits.
            let jailer = match pidfd::open(child.pid) {
                Ok(fd) => Arc::new(fd),
                Err(e) => {
                    // SAFETY: kills and reaps our own child, named by the pid nobody else reaps.
                    unsafe {
                        libc::kill(child.pid as libc::pid_t, libc::SIGKILL);
                        libc::waitpid(child.pid as libc::pid_t, std::ptr::null_mut(), 0);
                    }
                    return Err(e);
                }
            };
            let ended = tokio::time::timeout(wait_timeout, pidfd::exited(jailer.clone()))
                .await
                .is_ok();
            let status = if ended { pidfd::reap(&jailer) } else { None };
            match status {
                Some(WaitStatus::Exited(0)) => {}
                other => {
                    if !ended {
                        pidfd::send_signal(&jailer, libc::SIGKILL);
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            pidfd::exited(jailer.clone()),
                        )
                        .await;
                        let _ = pidfd::reap(&jailer);
                    }
                    if let Some(done) = stderr_done {
                        let _ = tokio::time::timeout(Duration::from_millis(200), done).await;
                    }
                    let mut output = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
                    if let Some(f) = &stderr_file {
                        output.push_str(&read_tail(f, TAIL_BYTES));
                    }
                    return Err(Error::ExitedEarly {
                        program,
                        status: match other {
                            Some(WaitStatus::Exited(code)) => format!("exit status: {code}"),
                            Some(WaitStatus::Signaled(sig)) => format!("signal: {sig}"),
                            None if ended => "not reaped".into(),
                            None => "timed out".into(),
                        },
                        output: tail(&output),
                    });
                }
            }
            read_pid_file(&plan.pid_file)?
        } else {
            // The jailer (or Firecracker itself) execs in place: the child is Firecracker, which
            // the supervisor reaps through its pidfd.
            child.pid
        };
        let pidfd = pidfd::open(pid)?;
        let watchdog = if die_with_owner {
            match watchdog::watch(&pidfd) {
                Ok(w) => Some(w),
                Err(e) => {
                    pidfd::send_signal(&pidfd, libc::SIGKILL);
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(Self::supervised(
            pid,
            jail,
            watchdog,
            pidfd,
            serial_buf,
            stderr,
            stderr_done,
            stderr_file,
        ))
    }

    /// Takes charge of a Firecracker started earlier (by a daemon that has since restarted).
    /// The caller has checked that `pid` is that VM's Firecracker (process start time).
    pub(crate) fn attach(
        jail: Arc<Jail>,
        pid: u32,
        serial_file: Option<PathBuf>,
        serial_max: usize,
    ) -> Result<Self, Error> {
        let pidfd = pidfd::open(pid)?;
        let stderr_file = serial_file.as_deref().map(Serial::stderr_path);
        let serial = Arc::new(SerialBuf::new(serial_file, serial_max));
        Ok(Self::supervised(
            pid,
            jail,
            None,
            pidfd,
            serial,
            Arc::default(),
            None,
            stderr_file,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn supervised(
        pid: u32,
        jail: Arc<Jail>,
        watchdog: Option<Watched>,
        pidfd: OwnedFd,
        serial: Arc<SerialBuf>,
        stderr: Arc<Mutex<Vec<u8>>>,
        stderr_done: Option<tokio::task::JoinHandle<()>>,
        stderr_file: Option<PathBuf>,
    ) -> Self {
        let pidfd = Arc::new(pidfd);
        let (tx, exit) = watch::channel(None);
        let flags = Arc::new(Mutex::new(Flags::default()));
        let cleanup_done = Arc::new(Mutex::new(false));
        let p = Self {
            pid,
            plan: jail.plan(),
            jail,
            watchdog: Arc::new(Mutex::new(watchdog)),
            pidfd,
            flags,
            serial,
            exit,
            cleanup_done,
        };
        if p.serial.has_file() {
            tokio::spawn(p.serial.clone().keep_bounded(p.exit.clone()));
        }
        tokio::spawn(supervise(
            p.pidfd.clone(),
            p.jail.clone(),
            p.watchdog.clone(),
            p.flags.clone(),
            p.cleanup_done.clone(),
            Output {
                stderr,
                stderr_done,
                stderr_file,
            },
            tx,
        ));
        p
    }

    /// A receiver that holds `Some(exit)` once the VM is gone and cleaned.
    pub(crate) fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.clone()
    }

    /// The exit, if it already happened.
    pub(crate) fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Waits for the exit (and its cleanup).
    pub(crate) async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        loop {
            let current = rx.borrow_and_update().clone();
            if let Some(e) = current {
                return e;
            }
            if rx.changed().await.is_err() {
                // The supervisor is gone without a result (runtime shutting down).
                return Exit {
                    reason: ExitReason::Killed,
                    output: String::new(),
                    cleanup_error: None,
                };
            }
        }
    }

    /// Leaves the process running when this handle is dropped (and ends its watchdog, so the VM
    /// outlives this process too).
    pub(crate) fn detach(&self) {
        self.flags.lock().unwrap().detached = true;
        self.jail.disarm();
        if let Some(w) = self.watchdog.lock().unwrap().take() {
            watchdog::forget(w);
        }
    }

    /// Marks that an exit from now on was asked for by us.
    pub(crate) fn note_stop_requested(&self) {
        self.flags.lock().unwrap().stop_requested = true;
    }

    /// The VM's host state.
    pub(crate) fn jail(&self) -> std::sync::Arc<Jail> {
        self.jail.clone()
    }

    /// SIGKILL through the pidfd (never a recycled pid).
    pub(crate) fn kill(&self) {
        self.flags.lock().unwrap().killed = true;
        pidfd::send_signal(&self.pidfd, libc::SIGKILL);
    }

    /// Waits up to `timeout` for the exit.
    pub(crate) async fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }
}

impl Drop for Process {
    /// Kills and cleans synchronously if the VM is still there: the owner let go of it, and the
    /// runtime (and with it the supervisor) may be shutting down.
    fn drop(&mut self) {
        if self.exit.borrow().is_some() || self.flags.lock().unwrap().detached {
            return;
        }
        self.kill();
        pidfd::wait_blocking(&self.pidfd, Duration::from_secs(2));
        let _ = pidfd::reap(&self.pidfd);
        if let Some(w) = self.watchdog.lock().unwrap().take() {
            watchdog::forget(w);
        }
        clean_once(&self.cleanup_done, &self.jail);
    }
}

/// Removes the jail once, whoever gets there first (the supervisor or a drop).
fn clean_once(done: &Mutex<bool>, jail: &Jail) -> Option<String> {
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return None;
    }
    *done = true;
    jail.remove().err().map(|e| jail::error_chain(&e))
}

/// Where Firecracker's error output is collected.
struct Output {
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: Option<tokio::task::JoinHandle<()>>,
    stderr_file: Option<PathBuf>,
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    pidfd: Arc<OwnedFd>,
    jail: Arc<Jail>,
    watchdog: Arc<Mutex<Option<Watched>>>,
    flags: Arc<Mutex<Flags>>,
    cleanup_done: Arc<Mutex<bool>>,
    out: Output,
    tx: watch::Sender<Option<Exit>>,
) {
    pidfd::exited(pidfd.clone()).await;
    let status = pidfd::reap(&pidfd);
    let plan = jail.plan();
    if let Some(done) = out.stderr_done {
        let _ = tokio::time::timeout(Duration::from_millis(200), done).await;
    }
    let log = read_tail(&plan.log_file, TAIL_BYTES);
    let stats = jail::cgroup::stats(plan.cgroup_version, &plan.cgroup_dirs);
    let flags = std::mem::take(&mut *flags.lock().unwrap());
    // Not our child (re-attached after a restart): classify reads the status Firecracker logged.
    let reason = classify(&Ended {
        status,
        oom_kills: stats.oom_kills,
        killed: flags.killed,
        stop_requested: flags.stop_requested,
        log: &log,
    });
    let mut output = String::from_utf8_lossy(&out.stderr.lock().unwrap()).into_owned();
    if let Some(f) = &out.stderr_file {
        output.push_str(&read_tail(f, TAIL_BYTES));
    }
    output.push_str(&log);
    let output = tail(&output);
    // Removing the jail, the cgroups (rmdir may need retries while the kernel releases the
    // task) and the network blocks: off the async workers.
    let detached = flags.detached;
    let cleanup_error = tokio::task::spawn_blocking(move || {
        // The watchdog sees Firecracker's exit too and drops it; this makes sure.
        if let Some(w) = watchdog.lock().unwrap().take() {
            watchdog::forget(w);
        }
        if detached {
            None
        } else {
            clean_once(&cleanup_done, &jail)
        }
    })
    .await
    .unwrap_or_else(|e| Some(format!("cleanup task failed: {e}")));
    tracing::info!(vm_id = %plan.id, %reason, pid_exit = ?status, "vm exited and was cleaned up");
    let _ = tx.send(Some(Exit {
        reason,
        output,
        cleanup_error,
    }));
}

fn read_pid_file(path: &std::path::Path) -> Result<u32, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Os {
        what: format!("reading the jailer's pid file {}", path.display()),
        source,
    })?;
    text.trim().parse().map_err(|source| Error::PidFile {
        path: path.to_owned(),
        text: text.trim().chars().take(64).collect(),
        source,
    })
}

/// Opens a file for appending, creating it (0600).
fn append(path: &std::path::Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::Os {
            what: format!("opening {}", path.display()),
            source,
        })
}

/// Makes this process a child subreaper, once: the kernel walks every descendant at each call
/// (1,000 running VMs made it a visible part of every start). A fork of this process starts
/// without the attribute, so it is kept by pid.
fn become_subreaper() -> Result<(), Error> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SUBREAPER: AtomicU32 = AtomicU32::new(0);
    let me = std::process::id();
    if SUBREAPER.load(Ordering::Relaxed) == me {
        return Ok(());
    }
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::Os {
            what: "prctl(PR_SET_CHILD_SUBREAPER)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    SUBREAPER.store(me, Ordering::Relaxed);
    Ok(())
}
