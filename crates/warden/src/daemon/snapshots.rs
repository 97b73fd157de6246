//! The daemon's snapshot store: `<state_dir>/snapshots/<name>/`, one directory of root-owned
//! read-only files and a manifest per snapshot (see [`crate::vm::snapshot`]).

use std::path::PathBuf;

use super::error::ManagerError;
use super::manager::Manager;
use crate::vm::snapshot::{read_manifest, Manifest, Restore};

/// The bytes of a snapshot's files (state, memory, drives).
pub fn size_bytes(m: &Manifest) -> u64 {
    [&m.state, &m.memory]
        .into_iter()
        .chain(m.drives.iter().map(|d| &d.file))
        .map(|f| f.len)
        .sum()
}

impl Manager {
    /// Where snapshot `name` lives. Names are checked like VM ids (letters, digits, `-`); a bad
    /// one is refused naming `field`, the request's field that carried it.
    pub(crate) fn snapshot_dir(&self, name: &str, field: &str) -> Result<PathBuf, ManagerError> {
        jail::JailId::new(name).map_err(|e| ManagerError::Invalid {
            field: field.into(),
            problem: format!("{name:?} {e}"),
        })?;
        Ok(self.cfg.state_dir.join("snapshots").join(name))
    }

    /// The snapshot `name`, checked against its manifest.
    pub(crate) async fn open_snapshot(&self, name: &str) -> Result<Restore, ManagerError> {
        let store = self.snapshot_dir(name, "snapshot")?;
        if !store.join(crate::vm::snapshot::MANIFEST).is_file() {
            return Err(ManagerError::NoSuchSnapshot {
                name: name.to_owned(),
            });
        }
        let dir = store.clone();
        let manifest = tokio::task::spawn_blocking(move || read_manifest(&dir)).await??;
        Ok(Restore { store, manifest })
    }

    /// A VM restored from a snapshot starts from it: its files, not an asset directory's.
    pub(crate) async fn restore_options(
        &self,
        spec: &crate::daemon::store::VmSpec,
        options: &mut crate::vm::config::VmOptions,
    ) -> Result<(), ManagerError> {
        if let Some(name) = &spec.restore_from {
            options.restore = Some(self.open_snapshot(name).await?);
            options.asset_dirs = None;
        }
        Ok(())
    }

    /// Every snapshot of the store, by name.
    pub async fn list_snapshots(&self) -> Result<Vec<(String, Manifest)>, ManagerError> {
        let root = self.cfg.state_dir.join("snapshots");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path().join(crate::vm::snapshot::MANIFEST);
            if let Some(m) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                out.push((name, m));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes snapshot `name` (VMs restored from it keep their own hard links and copies).
    pub async fn delete_snapshot(&self, name: &str) -> Result<(), ManagerError> {
        let store = self.snapshot_dir(name, "name")?;
        if !store.exists() {
            return Err(ManagerError::NoSuchSnapshot {
                name: name.to_owned(),
            });
        }
        tokio::task::spawn_blocking(move || {
            std::fs::remove_dir_all(&store).map_err(|source| ManagerError::Os {
                what: format!("removing the snapshot {}", store.display()),
                source,
            })
        })
        .await?
    }
}
