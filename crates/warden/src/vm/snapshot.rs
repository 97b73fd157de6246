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
    /// Full, or a diff merged onto its parent (the memory file is complete either way).
    #[serde(default)]
    pub kind: SnapshotKind,
    /// A diff's parent: the store's name (its directory beside this one; the snapshot's name
    /// in the daemon's store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Bytes of guest memory a diff carried (the pages dirtied since its parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_bytes: Option<u64>,
}

/// How a snapshot was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Firecracker wrote all of guest memory.
    #[default]
    Full,
    /// Firecracker wrote the pages dirtied since the parent, and warden merged them onto a copy
    /// of the parent's memory.
    Diff,
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
    /// and nothing is left at `store`.
    ///
    /// The store is written as `<store>.partial-<pid>` beside it and renamed into place only
    /// once its manifest is written, so a process killed mid-way leaves no store that looks
    /// complete (see [`partial_dir`] and [`remove_partials`]).
    pub async fn snapshot(&self, store: &Path, resume: bool) -> Result<Manifest, Error> {
        self.take_snapshot(store, None, resume).await
    }

    /// Takes a diff snapshot into `store`, on top of `parent`: the store of the last snapshot
    /// taken of this VM through this handle (full or diff). The VM must have been booted with
    /// [`VmOptions::track_dirty_pages`].
    ///
    /// Firecracker's diff memory file holds only the pages dirtied since the VM's previous
    /// snapshot of any kind (each snapshot resets its dirty bitmap), so it is meaningless on
    /// its own and wrong on top of any other base. Rather than keep chains of diffs that every
    /// restore would have to replay (and that break when one link is deleted), warden merges
    /// the diff at snapshot time into a complete memory file in the new store: a reflink (or
    /// copy) of the parent's memory with the diff's data extents written over it. The store is
    /// then as self-contained as a full one: a restore loads it the same way, and the parent may
    /// be deleted later. What a diff saves is Firecracker's write (only the dirty pages) and,
    /// on a filesystem with reflinks, the copy of the clean ones. The merge runs while the VM
    /// is still paused, like the copy of its drives, which must match the memory.
    pub async fn snapshot_diff(
        &self,
        store: &Path,
        parent: &Path,
        resume: bool,
    ) -> Result<Manifest, Error> {
        self.take_snapshot(store, Some(parent), resume).await
    }

    async fn take_snapshot(
        &self,
        store: &Path,
        parent: Option<&Path>,
        resume: bool,
    ) -> Result<Manifest, Error> {
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
        let parent = match parent {
            None => None,
            Some(p) => Some(self.diff_parent(p, &info.vmm_version, &config).await?),
        };
        if std::fs::symlink_metadata(store).is_ok() {
            return Err(Error::Os {
                what: format!("creating the snapshot store {}", store.display()),
                source: std::io::ErrorKind::AlreadyExists.into(),
            });
        }
        let memory = u64::from(config.machine_config.as_ref().map_or(0, |m| m.mem_size_mib)) << 20;
        let (plan2, store2) = (plan.clone(), store.to_owned());
        tokio::task::spawn_blocking(move || check_snapshot_space(&plan2, &store2, memory))
            .await
            .map_err(|e| join_err(e, "checking free space for the snapshot"))??;
        let partial = partial_dir(store);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&partial)
            .map_err(os(format!(
                "creating the snapshot store {}",
                partial.display()
            )))?;
        // From the first snapshot call on, Firecracker may have reset its dirty bitmap: a
        // failure leaves no parent a diff could name.
        *self.last_snapshot.lock().expect("not poisoned") = None;
        let result = self
            .snapshot_into(&partial, &info.vmm_version, &config, parent.as_ref())
            .await;
        let result = match result {
            Ok(m) => publish(&partial, store).map(|()| m),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        let resumed = match &result {
            // Whatever failed after the pause, the VM runs on.
            Err(_) => {
                let _ = self.client.resume().await;
                Ok(())
            }
            Ok(_) if resume => self.client.resume().await,
            Ok(_) => Ok(()),
        };
        // Only now: a daemon that dies before this point leaves the directory, which tells its
        // successor to resume the VM (see the daemon's recovery).
        let _ = jail::snapshot::remove(plan);
        resumed?;
        if result.is_ok() {
            *self.last_snapshot.lock().expect("not poisoned") = Some(store.to_owned());
        }
        result
    }

    /// Checks that `parent` is a snapshot a diff of this VM can go on top of, and returns it.
    async fn diff_parent(
        &self,
        parent: &Path,
        running: &str,
        config: &firecracker_api::FullVmConfiguration,
    ) -> Result<Restore, Error> {
        let tracking = config
            .machine_config
            .as_ref()
            .and_then(|m| m.track_dirty_pages)
            .unwrap_or(false);
        let last = self.last_snapshot.lock().expect("not poisoned").clone();
        let (p, vm_id, running) = (parent.to_owned(), self.vm_id.clone(), running.to_owned());
        tokio::task::spawn_blocking(move || {
            let manifest = p
                .join(MANIFEST)
                .is_file()
                .then(|| read_manifest(&p))
                .transpose()?;
            let same = |a: &Path, b: &Path| {
                std::fs::canonicalize(a)
                    .ok()
                    .zip(std::fs::canonicalize(b).ok())
                    .is_some_and(|(a, b)| a == b)
            };
            let is_last = last.as_deref().is_some_and(|l| same(l, &p));
            check_diff_parent(&DiffCheck {
                vm_id: &vm_id,
                running: &running,
                tracking,
                last: last.as_deref(),
                is_last,
                parent: &p,
                manifest: manifest.as_ref(),
            })?;
            let manifest = manifest.expect("checked");
            // A damaged parent would make a damaged child.
            let mem = p.join(&manifest.memory.name);
            if jail::snapshot::sha256_of(&mem)? != manifest.memory.sha256 {
                return Err(Error::DiffRefused {
                    field: "parent",
                    problem: format!(
                        "{} does not match its checksum in the manifest; the parent is damaged: \
                         take a full snapshot instead",
                        mem.display()
                    ),
                });
            }
            Ok(Restore { store: p, manifest })
        })
        .await
        .map_err(|e| join_err(e, "checking the diff snapshot's parent"))?
    }

    async fn snapshot_into(
        &self,
        store: &Path,
        version: &str,
        config: &firecracker_api::FullVmConfiguration,
        parent: Option<&Restore>,
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
                snapshot_type: Some(match parent {
                    None => SnapshotType::Full,
                    Some(_) => SnapshotType::Diff,
                }),
            })
            .await?;
        // Still paused: the drives now match the memory.
        let (plan, dir) = (self.plan.clone(), store.to_owned());
        let parent_memory = parent.map(|p| p.store.join(&p.manifest.memory.name));
        let (state, memory, diff_bytes, drives) = tokio::task::spawn_blocking(move || {
            let state = jail::snapshot::collect(&plan, STATE_FILE, &dir)?;
            let (memory, diff_bytes) = match &parent_memory {
                None => (jail::snapshot::collect(&plan, MEMORY_FILE, &dir)?, None),
                Some(base) => {
                    let m =
                        jail::snapshot::merge_diff(&plan, MEMORY_FILE, base, MEMORY_FILE, &dir)?;
                    (m.file, Some(m.diff_bytes))
                }
            };
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
            Ok::<_, jail::snapshot::SnapshotError>((state, memory, diff_bytes, drives))
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
            kind: match parent {
                None => SnapshotKind::Full,
                Some(_) => SnapshotKind::Diff,
            },
            parent: parent.map(|p| store_name(&p.store)),
            diff_bytes,
        };
        let path = store.join(MANIFEST);
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            std::io::Write::write_all(&mut f, &text)?;
            f.sync_all()
        };
        write().map_err(os(format!("writing {}", path.display())))?;
        Ok(manifest)
    }
}

