//! cgroup v1: one hierarchy per controller (`/sys/fs/cgroup/<controller>/<parent>/<id>`).

use std::path::PathBuf;

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
    for size in &limits.hugetlb_deny {
        out.push(Setting::new(&format!("hugetlb.{size}.limit_in_bytes"), 0));
    }
    out
}

/// Reads usage from the per-controller directories.
pub fn stats(dirs: &[PathBuf]) -> CgroupStats {
    // Each file exists only in its own controller's hierarchy.
    let find = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    CgroupStats {
        memory_bytes: find("memory.usage_in_bytes").and_then(|p| read_u64(&p)),
        memory_peak_bytes: find("memory.max_usage_in_bytes").and_then(|p| read_u64(&p)),
        oom_kills: find("memory.oom_control").and_then(|p| read_keyed(&p, "oom_kill")),
        cpu_usage_ns: find("cpuacct.usage").and_then(|p| read_u64(&p)),
        pids_current: find("pids.current").and_then(|p| read_u64(&p)),
    }
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
        let s = stats(&[acct, mem]);
        assert_eq!(s.memory_bytes, Some(1 << 20));
        assert_eq!(s.memory_peak_bytes, Some(2 << 20));
        assert_eq!(s.oom_kills, Some(1));
        assert_eq!(s.cpu_usage_ns, Some(123_456_789));
    }
}
