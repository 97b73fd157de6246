//! ListVms' cgroup readings, cached: reading every VM's cgroup files on every call made a list
//! of 1,000 VMs cost tens of milliseconds. A list serves the readings of the last refresh and,
//! when they are older than [`MAX_AGE`], starts one refresh on a background thread (at the
//! lowest CPU priority, see `background`; never more than one at a time). A VM started since
//! the last refresh shows the reading taken at its start; one re-attached at recovery shows
//! none until the first refresh (a second after the first list). A list never reads cgroup
//! files itself. GetVmInfo still reads its one VM live. Nothing runs while nobody lists, so the
//! first list after a quiet spell shows the readings of the last refresh and starts the next.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jail::cgroup::{CgroupStats, CgroupVersion};

/// How old the readings of a list may be.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

/// Where one live VM's readings come from: its cgroup version and directories, or `None` for a
/// VM busy with a request, which keeps its last reading.
pub(crate) type Source = (String, Option<(CgroupVersion, Vec<PathBuf>)>);

/// Readings by VM id. Shared, not copied, by every list (and copied on write).
type ByVm = Arc<HashMap<String, CgroupStats>>;

#[derive(Default)]
pub(crate) struct StatsCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The last refresh's readings and when it ended.
    readings: Mutex<(ByVm, Option<Instant>)>,
    /// Readings taken at a VM's start, until a refresh reads it.
    started: Mutex<ByVm>,
    refreshing: AtomicBool,
}

/// What a list serves.
pub(crate) struct Readings {
    map: ByVm,
    started: ByVm,
    /// Older than [`MAX_AGE`]: the list should start a refresh.
    pub(crate) due: bool,
}

impl Readings {
    /// The VM's reading, if the cache has one.
    pub(crate) fn get(&self, id: &str) -> Option<&CgroupStats> {
        self.map.get(id).or_else(|| self.started.get(id))
    }
}

impl StatsCache {
    /// The cached readings, and whether they are due for a refresh.
    pub(crate) fn readings(&self) -> Readings {
        let (map, due) = {
            let r = self.inner.readings.lock().unwrap();
            (r.0.clone(), r.1.is_none_or(|t| t.elapsed() > MAX_AGE))
        };
        Readings {
            map,
            started: self.inner.started.lock().unwrap().clone(),
            due,
        }
    }

    /// Keeps the reading taken at a VM's start, so the first list after many starts does not
    /// read them all at once.
    pub(crate) fn started(&self, id: &str, stats: CgroupStats) {
        let mut started = self.inner.started.lock().unwrap();
        Arc::make_mut(&mut started).insert(id.to_owned(), stats);
    }

    /// Drops what is kept of a deleted VM (a refresh drops it from the readings too).
    pub(crate) fn forget(&self, id: &str) {
        let mut started = self.inner.started.lock().unwrap();
        if started.contains_key(id) {
            Arc::make_mut(&mut started).remove(id);
        }
    }

    /// Refreshes the readings in the background, unless a refresh runs already: `sources`
    /// (called on the background thread, so that a list does not gather them) names the VMs
    /// to read. A VM it leaves out has no reading after the refresh.
    pub(crate) fn refresh(&self, sources: impl FnOnce() -> Vec<Source> + Send + 'static) {
        if self.inner.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        let flag = self.inner.clone();
        let spawned = crate::background::spawn("warden-stats", move || {
            let last = inner.readings.lock().unwrap().0.clone();
            let fresh: HashMap<String, CgroupStats> = sources()
                .into_iter()
                .filter_map(|(id, source)| {
                    let reading = match source {
                        Some((v, dirs)) => jail::cgroup::stats(v, &dirs),
                        None => last.get(&id)?.clone(),
                    };
                    Some((id, reading))
                })
                .collect();
            {
                let mut started = inner.started.lock().unwrap();
                if started.keys().any(|id| fresh.contains_key(id)) {
                    Arc::make_mut(&mut started).retain(|id, _| !fresh.contains_key(id));
                }
            }
            *inner.readings.lock().unwrap() = (Arc::new(fresh), Some(Instant::now()));
            inner.refreshing.store(false, Ordering::SeqCst);
        });
        if spawned.is_err() {
            flag.refreshing.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(bytes: u64) -> CgroupStats {
        CgroupStats {
            memory_bytes: Some(bytes),
            ..Default::default()
        }
    }

    async fn refreshed(cache: &StatsCache, sources: Vec<Source>) {
        cache.refresh(move || sources);
        for _ in 0..500 {
            if !cache.inner.refreshing.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the refresh never ended");
    }

    #[tokio::test]
    async fn a_start_reading_is_served_until_a_refresh_reads_the_vm_and_is_forgotten_on_delete() {
        let cg = tempfile::tempdir().unwrap();
        std::fs::write(cg.path().join("memory.current"), "8192\n").unwrap();
        let cache = StatsCache::default();
        assert!(cache.readings().due, "nothing read yet");
        cache.started("a", reading(1));
        cache.started("b", reading(2));
        let r = cache.readings();
        assert_eq!(r.get("a"), Some(&reading(1)));
        assert_eq!(r.get("c"), None);
        // A refresh that read "a" replaces its start reading; "b" (started after the list that
        // asked for the refresh) keeps its own.
        let source = (
            "a".to_owned(),
            Some((CgroupVersion::V2, vec![cg.path().to_owned()])),
        );
        refreshed(&cache, vec![source]).await;
        let r = cache.readings();
        assert_eq!(r.get("a").and_then(|s| s.memory_bytes), Some(8192));
        assert_eq!(r.get("b"), Some(&reading(2)));
        cache.forget("b");
        assert_eq!(cache.readings().get("b"), None, "kept after delete");
        assert!(cache.inner.started.lock().unwrap().is_empty());
        assert!(!cache.readings().due, "just refreshed");

        // A VM busy with a request keeps its last reading; one left out (deleted, stopped)
        // loses it.
        std::fs::write(cg.path().join("memory.current"), "4096\n").unwrap();
        refreshed(&cache, vec![("a".to_owned(), None), ("c".to_owned(), None)]).await;
        let r = cache.readings();
        assert_eq!(r.get("a").and_then(|s| s.memory_bytes), Some(8192));
        assert_eq!(r.get("c"), None, "no last reading to keep");
        refreshed(&cache, Vec::new()).await;
        assert_eq!(cache.readings().get("a"), None);
    }
}
