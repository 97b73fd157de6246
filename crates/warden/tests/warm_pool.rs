//! The daemon's warm pool, through its manager, with real jailed VMs: warm jails are made and
//! refilled in the background; a first boot takes one (the VM's files staged into it, its
//! limits written over the jail's, its uid passed to it); a VM that does not fit, or a reboot,
//! takes the normal path; a restore takes one too; and after the VMs are deleted and the daemon
//! exits, nothing of any warm jail is left.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use warden::daemon::config::DaemonConfig;
use warden::daemon::state::VmState;
use warden::daemon::store::VmSpec;
use warden::daemon::Manager;

fn config(dir: &Path, pool_size: u64) -> DaemonConfig {
    DaemonConfig {
        state_dir: dir.join("state"),
        parent_cgroup: unique_id("wpool"),
        asset_dirs: vec![asset("testguest").parent().unwrap().to_owned()],
        jailer_binary: asset("jailer"),
        firecracker_binary: asset("firecracker"),
        stop_timeout_secs: 2,
        pool_size,
        ..DaemonConfig::default()
    }
}

fn spec(boot_args: &str, memory_mib: u32) -> VmSpec {
    VmSpec {
        vcpu_count: 1,
        memory_mib,
        kernel_path: asset("testguest").display().to_string(),
        boot_args: boot_args.into(),
        ..VmSpec::default()
    }
}