/// A store's name: its directory's last component (a snapshot's name in the daemon's store).
fn store_name(store: &Path) -> String {
    store.file_name().map_or_else(
        || store.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Where a store is written before it is complete: `<store>.partial-<pid>-<n>` beside it, `n`
/// counting this process's snapshots (two snapshots racing for one name never share a partial
/// store; the rename into place lets only one win). A name with a `.` is never a snapshot
/// name the daemon accepts, so a leftover is never listed or restored; [`remove_partials`]
/// removes leftovers of processes that are gone.
pub fn partial_dir(store: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}-{n}", std::process::id()));
    store.with_file_name(name)
}

/// Whether a partial store of `store` (see [`partial_dir`]) exists.
pub fn partial_exists(store: &Path) -> bool {
    let (Some(dir), Some(name)) = (store.parent(), store.file_name()) else {
        return false;
    };
    let prefix = format!("{}.partial-", name.to_string_lossy());
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
}

/// Removes the partial stores (see [`partial_dir`]) under `dir` whose writer is no longer
/// running (after a crash), and returns their paths. Meant for start-up, before this process
/// takes any snapshot: a partial store named with this process's own pid is then a leftover of
/// an earlier process that had the same pid, and is removed too.
pub fn remove_partials(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, tail)) = name.rsplit_once(".partial-") else {
            continue;
        };
        let pid = tail.split('-').next().unwrap_or_default();
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Renames the complete `partial` store to `store`, refusing to replace anything there, and
/// makes the rename durable.
fn publish(partial: &Path, store: &Path) -> Result<(), Error> {
    let fail = || {
        format!(
            "moving the snapshot {} into place at {}",
            partial.display(),
            store.display()
        )
    };
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        partial,
        rustix::fs::CWD,
        store,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(|e| Error::Os {
        what: fail(),
        source: e.into(),
    })?;
    if let Some(dir) = store.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Slack for the state file and the manifest, which are small.
const STATE_SLACK: u64 = 8 << 20;

/// Refuses a snapshot that would not fit: Firecracker writes the memory (at most guest memory;
/// a diff less) into the chroot, then warden copies it, the state and every drive into the
/// store, before the chroot's copy is removed. When both are on one filesystem, both copies
/// are there at once.
fn check_snapshot_space(plan: &jail::JailPlan, store: &Path, memory: u64) -> Result<(), Error> {
    let drives: u64 = plan
        .staged
        .iter()
        .filter(|f| !is_kernel(f))
        .filter_map(|f| std::fs::metadata(&f.dest).ok())
        .map(|m| m.len())
        .sum();
    let chroot = jail::snapshot::host_dir(plan);
    let same = jail::snapshot::device_of(&chroot)? == jail::snapshot::device_of(store)?;
    for need in snapshot_space_needs(memory, drives, same) {
        let path = match need.place {
            Place::Chroot => &chroot,
            Place::Store => store,
        };
        let free = jail::snapshot::free_bytes(path)?;
        if let Some(short) = jail::snapshot::shortfall(free, need.bytes) {
            return Err(Error::NoSpace {
                what: "the snapshot".into(),
                path: path.to_owned(),
                free,
                needed: free + short,
                detail: format!(
                    "{}, and a {} MiB margin",
                    need.detail,
                    mib(jail::snapshot::margin(need.bytes))
                ),
                fix: format!(
                    "free {} MiB there, or keep snapshots on a larger filesystem (the daemon's \
                     state_dir; the chroot base for the chroot's copy)",
                    short.div_ceil(1 << 20)
                ),
            });
        }
    }
    Ok(())
}

/// Where a snapshot writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The VM's chroot, where Firecracker writes.
    Chroot,
    /// The store.
    Store,
}

