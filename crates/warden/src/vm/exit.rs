//! Why a Firecracker ended, decided in one place.
//!
//! [`classify`] is a pure function of what is known once the process is gone: its wait status
//! (when it was our child), the OOM kills its memory cgroup counted, what we ourselves did to it
//! (a stop, a SIGKILL) and the exit status Firecracker logged. The supervisor of a live VM and
//! the daemon's recovery of a VM that died while it was down both call it, so a VM that ended
//! the same way is recorded the same way.

use serde::Serialize;

/// Why a VM's Firecracker process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest powered off or rebooted (Firecracker exited with status 0).
    GuestPowerOff,
    /// Stopped gracefully by us (Ctrl-Alt-Del accepted before the deadline).
    Stopped,
    /// Killed by us (SIGKILL) after a graceful stop timed out, or on drop.
    Killed,
    /// The kernel's OOM killer killed it: the memory cgroup limit was reached.
    OomKilled,
    /// Killed by a signal we did not send.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// Firecracker exited with an error status.
    FirecrackerError {
        /// Its exit status.
        code: i32,
    },
    /// It ended while not our child and logged no exit status: most likely killed by a signal.
    Unknown,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GuestPowerOff => f.write_str("guest powered off"),
            Self::Stopped => f.write_str("stopped"),
            Self::Killed => f.write_str("killed by warden (SIGKILL)"),
            Self::OomKilled => f.write_str("OOM-killed: memory cgroup limit reached"),
            Self::Signaled { signal } => write!(f, "killed by signal {signal}"),
            Self::FirecrackerError { code } => write!(f, "Firecracker exited with status {code}"),
            Self::Unknown => {
                f.write_str("exited without logging a status (likely killed by a signal)")
            }
        }
    }
}

/// The end of a VM, once its host resources are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exit {
    /// Why it ended.
    pub reason: ExitReason,
    /// The end of what Firecracker and the jailer printed (stderr, then Firecracker's log).
    pub output: String,
    /// Cleanup error, if cleanup failed (the paths are named).
    pub cleanup_error: Option<String>,
}

/// How a reaped process ended (`waitid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
}

/// Everything known about a Firecracker that has ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ended<'a> {
    /// Its wait status; `None` when it was not our child (re-attached after a restart, or found
    /// dead by recovery).
    pub(crate) status: Option<WaitStatus>,
    /// OOM kills its memory cgroup counted (`None`: unreadable, counts as none).
    pub(crate) oom_kills: Option<u64>,
    /// We sent it SIGKILL.
    pub(crate) killed: bool,
    /// We asked it to stop (Ctrl-Alt-Del).
    pub(crate) stop_requested: bool,
    /// The end of Firecracker's log, which holds the exit status it logged as it exited.
    pub(crate) log: &'a str,
}

/// Why it ended. An OOM kill wins over everything (the limit is the story, whoever sent the
/// final signal), then our own SIGKILL, then the wait status, else the status Firecracker
/// logged.
pub(crate) fn classify(e: &Ended<'_>) -> ExitReason {
    if e.oom_kills.unwrap_or(0) > 0 {
        return ExitReason::OomKilled;
    }
    if e.killed {
        return ExitReason::Killed;
    }
    let status = e
        .status
        .or_else(|| logged_exit_code(e.log).map(WaitStatus::Exited));
    match status {
        Some(WaitStatus::Exited(0)) if e.stop_requested => ExitReason::Stopped,
        Some(WaitStatus::Exited(0)) => ExitReason::GuestPowerOff,
        Some(WaitStatus::Exited(code)) => ExitReason::FirecrackerError { code },
        Some(WaitStatus::Signaled(signal)) => ExitReason::Signaled { signal },
        None if e.stop_requested => ExitReason::Stopped,
        None => ExitReason::Unknown,
    }
}

/// The exit status Firecracker logged as it exited (`... exit_code=N`), if it did.
pub(crate) fn logged_exit_code(log: &str) -> Option<i32> {
    let line = log.lines().rev().find(|l| l.contains("exit_code="))?;
    line.rsplit("exit_code=")
        .next()?
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExitReason::*;
    use WaitStatus::Exited;

    const LOGGED_0: &str =
        "[anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n";
    const LOGGED_1: &str = "[vm:main] Firecracker exiting with error. exit_code=1\n";

    #[test]
    fn each_ending_gets_its_reason() {
        let none = Ended::default();
        #[rustfmt::skip]
        let cases: &[(Ended, ExitReason)] = &[
            (Ended { status: Some(Exited(0)), ..none }, GuestPowerOff),
            (Ended { status: Some(Exited(0)), stop_requested: true, ..none }, Stopped),
            (Ended { status: Some(Exited(1)), ..none }, FirecrackerError { code: 1 }),
            (Ended { status: Some(Exited(1)), stop_requested: true, ..none }, FirecrackerError { code: 1 }),
            (Ended { status: Some(WaitStatus::Signaled(9)), ..none }, Signaled { signal: 9 }),
            (Ended { status: Some(WaitStatus::Signaled(9)), killed: true, ..none }, Killed),
            (Ended { status: Some(WaitStatus::Signaled(9)), oom_kills: Some(1), ..none }, OomKilled),
            (Ended { status: Some(WaitStatus::Signaled(9)), oom_kills: Some(1), killed: true, ..none }, OomKilled),
            (Ended { status: Some(Exited(0)), oom_kills: Some(0), ..none }, GuestPowerOff),
            // Not our child: what Firecracker logged.
            (Ended { log: LOGGED_0, ..none }, GuestPowerOff),
            (Ended { log: LOGGED_0, stop_requested: true, ..none }, Stopped),
            (Ended { log: LOGGED_1, ..none }, FirecrackerError { code: 1 }),
            (Ended { stop_requested: true, ..none }, Stopped),
            (Ended { killed: true, ..none }, Killed),
            (Ended { oom_kills: Some(2), ..none }, OomKilled),
            (none, Unknown),
            // A wait status beats the log.
            (Ended { status: Some(WaitStatus::Signaled(15)), log: LOGGED_0, ..none }, Signaled { signal: 15 }),
        ];
        for (ended, want) in cases {
            assert_eq!(classify(ended), *want, "{ended:?}");
        }
    }

    #[test]
    fn the_last_logged_exit_code_counts() {
        assert_eq!(logged_exit_code(LOGGED_1), Some(1));
        assert_eq!(
            logged_exit_code(&format!("{LOGGED_1}later\n{LOGGED_0}")),
            Some(0)
        );
        assert_eq!(logged_exit_code("exit_code=3, more"), Some(3));
        assert_eq!(logged_exit_code("no status here"), None);
        assert_eq!(logged_exit_code("exit_code=x"), None);
    }
}
