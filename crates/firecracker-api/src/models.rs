//! Request and response bodies of Firecracker v1.12's API (`src/firecracker/swagger/firecracker.yaml`).
//!
//! Field names are the swagger's. `Option` fields are left out of the JSON when `None`, so
//! Firecracker applies its own defaults. Unknown fields in responses are ignored.

use serde::{Deserialize, Serialize};

/// Boot source descriptor (`PUT /boot-source`, config key `boot-source`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    /// Host path to the guest kernel image.
    pub kernel_image_path: String,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Host path to the initrd image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// A virtio-block device (`PUT /drives/{drive_id}`, config key `drives`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Drive id; also the last segment of the request path.
    pub drive_id: String,
    /// Host path of the backing file.
    pub path_on_host: String,
    /// Whether this is the guest's root device.
    pub is_root_device: bool,
    /// Whether the guest sees the drive read-only.
    pub is_read_only: bool,
    /// Unique id of the boot partition (only used when `is_root_device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Caching strategy: `"Unsafe"` (Firecracker's default) or `"Writeback"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<String>,
    /// I/O rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// I/O engine: `"Sync"` (Firecracker's default) or `"Async"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<String>,
}

/// vCPUs, memory and related settings (`PUT /machine-config`, config key `machine-config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// Number of vCPUs: 1..=32 (1 or even with SMT).
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u32,
    /// Simultaneous multithreading (x86 only); Firecracker's default is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Dirty page tracking (for diff snapshots); Firecracker's default is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Deprecated static CPU template (`"C3"`, `"T2"`, …, `"None"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Huge pages backing guest memory: `"None"` (default) or `"2M"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

/// A virtio-net device backed by a host TAP (`PUT /network-interfaces/{iface_id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Interface id; also the last segment of the request path.
    pub iface_id: String,
    /// Name of the host TAP device.
    pub host_dev_name: String,
    /// Guest MAC address, e.g. `"06:00:AC:10:00:02"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// Receive rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// An I/O rate limiter with independent bandwidth and operations buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Bucket whose tokens are bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Bucket whose tokens are operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// A token bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Total number of tokens the bucket holds.
    pub size: u64,
    /// Initial burst on top of `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket completely.
    pub refill_time: u64,
}

/// Firecracker's logger (`PUT /logger`, config key `logger`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    /// Host path of the named pipe or file for the log (must exist).
    pub log_path: String,
    /// `"Error"`, `"Warning"`, `"Info"` (default), `"Debug"`, `"Trace"` or `"Off"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Whether to print the level in each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Whether to print the file and line of each message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only log messages from this module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Firecracker's metrics sink (`PUT /metrics`, config key `metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Host path of the named pipe or file the JSON metrics are flushed to (must exist).
    pub metrics_path: String,
}

/// A synchronous action (`PUT /actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured microVM.
    InstanceStart,
    /// Send Ctrl+Alt+Del to the guest (x86 only).
    SendCtrlAltDel,
    /// Flush the metrics to the metrics sink.
    FlushMetrics,
}

/// Body of `PUT /actions`.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceActionInfo {
    pub(crate) action_type: ActionType,
}

/// Body of `PATCH /vm`.
#[derive(Debug, Serialize)]
pub(crate) struct Vm {
    pub(crate) state: VmState,
}

/// Requested microVM running state.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum VmState {
    Paused,
    Resumed,
}

/// The detailed state of a Firecracker instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Not booted yet (`"Not started"`).
    #[serde(rename = "Not started")]
    NotStarted,
    /// Booted and running.
    Running,
    /// Booted and paused.
    Paused,
}

/// Response of `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name (`"Firecracker"`).
    pub app_name: String,
    /// Instance id (`--id`; `"anonymous-instance"` by default).
    pub id: String,
    /// Current state.
    pub state: InstanceState,
    /// Firecracker version, e.g. `"1.12.1"`.
    pub vmm_version: String,
}

/// Response of `GET /vm/config`: the whole current configuration.
///
/// Sections this crate has no model for are kept as raw JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FullVmConfiguration {
    /// Boot source (Firecracker reports an empty `kernel_image_path` before one is set).
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    /// Block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drives: Option<Vec<Drive>>,
    /// Machine configuration.
    #[serde(
        rename = "machine-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfiguration>,
    /// Network devices.
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_interfaces: Option<Vec<NetworkInterface>>,
    /// Logger, if Firecracker reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<serde_json::Value>,
    /// Metrics, if Firecracker reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// Balloon device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<serde_json::Value>,
    /// Vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<serde_json::Value>,
    /// MMDS configuration.
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<serde_json::Value>,
    /// Custom CPU template.
    #[serde(
        rename = "cpu-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_config: Option<serde_json::Value>,
    /// Entropy device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<serde_json::Value>,
}

