//! The one state machine of a daemon-managed VM: which requests each state allows, and what the
//! VM becomes. Every transition the manager makes is checked here.

use serde::{Deserialize, Serialize};

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Recorded and validated; never started, or cleaned after a stop.
    Created,
    /// Being started (jail staged, Firecracker spawning or being configured).
    Booting,
    /// The guest runs.
    Running,
    /// vCPUs paused.
    Paused,
    /// Being stopped.
    Stopping,
    /// Ended (see the exit reason); nothing of it is left on the host.
    Stopped,
    /// A start failed, or it ended in a way that needed cleaning; nothing is left on the host.
    Failed,
    /// Deleted (only seen by a request racing the delete).
    Deleted,
}

/// A request that changes a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// BootVm.
    Boot,
    /// PauseVm.
    Pause,
    /// ResumeVm.
    Resume,
    /// ShutdownVm.
    Shutdown,
    /// RebootVm.
    Reboot,
    /// DeleteVm.
    Delete,
    /// SnapshotVm.
    Snapshot,
}

impl VmState {
    /// All states, for metrics.
    pub const ALL: [VmState; 8] = [
        Self::Created,
        Self::Booting,
        Self::Running,
        Self::Paused,
        Self::Stopping,
        Self::Stopped,
        Self::Failed,
        Self::Deleted,
    ];

    /// Whether `op` is allowed in this state.
    pub fn allows(self, op: Op) -> bool {
        use VmState::*;
        match op {
            Op::Boot => matches!(self, Created | Stopped | Failed),
            Op::Pause | Op::Snapshot => self == Running,
            Op::Resume => self == Paused,
            Op::Shutdown | Op::Reboot => matches!(self, Running | Paused),
            Op::Delete => self != Deleted,
        }
    }

    /// Whether a Firecracker process may exist in this state.
    pub fn may_have_process(self) -> bool {
        matches!(
            self,
            Self::Booting | Self::Running | Self::Paused | Self::Stopping
        )
    }

    /// The snake_case name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }

    /// Parses [`VmState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_table() {
        use VmState::*;
        let table = [
            (Op::Boot, vec![Created, Stopped, Failed]),
            (Op::Pause, vec![Running]),
            (Op::Snapshot, vec![Running]),
            (Op::Resume, vec![Paused]),
            (Op::Shutdown, vec![Running, Paused]),
            (Op::Reboot, vec![Running, Paused]),
            (
                Op::Delete,
                vec![Created, Booting, Running, Paused, Stopping, Stopped, Failed],
            ),
        ];
        for (op, allowed) in table {
            for s in VmState::ALL {
                assert_eq!(s.allows(op), allowed.contains(&s), "{s} {op:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in VmState::ALL {
            assert_eq!(VmState::parse(s.as_str()), Some(s));
        }
    }
}
