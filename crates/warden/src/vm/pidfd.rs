//! The pidfd system calls: a process named by a file descriptor, never by a pid that may be
//! recycled. Signals go through `pidfd_send_signal`, the exit is seen as the fd turning
//! readable, and `waitid(P_PIDFD)` reaps it when it is our child.
//!
//! These are the only `unsafe` calls of supervision apart from the watchdog's fork.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::exit::WaitStatus;
use crate::error::Error;

/// Opens a pidfd on process `pid`.
pub(crate) fn open(pid: u32) -> Result<OwnedFd, Error> {
    // SAFETY: pidfd_open takes a pid and flags, touches no memory of ours, and returns a new fd
    // or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(Error::Os {
            what: format!("pidfd_open({pid})"),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process; a process that already exited is not an error (and a
/// recycled pid is never hit).
pub(crate) fn send_signal(fd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal with a null siginfo and no flags reads no memory of ours; the
    // fd is open for as long as the borrow.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Blocks until the process exits or `timeout` passes.
pub(crate) fn wait_blocking(fd: &OwnedFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid, exclusively borrowed pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Reaps the process behind the pidfd; `None` if it is not our child.
pub(crate) fn reap(fd: &OwnedFd) -> Option<WaitStatus> {
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid only writes `info`, which outlives the call; P_PIDFD takes the open fd as
    // its id.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful waitid with WEXITED, si_status is the valid union member.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => Some(WaitStatus::Exited(status)),
        _ => Some(WaitStatus::Signaled(status)),
    }
}

/// Waits until the process exits, without blocking an async worker: the pidfd turns readable
/// then. Where the fd cannot be registered with the runtime, a blocking thread polls it.
pub(crate) async fn exited(fd: Arc<OwnedFd>) {
    // SAFETY: the pidfd stays open for as long as the AsyncFd (it holds an Arc to it), and it
    // is registered only here.
    if let Ok(afd) = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            PidFd(fd.clone()),
            tokio::io::Interest::READABLE,
        )
    } {
        let _ = afd.readable().await;
    } else {
        let _ = tokio::task::spawn_blocking(move || {
            wait_blocking(&fd, Duration::from_secs(u64::MAX / 4))
        })
        .await;
    }
}

/// A pidfd wrapper for `AsyncFd` (readable = the process exited).
struct PidFd(Arc<OwnedFd>);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_is_signalled_seen_exiting_and_reaped_through_its_pidfd() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = Arc::new(open(child.id()).unwrap());
        send_signal(&fd, libc::SIGKILL);
        tokio::time::timeout(Duration::from_secs(5), exited(fd.clone()))
            .await
            .unwrap();
        assert_eq!(reap(&fd), Some(WaitStatus::Signaled(libc::SIGKILL)));
        assert_eq!(reap(&fd), None, "reaped once");
        drop(child);
        assert!(open(u32::MAX / 2).is_err());
    }
}
