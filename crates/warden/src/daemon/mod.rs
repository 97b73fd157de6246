//! The daemon's core (`warden serve`): configuration, the VM store, the state machine, the
//! manager that runs VMs through the library, recovery after a restart, and metrics. Transports
//! (Connect, gRPC, the CLI) call the manager; they never call each other.

mod addresses;
mod cleanup;
pub mod config;
pub mod delegation;
pub mod error;
pub mod events;
pub mod manager;
pub mod metrics;
mod pool;
mod recovery;
mod snapshots;
mod spec;
pub mod state;
mod stats;
pub mod store;
mod uids;
mod verbs;
mod watch;

pub use error::{api_field, ErrorCode, FieldOwner, ManagerError};
pub use events::VmEvent;
pub use manager::{Manager, Version, VmInfo, VmInfoRef};
pub use snapshots::size_bytes as snapshot_size_bytes;
