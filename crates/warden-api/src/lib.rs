//! The warden daemon's API.
//!
//! The API is defined once, in `proto/vmprovisioner/v1/vm.proto`: metald's `vmprovisioner.v1`
//! on the wire (the same messages, field numbers, types and states, so metald's clients work
//! unchanged), with warden's extras in fields numbered from 100 and the `WatchVms` stream
//! (`docs/api.md` maps every field). This crate provides:
//!
//! - [`pb`]: the generated `vmprovisioner.v1` messages (prost, with proto3-JSON serde impls from
//!   pbjson) and the tonic gRPC client and server;
//! - [`VmService`]: the trait the daemon implements, one method per RPC;
//! - [`router`]: one axum [`Router`](axum::Router) serving the Connect protocol (JSON and binary
//!   protobuf, unary; Connect streaming for `WatchVms`) and gRPC on the same port, with optional
//!   bearer-token authentication;
//! - [`Client`]: a Connect JSON client over TCP or a Unix socket, for the CLI (with
//!   [`Client::watch_vms`] for the event stream);
//! - [`serve`] / [`serve_with_shutdown`]: helpers to run the router on TCP or a Unix socket.

#![deny(missing_docs)]

pub mod backend;
mod client;
mod error;
pub mod guard;
mod server;

pub use client::{Client, Endpoint, EventStream};
pub use error::{ApiError, Code, UnknownCode};
pub use server::{bind_unix, router, serve, serve_with_shutdown, Listen, ServerOptions};

/// Re-exported so implementors of [`VmService`] need no direct dependency:
/// `#[warden_api::async_trait] impl VmService for Daemon { ... }`.
pub use tonic::async_trait;

