//! Everything warden knows about a Firecracker jail, apart from the VM itself.
//!
//! The shape follows the jailer's own `Env::new` / `Env::run` split: a [`JailSpec`] is the
//! validated request, [`JailSpec::plan`] turns it into a [`JailPlan`] without touching the host
//! (jailer argv, chroot layout, socket and pid paths, cgroup files and values, staged files), and
//! only then does [`lifecycle::apply`] make the host state (id reservation, network, chroot,
//! staged files) before the caller spawns the jailer. [`Jail::remove`] takes it all away again,
//! because the real jailer never does. [`Layout`] is the one place that spells host paths, and
//! [`owner`] records who owns each VM so that no instance ever touches another's.
//!
//! Host paths (the cgroup root, the mounts table, the chroot base) are always arguments, so tests
//! run the same code against fake trees in a temporary directory.
#![deny(missing_docs)]

pub mod cgroup;
pub mod host;
pub mod id;
pub mod inspect;
pub mod layout;
pub mod lifecycle;
pub mod net;
pub mod owner;
pub mod plan;
pub mod proc;
pub mod snapshot;
pub mod source;
pub mod spec;
pub mod stage;
pub mod warm;

pub use cgroup::{CgroupLimits, CgroupVersion};
pub use host::{Host, RealHost};
pub use id::JailId;
pub use layout::{Layout, SocketPathTooLong, MAX_SOCKET_PATH};
pub use lifecycle::{apply, ApplyError, Jail, RemoveError};
pub use owner::{Owner, OwnerRecord, Registry};
pub use plan::{JailPlan, StagedFile};
pub use spec::{JailSpec, ResourceLimits, SpecError};

/// An error and its causes on one line, each cause once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
