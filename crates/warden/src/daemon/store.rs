//! The daemon's memory: one SQLite database (WAL) under the state directory with a row per VM.
//!
//! The manager writes the intent of each step before doing it (`booting` with the plan before
//! the jail is staged, `stopping` before the stop), so after a crash at any point the row says
//! what may exist on the host, and recovery can finish the job.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jail::JailPlan;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::state::VmState;

/// A VM's configuration as the API gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VmSpec {
    /// vCPUs.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Kernel image (canonical path inside an asset directory).
    pub kernel_path: String,
    /// Root filesystem image, or empty.
    pub rootfs_path: String,
    /// Kernel command line, or empty for the default.
    pub boot_args: String,
    /// Extra drives: (path, read-only).
    pub drives: Vec<(String, bool)>,
    /// Network device wanted.
    pub enable_networking: bool,
    /// cgroup memory cap in MiB.
    pub memory_limit_mib: Option<u32>,
    /// CPU cap in percent of one core.
    pub cpu_quota_percent: Option<u32>,
    /// Caller's labels.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Rate limiter for traffic into the guest.
    #[serde(default)]
    pub net_rx_rate_limiter: Option<firecracker_api::RateLimiter>,
    /// Rate limiter for traffic from the guest.
    #[serde(default)]
    pub net_tx_rate_limiter: Option<firecracker_api::RateLimiter>,
    /// Rate limiter for every drive.
    #[serde(default)]
    pub drive_rate_limiter: Option<firecracker_api::RateLimiter>,
    /// CPUs to pin to (`0-3,5`); `None` takes the daemon's `cpuset`.
    #[serde(default)]
    pub cpuset: Option<String>,
    /// Disk I/O limits; each unset one takes the daemon's.
    #[serde(default)]
    pub io_limits: jail::cgroup::disk::IoLimits,
    /// The caller's customer, kept and returned as given.
    #[serde(default)]
    pub customer_id: String,
    /// Started from this snapshot of the daemon's store (RestoreVm) instead of booted.
    #[serde(default)]
    pub restore_from: Option<String>,
    /// Boot with Firecracker's dirty-page tracking, which diff snapshots need.
    #[serde(default)]
    pub track_dirty_pages: bool,
}

/// Why a VM ended, machine-readable: stored and answered as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// The guest powered off (Firecracker exited with status 0).
    GuestPowerOff,
    /// Stopped by its owner through the library.
    Stopped,
    /// Killed by SIGKILL from outside.
    Killed,
    /// Killed by the cgroup's OOM killer.
    OomKilled,
    /// Ended by another signal.
    Signaled,
    /// Firecracker exited with an error status.
    FirecrackerError,
    /// Ended, and nothing says why.
    Unknown,
    /// The boot failed; the detail says why.
    BootFailed,
    /// ShutdownVm (or a stop finished after a daemon restart).
    StoppedByApi,
    /// Stopped for RebootVm.
    Rebooted,
    /// Stopped because the daemon exited with `stop_vms_on_exit`.
    DaemonExit,
    /// Ended by recovery after a daemon restart (a boot that was not confirmed, a lost record).
    DaemonRestart,
    /// Its API did not answer after a daemon restart, so it was ended.
    Unresponsive,
}

impl ExitCause {
    /// Every cause.
    pub const ALL: [ExitCause; 13] = [
        Self::GuestPowerOff,
        Self::Stopped,
        Self::Killed,
        Self::OomKilled,
        Self::Signaled,
        Self::FirecrackerError,
        Self::Unknown,
        Self::BootFailed,
        Self::StoppedByApi,
        Self::Rebooted,
        Self::DaemonExit,
        Self::DaemonRestart,
        Self::Unresponsive,
    ];

    /// The snake_case name, as stored and on the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GuestPowerOff => "guest_power_off",
            Self::Stopped => "stopped",
            Self::Killed => "killed",
            Self::OomKilled => "oom_killed",
            Self::Signaled => "signaled",
            Self::FirecrackerError => "firecracker_error",
            Self::Unknown => "unknown",
            Self::BootFailed => "boot_failed",
            Self::StoppedByApi => "stopped_by_api",
            Self::Rebooted => "rebooted",
            Self::DaemonExit => "daemon_exit",
            Self::DaemonRestart => "daemon_restart",
            Self::Unresponsive => "unresponsive",
        }
    }
}

impl std::fmt::Display for ExitCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Machine-readable reason.
    pub reason: ExitCause,
    /// For people.
    pub detail: String,
    /// When, in ms since the epoch.
    pub at_unix_ms: i64,
}

/// One VM's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// The id.
    pub id: String,
    /// Its state.
    pub state: VmState,
    /// Its configuration.
    pub spec: VmSpec,
    /// The plan of its current (or last) jail; paths to clean come from here.
    pub plan: Option<JailPlan>,
    /// Firecracker's pid while it may run.
    pub pid: Option<u32>,
    /// Firecracker's start time (clock ticks since boot), naming the process with the pid.
    pub start_time: Option<u64>,
    /// Network namespace name, when it has one.
    pub netns: Option<String>,
    /// TAP device name, when it has one.
    pub tap: Option<String>,
    /// The guest's address from the pool (bridge mode); kept until the VM is deleted.
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
    /// Its own uid and gid (the same number), leased host-wide from `jail_id_range` at its
    /// first boot and kept until it is deleted.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Serial console log file.
    pub serial_path: Option<PathBuf>,
    /// Why it last ended.
    pub exit: Option<ExitRecord>,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