/// The generated `vmprovisioner.v1` package: messages, enums, the tonic client
/// (`vm_service_client`) and server (`vm_service_server`).
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/vmprovisioner.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/vmprovisioner.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of `vm.proto` (e.g. for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vmprovisioner_descriptor.bin"));

/// The fully qualified service name, `vmprovisioner.v1.VmService`.
pub const SERVICE_NAME: &str = "vmprovisioner.v1.VmService";

/// The unary RPC method names, as they appear in `/vmprovisioner.v1.VmService/<Method>`.
pub const METHODS: [&str; 13] = [
    "CreateVm",
    "DeleteVm",
    "BootVm",
    "ShutdownVm",
    "PauseVm",
    "ResumeVm",
    "RebootVm",
    "GetVmInfo",
    "ListVms",
    "SnapshotVm",
    "RestoreVm",
    "ListSnapshots",
    "DeleteSnapshot",
];

/// The server-streaming RPC: `/vmprovisioner.v1.VmService/WatchVms`.
pub const WATCH_METHOD: &str = "WatchVms";

/// The VM service, implemented by the daemon. One method per RPC of `vmprovisioner.v1.VmService`;
/// the server maps [`ApiError`] to a Connect error or a gRPC status.
#[async_trait]
pub trait VmService: Send + Sync + 'static {
    /// Validates everything and records a VM; creates nothing on the host and does not start it.
    async fn create_vm(&self, req: pb::CreateVmRequest) -> Result<pb::CreateVmResponse, ApiError>;
    /// Stops the VM if it runs, removes every host resource, and forgets it.
    async fn delete_vm(&self, req: pb::DeleteVmRequest) -> Result<pb::DeleteVmResponse, ApiError>;
    /// Starts a created (or stopped) VM under the jailer.
    async fn boot_vm(&self, req: pb::BootVmRequest) -> Result<pb::BootVmResponse, ApiError>;
    /// Graceful stop (Ctrl-Alt-Del, then SIGKILL after the deadline); host resources are cleaned.
    async fn shutdown_vm(
        &self,
        req: pb::ShutdownVmRequest,
    ) -> Result<pb::ShutdownVmResponse, ApiError>;
    /// Pauses a running VM.
    async fn pause_vm(&self, req: pb::PauseVmRequest) -> Result<pb::PauseVmResponse, ApiError>;
    /// Resumes a paused VM.
    async fn resume_vm(&self, req: pb::ResumeVmRequest) -> Result<pb::ResumeVmResponse, ApiError>;
    /// Stops and boots the VM again with the same configuration.
    async fn reboot_vm(&self, req: pb::RebootVmRequest) -> Result<pb::RebootVmResponse, ApiError>;
    /// Describes one VM.
    async fn get_vm_info(
        &self,
        req: pb::GetVmInfoRequest,
    ) -> Result<pb::GetVmInfoResponse, ApiError>;
    /// Lists VMs, a page at a time.
    async fn list_vms(&self, req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse, ApiError>;
    /// ListVms' response as protobuf bytes (the binary protocol's answer); a backend may make
    /// it faster than by encoding [`VmService::list_vms`]'s, which is the default.
    async fn list_vms_encoded(&self, req: pb::ListVmsRequest) -> Result<Vec<u8>, ApiError> {
        use prost::Message;
        Ok(self.list_vms(req).await?.encode_to_vec())
    }
    /// WatchVms: the current state of each VM (or of one), then every change.
    async fn watch_vms(&self, req: pb::WatchVmsRequest) -> Result<VmEventStream, ApiError>;
    /// SnapshotVm: a full snapshot of a running VM into the store.
    async fn snapshot_vm(
        &self,
        _req: pb::SnapshotVmRequest,
    ) -> Result<pb::SnapshotVmResponse, ApiError> {
        Err(ApiError::unimplemented("SnapshotVm is not served here"))
    }
    /// RestoreVm: a new running VM from a snapshot.
    async fn restore_vm(
        &self,
        _req: pb::RestoreVmRequest,
    ) -> Result<pb::RestoreVmResponse, ApiError> {
        Err(ApiError::unimplemented("RestoreVm is not served here"))
    }
    /// ListSnapshots.
    async fn list_snapshots(
        &self,
        _req: pb::ListSnapshotsRequest,
    ) -> Result<pb::ListSnapshotsResponse, ApiError> {
        Err(ApiError::unimplemented("ListSnapshots is not served here"))
    }
    /// DeleteSnapshot.
    async fn delete_snapshot(
        &self,
        _req: pb::DeleteSnapshotRequest,
    ) -> Result<pb::DeleteSnapshotResponse, ApiError> {
        Err(ApiError::unimplemented("DeleteSnapshot is not served here"))
    }
}

/// The events of [`VmService::watch_vms`]; an error ends the stream.
pub type VmEventStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<pb::WatchVmsResponse, ApiError>> + Send>,
>;

/// Shorthands for building and reading the messages whose shape follows metald's.
impl pb::VmConfig {
    /// A config that boots `kernel_path` (1 vCPU and 512 MiB unless set).
    pub fn with_kernel(kernel_path: impl Into<String>) -> pb::VmConfig {
        pb::VmConfig {
            boot: Some(pb::BootConfig {
                kernel_path: kernel_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Sets the guest memory, in MiB.
    pub fn memory_mib(mut self, mib: u32) -> pb::VmConfig {
        self.memory.get_or_insert_with(Default::default).size_bytes = i64::from(mib) << 20;
        self
    }

    /// Sets the vCPUs.
    pub fn vcpus(mut self, n: i32) -> pb::VmConfig {
        self.cpu.get_or_insert_with(Default::default).vcpu_count = n;
        self
    }

    /// Sets the kernel command line.
    pub fn kernel_args(mut self, args: impl Into<String>) -> pb::VmConfig {
        self.boot.get_or_insert_with(Default::default).kernel_args = args.into();
        self
    }

    /// Adds the root device.
    pub fn rootfs(mut self, path: impl Into<String>) -> pb::VmConfig {
        self.storage.push(pb::StorageDevice {
            path: path.into(),
            is_root_device: true,
            ..Default::default()
        });
        self
    }

    /// Adds an extra drive.
    pub fn drive(mut self, path: impl Into<String>, read_only: bool) -> pb::VmConfig {
        self.storage.push(pb::StorageDevice {
            path: path.into(),
            read_only,
            ..Default::default()
        });
        self
    }

    /// Adds the network interface (networking on).
    pub fn network(mut self) -> pb::VmConfig {
        self.network = vec![pb::NetworkInterface::default()];
        self
    }

    /// The guest memory in MiB.
    pub fn memory_in_mib(&self) -> i64 {
        self.memory.as_ref().map_or(0, |m| m.size_bytes >> 20)
    }

    /// The kernel path.
    pub fn kernel_path(&self) -> &str {
        self.boot.as_ref().map_or("", |b| b.kernel_path.as_str())
    }
}

impl pb::GetVmInfoResponse {
    /// warden's details (empty when the server sent none).
    pub fn details(&self) -> pb::VmDetails {
        self.warden.clone().unwrap_or_default()
    }
}

impl pb::VmInfo {
    /// warden's details (empty when the server sent none).
    pub fn details(&self) -> pb::VmDetails {
        self.warden.clone().unwrap_or_default()
    }
}
