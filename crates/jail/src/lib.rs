//! Everything warden knows about a Firecracker jail, apart from the VM itself.
//!
//! The shape follows the jailer's own `Env::new` / `Env::run` split: a [`JailSpec`] is the
//! validated request, [`JailSpec::plan`] turns it into a [`JailPlan`] without touching the host
//! (jailer argv, chroot layout, socket and pid paths, cgroup files and values, staged files), and
//! only then do [`stage`] and the caller's spawn act on the host. [`cleanup`] removes what a jail
//! left behind, because the real jailer never does.
//!
//! Host paths (the cgroup root, the mounts table, the chroot base) are always arguments, so tests
//! run the same code against fake trees in a temporary directory.
#![deny(missing_docs)]

pub mod cgroup;
pub mod cleanup;
pub mod id;
pub mod inspect;
pub mod net;
pub mod plan;
pub mod spec;
pub mod stage;

pub use cgroup::{CgroupLimits, CgroupVersion};
pub use id::JailId;
pub use plan::{JailPlan, StagedFile};
pub use spec::{JailSpec, ResourceLimits, SpecError};

/// Longest path the kernel accepts in a `sockaddr_un` (108 bytes including the trailing NUL).
pub const MAX_SOCKET_PATH: usize = 107;
