//! cgroup v2: one directory per VM in the unified hierarchy (`<root>/<parent>/<id>`).
//!
//! The jailer enables the controllers it needs in each ancestor's `cgroup.subtree_control`;
//! under systemd the parent must be delegated (`Delegate=yes`) for that to be allowed.

use std::path::PathBuf;

use super::{read_keyed, read_u64, CgroupLimits, CgroupStats, Setting, CPU_PERIOD_US};

/// Maps limits to v2 files.
pub fn settings(limits: &CgroupLimits) -> Vec<Setting> {
    let mut out = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        out.push(Setting::new("memory.max", bytes));
    }
    if let Some(pct) = limits.cpu_quota_pct {
        let quota = CPU_PERIOD_US * u64::from(pct) / 100;
        out.push(Setting::new("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
    }
    if let Some(max) = limits.pids_max {
        out.push(Setting::new("pids.max", max));
    }
    if let Some(set) = &limits.cpuset {
        out.push(Setting::new("cpuset.cpus", &set.cpus));
        if let Some(mems) = &set.mems {
            out.push(Setting::new("cpuset.mems", mems));
        }
    }
    if let (Some(dev), true) = (limits.io_device, limits.io.any()) {
        let io = &limits.io;
        let mut line = dev.to_string();
        for (key, value) in [
            ("rbps", io.read_bps),
            ("wbps", io.write_bps),
            ("riops", io.read_iops),
            ("wiops", io.write_iops),
        ] {
            if let Some(v) = value {
                line.push_str(&format!(" {key}={v}"));
            }
        }
        // Several '=' in one value: the jailer refuses it, so warden writes it into the
        // directory the jailer made (see [`super::write_by_warden`]).
        out.push(Setting::by_warden("io.max", line));
    }
    for size in &limits.hugetlb_deny {
        out.push(Setting::new(&format!("hugetlb.{size}.max"), 0));
    }
    out
}

/// Reads usage from the VM's v2 directory.
pub fn stats(dirs: &[PathBuf]) -> CgroupStats {
    let Some(dir) = dirs.first() else {
        return CgroupStats::default();
    };
    CgroupStats {
        memory_bytes: read_u64(&dir.join("memory.current")),
        memory_peak_bytes: read_u64(&dir.join("memory.peak")),
        oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill"),
        cpu_usage_ns: read_keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
        pids_current: read_u64(&dir.join("pids.current")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{remove, CgroupVersion, Hierarchy};
    use std::time::Duration;

    #[test]
    fn maps_limits_to_v2_files() {
        let limits = CgroupLimits {
            memory_bytes: Some(300 << 20),
            cpu_quota_pct: Some(150),
            pids_max: Some(128),
            hugetlb_deny: vec!["2MB".into()],
            ..Default::default()
        };
        let args: Vec<String> = settings(&limits).iter().map(Setting::as_arg).collect();
        assert_eq!(
            args,
            [
                "memory.max=314572800",
                "cpu.max=150000 100000",
                "pids.max=128",
                "hugetlb.2MB.max=0"
            ]
        );
    }

    /// A fake unified tree with the kernel's file names and formats, as the jailer leaves it.
    fn fake_tree() -> (tempfile::TempDir, Hierarchy, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let mounts = format!(
            "cgroup2 {} cgroup2 rw,nsdelegate 0 0\n",
            root.path().display()
        );
        let h = Hierarchy::parse(&mounts).unwrap();
        let vm = root.path().join("warden/vm-1");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("memory.current"), "4096000\n").unwrap();
        std::fs::write(vm.join("memory.peak"), "8192000\n").unwrap();
        std::fs::write(
            vm.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        std::fs::write(
            vm.join("cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n",
        )
        .unwrap();
        (root, h, vm)
    }

    #[test]
    fn locates_reads_and_removes_a_vm_directory_in_a_fake_v2_tree() {
        let (_root, h, vm) = fake_tree();
        let limits = CgroupLimits {
            memory_bytes: Some(1 << 28),
            ..Default::default()
        };
        let s = limits.settings(CgroupVersion::V2);
        h.check(CgroupVersion::V2, &s).unwrap();
        let dirs = h.vm_dirs(CgroupVersion::V2, "warden", "vm-1", &s);
        assert_eq!(dirs, std::slice::from_ref(&vm));
        let st = stats(&dirs);
        assert_eq!(st.memory_bytes, Some(4_096_000));
        assert_eq!(st.memory_peak_bytes, Some(8_192_000));
        assert_eq!(st.oom_kills, Some(1));
        assert_eq!(st.cpu_usage_ns, Some(2_500_000));
        // A real cgroupfs directory holds only interface files and can be rmdir'ed; the fake
        // holds regular files, so empty it first.
        for f in std::fs::read_dir(&vm).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        remove(&dirs, Duration::from_millis(10)).unwrap();
        assert!(!vm.exists());
        remove(&dirs, Duration::from_millis(10)).unwrap();
    }

    #[test]
    fn maps_cpuset_through_the_jailer_and_io_max_for_warden_to_write() {
        use crate::cgroup::cpuset::{CpuList, Cpuset};
        use crate::cgroup::disk::{BlockDevice, IoLimits};
        let mut limits = CgroupLimits {
            cpuset: Some(Cpuset {
                cpus: CpuList::parse("2-3").unwrap(),
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
        let shown: Vec<(String, bool)> = s.iter().map(|s| (s.as_arg(), s.by_warden)).collect();
        assert_eq!(
            shown,
            [
                ("cpuset.cpus=2-3".to_owned(), false),
                ("cpuset.mems=0".to_owned(), false),
                (
                    "io.max=254:0 rbps=1048576 wbps=2097152 riops=100 wiops=50".to_owned(),
                    true
                ),
            ]
        );
        assert_eq!(s[2].controller(), "io");
        limits.io = IoLimits {
            write_iops: Some(10),
            ..Default::default()
        };
        assert_eq!(
            settings(&limits)[2].value,
            "254:0 wiops=10",
            "only what is set"
        );
    }

    #[test]
    fn io_max_is_written_into_the_fake_tree_and_nothing_else_is() {
        let (_root, h, vm) = fake_tree();
        let limits = CgroupLimits {
            memory_bytes: Some(1 << 28),
            io: crate::cgroup::disk::IoLimits {
                read_bps: Some(1 << 20),
                ..Default::default()
            },
            io_device: Some(crate::cgroup::disk::BlockDevice { major: 8, minor: 0 }),
            ..Default::default()
        };
        let mut s = limits.settings(CgroupVersion::V2);
        h.check(CgroupVersion::V2, &s).unwrap();
        for x in &mut s {
            x.path = h
                .setting_dir(CgroupVersion::V2, "warden", "vm-1", x)
                .map(|d| d.join(&x.file));
        }
        crate::cgroup::write_by_warden(&s, 4242).unwrap();
        assert_eq!(
            std::fs::read_to_string(vm.join("io.max")).unwrap(),
            "8:0 rbps=1048576"
        );
        assert_eq!(
            std::fs::read_to_string(vm.join("cgroup.procs")).unwrap(),
            "4242"
        );
        assert!(!vm.join("memory.max").exists(), "the jailer's to write");
    }

    #[test]
    fn no_limits_means_no_v2_directory() {
        let (_root, h, _vm) = fake_tree();
        assert!(h
            .vm_dirs(CgroupVersion::V2, "warden", "vm-1", &[])
            .is_empty());
    }
}
