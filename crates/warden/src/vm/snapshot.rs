//! Snapshots of jailed VMs, and restores into new jails.
//!
//! [`VmHandle::snapshot`] pauses the VM, has Firecracker write a full snapshot into its chroot
//! (`/snapshot/vmstate`, `/snapshot/mem`), copies the VM's writable drives while it is still
//! paused (so they match the memory), and moves everything out of the jail into a store
//! directory of root-owned read-only files (see [`jail::snapshot`] for why nothing the jail user
//! wrote is trusted), with a [`Manifest`]. [`restore_vm`] plans a new jail whose staged files are
//! the snapshot's (the memory and state files hard-linked read-only, writable drives copied per
//! clone, each under the name the snapshot expects), starts the jailer and loads the snapshot
//! with `resume_vm`. Each clone gets its own id, jail, uid/gid and cgroups.
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use firecracker_api::{MemoryBackend, SnapshotCreateParams, SnapshotLoadParams, SnapshotType};
use jail::snapshot::{StoredFile, MEMORY_FILE, STATE_FILE};
use jail::spec::StageRequest;
use serde::{Deserialize, Serialize};

use super::config::{VmConfig, VmOptions};
use super::VmHandle;
use crate::Error;

/// The manifest's file name in a snapshot store.
pub const MANIFEST: &str = "manifest.json";

/// What a restore needs to know about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The Firecracker version that wrote it (a restore needs the same major.minor).
    pub firecracker_version: String,
    /// The VM it was taken from.
    pub source_vm: String,
    /// When, in ms since the epoch.
    pub created_at_unix_ms: u64,
    /// vCPUs.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// The microVM state file.
    pub state: StoredFile,
    /// The guest memory file.
    pub memory: StoredFile,
    /// The drives, under their staged names (`rootfs`, `drive1`, ...), which the state refers to.
    pub drives: Vec<SnapshotDrive>,
    /// Network interfaces the VM had.
    pub network_interfaces: Vec<String>,
    /// The guest's address, which every clone keeps (each in a namespace of its own).
    #[serde(default)]
    pub guest: Option<jail::net::GuestAddr>,
}

/// One drive of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDrive {
    /// The file in the store, and its staged name in every clone.
    pub file: StoredFile,
    /// Whether the VM may write it (each clone then gets a private copy).
    pub writable: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn os(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Os { what, source }
}

