//! CPU pinning and disk I/O limits on a real jailed VM (cgroup v1 on this host): Firecracker's
//! threads may run only on the CPUs asked for, the throttles land in the blkio files for the disk
//! under the chroot base, a guest reading a drive under a read limit is slowed to it, and nothing
//! is left after the stop.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use warden::vm::config::DriveConfig;
use warden::vm::start_vm;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The whole disk under the chroot base, as the plan must find it.
fn base_disk() -> jail::cgroup::disk::BlockDevice {
    let dev = std::fs::metadata(base()).unwrap().dev();
    jail::cgroup::disk::disk_of(
        Path::new("/sys"),
        jail::cgroup::disk::BlockDevice::from_dev(dev),
    )
    .expect("the chroot base is on a block device")
}

fn blkio(id: &str, file: &str) -> String {
    read(&Path::new("/sys/fs/cgroup/blkio/warden").join(id).join(file))
}

#[tokio::test]
async fn a_pinned_throttled_vm_runs_only_on_its_cpus_with_its_blkio_limits() {
    let (config, mut options) = guest("pin", "mode=idle");
    options.jailer.cpuset = Some("0".into());
    options.jailer.io_limits.read_bps = Some(1 << 20);
    options.jailer.io_limits.write_bps = Some(2 << 20);
    options.jailer.io_limits.read_iops = Some(300);
    options.jailer.io_limits.write_iops = Some(200);
    let vm = start_vm(&config, &options).await.unwrap();
    let id = &config.vm_id;
    // Every thread, the vCPU included, is confined to CPU 0.
    for t in std::fs::read_dir(format!("/proc/{}/task", vm.pid)).unwrap() {
        let tid: u32 = t.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let status = read(Path::new(&format!("/proc/{}/task/{tid}/status", vm.pid)));
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        assert_eq!(allowed, "0", "thread {tid} of {}", vm.pid);
    }
    assert_eq!(status_field(vm.pid, "Cpus_allowed_list"), "0");
    let cpuset = Path::new("/sys/fs/cgroup/cpuset/warden").join(id);
    assert_eq!(read(&cpuset.join("cpuset.cpus")), "0");
    assert!(!read(&cpuset.join("cpuset.mems")).is_empty());
    let disk = base_disk();
    assert_eq!(
        blkio(id, "blkio.throttle.read_bps_device"),
        format!("{disk} 1048576")
    );
    assert_eq!(
        blkio(id, "blkio.throttle.write_bps_device"),
        format!("{disk} 2097152")
    );
    assert_eq!(
        blkio(id, "blkio.throttle.read_iops_device"),
        format!("{disk} 300")
    );
    assert_eq!(
        blkio(id, "blkio.throttle.write_iops_device"),
        format!("{disk} 200")
    );
    // Firecracker is in the blkio directory warden made, so its reads are charged there.
    assert!(blkio(id, "cgroup.procs")
        .lines()
        .any(|p| p == vm.pid.to_string()));
    // The plan says which settings warden wrote itself.
    assert!(vm
        .plan
        .cgroups
        .iter()
        .filter(|c| c.file.starts_with("blkio."))
        .all(|c| c.by_warden));
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), id);
}

#[tokio::test]
async fn a_cpu_that_is_not_online_is_refused_before_anything_is_made() {
    let (config, mut options) = guest("pin-off", "mode=idle");
    options.jailer.cpuset = Some("0-4095".into());
    let err = start_vm(&config, &options).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cpuset") && msg.contains("not online"),
        "{msg}"
    );
    options.jailer.cpuset = Some("0-".into());
    let msg = start_vm(&config, &options).await.unwrap_err().to_string();
    assert!(msg.contains("cpuset") && msg.contains("0-3,5"), "{msg}");
    assert_nothing_left(&base(), &config.vm_id);
}

/// A file of `len` bytes of data (no holes: a hole is read without touching the disk), made
/// root's and read-only for others so that it is hard-linked into the jail (same inode), with
/// its pages dropped from the page cache, so the guest's reads reach the disk.
fn uncached_drive(len: usize) -> (tempfile::TempDir, PathBuf) {
    // Beside the chroot base: the same filesystem, or the drive would be copied.
    let dir = tempfile::tempdir_in(base().parent().unwrap()).unwrap();
    let path = dir.path().join("read.img");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8 + 1).collect();
    for _ in 0..len.div_ceil(chunk.len()) {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    // SAFETY: a plain advisory call on a file descriptor we own.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, path)
}

#[tokio::test]
async fn a_guest_reading_a_drive_under_a_read_limit_takes_at_least_the_time_it_implies() {
    const MIB: u64 = 4;
    const LIMIT: u64 = 1 << 20; // bytes per second
    let (_dir, drive) = uncached_drive((MIB << 20) as usize);
    let (config, mut options) = guest("io-read", &format!("mode=blk mib={MIB}"));
    options.drives = vec![DriveConfig {
        path: drive.clone(),
        read_only: true,
    }];
    options.jailer.io_limits.read_bps = Some(LIMIT);
    let started = Instant::now();
    let vm = start_vm(&config, &options).await.unwrap();
    let staged = vm.plan.staged.iter().find(|f| f.source == drive).unwrap();
    if staged.method != warden::StageMethod::HardLink {
        // A copy's pages sit in the page cache: its reads would never reach the disk.
        eprintln!("SKIP: the drive was copied, not hard-linked; nothing to measure");
        vm.stop().await.unwrap();
        return;
    }
    let done = format!("WARDEN_BLK_READ 0 {MIB}");
    let seen = vm.wait_for_serial(&done, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    let out = vm.serial_output();
    assert!(seen, "no {done:?} in {out}");
    // Only a lower bound: how much slower the host is than the limit says nothing.
    let implied = Duration::from_secs_f64((MIB << 20) as f64 / LIMIT as f64);
    assert!(
        elapsed >= implied.mul_f64(0.8),
        "read {MIB} MiB in {elapsed:?} under a {LIMIT} B/s limit (at least {implied:?} implied)"
    );
    let id = config.vm_id.clone();
    let _ = vm.wait().await;
    assert_nothing_left(&base(), &id);
}
