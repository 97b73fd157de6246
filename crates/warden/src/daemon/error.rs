//! The manager's error: one variant per way a request fails, each keeping its real cause in
//! `source()`. The transport picks the wire code from [`ManagerError::code`], which looks at the
//! type, never at message text; a library field is named as the API names it through one table,
//! [`api_field`].

use std::net::Ipv4Addr;

use serde::Serialize;

use super::state::{Op, VmState};
use super::store::StoreError;

/// The kind of a failed request, mapped to Connect/gRPC codes by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    /// A field is invalid (the message names it).
    InvalidArgument,
    /// No such VM.
    NotFound,
    /// The id is taken.
    AlreadyExists,
    /// The VM's state forbids the request, or the host is not ready.
    FailedPrecondition,
    /// Out of a resource.
    ResourceExhausted,
    /// Anything else (the message says what).
    Internal,
}

impl ErrorCode {
    /// The code's snake_case name, as Connect spells it (`not_found`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Internal => "internal",
        }
    }
}

/// A failed request. The message names the VM, field or setting, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No VM has this id.
    #[error("no VM with id {id:?}; list them with ListVms")]
    NoSuchVm {
        /// The id asked for.
        id: String,
    },
    /// The VM was deleted while the request waited for it.
    #[error("VM {id:?} was deleted")]
    Deleted {
        /// The VM.
        id: String,
    },
    /// The VM's state forbids the request.
    #[error("VM {id} is {state}; {op:?} needs it to be {}", allowed_states(*op))]
    WrongState {
        /// The VM.
        id: String,
        /// Its state.
        state: VmState,
        /// What was asked.
        op: Op,
    },
    /// The VM is recorded as running but this daemon has no handle on its process.
    #[error("VM {id} has no running process")]
    NotLive {
        /// The VM.
        id: String,
    },
    /// This daemon already has a VM with the id.
    #[error("a VM with id {id:?} already exists")]
    Exists {
        /// The id.
        id: String,
    },
    /// Another owner on this host holds the id.
    #[error("VM id {id:?} is in use on this host by {owner}; choose another id")]
    IdInUse {
        /// The id.
        id: String,
        /// Who holds it.
        owner: jail::Owner,
    },
    /// A field of the request is invalid (a rule of the daemon's own, or the library's
    /// [`jail::SpecError`] renamed to the API's field).
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The API's name of the field, e.g. `config.memory_mib`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The request asks for more than one of this daemon's caps allows.
    #[error(
        "{field}: {asked} {unit} is more than {max} {unit}, above this daemon's {setting}; \
         ask for less, or raise {setting}"
    )]
    OverCap {
        /// The API's field.
        field: &'static str,
        /// How much was asked.
        asked: u64,
        /// The cap.
        max: u64,
        /// The setting that holds the cap.
        setting: &'static str,
        /// The unit of both.
        unit: &'static str,
    },
    /// No snapshot has this name.
    #[error("no snapshot named {name:?}; list them with ListSnapshots")]
    NoSuchSnapshot {
        /// The name asked for.
        name: String,
    },
    /// A snapshot with this name exists.
    #[error("a snapshot named {name:?} already exists; choose another name or delete it")]
    SnapshotExists {
        /// The name.
        name: String,
    },
    /// The daemon holds `max_vms` VMs.
    #[error("this daemon holds {held} VMs, its max_vms; delete VMs or raise max_vms")]
    TooManyVms {
        /// How many it holds.
        held: u64,
    },
    /// `max_concurrent_boots` boots are in flight.
    #[error("{max} boots are in progress, this daemon's max_concurrent_boots; retry shortly")]
    BootsBusy {
        /// The setting's value.
        max: u64,
    },
    /// No uid of `jail_id_range` is free.
    #[error(
        "no free uid left in jail_id_range {}-{} for VM {id}; delete VMs or widen jail_id_range",
        range.0, range.1
    )]
    NoFreeUid {
        /// The VM.
        id: String,
        /// The range.
        range: (u32, u32),
    },
    /// No address of `address_pool` is free.
    #[error(
        "no free address left in {net}/{prefix} for VM {id}; delete VMs or widen address_pool"
    )]
    NoFreeAddress {
        /// The VM.
        id: String,
        /// The pool's network.
        net: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
    },
    /// A setting of this daemon (not of the request) makes the VM impossible; the operator
    /// fixes it.
    #[error("this daemon's setting {setting} is invalid: {}", source.problem)]
    Setting {
        /// The daemon's setting at fault.
        setting: &'static str,
        /// The library's finding.
        source: jail::SpecError,
    },
    /// The library failed to start, run or stop the VM.
    #[error(transparent)]
    Vm(crate::Error),
    /// The daemon's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Removing the VM's host state failed; every failed step is listed.
    #[error(transparent)]
    Cleanup(#[from] jail::RemoveError),
    /// The uid registry could not be read or written.
    #[error(transparent)]
    Registry(#[from] jail::owner::RegistryError),
    /// A host call of the daemon's own failed.
    #[error("{what} failed")]
    Os {
        /// What was attempted, with the path.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The task running the request's work panicked or was cancelled.
    #[error("the request's task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl ManagerError {
    /// The wire code, chosen by the error's type.
    pub fn code(&self) -> ErrorCode {
        use jail::owner::RegistryError;
        use jail::ApplyError;
        match self {
            Self::NoSuchVm { .. } | Self::Deleted { .. } | Self::NoSuchSnapshot { .. } => {
                ErrorCode::NotFound
            }
            Self::Exists { .. } | Self::IdInUse { .. } | Self::SnapshotExists { .. } => {
                ErrorCode::AlreadyExists
            }
            Self::WrongState { .. } | Self::NotLive { .. } | Self::Setting { .. } => {
                ErrorCode::FailedPrecondition
            }
            Self::Invalid { .. } => ErrorCode::InvalidArgument,
            Self::OverCap { .. }
            | Self::TooManyVms { .. }
            | Self::BootsBusy { .. }
            | Self::NoFreeUid { .. }
            | Self::NoFreeAddress { .. } => ErrorCode::ResourceExhausted,
            Self::Vm(e) => match e {
                crate::Error::Invalid(_) => ErrorCode::InvalidArgument,
                crate::Error::JailerMissing { .. } | crate::Error::FirecrackerMissing { .. } => {
                    ErrorCode::FailedPrecondition
                }
                crate::Error::Apply(ApplyError::Reserve(RegistryError::Taken { .. })) => {
                    ErrorCode::AlreadyExists
                }
                crate::Error::Apply(ApplyError::JailExists { .. }) => ErrorCode::FailedPrecondition,
                crate::Error::DiffRefused { .. } => ErrorCode::FailedPrecondition,
                crate::Error::NoSpace { .. } => ErrorCode::ResourceExhausted,
                _ => ErrorCode::Internal,
            },
            Self::Store(_) | Self::Cleanup(_) | Self::Registry(_) | Self::Os { .. } => {
                ErrorCode::Internal
            }
            Self::Task(_) => ErrorCode::Internal,
        }
    }

    /// The message with every cause, for the caller and the VM's exit record.
    pub fn chain(&self) -> String {
        jail::error_chain(self)
    }
}

/// Where a library field is set: by the request (under the API's name) or by one of the
/// daemon's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldOwner {
    /// The caller's: the API's name of the field.
    Request(String),
    /// The operator's: the daemon setting behind it.
    Setting(&'static str),
}

/// The one table from the library's field names ([`jail::SpecError::field`]) to the API's:
/// `memory_mb` is the API's `config.memory_mib`; the jail's paths and ids come from the
/// daemon's settings.
pub fn api_field(library_field: &str) -> FieldOwner {
    const REQUEST: &[(&str, &str)] = &[
        ("vm_id", "vm_id"),
        ("jailer_id", "vm_id"),
        ("vcpu_count", "config.vcpu_count"),
        ("memory_mb", "config.memory_mib"),
        ("memory_limit_mb", "config.memory_limit_mib"),
        ("cpu_quota_pct", "config.cpu_quota_percent"),
        ("cpuset", "config.cpuset"),
        ("io_read_bps", "config.io_read_bps"),
        ("io_write_bps", "config.io_write_bps"),
        ("io_read_iops", "config.io_read_iops"),
        ("io_write_iops", "config.io_write_iops"),
        ("kernel_path", "config.kernel_path"),
        ("rootfs_path", "config.rootfs_path"),
        ("boot_args", "config.boot_args"),
        ("snapshot", "snapshot"),
    ];
    const SETTINGS: &[(&str, &str)] = &[
        ("uid", "jailer_uid"),
        ("gid", "jailer_gid"),
        ("uid_range", "jail_id_range"),
        ("chroot_base_dir", "chroot_base"),
        ("exec_file", "firecracker_binary"),
        ("parent_cgroup", "parent_cgroup"),
        ("cgroup_version", "cgroup_version"),
        ("netns", "netns"),
        ("network.guest", "address_pool"),
    ];
    if let Some((_, api)) = REQUEST.iter().find(|(lib, _)| *lib == library_field) {
        return FieldOwner::Request((*api).to_owned());
    }
    if let Some((_, key)) = SETTINGS.iter().find(|(lib, _)| *lib == library_field) {
        return FieldOwner::Setting(key);
    }
    // `drives[0].path` and any field not listed: the request's, under `config.`.
    FieldOwner::Request(format!("config.{library_field}"))
}

impl From<crate::Error> for ManagerError {
    /// A library error, with an invalid field renamed to the API's (or blamed on the setting
    /// behind it).
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Invalid(spec) => match api_field(&spec.field) {
                FieldOwner::Request(field) => Self::Invalid {
                    field,
                    problem: spec.problem,
                },
                FieldOwner::Setting(setting) => Self::Setting {
                    setting,
                    source: spec,
                },
            },
            other => Self::Vm(other),
        }
    }
}