impl VmHandle {
    /// Takes a full snapshot into `store` (a new directory, made here with mode 0700), then
    /// resumes the VM (`resume`) or leaves it paused. On a failure the VM is resumed if it ran,
    /// and the partial store is removed.
    pub async fn snapshot(&self, store: &Path, resume: bool) -> Result<Manifest, Error> {
        let plan = &self.plan;
        if !plan.jailed {
            return Err(jail::SpecError::new(
                "jailer_mode",
                "snapshots are taken of jailed VMs only; start the VM with the jailer",
            )
            .into());
        }
        let info = self.client.instance_info().await?;
        let config = self.client.vm_config().await?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(store)
            .map_err(os(format!(
                "creating the snapshot store {}",
                store.display()
            )))?;
        let result = self.snapshot_into(store, &info.vmm_version, &config).await;
        let _ = jail::snapshot::remove(plan);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(store);
        }
        match &result {
            // Whatever failed after the pause, the VM runs on.
            Err(_) => {
                let _ = self.client.resume().await;
            }
            Ok(_) if resume => self.client.resume().await?,
            Ok(_) => {}
        }
        result
    }

    async fn snapshot_into(
        &self,
        store: &Path,
        version: &str,
        config: &firecracker_api::FullVmConfiguration,
    ) -> Result<Manifest, Error> {
        let plan = self.plan.clone();
        tokio::task::spawn_blocking(move || jail::snapshot::prepare(&plan))
            .await
            .map_err(|e| join_err(e, "preparing the snapshot directory"))??;
        self.client.pause().await?;
        self.client
            .create_snapshot(&SnapshotCreateParams {
                snapshot_path: format!("{}/{STATE_FILE}", jail::snapshot::DIR_IN_JAIL),
                mem_file_path: format!("{}/{MEMORY_FILE}", jail::snapshot::DIR_IN_JAIL),
                snapshot_type: Some(SnapshotType::Full),
            })
            .await?;
        // Still paused: the drives now match the memory.
        let (plan, dir) = (self.plan.clone(), store.to_owned());
        let (state, memory, drives) = tokio::task::spawn_blocking(move || {
            let state = jail::snapshot::collect(&plan, STATE_FILE, &dir)?;
            let memory = jail::snapshot::collect(&plan, MEMORY_FILE, &dir)?;
            let mut drives = Vec::new();
            for f in plan.staged.iter().filter(|f| !is_kernel(f)) {
                let name = f
                    .dest
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let src = std::fs::File::open(&f.dest).map_err(|source| {
                    jail::snapshot::SnapshotError::Io {
                        action: "open",
                        path: f.dest.clone(),
                        source,
                    }
                })?;
                drives.push(SnapshotDrive {
                    file: jail::snapshot::copy_into(src, &name, &dir)?,
                    writable: f.writable,
                });
            }
            Ok::<_, jail::snapshot::SnapshotError>((state, memory, drives))
        })
        .await
        .map_err(|e| join_err(e, "collecting the snapshot"))??;
        let manifest = Manifest {
            firecracker_version: version.to_owned(),
            source_vm: self.vm_id.clone(),
            created_at_unix_ms: now_ms(),
            vcpu_count: config.machine_config.as_ref().map_or(1, |m| m.vcpu_count),
            memory_mb: config.machine_config.as_ref().map_or(0, |m| m.mem_size_mib),
            state,
            memory,
            drives,
            network_interfaces: config
                .network_interfaces
                .iter()
                .flatten()
                .map(|n| n.iface_id.clone())
                .collect(),
            guest: self.plan.net.as_ref().and_then(|n| n.guest),
        };
        let path = store.join(MANIFEST);
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        std::fs::write(&path, text).map_err(os(format!("writing {}", path.display())))?;
        Ok(manifest)
    }
}

fn is_kernel(f: &jail::StagedFile) -> bool {
    f.dest.file_name().is_some_and(|n| n == "kernel")
}

fn join_err(e: tokio::task::JoinError, what: &str) -> Error {
    Error::Os {
        what: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl From<jail::snapshot::SnapshotError> for Error {
    fn from(e: jail::snapshot::SnapshotError) -> Self {
        Error::Snapshot(e)
    }
}

/// Reads a store's manifest (its files are checked against it by [`verify`] at each start).
pub fn read_manifest(store: &Path) -> Result<Manifest, Error> {
    let path = store.join(MANIFEST);
    let text = std::fs::read(&path).map_err(os(format!("reading {}", path.display())))?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
        jail::SpecError::new(
            "snapshot",
            format!("{} is not a warden snapshot manifest: {e}", path.display()),
        )
    })?;
    Ok(m)
}

