//! The daemon's core (`warden serve`): configuration, the VM store, the state machine, the
//! manager that runs VMs through the library, recovery after a restart, and metrics. Transports
//! (Connect, gRPC, the CLI) call the manager; they never call each other.

pub mod config;
pub mod manager;
pub mod metrics;
mod recovery;
pub mod state;
pub mod store;

pub use manager::{ErrorCode, Manager, ManagerError, VmInfo};