/// Bytes a snapshot needs on one filesystem, and of what.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SpaceNeed {
    place: Place,
    bytes: u64,
    detail: String,
}

fn mib(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

/// The free space a snapshot of `memory` bytes of guest memory and `drives` bytes of drives
/// needs, per filesystem (`same`: the chroot and the store share one).
fn snapshot_space_needs(memory: u64, drives: u64, same: bool) -> Vec<SpaceNeed> {
    let store = memory + drives + STATE_SLACK;
    if same {
        vec![SpaceNeed {
            place: Place::Store,
            bytes: store + memory + STATE_SLACK,
            detail: format!(
                "guest memory {} MiB twice (Firecracker's file in the chroot, then the store's \
                 copy) and drives {} MiB",
                mib(memory),
                mib(drives)
            ),
        }]
    } else {
        vec![
            SpaceNeed {
                place: Place::Chroot,
                bytes: memory + STATE_SLACK,
                detail: format!("guest memory {} MiB, written by Firecracker", mib(memory)),
            },
            SpaceNeed {
                place: Place::Store,
                bytes: store,
                detail: format!(
                    "guest memory {} MiB and drives {} MiB",
                    mib(memory),
                    mib(drives)
                ),
            },
        ]
    }
}

/// Refuses a restore whose per-clone copies (writable drives, and anything else staging
/// cannot hard-link) would not fit on the chroot base's filesystem, with the figure. Staging
/// checks each file too, but only one at a time.
pub(crate) fn check_restore_space(plan: &jail::JailPlan) -> Result<(), Error> {
    let copies: Vec<(String, u64)> = plan
        .staged
        .iter()
        .filter(|f| f.method == jail::plan::StageMethod::Copy)
        .filter_map(|f| {
            let name = f.dest.file_name()?.to_string_lossy().into_owned();
            Some((name, f.file.as_ref()?.meta.allocated))
        })
        .collect();
    let need: u64 = copies.iter().map(|(_, b)| b).sum();
    if need == 0 {
        return Ok(());
    }
    let free = jail::snapshot::free_bytes(&plan.root_dir)?;
    match jail::snapshot::shortfall(free, need) {
        None => Ok(()),
        Some(short) => Err(Error::NoSpace {
            what: format!("restoring VM {}", plan.id),
            path: plan.root_dir.clone(),
            free,
            needed: free + short,
            detail: format!(
                "the clone's own copies: {}, and a {} MiB margin",
                copies
                    .iter()
                    .map(|(n, b)| format!("{n} {} MiB", mib(*b)))
                    .collect::<Vec<_>>()
                    .join(", "),
                mib(jail::snapshot::margin(need))
            ),
            fix: format!(
                "free {} MiB on the chroot base's filesystem, or restore fewer clones",
                mib(short)
            ),
        }),
    }
}

/// What [`check_diff_parent`] looks at.
struct DiffCheck<'a> {
    vm_id: &'a str,
    /// The Firecracker version the VM runs.
    running: &'a str,
    /// Whether the VM was booted with `track_dirty_pages`.
    tracking: bool,
    /// The VM's last snapshot through this handle.
    last: Option<&'a Path>,
    /// Whether `parent` is that one.
    is_last: bool,
    parent: &'a Path,
    /// The parent's manifest, if it has one.
    manifest: Option<&'a Manifest>,
}

