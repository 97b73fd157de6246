//! Reading `/proc`: the one place that parses its files.
//!
//! Every function takes the proc root (normally `/proc`) as an argument, so tests run the same
//! parsers against a fake tree in a temporary directory. Each file has one parser, which is pure
//! (`parse_*` takes the file's text); the readers around them only join paths and read. A file
//! that cannot be read is `None` (the process is gone, or was never there): callers decide what
//! that means.
//!
//! The `procfs` crate was considered: it can be pointed at another root, but it parses far more
//! than warden needs and pulls in its own dependency tree; these few formats are small and
//! stable.

use std::path::{Path, PathBuf};

/// The real proc root.
pub const PROC: &str = "/proc";

/// What warden reads of `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The process id (field 1).
    pub pid: u32,
    /// The command name, without its parentheses (field 2). It may hold spaces and `)`.
    pub comm: String,
    /// The state letter (field 3): `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// The parent's pid (field 4).
    pub ppid: u32,
    /// Start time in clock ticks since boot (field 22). With the pid, it names one process for
    /// good: a recycled pid has a different start time.
    pub start_time: u64,
    /// CPU time in clock ticks of the process and of its children it has waited for: user and
    /// system time of both (fields 14 to 17; a guest's time counts as its vCPU thread's user
    /// time).
    pub cpu_ticks: u64,
}

impl Stat {
    /// Whether the process still runs: a zombie has exited and only waits to be reaped.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of a `stat` file.
pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    // Fields 5 to 13 come before the CPU times, 18 to 21 between them and the start time.
    let mut cpu_ticks = 0u64;
    for t in [rest.nth(9)?, rest.next()?, rest.next()?, rest.next()?] {
        cpu_ticks += t.parse::<u64>().ok()?;
    }
    let start_time = rest.nth(4)?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        start_time,
        cpu_ticks,
    })
}

/// `<proc_root>/<pid>`.
pub fn dir(proc_root: &Path, pid: u32) -> PathBuf {
    proc_root.join(pid.to_string())
}

/// Reads `<proc_root>/<pid>/stat`.
pub fn stat(proc_root: &Path, pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(dir(proc_root, pid).join("stat")).ok()?)
}

/// A process's start time (see [`Stat::start_time`]).
pub fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    stat(proc_root, pid).map(|s| s.start_time)
}

/// Whether process `pid` with this start time still runs (not a zombie, not a recycled pid).
pub fn is_running(proc_root: &Path, pid: u32, start: u64) -> bool {
    stat(proc_root, pid).is_some_and(|s| s.is_alive() && s.start_time == start)
}

/// Whether process `pid` (whichever it is) still runs: it exists and is not a zombie.
pub fn is_alive(proc_root: &Path, pid: u32) -> bool {
    stat(proc_root, pid).is_some_and(|s| s.is_alive())
}

/// What warden reads of `/proc/<pid>/status` (or of one thread's, `task/<tid>/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `Name:`.
    pub name: Option<String>,
    /// `Uid:`: real, effective, saved and filesystem uid.
    pub uids: Option<[u32; 4]>,
    /// `Gid:`: real, effective, saved and filesystem gid.
    pub gids: Option<[u32; 4]>,
    /// `NSpid:`: the pid in each PID namespace, outermost first.
    pub ns_pid: Vec<u32>,
    /// `Seccomp:`: 0 off, 1 strict, 2 filter.
    pub seccomp: Option<u32>,
    /// `Cpus_allowed_list:`, as the kernel writes it (`0-3,6`).
    pub cpus_allowed_list: Option<String>,
    /// `VmRSS:` in KiB.
    pub vm_rss_kib: Option<u64>,
}

/// Parses the text of a `status` file. Lines it does not know, or cannot parse, are skipped.
pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    let ids = |v: &str| -> Option<[u32; 4]> {
        let n: Vec<u32> = v
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        n.try_into().ok()
    };
    let kib = |v: &str| v.split_whitespace().next()?.parse().ok();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => s.name = Some(value.to_owned()),
            "Uid" => s.uids = ids(value),
            "Gid" => s.gids = ids(value),
            "NSpid" => {
                s.ns_pid = value
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            }
            "Seccomp" => s.seccomp = value.parse().ok(),
            "Cpus_allowed_list" => s.cpus_allowed_list = Some(value.to_owned()),
            "VmRSS" => s.vm_rss_kib = kib(value),
            _ => {}
        }
    }
    s
}

/// Reads `<proc_root>/<pid>/status`.
pub fn status(proc_root: &Path, pid: u32) -> Option<Status> {
    Some(parse_status(
        &std::fs::read_to_string(dir(proc_root, pid).join("status")).ok()?,
    ))
}