async fn wait_ready(m: &Manager, n: usize) {
    let t0 = Instant::now();
    while m.pool_ready() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the pool has {} warm jails, not {n}",
            m.pool_ready()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_serial(path: &Path, needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{needle:?} not in {}: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The warm jails (`pool-*`) of this chroot base on the host.
fn warm_jails(chroot_base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(chroot_base.join("firecracker"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pool-"))
        })
        .collect()
}

/// The cgroup directories under the daemon's parent cgroup, in every hierarchy.
fn cgroups_under(parent: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = c.path().join(parent);
        left.extend(
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    left
}

fn memory_limit(plan: &warden::jail::JailPlan) -> String {
    let s = plan
        .cgroups
        .iter()
        .find(|s| s.file == "memory.limit_in_bytes" || s.file == "memory.max")
        .expect("a memory limit");
    std::fs::read_to_string(s.path.as_ref().unwrap())
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn first_boots_take_warm_jails_and_nothing_of_the_pool_outlives_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    let m = Manager::open(cfg.clone()).await.unwrap();
    wait_ready(&m, 2).await;
    let warm = warm_jails(&cfg.chroot_base);
    assert!(warm.len() >= 2, "{warm:?}");

    // A first boot takes a warm jail: its own files and limits, the jail's host names.
    let a = unique_id("pa");
    m.create(&a, spec("mode=flood", 256)).await.unwrap();
    m.boot(&a).await.unwrap();
    let info = m.get(&a).await.unwrap();
    let rec = &info.record;
    assert_eq!(rec.state, VmState::Running);
    assert!(rec.jail_id().starts_with("pool-"), "{}", rec.jail_id());
    assert!(info.isolation.as_ref().unwrap().is_sandboxed);
    let plan = rec.plan.as_ref().unwrap();
    assert!(plan.staged.iter().any(|f| f.dest.ends_with("kernel")));
    assert!(plan.root_dir.join("kernel").is_file());
    // The VM's limit (256 MiB and the VMM's overhead), not the warm jail's placeholder.
    let limit: u64 = memory_limit(plan).parse().unwrap();
    assert!(limit > 256 << 20, "memory limit {limit}");
    // Its uid is the jail's, leased now for the VM.
    let uid = rec.uid.expect("a uid of its own");
    assert_eq!(plan.uid, uid);
    assert_eq!(
        status_field(rec.pid.unwrap(), "Uid")
            .split_whitespace()
            .next()
            .unwrap(),
        uid.to_string()
    );
    let lease = warden::jail::Registry::default()
        .uid_lease(uid)
        .expect("a lease");
    assert_eq!(lease.vm_id, a);
    wait_serial(rec.serial_path.as_ref().unwrap(), "WARDEN_FLOOD 10 ").await;
    // The VM's usual console path names the jail's file.
    let usual = cfg.state_dir.join("vms").join(&a).join("serial.log");
    wait_serial(&usual, "WARDEN_FLOOD 10 ").await;

    // The pool refills.
    wait_ready(&m, 2).await;

    // A VM pinned to CPUs of its own does not fit the pool's shape: the normal path.
    let b = unique_id("pb");
    let mut pinned = spec("mode=flood", 128);
    pinned.cpuset = Some("0".into());
    m.create(&b, pinned).await.unwrap();
    m.boot(&b).await.unwrap();
    let rec_b = m.get(&b).await.unwrap().record;
    assert_eq!(rec_b.jail_id(), b);
    assert_eq!(
        m.pool_ready(),
        2,
        "a VM that does not fit leaves the pool as it was"
    );

    // A reboot of the pooled VM takes the normal path, under its own id, with the same uid.
    m.shutdown(&a, true, None).await.unwrap();
    assert!(
        !plan.jail_dir.exists(),
        "the stopped VM's warm jail is removed"
    );
    m.boot(&a).await.unwrap();
    let rec = m.get(&a).await.unwrap().record;
    assert_eq!(rec.jail_id(), a);
    assert_eq!(rec.uid, Some(uid));
    assert_eq!(rec.serial_path.as_ref(), Some(&usual));
    let warm_console = plan.jail_dir.file_name().unwrap().to_owned();
    assert!(
        !cfg.state_dir.join("vms").join(&warm_console).exists(),
        "the console of the warm jail it ran in is gone"
    );
    assert!(!usual.symlink_metadata().unwrap().file_type().is_symlink());
    wait_serial(&usual, "WARDEN_FLOOD 10 ").await;

    // A restore takes a warm jail too.
    m.snapshot(&a, "pooled", None, true).await.unwrap();
    wait_ready(&m, 2).await;
    let clone = m.restore("", "pooled").await.unwrap();
    let info = m.get(&clone.id).await.unwrap();
    assert_eq!(info.record.state, VmState::Running);
    assert!(info.record.jail_id().starts_with("pool-"));
    assert!(info.isolation.unwrap().is_sandboxed);
    let serial = info.record.serial_path.clone().unwrap();
    let before = std::fs::read_to_string(&serial).unwrap_or_default().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        after.len() > before && after.contains("WARDEN_FLOOD"),
        "the clone runs on"
    );
    let metrics = m.render_metrics().await;
    assert!(
        metrics.contains("warden_pool_boots_total{result=\"hit\"} 2"),
        "{metrics}"
    );

    let clone_jail = info.record.plan.unwrap().jail_dir;
    for id in [&a, &b, &clone.id] {
        m.delete(id).await.unwrap();
        assert_nothing_left(&cfg.chroot_base, id);
    }
    assert!(!clone_jail.exists());
    m.delete_snapshot("pooled").await.unwrap();
    m.shutdown_all(false).await;
    drop(m);

    // Nothing of the pool is left: no jail, cgroup, process, owner record or uid lease.
    assert!(
        warm_jails(&cfg.chroot_base).is_empty(),
        "{:?}",
        warm_jails(&cfg.chroot_base)
    );
    assert!(
        cgroups_under(&cfg.parent_cgroup).is_empty(),
        "{:?}",
        cgroups_under(&cfg.parent_cgroup)
    );
    let owner = warden::jail::Owner::daemon(&cfg.state_dir);
    let registry = warden::jail::Registry::default();
    for l in registry.uid_leases() {
        assert_ne!(l.owner, owner, "uid lease {} left: {l:?}", l.uid);
    }
    assert!(processes_mentioning(&cfg.parent_cgroup).is_empty());
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(c.path().join(&cfg.parent_cgroup));
    }
}