/// Checks a store's files against its manifest's checksums; run once per start from it, just
/// before the files are staged.
pub fn verify(store: &Path, m: &Manifest) -> Result<(), Error> {
    for f in [&m.state, &m.memory]
        .into_iter()
        .chain(m.drives.iter().map(|d| &d.file))
    {
        let p = store.join(&f.name);
        if jail::snapshot::sha256_of(&p)? != f.sha256 {
            return Err(jail::SpecError::new(
                "snapshot",
                format!(
                    "{} does not match its checksum in the manifest; the snapshot is damaged",
                    p.display()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The files a restore stages: the state and memory (read-only, hard-linked from the store) and
/// every drive under the name the snapshot's state refers to.
pub(crate) fn restore_files(store: &Path, m: &Manifest) -> Vec<StageRequest> {
    let file = |name: &str, writable: bool, field: &str| StageRequest {
        source: store.join(name),
        name: name.to_owned(),
        writable,
        field: field.to_owned(),
        opened: None,
    };
    let mut files = vec![
        file(&m.state.name, false, "snapshot"),
        file(&m.memory.name, false, "snapshot"),
    ];
    files.extend(
        m.drives
            .iter()
            .map(|d| file(&d.file.name, d.writable, "snapshot")),
    );
    files
}

/// Loads the staged snapshot into a fresh Firecracker and resumes it.
pub(crate) async fn load(
    client: &firecracker_api::Client,
    plan: &jail::JailPlan,
    expected_version: &str,
) -> Result<(), LoadError> {
    let running = client.instance_info().await?.vmm_version;
    let major_minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if major_minor(&running) != major_minor(expected_version) {
        return Err(LoadError::Version {
            running,
            snapshot: expected_version.to_owned(),
        });
    }
    let path = |name: &str| {
        plan.path_in_jail(name)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    client
        .load_snapshot(&SnapshotLoadParams {
            snapshot_path: path(STATE_FILE),
            mem_backend: MemoryBackend {
                backend_type: "File".into(),
                backend_path: path(MEMORY_FILE),
            },
            enable_diff_snapshots: None,
            resume_vm: Some(true),
        })
        .await?;
    Ok(())
}

/// Loading a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Api(#[from] firecracker_api::Error),
    #[error("the snapshot was written by Firecracker {snapshot}, which this Firecracker ({running}) cannot load; restore it with Firecracker {snapshot}")]
    Version { running: String, snapshot: String },
}

/// Restores the snapshot in `store` into a new jailed VM `vm_id`, running. `options` are as for
/// [`super::start_vm`] (jailer, uid range, cgroups); its boot settings (boot args, drives) are
/// ignored: the snapshot has its own. A networked snapshot gets `tap0` in a namespace of the
/// clone's own, with the snapshot's guest address (network mode none; bridge mode is refused).
pub async fn restore_vm(store: &Path, vm_id: &str, options: &VmOptions) -> Result<VmHandle, Error> {
    let manifest = {
        let store = store.to_owned();
        tokio::task::spawn_blocking(move || read_manifest(&store))
            .await
            .map_err(|e| join_err(e, "reading the snapshot"))??
    };
    let (config, options) = restore_config(store, manifest, vm_id, options)?;
    super::start_vm(&config, &options).await
}

/// The config and options [`restore_vm`] starts a clone with: the snapshot's machine (vCPUs,
/// memory, network interfaces and guest address) and files, with `options`' jail settings.
/// [`super::plan_vm`] on them is the plan of the restore (as `warden plan --restore` prints).
pub fn restore_config(
    store: &Path,
    manifest: Manifest,
    vm_id: &str,
    options: &VmOptions,
) -> Result<(VmConfig, VmOptions), Error> {
    let networked = !manifest.network_interfaces.is_empty();
    if networked && options.network.mode == jail::net::NetMode::Bridge {
        // Firecracker's "network for clones": every clone has the snapshot's tap0 and guest
        // address, each in its own namespace; reaching each through the bridge needs NAT per
        // namespace, which warden does not do yet.
        return Err(jail::SpecError::new(
            "network.mode",
            "bridge mode cannot restore a networked snapshot yet (every clone keeps the same \
             guest address; reaching each needs NAT in its namespace): restore with network \
             mode none, where each clone gets tap0 in a namespace of its own",
        )
        .into());
    }
    let mut options = options.clone();
    if networked {
        options.network.guest = manifest.guest;
    }
    let config = VmConfig {
        vm_id: vm_id.to_owned(),
        vcpu_count: manifest.vcpu_count,
        memory_mb: manifest.memory_mb,
        // Not staged: the snapshot has the guest. Validation wants a path.
        kernel_path: store.join(&manifest.state.name).display().to_string(),
        rootfs_path: String::new(),
        enable_networking: networked,
    };
    options.restore = Some(Restore {
        store: store.to_owned(),
        manifest,
    });
    options.asset_dirs = None;
    Ok((config, options))
}

/// A restore in progress: where the snapshot is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// The store directory.
    pub store: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}
