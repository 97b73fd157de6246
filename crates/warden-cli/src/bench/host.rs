//! What the bench reads from and removes on the host: memory, RSS, jails, cgroups, processes.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Leftovers;

/// The bench's jails and cgroups, spelled by the library's layout, with the cgroup version
/// warden would pick on this host.
fn layout(chroot_base: &Path, parent: &str) -> jail::Layout {
    let hierarchy =
        jail::cgroup::Hierarchy::host().unwrap_or_else(|_| jail::cgroup::Hierarchy::empty());
    jail::Layout::new(
        chroot_base,
        Path::new("firecracker"),
        parent,
        hierarchy.default_version(),
        hierarchy,
    )
}

fn proc_root() -> &'static Path {
    Path::new(jail::proc::PROC)
}

/// The prefix of every VM id (and so jail directory) the bench creates.
pub(crate) fn id_prefix() -> String {
    format!("bench-{}-", std::process::id())
}

/// The prefix of every parent cgroup the bench creates.
pub(crate) fn cgroup_prefix() -> String {
    format!("wbench-{}", std::process::id())
}

/// The prefix of every temp dir the bench creates under /tmp.
pub(crate) fn tmp_prefix() -> String {
    format!("wb{}-", std::process::id())
}

/// Raises the soft open-files limit to the hard one (inherited by the bench's daemon, which
/// holds a few descriptors per VM).
pub(crate) fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// `MemAvailable` in KiB.
pub(crate) fn mem_available_kib() -> u64 {
    jail::proc::meminfo_kib(proc_root(), "MemAvailable").unwrap_or(0)
}

/// Busy CPU time of the whole host so far (all CPUs, idle and iowait excluded), in ms.
pub(crate) fn cpu_busy_ms() -> f64 {
    // USER_HZ is 100 on Linux.
    jail::proc::cpu_times(proc_root()).map_or(0.0, |t| t.busy() as f64 * 10.0)
}

/// CPU time in ms of this process and of `others` (each with the children it has waited
/// for: the jailers, Firecrackers and guests the bench or its daemon started and reaped).
/// Unlike [`cpu_busy_ms`], nothing else on the host counts.
pub(crate) fn tree_cpu_ms(others: &[u32]) -> f64 {
    let all: u64 = std::iter::once(std::process::id())
        .chain(others.iter().copied())
        .map(|p| jail::proc::stat(proc_root(), p).map_or(0, |s| s.cpu_ticks))
        .sum();
    // USER_HZ is 100 on Linux.
    all as f64 * 10.0
}

/// A process's `VmRSS` in KiB (0 when gone).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    jail::proc::status(proc_root(), pid)
        .and_then(|s| s.vm_rss_kib)
        .unwrap_or(0)
}

/// Existing directories `<hierarchy>/<parent>`, in every hierarchy.
fn parent_dirs(parent: &str) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    layout(Path::new("/"), parent)
        .cgroup_parents_everywhere()
        .into_iter()
        .filter(|p| p.is_dir())
        .filter(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())))
        .collect()
}

/// Every cgroup directory below `parent` (any depth, deepest first), in every controller.
fn cgroup_children(parent: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    for p in parent_dirs(parent) {
        walk(&p, &mut out);
    }
    out
}

/// Jail directories `<chroot_base>/firecracker/<id>` whose id starts with `prefix`.
fn jail_dirs(chroot_base: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(layout(chroot_base, "").jails_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// Live jailer/firecracker processes whose arguments name a VM id starting with `prefix`.
pub(crate) fn vm_processes(prefix: &str) -> Vec<u32> {
    if prefix.is_empty() {
        return Vec::new(); // never everyone's VMs
    }
    jail::proc::pids(proc_root())
        .into_iter()
        .filter(|&pid| {
            let Some(args) = jail::proc::cmdline(proc_root(), pid) else {
                return false;
            };
            let exe = args.first().map(String::as_str).unwrap_or_default();
            (exe.ends_with("firecracker") || exe.ends_with("jailer"))
                && args.iter().any(|a| a.starts_with(prefix))
                && jail::proc::is_alive(proc_root(), pid)
        })
        .collect()
}

/// What is left of the VMs under `chroot_base` with ids starting with `prefix` and of the parent
/// cgroup `parent`.
pub(crate) fn leftovers(chroot_base: &Path, prefix: &str, parent: &str) -> Leftovers {
    Leftovers {
        jail_dirs: jail_dirs(chroot_base, prefix).len(),
        cgroup_dirs: cgroup_children(parent).len(),
        parent_cgroups: parent_dirs(parent).len(),
        temp_dirs: 0,
        processes: vm_processes(prefix).len(),
    }
}

/// The bench's temp dirs still under /tmp.
pub(crate) fn temp_dirs_left() -> usize {
    let prefix = tmp_prefix();
    std::fs::read_dir("/tmp")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

/// Number of jail dirs (any id) under `chroot_base` and cgroup dirs under `parent`.
pub(crate) fn traces(chroot_base: &Path, parent: &str) -> (usize, usize) {
    (
        jail_dirs(chroot_base, "").len(),
        cgroup_children(parent).len(),
    )
}

/// Removes by force whatever is left: kills the VMs' processes (by cgroup, then by id prefix
/// for a jailer not yet in its cgroups), removes their cgroups, the parent cgroup and their
/// jails.
pub(crate) fn sweep(chroot_base: &Path, prefix: &str, parent: &str) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let t0 = Instant::now();
    loop {
        // The parent cgroup is the bench's own: every task below it is one of its VMs'.
        let dirs: Vec<PathBuf> = parent_dirs(parent)
            .into_iter()
            .chain(cgroup_children(parent))
            .collect();
        jail::cgroup::kill_tasks(&dirs, Duration::from_secs(2));
        let named = vm_processes(prefix);
        if named.is_empty() || t0.elapsed() > Duration::from_secs(5) {
            break;
        }
        for p in named {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in cgroup_children(parent) {
        let _ = std::fs::remove_dir(d);
    }
    for d in parent_dirs(parent) {
        let _ = std::fs::remove_dir(d);
    }
    for d in jail_dirs(chroot_base, prefix) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Removes the VMs (bare or library ones) of a scenario, whatever happens: on drop it kills
/// and removes everything under `chroot_base` with the bench's id prefix and the parent cgroup.
pub(crate) struct HostGuard {
    pub(crate) chroot_base: PathBuf,
    pub(crate) parent_cgroup: String,
}

impl HostGuard {
    pub(crate) fn leftovers(&self) -> Leftovers {
        leftovers(&self.chroot_base, &id_prefix(), &self.parent_cgroup)
    }

    /// Removes the (now empty) parent cgroups and returns what was left before that.
    pub(crate) fn finish(&self) -> Leftovers {
        // The VMs are gone: only the parent directories remain, which are ours to remove.
        for d in parent_dirs(&self.parent_cgroup) {
            let _ = std::fs::remove_dir(d);
        }
        self.leftovers()
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        sweep(&self.chroot_base, &id_prefix(), &self.parent_cgroup);
    }
}

/// Runs `f(0..n)` with at most `parallel` calls in flight; returns the results in index order.
/// Stops handing out work once interrupted; the first error wins.
pub(crate) async fn pool<T, F, Fut>(n: usize, parallel: usize, f: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallel.max(1).min(n.max(1)) {
        let (f, next) = (f.clone(), next.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                super::check_interrupted()?;
                out.push((i, f(i).await?));
            }
            anyhow::Ok(out)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}
