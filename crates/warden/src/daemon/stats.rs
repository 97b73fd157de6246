//! ListVms' cgroup readings, cached: reading every VM's cgroup files on every call made a list
//! of 1,000 VMs cost tens of milliseconds. A list serves the readings of the last refresh and,
//! when they are older than [`MAX_AGE`], starts one refresh in the background (never more than
//! one at a time); a VM not yet in the cache (just booted) is read at once. GetVmInfo still
//! reads its one VM live. Nothing runs while nobody lists.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jail::cgroup::{CgroupStats, CgroupVersion};

/// How old the readings of a list may be.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

/// Where one live VM's readings come from.
pub(crate) type Source = (String, CgroupVersion, Vec<PathBuf>);

#[derive(Default)]
pub(crate) struct StatsCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    readings: Mutex<(HashMap<String, CgroupStats>, Option<Instant>)>,
    refreshing: AtomicBool,
}

impl StatsCache {
    /// The cached readings, and whether they are due for a refresh.
    pub(crate) fn readings(&self) -> (HashMap<String, CgroupStats>, bool) {
        let r = self.inner.readings.lock().unwrap();
        let due = r.1.is_none_or(|t| t.elapsed() > MAX_AGE);
        (r.0.clone(), due)
    }

    /// Refreshes the readings of `sources` in the background, unless a refresh runs already.
    pub(crate) fn refresh(&self, sources: Vec<Source>) {
        if self.inner.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let fresh: HashMap<String, CgroupStats> = sources
                .into_iter()
                .map(|(id, v, dirs)| (id, jail::cgroup::stats(v, &dirs)))
                .collect();
            *inner.readings.lock().unwrap() = (fresh, Some(Instant::now()));
            inner.refreshing.store(false, Ordering::SeqCst);
        });
    }
}