/// The rules a diff snapshot's parent must follow (Firecracker's, and a merge's).
fn check_diff_parent(c: &DiffCheck) -> Result<(), Error> {
    let refuse = |field, problem: String| Err(Error::DiffRefused { field, problem });
    let (vm, p) = (c.vm_id, c.parent.display());
    if !c.tracking {
        return refuse(
            "track_dirty_pages",
            format!(
                "VM {vm} was not booted with track_dirty_pages, so Firecracker does not know \
                 which pages changed; boot it with track_dirty_pages on (warden vm create \
                 --track-dirty-pages) to take diff snapshots, or take a full snapshot"
            ),
        );
    }
    let Some(m) = c.manifest else {
        return refuse(
            "parent",
            format!(
                "there is no snapshot at {p}; name an earlier snapshot of VM {vm} as the parent"
            ),
        );
    };
    if m.source_vm != vm {
        return refuse(
            "parent",
            format!(
                "{p} is a snapshot of VM {}, not of {vm}; a diff only applies on top of a \
                 snapshot of the same VM",
                m.source_vm
            ),
        );
    }
    if m.firecracker_version != c.running {
        return refuse(
            "firecracker_version",
            format!(
                "{p} was written by Firecracker {}, and VM {vm} runs Firecracker {}; take a full \
                 snapshot instead",
                m.firecracker_version, c.running
            ),
        );
    }
    match c.last {
        None => refuse(
            "parent",
            format!(
                "no snapshot of VM {vm} was taken by this process since the VM started (or was \
                 re-attached, or since a snapshot failed), so there is nothing a diff could go on \
                 top of; take a full snapshot first"
            ),
        ),
        Some(last) if !c.is_last => refuse(
            "parent",
            format!(
                "{p} is not the last snapshot of VM {vm} ({} is): Firecracker's diff holds only \
                 the pages dirtied since the last snapshot; name that one as the parent, or take \
                 a full snapshot",
                last.display()
            ),
        ),
        Some(_) => Ok(()),
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
        let meta = std::fs::metadata(&p).map_err(os(format!("inspecting {}", p.display())))?;
        let len = meta.len();
        if len != f.len {
            return Err(jail::SpecError::new(
                "snapshot",
                format!(
                    "{} is {len} bytes, the manifest says {}; the snapshot is truncated or \
                     damaged: take it again",
                    p.display(),
                    f.len
                ),
            )
            .into());
        }
        let seal = Seal::of(&meta, &f.sha256);
        if verified().lock().unwrap().get(&p) == Some(&seal) {
            continue;
        }
        if jail::snapshot::sha256_of(&p)? != f.sha256 {
            return Err(jail::SpecError::new(
                "snapshot",
                format!(
                    "{} does not match its checksum in the manifest; the snapshot is damaged: \
                     take it again",
                    p.display()
                ),
            )
            .into());
        }
        verified().lock().unwrap().insert(p, seal);
    }
    Ok(())
}

