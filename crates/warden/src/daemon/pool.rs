//! The warm pool: `pool_size` warm jails ([`crate::vm::warm`]) kept ready by one background
//! task, so a first boot skips the jailer's start (its exec, the copy of Firecracker, the API
//! socket coming up).
//!
//! - **Shape.** Each jail is made with the daemon's settings for a VM of `pool_memory_mib`
//!   without networking and without per-VM pinning or I/O limits (its own uid leased from `jail_id_range`, its own
//!   namespace when `netns` is on). A boot takes one only if the VM's plan in that jail differs
//!   in nothing but its files and cgroup values ([`jail::warm::fits`]); otherwise, and when the
//!   pool is empty, it takes the normal path.
//! - **Names.** A jail is `pool-<16 hex digits>` on the host, and keeps that name when a VM
//!   takes it: the VM's record points at it through its plan ([`super::store::VmRecord::jail_id`]),
//!   its uid lease is passed to the VM, its console file stays where the jail put it.
//! - **Ownership.** Every jail has this daemon's owner record from the start. A jail nobody
//!   took is in no VM record, so after a daemon crash recovery removes it as an orphan (with its
//!   Firecracker, cgroups and namespace) and releases its uid; the refill then makes new ones.
//!   At a clean exit the daemon ends and removes them itself.
//! - **Refill.** One jail at a time, in the background, after every take and at start; a failure
//!   is logged and retried with a growing pause (at most 30 s), never in a hot loop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::manager::Manager;
use super::store::VmSpec;
use crate::vm::warm::{warm_jail, WarmJail};

/// How warm jails' ids begin.
pub(crate) const PREFIX: &str = "pool-";

/// The ready warm jails and their counters.
#[derive(Default)]
pub(crate) struct WarmPool {
    ready: Mutex<VecDeque<WarmJail>>,
    refill: Arc<tokio::sync::Notify>,
    /// Set at a clean daemon exit: nothing is made or kept any more.
    closed: AtomicBool,
}

impl WarmPool {
    /// How many are ready.
    pub(crate) fn ready(&self) -> usize {
        self.ready.lock().unwrap().len()
    }

    /// The oldest ready jail whose Firecracker still runs (the refill task removes dead ones).
    pub(crate) fn take(&self) -> Option<WarmJail> {
        let mut ready = self.ready.lock().unwrap();
        let i = ready.iter().position(WarmJail::is_alive)?;
        self.refill.notify_one();
        ready.remove(i)
    }

    /// Puts back a jail a VM did not fit.
    pub(crate) fn put_back(&self, w: WarmJail) {
        self.ready.lock().unwrap().push_front(w);
    }
}

impl Manager {
    /// Warm jails ready now.
    pub fn pool_ready(&self) -> usize {
        self.pool.ready()
    }

    /// Starts the refill task (when `pool_size` > 0). It holds the manager weakly and ends with it.
    pub(crate) fn start_pool(self: &Arc<Self>) {
        if self.cfg.pool_size == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(refill(weak));
    }

    /// Ends and removes every ready jail, with its uid lease and console files (a clean daemon
    /// exit).
    pub(crate) async fn drain_pool(&self) {
        self.pool.closed.store(true, Ordering::SeqCst);
        let all: Vec<WarmJail> = self.pool.ready.lock().unwrap().drain(..).collect();
        for w in all {
            self.discard_warm(w).await;
        }
    }

    /// Removes a warm jail nobody took: the jail (if its Firecracker still runs, it is ended
    /// first), its uid lease and its console files.
    async fn discard_warm(&self, w: WarmJail) {
        let (id, uid) = (w.id().to_owned(), w.uid());
        w.discard().await;
        if self.cfg.jail_id_range.is_some() {
            self.uids.release(uid, &id).await;
        }
        let dir = self.vm_dir(&id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }

    /// Removes the console directories of warm jails that no stored VM points at (jails made
    /// before a crash; recovery removes the jails themselves as orphans).
    pub(crate) fn remove_stale_warm_consoles(&self, records: &[super::store::VmRecord]) {
        let used: std::collections::HashSet<std::path::PathBuf> = records
            .iter()
            .filter_map(|r| r.serial_path.as_ref()?.parent().map(|p| p.to_owned()))
            .collect();
        for e in std::fs::read_dir(self.vm_dir(""))
            .into_iter()
            .flatten()
            .flatten()
        {
            let warm = e.file_name().to_string_lossy().starts_with(PREFIX);
            if warm && !used.contains(&e.path()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Makes one warm jail: a uid leased for it, its console file, the jailer run.
    async fn make_warm_jail(&self) -> Result<WarmJail, super::error::ManagerError> {
        let id = format!("{PREFIX}{}", super::verbs::random_hex());
        let uid = self.uids.lease(&id).await?;
        let made = async {
            let dir = self.vm_dir(&id);
            std::fs::create_dir_all(&dir).map_err(|source| super::error::ManagerError::Os {
                what: format!("creating {}", dir.display()),
                source,
            })?;
            let (_, mut options) = self.vm_config(&id, &VmSpec::default());
            if let Some(uid) = uid {
                options.jailer.uid = uid;
                options.jailer.gid = uid;
            }
            let memory = u32::try_from(self.cfg.pool_memory_mib).unwrap_or(u32::MAX);
            Ok(warm_jail(&id, memory, &options).await?)
        }
        .await;
        if made.is_err() {
            if let Some(uid) = uid {
                self.uids.release(uid, &id).await;
            }
            let dir = self.vm_dir(&id);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        }
        made
    }
}

async fn refill(weak: Weak<Manager>) {
    let mut pause = Duration::from_millis(250);
    loop {
        let Some(m) = weak.upgrade() else { return };
        if m.pool.closed.load(Ordering::SeqCst) {
            return;
        }
        if m.pool.ready() as u64 >= m.cfg.pool_size {
            let refill = m.pool.refill.clone();
            drop(m);
            // Re-checked now and then: a jail whose Firecracker died leaves the queue only
            // when a take meets it.
            let _ = tokio::time::timeout(Duration::from_secs(5), refill.notified()).await;
            if let Some(m) = weak.upgrade() {
                let dead: Vec<WarmJail> = {
                    let mut ready = m.pool.ready.lock().unwrap();
                    let (alive, dead) = ready.drain(..).partition(WarmJail::is_alive);
                    *ready = alive;
                    dead.into()
                };
                for w in dead {
                    tracing::warn!(jail = %w.id(), "a warm jail's Firecracker ended; replacing it");
                    m.discard_warm(w).await;
                }
            }
            continue;
        }
        match m.make_warm_jail().await {
            Ok(w) => {
                pause = Duration::from_millis(250);
                if m.pool.closed.load(Ordering::SeqCst) {
                    m.discard_warm(w).await;
                    return;
                }
                tracing::debug!(jail = %w.id(), ready = m.pool.ready() + 1, "warm jail ready");
                m.pool.ready.lock().unwrap().push_back(w);
            }
            Err(e) => {
                tracing::warn!(error = %e.chain(), retry_in_ms = pause.as_millis() as u64, "could not make a warm jail for the pool");
                drop(m);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}
