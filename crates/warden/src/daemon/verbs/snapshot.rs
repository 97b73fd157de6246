//! SnapshotVm and RestoreVm: a full snapshot of a running VM into the daemon's store,
//! and a new VM started from one (a clone: its own id, jail, uid and cgroups).

use std::sync::Arc;
use std::time::Instant;

use super::to_completion;
use crate::daemon::error::ManagerError;
use crate::daemon::manager::Manager;
use crate::daemon::state::{Op, VmState};
use crate::daemon::store::{now_ms, VmRecord, VmSpec};
use crate::vm::Manifest;

impl Manager {
    /// SnapshotVm: pauses VM `id`, writes snapshot `name` into the store, then resumes it
    /// (`resume`) or leaves it paused. Watchers get a `snapshot_taken` event naming it. With
    /// `parent`, a diff snapshot on top of that snapshot of the store (see
    /// [`crate::vm::VmHandle::snapshot_diff`]).
    ///
    /// The store is written beside its final place and renamed there once complete, so a
    /// daemon killed mid-way leaves only a `<name>.partial-<pid>` directory, which is never
    /// listed and is removed at the next start.
    pub async fn snapshot(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        parent: Option<&str>,
        resume: bool,
    ) -> Result<Manifest, ManagerError> {
        let (m, id, name) = (self.clone(), id.to_owned(), name.to_owned());
        let parent = parent.map(str::to_owned);
        let t0 = Instant::now();
        let result = to_completion(async move {
            let store = m.snapshot_dir(&name, "name")?;
            if store.exists() {
                return Err(ManagerError::SnapshotExists { name });
            }
            let parent = match &parent {
                Some(p) => Some(m.snapshot_dir(p, "parent")?),
                None => None,
            };
            let mut slot = m.lock_for(&id, Op::Snapshot).await?;
            let vm = slot
                .vm
                .as_ref()
                .ok_or(ManagerError::NotLive { id: id.clone() })?;
            std::fs::create_dir_all(store.parent().expect("under the state dir")).map_err(
                |source| ManagerError::Os {
                    what: format!("creating {}", store.display()),
                    source,
                },
            )?;
            let manifest = match &parent {
                None => vm.snapshot(&store, resume).await?,
                Some(p) => vm.snapshot_diff(&store, p, resume).await?,
            };
            if !resume {
                slot.rec.state = VmState::Paused;
                slot.rec.updated_at = now_ms();
                // Stored without the generic `paused` event: the snapshot's own says why.
                m.store.put(&slot.rec).await?;
            }
            m.events.snapshot_taken(&slot.rec, &name);
            tracing::info!(vm_id = %id, snapshot = %name, "snapshot taken");
            Ok(manifest)
        })
        .await;
        match &result {
            Ok(_) => {
                self.metrics.observe("snapshot", t0.elapsed());
                self.metrics.snapshot_result("ok");
            }
            Err(e) => self.metrics.snapshot_result(e.code().as_str()),
        }
        result
    }

    /// RestoreVm: records VM `id` (generated when empty) as a clone of snapshot `name` and
    /// starts it from the snapshot.
    pub async fn restore(self: &Arc<Self>, id: &str, name: &str) -> Result<VmRecord, ManagerError> {
        let t0 = Instant::now();
        let result = self.restore_inner(id, name).await;
        match &result {
            Ok(_) => {
                self.metrics.observe("restore", t0.elapsed());
                self.metrics.restore_result("ok");
            }
            Err(e) => self.metrics.restore_result(e.code().as_str()),
        }
        result
    }

    async fn restore_inner(
        self: &Arc<Self>,
        id: &str,
        name: &str,
    ) -> Result<VmRecord, ManagerError> {
        let restore = self.open_snapshot(name).await?;
        let spec = VmSpec {
            vcpu_count: restore.manifest.vcpu_count,
            memory_mib: restore.manifest.memory_mb,
            // Not staged for a restore; the record shows where the VM came from.
            kernel_path: restore
                .store
                .join(&restore.manifest.state.name)
                .display()
                .to_string(),
            restore_from: Some(name.to_owned()),
            ..VmSpec::default()
        };
        let rec = self.create(id, spec).await?;
        self.boot(&rec.id).await?;
        Ok(rec)
    }
}