/// What a file was when its checksum last matched, in this process: hashing a 128 MiB memory
/// file took about 200 ms of every restore, and 50 clones of one snapshot hashed it 50 times.
/// A store's files are root's, mode 0444, in a 0700 directory: no jail user can write them, and
/// any write or replacement changes the inode, the length or the modification time, so a file
/// whose seal is unchanged is the file that was hashed. (The change time is no use here: every
/// clone's hard link to the memory file moves it.) Only root could write a file and then put
/// its mtime back; root is trusted. Each daemon start hashes each file once again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seal {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    sha256: String,
}

impl Seal {
    fn of(meta: &std::fs::Metadata, sha256: &str) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            sha256: sha256.to_owned(),
        }
    }
}

fn verified() -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, Seal>> {
    static VERIFIED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, Seal>>,
    > = std::sync::OnceLock::new();
    VERIFIED.get_or_init(Default::default)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_file_is_hashed_once_and_a_changed_one_is_refused_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let stored = |name: &str, data: &[u8]| {
            std::fs::write(dir.path().join(name), data).unwrap();
            StoredFile {
                name: name.into(),
                len: data.len() as u64,
                sha256: jail::snapshot::sha256_of(&dir.path().join(name)).unwrap(),
            }
        };
        let m = Manifest {
            firecracker_version: "1.12.1".into(),
            source_vm: "v".into(),
            created_at_unix_ms: 0,
            vcpu_count: 1,
            memory_mb: 128,
            state: stored("vmstate", b"state"),
            memory: stored("mem", &[7u8; 8192]),
            drives: vec![],
            network_interfaces: vec![],
            guest: None,
            kind: Default::default(),
            parent: None,
            diff_bytes: None,
        };
        verify(dir.path(), &m).unwrap();
        let mem = dir.path().join("mem");
        assert!(verified().lock().unwrap().contains_key(&mem));
        verify(dir.path(), &m).unwrap();
        // A byte changed in place, same length: the seal no longer matches, the hash is redone.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut data = std::fs::read(&mem).unwrap();
        data[100] = 8;
        std::fs::write(&mem, &data).unwrap();
        let e = verify(dir.path(), &m).unwrap_err().to_string();
        assert!(e.contains("does not match its checksum"), "{e}");
        // A file replaced by another of the same bytes and times is another inode.
        let copy = dir.path().join("mem2");
        std::fs::write(&copy, [7u8; 8192]).unwrap();
        std::fs::rename(&copy, &mem).unwrap();
        verify(dir.path(), &m).unwrap();
    }

    fn manifest(vm: &str, version: &str) -> Manifest {
        let f = |name: &str| StoredFile {
            name: name.into(),
            len: 1,
            sha256: String::new(),
        };
        Manifest {
            firecracker_version: version.into(),
            source_vm: vm.into(),
            created_at_unix_ms: 0,
            vcpu_count: 1,
            memory_mb: 128,
            state: f(STATE_FILE),
            memory: f(MEMORY_FILE),
            drives: Vec::new(),
            network_interfaces: Vec::new(),
            guest: None,
            kind: SnapshotKind::Full,
            parent: None,
            diff_bytes: None,
        }
    }

    fn check(m: Option<&Manifest>, tracking: bool, last: Option<&Path>, is_last: bool) -> String {
        match check_diff_parent(&DiffCheck {
            vm_id: "vm-a",
            running: "1.12.1",
            tracking,
            last,
            is_last,
            parent: Path::new("/s/p"),
            manifest: m,
        }) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_diff_goes_only_on_top_of_the_last_snapshot_of_the_same_tracking_vm() {
        let last = Some(Path::new("/s/p"));
        let ours = manifest("vm-a", "1.12.1");
        assert_eq!(check(Some(&ours), true, last, true), "ok");

        let e = check(Some(&ours), false, last, true);
        assert!(
            e.contains("(track_dirty_pages)") && e.contains("--track-dirty-pages"),
            "{e}"
        );
        let e = check(None, true, last, true);
        assert!(
            e.contains("(parent)") && e.contains("no snapshot at /s/p"),
            "{e}"
        );
        let e = check(Some(&manifest("vm-b", "1.12.1")), true, last, true);
        assert!(
            e.contains("(parent)") && e.contains("VM vm-b, not of vm-a"),
            "{e}"
        );
        let e = check(Some(&manifest("vm-a", "1.11.0")), true, last, true);
        assert!(
            e.contains("(firecracker_version)") && e.contains("1.11.0"),
            "{e}"
        );
        assert!(e.contains("take a full snapshot"), "{e}");
        let e = check(Some(&ours), true, None, false);
        assert!(e.contains("take a full snapshot first"), "{e}");
        let e = check(Some(&ours), true, Some(Path::new("/s/newer")), false);
        assert!(
            e.contains("/s/newer is") && e.contains("name that one"),
            "{e}"
        );
    }

    #[test]
    fn a_snapshot_needs_memory_twice_on_one_filesystem_and_once_on_each_of_two() {
        const MIB: u64 = 1 << 20;
        let one = snapshot_space_needs(128 * MIB, 10 * MIB, true);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].place, Place::Store);
        assert_eq!(one[0].bytes, (256 + 10) * MIB + 2 * STATE_SLACK);
        assert!(one[0].detail.contains("128 MiB twice"), "{}", one[0].detail);
        let two = snapshot_space_needs(128 * MIB, 10 * MIB, false);
        assert_eq!(
            two.iter().map(|n| (n.place, n.bytes)).collect::<Vec<_>>(),
            [
                (Place::Chroot, 128 * MIB + STATE_SLACK),
                (Place::Store, 138 * MIB + STATE_SLACK)
            ]
        );
    }

    #[test]
    fn a_manifest_without_kind_is_a_full_snapshot() {
        let mut v = serde_json::to_value(manifest("vm-a", "1.12.1")).unwrap();
        assert_eq!(v["kind"], "full");
        assert!(v.get("parent").is_none());
        v.as_object_mut().unwrap().remove("kind");
        let m: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(m.kind, SnapshotKind::Full);
    }

    #[test]
    fn a_partial_store_sits_beside_the_store_and_is_removed_once_its_writer_is_gone() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("snap1");
        let ours = partial_dir(&store);
        assert_eq!(ours.parent(), Some(t.path()));
        assert!(ours
            .to_string_lossy()
            .contains(&format!("snap1.partial-{}-", std::process::id())));
        assert_ne!(partial_dir(&store), ours, "each snapshot has its own");
        // A writer that is gone (pid 0 is never a process), one still running (pid 1), and
        // one with our own pid: at start-up, a leftover of an earlier process.
        let dead = t.path().join("snap2.partial-0-7");
        let running = t.path().join("snap3.partial-1");
        for d in [&ours, &dead, &running, &store] {
            std::fs::create_dir(d).unwrap();
        }
        let mut removed = remove_partials(t.path());
        removed.sort();
        assert_eq!(removed, vec![ours.clone(), dead.clone()]);
        assert!(!dead.exists() && !ours.exists());
        assert!(running.exists() && store.exists());
    }
}
