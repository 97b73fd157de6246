//! cgroup v1: one hierarchy per controller (`/sys/fs/cgroup/<controller>/<parent>/<id>`).

use std::path::{Path, PathBuf};

use super::{read_keyed, read_u64, CgroupLimits, CgroupStats, Setting, CPU_PERIOD_US};

/// The v1 controllers warden knows of.
pub const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb",
];

/// Maps limits to v1 files.
pub fn settings(limits: &CgroupLimits) -> Vec<Setting> {
    let mut out = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        out.push(Setting::new("memory.limit_in_bytes", bytes));
    }
    if let Some(pct) = limits.cpu_quota_pct {
        out.push(Setting::new("cpu.cfs_period_us", CPU_PERIOD_US));
        out.push(Setting::new(
            "cpu.cfs_quota_us",
            CPU_PERIOD_US * u64::from(pct) / 100,
        ));
    }
    if let Some(max) = limits.pids_max {
        out.push(Setting::new("pids.max", max));
    }
    if let Some(set) = &limits.cpuset {
        out.push(Setting::new("cpuset.cpus", &set.cpus));
        // Without mems the kernel refuses the task (ENOSPC); the plan always fills them in.
        if let Some(mems) = &set.mems {
            out.push(Setting::new("cpuset.mems", mems));
        }
    }
    if let Some(dev) = limits.io_device {
        let io = &limits.io;
        for (file, value) in [
            ("blkio.throttle.read_bps_device", io.read_bps),
            ("blkio.throttle.write_bps_device", io.write_bps),
            ("blkio.throttle.read_iops_device", io.read_iops),
            ("blkio.throttle.write_iops_device", io.write_iops),
        ] {
            if let Some(v) = value {
                // The jailer cannot write these: it wants `<controller>.<property>` (one '.') and
                // first copies the parent's value, which is empty for throttle files. warden
                // makes the blkio directory, writes them and moves Firecracker in itself.
                out.push(Setting::by_warden(file, format!("{dev} {v}")));
            }
        }
    }
    for size in &limits.hugetlb_deny {
        out.push(Setting::new(&format!("hugetlb.{size}.limit_in_bytes"), 0));
    }
    out
}

/// Reads usage from the per-controller directories.
pub fn stats(dirs: &[PathBuf]) -> CgroupStats {
    // Each file exists only in its own controller's hierarchy: the directories of a hierarchy
    // named for the file's controller (`memory`, `cpu,cpuacct`) are tried first, then the rest,
    // each by reading the file (a miss costs one failed open).
    let read = |file: &str, parse: &dyn Fn(&Path) -> Option<u64>| {
        let controller = file.split('.').next().unwrap_or(file);
        let (named, others): (Vec<&PathBuf>, Vec<&PathBuf>) =
            dirs.iter().partition(|d| in_hierarchy_of(d, controller));
        named
            .into_iter()
            .chain(others)
            .find_map(|d| parse(&d.join(file)))
    };
    CgroupStats {
        memory_bytes: read("memory.usage_in_bytes", &read_u64),
        memory_peak_bytes: read("memory.max_usage_in_bytes", &read_u64),
        oom_kills: read("memory.oom_control", &|p| read_keyed(p, "oom_kill")),
        cpu_usage_ns: read("cpuacct.usage", &read_u64),
        pids_current: read("pids.current", &read_u64),
    }
}

/// Whether a path component of `dir` is a hierarchy named for `controller` (`cpu,cpuacct` is
/// named for both).
fn in_hierarchy_of(dir: &Path, controller: &str) -> bool {
    dir.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|name| name.split(',').any(|n| n == controller))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_limits_to_v1_files() {
        let limits = CgroupLimits {
            memory_bytes: Some(300 << 20),
            cpu_quota_pct: Some(50),
            pids_max: Some(128),
            hugetlb_deny: vec!["2MB".into()],
            ..Default::default()
        };
        let args: Vec<String> = settings(&limits).iter().map(Setting::as_arg).collect();
        assert_eq!(
            args,
            [
                "memory.limit_in_bytes=314572800",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=50000",
                "pids.max=128",
                "hugetlb.2MB.limit_in_bytes=0",
            ]
        );
    }

    #[test]
    fn maps_cpuset_to_v1_files_for_the_jailer_and_blkio_for_warden() {
        use crate::cgroup::cpuset::{CpuList, Cpuset};
        use crate::cgroup::disk::{BlockDevice, IoLimits};
        let limits = CgroupLimits {
            cpuset: Some(Cpuset {
                cpus: CpuList::parse("0-1,3").unwrap(),
                mems: Some(CpuList::parse("0").unwrap()),
            }),
            io: IoLimits {
                read_bps: Some(1 << 20),
                write_bps: Some(2 << 20),
                read_iops: Some(100),
                write_iops: Some(50),
            },
            io_device: Some(BlockDevice {
                major: 254,
                minor: 0,
            }),
            ..Default::default()
        };
        let s = settings(&limits);
        let by_warden: Vec<bool> = s.iter().map(|s| s.by_warden).collect();
        assert_eq!(by_warden, [false, false, true, true, true, true]);
        let args: Vec<String> = s.iter().map(Setting::as_arg).collect();
        assert_eq!(
            args,
            [
                "cpuset.cpus=0-1,3",
                "cpuset.mems=0",
                "blkio.throttle.read_bps_device=254:0 1048576",
                "blkio.throttle.write_bps_device=254:0 2097152",
                "blkio.throttle.read_iops_device=254:0 100",
                "blkio.throttle.write_iops_device=254:0 50",
            ]
        );
        assert_eq!(s[0].controller(), "cpuset");
        assert_eq!(s[2].controller(), "blkio");
        let unplaced = CgroupLimits {
            io_device: None,
            ..limits
        };
        assert!(
            settings(&unplaced)
                .iter()
                .all(|s| s.controller() != "blkio"),
            "no device, no throttle"
        );
    }

    #[test]
    fn reads_stats_from_a_fake_v1_tree() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/warden/vm");
        let acct = root.path().join("cpuacct/warden/vm");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(&acct).unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "1048576\n").unwrap();
        std::fs::write(mem.join("memory.max_usage_in_bytes"), "2097152\n").unwrap();
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(acct.join("cpuacct.usage"), "123456789\n").unwrap();
        // A parent cgroup named like a controller misleads the first guess, never the reading.
        let pids = root.path().join("pids/memory/vm");
        std::fs::create_dir_all(&pids).unwrap();
        std::fs::write(pids.join("pids.current"), "3\n").unwrap();
        let s = stats(&[pids, acct, mem]);
        assert_eq!(s.memory_bytes, Some(1 << 20));
        assert_eq!(s.memory_peak_bytes, Some(2 << 20));
        assert_eq!(s.oom_kills, Some(1));
        assert_eq!(s.cpu_usage_ns, Some(123_456_789));
        assert_eq!(s.pids_current, Some(3));
    }
}
