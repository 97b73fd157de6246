//! warden: run Firecracker microVMs under Firecracker's jailer, prove per VM that they are
//! jailed, and leave nothing behind when they stop.
//!
//! The API follows the orchestrator guide this project grew from:
//!
//! ```no_run
//! use warden::vm::{start_firecracker, stop_firecracker};
//! use warden::vm::config::VmConfig;
//!
//! # async fn demo() -> Result<(), warden::Error> {
//! let config = VmConfig {
//!     vm_id: "my-agent-task-123".to_string(),
//!     vcpu_count: 1,
//!     memory_mb: 256,
//!     kernel_path: "/path/to/vmlinux.bin".to_string(),
//!     rootfs_path: "/path/to/rootfs.ext4".to_string(),
//!     enable_networking: false,
//! };
//! let vm = start_firecracker(&config).await?;
//! println!("VM started with PID: {}", vm.pid);
//! println!("Sandboxed: {}", vm.is_sandboxed);
//! stop_firecracker(vm).await?;
//! # Ok(()) }
//! ```
//!
//! [`vm::start_vm`] takes [`vm::config::VmOptions`] for everything that guide left out (extra
//! drives, boot arguments, uid/gid, cgroup version and caps, PID namespace, rlimits, and whether
//! running without the jailer is allowed).
#![deny(missing_docs)]

pub mod assets;
mod background;
pub mod daemon;
pub mod doctor;
mod error;
pub mod vm;

pub use error::Error;
// Every type the library's public API uses, so callers need no direct dependency on `jail` or
// `firecracker-api` (the crates stay reachable as `warden::jail` and `warden::firecracker_api`).
pub use firecracker_api::{self, RateLimiter, TokenBucket};
pub use jail::cgroup::{CgroupError, CgroupStats};
pub use jail::inspect::{IsolationReport, Layer};
pub use jail::net::{GuestAddr, NetMode};
pub use jail::owner::RegistryError;
pub use jail::plan::StageMethod;
pub use jail::{self, ApplyError, RemoveError, SpecError, StagedFile};
pub use jail::{CgroupVersion, JailPlan, Owner, Registry, ResourceLimits};