/// The status of each thread of `pid` (`task/<tid>/status`); `None` when the task list cannot
/// be read. A thread whose status cannot be read counts, with every field unknown: a check that
/// needs all threads to show something then fails rather than passes.
pub fn thread_statuses(proc_root: &Path, pid: u32) -> Option<Vec<Status>> {
    let tasks = std::fs::read_dir(dir(proc_root, pid).join("task")).ok()?;
    Some(
        tasks
            .flatten()
            .map(|t| {
                std::fs::read_to_string(t.path().join("status"))
                    .map(|s| parse_status(&s))
                    .unwrap_or_default()
            })
            .collect(),
    )
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// The hierarchy id (`0` for cgroup v2).
    pub hierarchy_id: u32,
    /// The v1 controllers bound to it (empty for v2 and named hierarchies' unnamed part).
    pub controllers: Vec<String>,
    /// The cgroup path, relative to the hierarchy's root.
    pub path: String,
}

/// Parses the text of a `cgroup` file.
pub fn parse_cgroup(text: &str) -> Vec<CgroupEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let hierarchy_id = f.next()?.parse().ok()?;
            let controllers = f
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let path = f.next()?.to_owned();
            Some(CgroupEntry {
                hierarchy_id,
                controllers,
                path,
            })
        })
        .collect()
}

/// Reads `<proc_root>/<pid>/cgroup` (empty when unreadable).
pub fn cgroups(proc_root: &Path, pid: u32) -> Vec<CgroupEntry> {
    std::fs::read_to_string(dir(proc_root, pid).join("cgroup"))
        .map(|t| parse_cgroup(&t))
        .unwrap_or_default()
}

