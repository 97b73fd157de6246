//! The library's error: one sentence naming what failed and the path or value involved; the
//! cause is reachable through `source()`.

use std::path::PathBuf;

/// Everything starting, running or stopping a VM can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is invalid. Nothing was created.
    #[error(transparent)]
    Invalid(#[from] jail::SpecError),
    /// Production mode and the jailer is missing. Nothing was created.
    #[error(
        "the jailer is required but {} is not an executable file; install Firecracker's jailer \
         there (e.g. run scripts/setup-assets.sh, or copy `jailer` from a Firecracker release \
         to /usr/local/bin) or set jailer_binary / WARDEN_JAILER_BINARY",
        path.display()
    )]
    JailerMissing {
        /// Where the jailer was looked for.
        path: PathBuf,
    },
    /// The Firecracker binary is missing. Nothing was created.
    #[error(
        "Firecracker binary {} is not an executable file; run scripts/setup-assets.sh or set \
         exec_file / WARDEN_FIRECRACKER_BINARY",
        path.display()
    )]
    FirecrackerMissing {
        /// Where Firecracker was looked for.
        path: PathBuf,
    },
    /// The host's cgroups could not be read.
    #[error(transparent)]
    Cgroup(#[from] jail::cgroup::CgroupError),
    /// Making the VM's host state (id reservation, network, chroot, staged files) failed;
    /// what was made was removed, and nothing of another owner was touched.
    #[error(transparent)]
    Apply(#[from] jail::ApplyError),
    /// The jailer or Firecracker could not be executed.
    #[error("cannot execute {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The jailer or Firecracker exited before the API socket was up.
    #[error("{} exited before the VM was up ({status}): {output}", program.display())]
    ExitedEarly {
        /// The program started.
        program: PathBuf,
        /// How it exited.
        status: String,
        /// What it printed (stderr, then Firecracker's log), trimmed.
        output: String,
    },
    /// Firecracker's API refused or failed a request while configuring the VM.
    #[error("configuring VM {vm_id} failed{}", if log.is_empty() { String::new() } else { format!("; Firecracker's log ends: {log}") })]
    Configure {
        /// The VM.
        vm_id: String,
        /// The tail of Firecracker's log.
        log: String,
        /// The API error, with Firecracker's fault_message (boxed: it is large).
        source: Box<firecracker_api::Error>,
    },
    /// A running VM's API socket did not answer (at re-attach).
    #[error("VM {vm_id} (pid {pid}) does not answer on its API socket {}", socket.display())]
    Unresponsive {
        /// The VM.
        vm_id: String,
        /// Its Firecracker.
        pid: u32,
        /// The socket probed.
        socket: PathBuf,
        /// What the probe got.
        source: Box<firecracker_api::Error>,
    },
    /// Talking to a running VM's API failed.
    #[error(transparent)]
    Api(Box<firecracker_api::Error>),
    /// Removing the VM's host state failed; every failed step is listed.
    #[error(transparent)]
    Remove(#[from] jail::RemoveError),
    /// The VM ended but something of it could not be removed.
    #[error("VM {vm_id} stopped but not everything was removed: {detail}")]
    Leftover {
        /// The VM.
        vm_id: String,
        /// What is left and why.
        detail: String,
    },
    /// The jailer's pid file does not hold a pid.
    #[error("the jailer's pid file {} holds {text:?}, not a pid", path.display())]
    PidFile {
        /// The file.
        path: PathBuf,
        /// What it holds (at most 64 characters).
        text: String,
        /// The parse error.
        source: std::num::ParseIntError,
    },
    /// Taking a snapshot, or moving it out of the jail, failed.
    #[error(transparent)]
    Snapshot(jail::snapshot::SnapshotError),
    /// A diff snapshot cannot be taken as asked; `field` is the setting or parameter at fault.
    #[error("cannot take a diff snapshot ({field}): {problem}")]
    DiffRefused {
        /// `track_dirty_pages`, `parent` or `firecracker_version`.
        field: &'static str,
        /// What is wrong, and the fix.
        problem: String,
    },
    /// A filesystem has too little free space for what is about to be written there.
    #[error("not enough disk for {what}: {} has {} MiB free, {} MiB are needed ({detail}); {fix}", path.display(), free / (1 << 20), needed / (1 << 20))]
    NoSpace {
        /// What was to be written.
        what: String,
        /// Where.
        path: std::path::PathBuf,
        /// Bytes free there.
        free: u64,
        /// Bytes needed, margin included.
        needed: u64,
        /// What the need is made of.
        detail: String,
        /// How to make room.
        fix: String,
    },
    /// A host call failed.
    #[error("{what} failed")]
    Os {
        /// What was attempted.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

impl From<firecracker_api::Error> for Error {
    fn from(e: firecracker_api::Error) -> Self {
        Self::Api(Box::new(e))
    }
}