impl VmRecord {
    /// The id its host state is named by (chroot, cgroups, owner record): its own, or, for a VM
    /// started in a warm jail of the pool, the jail's (its plan's id).
    pub fn jail_id(&self) -> &str {
        self.plan.as_ref().map_or(&self.id, |p| &p.id)
    }
}

/// A database error, naming the database.
#[derive(Debug, thiserror::Error)]
#[error("state database {path}: {what}")]
pub struct StoreError {
    /// The database file.
    pub path: PathBuf,
    /// What was being done.
    pub what: String,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The VM table. Cheap to clone; calls run on the blocking pool. Holds an exclusive lock on
/// the state directory for as long as it lives, so two daemons never share one state.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    _lock: Arc<nix::fcntl::Flock<std::fs::File>>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating) `<state_dir>/warden.db`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("warden.db");
        let err = |what: &str| {
            let path = path.clone();
            let what = what.to_owned();
            move |e: rusqlite::Error| StoreError {
                path,
                what,
                source: Box::new(e),
            }
        };
        std::fs::create_dir_all(state_dir).map_err(|e| StoreError {
            path: path.clone(),
            what: format!("creating the state directory {}", state_dir.display()),
            source: Box::new(e),
        })?;
        let lock_path = state_dir.join("warden.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError {
                path: lock_path.clone(),
                what: "opening the lock file".into(),
                source: Box::new(e),
            })?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| StoreError {
                path: lock_path.clone(),
                what: "locking the state directory (is another `warden serve` or `warden gc` using it?)".into(),
                source: Box::new(e),
            })?;
        let conn = Connection::open(&path).map_err(err("opening"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS vms (
                 id TEXT PRIMARY KEY,
                 state TEXT NOT NULL,
                 record TEXT NOT NULL,
                 updated_at INTEGER NOT NULL
             );",
        )
        .map_err(err("creating the schema"))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
            _lock: Arc::new(lock),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn run<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnOnce(&Connection) -> Result<T, Box<dyn std::error::Error + Send + Sync>>
            + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let what2 = what.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap()))
            .await
            .map_err(|e| StoreError {
                path: path.clone(),
                what: what2,
                source: Box::new(e),
            })?
            .map_err(|source| StoreError { path, what, source })
    }

    /// Inserts a new record; `Ok(false)` if the id exists.
    pub async fn insert(&self, rec: &VmRecord) -> Result<bool, StoreError> {
        let (id, state, json, at) = (
            rec.id.clone(),
            rec.state.as_str(),
            serde_json::to_string(rec).unwrap(),
            rec.updated_at,
        );
        self.run(format!("inserting VM {id}"), move |c| {
            // Cached statements: a boot writes its row several times.
            let n = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO vms (id, state, record, updated_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, state, json, at])?;
            Ok(n == 1)
        })
        .await
    }

    /// Writes a record (which must exist).
    pub async fn put(&self, rec: &VmRecord) -> Result<(), StoreError> {
        let (id, state, json, at) = (
            rec.id.clone(),
            rec.state.as_str(),
            serde_json::to_string(rec).unwrap(),
            rec.updated_at,
        );
        self.run(format!("updating VM {id}"), move |c| {
            c.prepare_cached(
                "UPDATE vms SET state = ?2, record = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, state, json, at])?;
            Ok(())
        })
        .await
    }

    /// Reads one record.
    pub async fn get(&self, id: &str) -> Result<Option<VmRecord>, StoreError> {
        let id = id.to_owned();
        self.run(format!("reading VM {id}"), move |c| {
            let json: Option<String> = c
                .query_row("SELECT record FROM vms WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(match json {
                Some(j) => Some(serde_json::from_str(&j)?),
                None => None,
            })
        })
        .await
    }

    /// Every record, by id.
    pub async fn list(&self) -> Result<Vec<VmRecord>, StoreError> {
        self.run("listing VMs".into(), |c| {
            let mut stmt = c.prepare("SELECT record FROM vms ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for j in rows {
                out.push(serde_json::from_str(&j?)?);
            }
            Ok(out)
        })
        .await
    }

    /// Removes a record.
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(format!("deleting VM {id}"), move |c| {
            c.prepare_cached("DELETE FROM vms WHERE id = ?1")?
                .execute(params![id])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_causes_are_stored_and_answered_by_one_name() {
        for c in ExitCause::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<ExitCause>(&json).unwrap(), c);
        }
    }

    fn rec(id: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            state: VmState::Created,
            spec: VmSpec {
                vcpu_count: 1,
                memory_mib: 128,
                kernel_path: "/k".into(),
                ..Default::default()
            },
            plan: None,
            pid: None,
            start_time: None,
            netns: None,
            tap: None,
            address: None,
            uid: None,
            serial_path: None,
            exit: None,
            created_at: now_ms(),
            updated_at: now_ms(),
        }
    }

    #[test]
    fn one_state_directory_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let second = Store::open(dir.path())
            .err()
            .expect("a second owner is refused");
        assert!(
            second.to_string().contains("another `warden serve`"),
            "{second}"
        );
        drop(first);
        Store::open(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn records_survive_reopening_and_ids_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.insert(&rec("a")).await.unwrap());
        assert!(!store.insert(&rec("a")).await.unwrap(), "duplicate id");
        let mut r = rec("a");
        r.state = VmState::Running;
        r.pid = Some(42);
        store.put(&r).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get("a").await.unwrap().unwrap().pid, Some(42));
        assert_eq!(store.list().await.unwrap().len(), 1);
        store.delete("a").await.unwrap();
        assert!(store.get("a").await.unwrap().is_none());
        let mode: String = store
            .conn
            .lock()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