/// A process's arguments (`cmdline`, NUL-separated), lossily as text.
pub fn cmdline(proc_root: &Path, pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(dir(proc_root, pid).join("cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Every process id under `proc_root`, in no particular order.
pub fn pids(proc_root: &Path) -> Vec<u32> {
    std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The host's CPU time so far, from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// All eight accounted states (user to steal).
    pub total: u64,
    /// Idle and iowait.
    pub idle: u64,
}

impl CpuTimes {
    /// Ticks spent doing work (all but idle and iowait).
    pub fn busy(&self) -> u64 {
        self.total.saturating_sub(self.idle)
    }
}

/// Parses the first (`cpu`, all CPUs) line of `/proc/stat`.
pub fn parse_cpu_times(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some(CpuTimes {
        total: v.iter().take(8).sum(),
        idle: v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0),
    })
}

/// Reads `<proc_root>/stat`.
pub fn cpu_times(proc_root: &Path) -> Option<CpuTimes> {
    parse_cpu_times(&std::fs::read_to_string(proc_root.join("stat")).ok()?)
}

/// A `key: value kB` line of `<proc_root>/meminfo`, in KiB (`MemAvailable`, `MemTotal`, ...).
pub fn meminfo_kib(proc_root: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// A numeric kernel setting, `<proc_root>/sys/kernel/<name>` (`pid_max`, `threads-max`).
pub fn kernel_u64(proc_root: &Path, name: &str) -> Option<u64> {
    std::fs::read_to_string(proc_root.join("sys/kernel").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many tasks (threads) exist on the host now: the `running/total` field of `loadavg`.
pub fn task_count(proc_root: &Path) -> Option<u64> {
    std::fs::read_to_string(proc_root.join("loadavg"))
        .ok()?
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// The first CPU's `model name` in `<proc_root>/cpuinfo`.
pub fn cpu_model(proc_root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join("cpuinfo")).ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line as the kernel writes it, with `comm` and the start time given.
    fn stat_line(pid: u32, comm: &str, state: char, ppid: u32, start: u64) -> String {
        let mid = (5..=21)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        format!("{pid} ({comm}) {state} {ppid} {mid} {start} 1234 56 18446744073709551615\n")
    }

    fn fake_proc() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        let mk = |pid: u32, files: &[(&str, &str)]| {
            let d = p.join(pid.to_string());
            std::fs::create_dir_all(d.join("task").join(pid.to_string())).unwrap();
            for (name, text) in files {
                std::fs::write(d.join(name), text).unwrap();
            }
        };
        mk(
            42,
            &[
                ("stat", &stat_line(42, "fc) (vcpu 0", 'S', 7, 99_001)),
                (
                    "status",
                    "Name:\tfirecracker\nUid:\t4242\t4242\t4242\t4242\nGid:\t0\t0\t0\t0\n\
                     NSpid:\t42\t1\nSeccomp:\t2\nCpus_allowed_list:\t0-3,6\nVmRSS:\t  1024 kB\n",
                ),
                (
                    "cgroup",
                    "12:pids:/warden/vm1\n4:cpu,cpuacct:/warden/vm1\n1:name=systemd:/user\n0::/\n",
                ),
                ("cmdline", "/usr/bin/jailer\0--id\0vm 1\0"),
            ],
        );
        std::fs::write(
            p.join("42/task/42/status"),
            "Name:\tfirecracker\nSeccomp:\t2\n",
        )
        .unwrap();
        mk(43, &[("stat", &stat_line(43, "defunct", 'Z', 42, 5))]);
        std::fs::create_dir(p.join("self")).unwrap();
        std::fs::write(
            p.join("stat"),
            "cpu  100 2 30 1000 50 0 8 0 0 0\ncpu0 100 2 30 1000 50 0 8 0 0 0\n",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("sys/kernel")).unwrap();
        std::fs::write(p.join("sys/kernel/pid_max"), "4194304\n").unwrap();
        std::fs::write(p.join("loadavg"), "0.50 0.40 0.30 2/345 6789\n").unwrap();
        std::fs::write(
            p.join("cpuinfo"),
            "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n",
        )
        .unwrap();
        std::fs::write(
            p.join("meminfo"),
            "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n",
        )
        .unwrap();
        root
    }

    #[test]
    fn stat_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let root = fake_proc();
        let s = stat(root.path(), 42).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 42,
                comm: "fc) (vcpu 0".into(),
                state: 'S',
                ppid: 7,
                start_time: 99_001,
                // Fields 14 to 17 of the fake line hold their own numbers.
                cpu_ticks: 14 + 15 + 16 + 17,
            }
        );
        assert!(s.is_alive());
        assert_eq!(start_time(root.path(), 42), Some(99_001));
        assert!(is_running(root.path(), 42, 99_001));
        assert!(!is_running(root.path(), 42, 99_002), "a recycled pid");
        assert!(is_alive(root.path(), 42));
    }

    #[test]
    fn a_zombie_or_a_missing_process_does_not_run() {
        let root = fake_proc();
        assert_eq!(stat(root.path(), 43).unwrap().state, 'Z');
        assert!(!is_running(root.path(), 43, 5));
        assert!(!is_alive(root.path(), 43));
        assert_eq!(stat(root.path(), 44), None);
        assert!(!is_running(root.path(), 44, 5));
        assert_eq!(parse_stat("12 (truncated"), None);
        assert_eq!(parse_stat("12 (short) S 1 2 3"), None);
    }

    #[test]
    fn status_gives_ids_namespaces_seccomp_cpus_and_rss() {
        let root = fake_proc();
        let s = status(root.path(), 42).unwrap();
        assert_eq!(s.name.as_deref(), Some("firecracker"));
        assert_eq!(s.uids, Some([4242; 4]));
        assert_eq!(s.gids, Some([0; 4]));
        assert_eq!(s.ns_pid, vec![42, 1]);
        assert_eq!(s.seccomp, Some(2));
        assert_eq!(s.cpus_allowed_list.as_deref(), Some("0-3,6"));
        assert_eq!(s.vm_rss_kib, Some(1024));
        assert_eq!(status(root.path(), 44), None);
        let threads = thread_statuses(root.path(), 42).unwrap();
        assert_eq!(threads.len(), 1);
        assert_eq!(threads[0].seccomp, Some(2));
        assert_eq!(parse_status("Uid:\t1\t2\n").uids, None, "four ids or none");
    }

    #[test]
    fn cgroup_lines_split_into_hierarchy_controllers_and_path() {
        let root = fake_proc();
        let c = cgroups(root.path(), 42);
        assert_eq!(c.len(), 4);
        assert_eq!(c[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(c[1].path, "/warden/vm1");
        assert_eq!(c[3].hierarchy_id, 0);
        assert!(c[3].controllers.is_empty());
        assert_eq!(c[3].path, "/");
        assert!(cgroups(root.path(), 44).is_empty());
    }

    #[test]
    fn cmdline_pids_cpu_memory_and_kernel_limits() {
        let root = fake_proc();
        assert_eq!(
            cmdline(root.path(), 42).unwrap(),
            vec!["/usr/bin/jailer", "--id", "vm 1"]
        );
        let mut p = pids(root.path());
        p.sort();
        assert_eq!(p, vec![42, 43]);
        let t = cpu_times(root.path()).unwrap();
        assert_eq!((t.total, t.idle, t.busy()), (1190, 1050, 140));
        assert_eq!(meminfo_kib(root.path(), "MemAvailable"), Some(8_000_000));
        assert_eq!(meminfo_kib(root.path(), "Nope"), None);
        assert_eq!(kernel_u64(root.path(), "pid_max"), Some(4_194_304));
        assert_eq!(kernel_u64(root.path(), "threads-max"), None);
        assert_eq!(task_count(root.path()), Some(345));
        assert_eq!(cpu_model(root.path()).as_deref(), Some("AMD EPYC 7B13"));
    }

    #[test]
    fn this_process_reads_as_running() {
        let me = std::process::id();
        let proc_root = Path::new(PROC);
        let s = stat(proc_root, me).unwrap();
        assert_eq!(s.pid, me);
        assert!(is_running(proc_root, me, s.start_time));
        assert!(status(proc_root, me).unwrap().uids.is_some());
    }
}
