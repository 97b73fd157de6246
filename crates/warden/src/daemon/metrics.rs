//! Prometheus metrics: VMs by state, request latencies, failures by reason, snapshots taken and
//! restores by result, per-VM memory and CPU read from the VMs' cgroups at scrape time, and the
//! snapshot store's size read from its manifests at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::manager::VmInfo;
use super::state::VmState;
use crate::vm::Manifest;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok`, or the error code of the failure (`not_found`, `invalid_argument`, ...).
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmLabel {
    vm_id: String,
}

/// The daemon's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    latency: Family<OpLabel, Histogram>,
    failures: Family<ReasonLabel, Counter>,
    vms: Family<StateLabel, Gauge>,
    memory: Family<VmLabel, Gauge>,
    cpu: Family<VmLabel, Gauge>,
    pool_ready: Gauge,
    pool_takes: Family<ResultLabel, Counter>,
    snapshots: Family<ResultLabel, Counter>,
    restores: Family<ResultLabel, Counter>,
    stored: Gauge,
    store_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let latency = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let failures = Family::<ReasonLabel, Counter>::default();
        let vms = Family::<StateLabel, Gauge>::default();
        let memory = Family::<VmLabel, Gauge>::default();
        let cpu = Family::<VmLabel, Gauge>::default();
        let snapshots = Family::<ResultLabel, Counter>::default();
        let restores = Family::<ResultLabel, Counter>::default();
        let stored = Gauge::default();
        let store_bytes = Gauge::default();
        registry.register(
            "request_duration_seconds",
            "Latency of create, boot (a clone's start from its snapshot included), stop, snapshot \
             and restore (RestoreVm: create and start from the snapshot)",
            latency.clone(),
        );
        registry.register(
            "snapshots",
            "SnapshotVm requests by result (ok, or the error code)",
            snapshots.clone(),
        );
        registry.register(
            "restores",
            "RestoreVm requests by result (ok, or the error code)",
            restores.clone(),
        );
        registry.register(
            "snapshots_stored",
            "Snapshots in the daemon's store",
            stored.clone(),
        );
        registry.register(
            "snapshot_store_bytes",
            "Bytes of the state, memory and drive files of the store's snapshots",
            store_bytes.clone(),
        );
        registry.register(
            "vm_exits_or_failures",
            "VM failures and exits by reason",
            failures.clone(),
        );
        registry.register("vms", "VMs by state", vms.clone());
        registry.register(
            "vm_memory_bytes",
            "Memory charged to each VM's cgroup",
            memory.clone(),
        );
        registry.register(
            "vm_cpu_seconds",
            "CPU time used by each VM's cgroup",
            cpu.clone(),
        );
        let pool_ready = Gauge::default();
        let pool_takes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "pool_ready",
            "Warm jails ready in the pool",
            pool_ready.clone(),
        );
        registry.register(
            "pool_boots",
            "Boots while the pool is on, by whether they took a warm jail (hit) or not (miss)",
            pool_takes.clone(),
        );
        Self {
            registry: Arc::new(registry),
            pool_ready,
            pool_takes,
            latency,
            failures,
            vms,
            memory,
            cpu,
            snapshots,
            restores,
            stored,
            store_bytes,
        }
    }
}

impl Metrics {
    /// Records the latency of `op`.
    pub fn observe(&self, op: &str, d: Duration) {
        self.latency
            .get_or_create(&OpLabel { op: op.into() })
            .observe(d.as_secs_f64());
    }

    /// Counts a failure or exit by reason.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a boot while the pool is on: `hit` when it took a warm jail.
    pub fn pool_boot(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.pool_takes
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Counts a SnapshotVm by its result: `ok` or the error code.
    pub fn snapshot_result(&self, result: &str) {
        self.snapshots
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Sets how many warm jails are ready.
    pub fn set_pool_ready(&self, n: usize) {
        self.pool_ready.set(n as i64);
    }

    /// Counts a RestoreVm by its result: `ok` or the error code.
    pub fn restore_result(&self, result: &str) {
        self.restores
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Renders the text exposition format, with gauges refreshed from `vms` and the store's
    /// `snapshots`.
    pub fn render(&self, vms: &[VmInfo], snapshots: &[(String, Manifest)]) -> String {
        self.stored.set(snapshots.len() as i64);
        self.store_bytes.set(
            snapshots
                .iter()
                .map(|(_, m)| i64::try_from(super::snapshots::size_bytes(m)).unwrap_or(i64::MAX))
                .sum(),
        );
        for s in VmState::ALL {
            let n = vms.iter().filter(|v| v.record.state == s).count();
            self.vms
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(n as i64);
        }
        self.memory.clear();
        self.cpu.clear();
        for v in vms {
            if let Some(st) = &v.stats {
                let l = VmLabel {
                    vm_id: v.record.id.clone(),
                };
                if let Some(m) = st.memory_bytes {
                    self.memory.get_or_create(&l).set(m as i64);
                }
                if let Some(c) = st.cpu_usage_ns {
                    self.cpu.get_or_create(&l).set((c / 1_000_000_000) as i64);
                }
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl super::manager::Manager {
    /// `/metrics`: the metrics with their gauges refreshed from the VMs, the snapshot store and
    /// the warm pool.
    pub async fn render_metrics(&self) -> String {
        let vms = self.list().await.unwrap_or_default();
        let snapshots = self.list_snapshots().await.unwrap_or_default();
        self.metrics.set_pool_ready(self.pool_ready());
        self.metrics.render(&vms, &snapshots)
    }
}