impl From<jail::lifecycle::RemoveOwnedError> for ManagerError {
    fn from(e: jail::lifecycle::RemoveOwnedError) -> Self {
        match e {
            jail::lifecycle::RemoveOwnedError::Registry(e) => Self::Registry(e),
            jail::lifecycle::RemoveOwnedError::Remove(e) => Self::Cleanup(e),
        }
    }
}

/// The states that allow `op`, for messages.
fn allowed_states(op: Op) -> String {
    let states: Vec<&str> = VmState::ALL
        .iter()
        .filter(|s| s.allows(op))
        .map(|s| s.as_str())
        .collect();
    states.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_fields_get_the_api_names() {
        assert_eq!(
            api_field("memory_mb"),
            FieldOwner::Request("config.memory_mib".into())
        );
        assert_eq!(
            api_field("drives[2].path"),
            FieldOwner::Request("config.drives[2].path".into())
        );
        assert_eq!(
            api_field("chroot_base_dir"),
            FieldOwner::Setting("chroot_base")
        );
        assert_eq!(api_field("vm_id"), FieldOwner::Request("vm_id".into()));
    }

    #[test]
    fn codes_follow_the_type() {
        let invalid: ManagerError = crate::Error::Invalid(jail::SpecError::new(
            "memory_mb",
            "is 1 MiB; use at least 128",
        ))
        .into();
        assert_eq!(invalid.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            invalid.to_string(),
            "invalid config.memory_mib: is 1 MiB; use at least 128"
        );
        let setting: ManagerError =
            crate::Error::Invalid(jail::SpecError::new("uid", "is 0 (root)")).into();
        assert_eq!(setting.code(), ErrorCode::FailedPrecondition);
        assert!(setting.to_string().contains("jailer_uid"), "{setting}");
        let missing: ManagerError = crate::Error::JailerMissing {
            path: "/nope".into(),
        }
        .into();
        assert_eq!(missing.code(), ErrorCode::FailedPrecondition);
        assert_eq!(
            ManagerError::NoSuchVm { id: "a".into() }.code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            ManagerError::BootsBusy { max: 1 }.code(),
            ErrorCode::ResourceExhausted
        );
    }
}