/// Firecracker's `--config-file` JSON: configures and boots the microVM with no API calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Boot source.
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    /// Block devices.
    #[serde(default)]
    pub drives: Vec<Drive>,
    /// Machine configuration.
    #[serde(rename = "machine-config")]
    pub machine_config: MachineConfiguration,
    /// Network devices.
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// Logger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// Metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn golden<T: Serialize>(value: &T, expected: &str) {
        assert_eq!(serde_json::to_string(value).unwrap(), expected);
    }

    #[test]
    fn boot_source() {
        golden(
            &BootSource {
                kernel_image_path: "/vmlinux".into(),
                ..Default::default()
            },
            r#"{"kernel_image_path":"/vmlinux"}"#,
        );
        golden(
            &BootSource {
                kernel_image_path: "/vmlinux".into(),
                boot_args: Some("console=ttyS0 reboot=k".into()),
                initrd_path: Some("/initrd".into()),
            },
            r#"{"kernel_image_path":"/vmlinux","boot_args":"console=ttyS0 reboot=k","initrd_path":"/initrd"}"#,
        );
    }

    fn bucket() -> TokenBucket {
        TokenBucket {
            size: 1000,
            one_time_burst: None,
            refill_time: 100,
        }
    }

    #[test]
    fn rate_limiter_and_token_bucket() {
        golden(&RateLimiter::default(), "{}");
        golden(
            &RateLimiter {
                bandwidth: Some(TokenBucket {
                    one_time_burst: Some(5),
                    ..bucket()
                }),
                ops: Some(bucket()),
            },
            r#"{"bandwidth":{"size":1000,"one_time_burst":5,"refill_time":100},"ops":{"size":1000,"refill_time":100}}"#,
        );
    }

    #[test]
    fn drive() {
        let d = Drive {
            drive_id: "rootfs".into(),
            path_on_host: "/rootfs.ext4".into(),
            is_root_device: true,
            is_read_only: false,
            ..Default::default()
        };
        golden(
            &d,
            r#"{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":false}"#,
        );
        golden(
            &Drive {
                partuuid: Some("abcd-01".into()),
                cache_type: Some("Writeback".into()),
                rate_limiter: Some(RateLimiter {
                    bandwidth: None,
                    ops: Some(bucket()),
                }),
                io_engine: Some("Async".into()),
                ..d
            },
            r#"{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":false,"partuuid":"abcd-01","cache_type":"Writeback","rate_limiter":{"ops":{"size":1000,"refill_time":100}},"io_engine":"Async"}"#,
        );
    }

    #[test]
    fn machine_configuration() {
        golden(
            &MachineConfiguration {
                vcpu_count: 2,
                mem_size_mib: 256,
                ..Default::default()
            },
            r#"{"vcpu_count":2,"mem_size_mib":256}"#,
        );
        golden(
            &MachineConfiguration {
                vcpu_count: 1,
                mem_size_mib: 128,
                smt: Some(false),
                track_dirty_pages: Some(true),
                cpu_template: Some("None".into()),
                huge_pages: Some("2M".into()),
            },
            r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":true,"cpu_template":"None","huge_pages":"2M"}"#,
        );
    }

    #[test]
    fn network_interface() {
        let n = NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            ..Default::default()
        };
        golden(&n, r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#);
        golden(
            &NetworkInterface {
                guest_mac: Some("06:00:AC:10:00:02".into()),
                rx_rate_limiter: Some(RateLimiter {
                    bandwidth: Some(bucket()),
                    ops: None,
                }),
                tx_rate_limiter: Some(RateLimiter::default()),
                ..n
            },
            r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:AC:10:00:02","rx_rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}},"tx_rate_limiter":{}}"#,
        );
    }

    #[test]
    fn logger_and_metrics() {
        golden(
            &Logger {
                log_path: "/log".into(),
                ..Default::default()
            },
            r#"{"log_path":"/log"}"#,
        );
        golden(
            &Logger {
                log_path: "/log".into(),
                level: Some("Debug".into()),
                show_level: Some(true),
                show_log_origin: Some(false),
                module: Some("api_server".into()),
            },
            r#"{"log_path":"/log","level":"Debug","show_level":true,"show_log_origin":false,"module":"api_server"}"#,
        );
        golden(
            &Metrics {
                metrics_path: "/metrics".into(),
            },
            r#"{"metrics_path":"/metrics"}"#,
        );
    }

    #[test]
    fn actions_and_vm_state() {
        for (a, s) in [
            (ActionType::InstanceStart, "InstanceStart"),
            (ActionType::SendCtrlAltDel, "SendCtrlAltDel"),
            (ActionType::FlushMetrics, "FlushMetrics"),
        ] {
            golden(
                &InstanceActionInfo { action_type: a },
                &format!(r#"{{"action_type":"{s}"}}"#),
            );
        }
        golden(
            &Vm {
                state: VmState::Paused,
            },
            r#"{"state":"Paused"}"#,
        );
        golden(
            &Vm {
                state: VmState::Resumed,
            },
            r#"{"state":"Resumed"}"#,
        );
    }

    #[test]
    fn instance_info() {
        let info: InstanceInfo = serde_json::from_str(
            r#"{"id":"anonymous-instance","state":"Not started","vmm_version":"1.12.1","app_name":"Firecracker"}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            InstanceInfo {
                app_name: "Firecracker".into(),
                id: "anonymous-instance".into(),
                state: InstanceState::NotStarted,
                vmm_version: "1.12.1".into(),
            }
        );
        golden(&InstanceState::Running, r#""Running""#);
        golden(&InstanceState::Paused, r#""Paused""#);
    }

    #[test]
    fn full_vm_configuration_from_firecracker_1_12() {
        // Captured from Firecracker v1.12.1 after PUT /machine-config and PUT /drives/rootfs.
        let body = r#"{"balloon":null,"drives":[{"drive_id":"rootfs","partuuid":null,"is_root_device":true,"cache_type":"Unsafe","is_read_only":true,"path_on_host":"/r.ext4","rate_limiter":null,"io_engine":"Sync","socket":null}],"boot-source":{"kernel_image_path":"","initrd_path":null,"boot_args":null},"cpu-config":null,"logger":null,"machine-config":{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true,"huge_pages":"None"},"metrics":null,"mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,"some-future-key":{}}"#;
        let c: FullVmConfiguration = serde_json::from_str(body).unwrap();
        assert_eq!(c.boot_source, Some(BootSource::default()));
        assert_eq!(
            c.drives,
            Some(vec![Drive {
                drive_id: "rootfs".into(),
                path_on_host: "/r.ext4".into(),
                is_root_device: true,
                is_read_only: true,
                cache_type: Some("Unsafe".into()),
                io_engine: Some("Sync".into()),
                ..Default::default()
            }])
        );
        assert_eq!(
            c.machine_config,
            Some(MachineConfiguration {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: Some(false),
                track_dirty_pages: Some(true),
                cpu_template: None,
                huge_pages: Some("None".into()),
            })
        );
        assert_eq!(c.network_interfaces, Some(vec![]));
        assert_eq!(c.logger, None);
        assert_eq!(c.vsock, None);
        let empty: FullVmConfiguration = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, FullVmConfiguration::default());
    }

    #[test]
    fn config_file() {
        let c = ConfigFile {
            boot_source: BootSource {
                kernel_image_path: "/vmlinux".into(),
                boot_args: Some("console=ttyS0".into()),
                initrd_path: None,
            },
            drives: vec![Drive {
                drive_id: "rootfs".into(),
                path_on_host: "/rootfs.ext4".into(),
                is_root_device: true,
                is_read_only: true,
                ..Default::default()
            }],
            machine_config: MachineConfiguration {
                vcpu_count: 1,
                mem_size_mib: 128,
                ..Default::default()
            },
            network_interfaces: vec![NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                ..Default::default()
            }],
            logger: Some(Logger {
                log_path: "/log".into(),
                ..Default::default()
            }),
            metrics: Some(Metrics {
                metrics_path: "/metrics".into(),
            }),
        };
        golden(
            &c,
            concat!(
                r#"{"boot-source":{"kernel_image_path":"/vmlinux","boot_args":"console=ttyS0"},"#,
                r#""drives":[{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":true}],"#,
                r#""machine-config":{"vcpu_count":1,"mem_size_mib":128},"#,
                r#""network-interfaces":[{"iface_id":"eth0","host_dev_name":"tap0"}],"#,
                r#""logger":{"log_path":"/log"},"metrics":{"metrics_path":"/metrics"}}"#
            ),
        );
        let back: ConfigFile = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let minimal = ConfigFile {
            logger: None,
            metrics: None,
            ..c
        };
        let v = serde_json::to_value(&minimal).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "boot-source",
                "drives",
                "machine-config",
                "network-interfaces"
            ]
        );
        assert_eq!(
            v["network-interfaces"],
            json!([{"iface_id": "eth0", "host_dev_name": "tap0"}])
        );
    }
}

/// Full or diff snapshot (`snapshot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// Every page of guest memory.
    Full,
    /// Only the pages dirtied since the last snapshot (needs dirty-page tracking).
    Diff,
}

/// `PUT /snapshot/create`: the VM must be paused. Paths are Firecracker's (inside the chroot
/// when jailed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    /// The microVM state file to write.
    pub snapshot_path: String,
    /// The guest memory file to write.
    pub mem_file_path: String,
    /// Full (default) or diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// Where guest memory is loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    /// `"File"` (a memory file, mapped privately) or `"Uffd"`.
    pub backend_type: String,
    /// The memory file, or the UFFD handler's socket.
    pub backend_path: String,
}

/// `PUT /snapshot/load`: only on a fresh Firecracker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    /// The microVM state file.
    pub snapshot_path: String,
    /// The guest memory.
    pub mem_backend: MemoryBackend,
    /// Track dirty pages so that diff snapshots can be taken later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Resume the VM once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
}
