//! Disk I/O limits: bytes and operations per second, read and write, on the block device that
//! holds a VM's drives.
//!
//! Every file Firecracker opens is staged into the chroot (a private copy) or hard-linked there
//! (same filesystem), so all of a VM's backing files live on the filesystem of the chroot base.
//! Throttling is per block device, and the kernel throttles whole disks, not partitions: a
//! partition is mapped to its disk through `/sys/dev/block/MAJ:MIN`. A filesystem with no block
//! device (tmpfs, overlay) cannot be throttled. The sysfs root is an argument, so tests use a fake.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Explicit per-VM disk I/O limits; `None` is unlimited. Never derived from anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoLimits {
    /// Bytes read per second.
    pub read_bps: Option<u64>,
    /// Bytes written per second.
    pub write_bps: Option<u64>,
    /// Read operations per second.
    pub read_iops: Option<u64>,
    /// Write operations per second.
    pub write_iops: Option<u64>,
}

impl IoLimits {
    /// Each limit with the name of its configuration field (`io_read_bps`, ...).
    pub fn fields(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("io_read_bps", self.read_bps),
            ("io_write_bps", self.write_bps),
            ("io_read_iops", self.read_iops),
            ("io_write_iops", self.write_iops),
        ]
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.fields().iter().any(|(_, v)| v.is_some())
    }
}

/// A block device number, `MAJ:MIN` as cgroup files write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl BlockDevice {
    /// Splits a `dev_t` (`st_dev`).
    pub fn from_dev(dev: u64) -> Self {
        Self {
            major: libc::major(dev),
            minor: libc::minor(dev),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once(':')?;
        Some(Self {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for BlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Why a filesystem's disk could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    /// No `/sys/dev/block` entry: tmpfs, overlay, a network filesystem.
    #[error("device {device} is not a block device (no {entry})")]
    NotBlock {
        /// The filesystem's device.
        device: BlockDevice,
        /// The sysfs entry looked for.
        entry: PathBuf,
    },
    /// A partition whose disk's `dev` file cannot be read.
    #[error("cannot read the disk of partition {device} ({file})")]
    NoDisk {
        /// The partition.
        device: BlockDevice,
        /// The file read.
        file: PathBuf,
    },
}

/// The whole disk holding a filesystem whose `st_dev` is `device`: the device itself, or for a
/// partition (its sysfs directory has a `partition` file) the parent directory's `dev`.
pub fn disk_of(sys: &Path, device: BlockDevice) -> Result<BlockDevice, DiskError> {
    let entry = sys.join("dev/block").join(device.to_string());
    let dir = std::fs::canonicalize(&entry).map_err(|_| DiskError::NotBlock { device, entry })?;
    if !dir.join("partition").exists() {
        return Ok(device);
    }
    let file = dir
        .parent()
        .map(|p| p.join("dev"))
        .unwrap_or_else(|| dir.join("../dev"));
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| BlockDevice::parse(&s))
        .ok_or(DiskError::NoDisk { device, file })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::Path;

    /// A fake sysfs: disk `vda` (254:0) with partition `vda1` (254:1), both linked from
    /// `dev/block` as the kernel does, plus 2 online CPUs and one node. Idempotent.
    pub(crate) fn fake_sys(root: &Path) {
        if root.join("devices/system/cpu/online").exists() {
            return;
        }
        let disk = root.join("devices/virtual/block/vda");
        std::fs::create_dir_all(disk.join("vda1")).unwrap();
        std::fs::write(disk.join("dev"), "254:0\n").unwrap();
        std::fs::write(disk.join("vda1/dev"), "254:1\n").unwrap();
        std::fs::write(disk.join("vda1/partition"), "1\n").unwrap();
        std::fs::create_dir_all(root.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/virtual/block/vda",
            root.join("dev/block/254:0"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../devices/virtual/block/vda/vda1",
            root.join("dev/block/254:1"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
        std::fs::write(root.join("devices/system/cpu/online"), "0-1\n").unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_maps_to_its_disk_and_a_disk_to_itself() {
        let sys = tempfile::tempdir().unwrap();
        tests_support::fake_sys(sys.path());
        let disk = BlockDevice {
            major: 254,
            minor: 0,
        };
        assert_eq!(disk_of(sys.path(), disk), Ok(disk));
        let part = BlockDevice {
            major: 254,
            minor: 1,
        };
        assert_eq!(disk_of(sys.path(), part), Ok(disk));
    }

    #[test]
    fn a_filesystem_without_a_block_device_is_an_error() {
        let sys = tempfile::tempdir().unwrap();
        tests_support::fake_sys(sys.path());
        // tmpfs and overlay have anonymous devices (major 0) with no sysfs entry.
        let tmpfs = BlockDevice::from_dev(libc::makedev(0, 45));
        assert_eq!(tmpfs.to_string(), "0:45");
        let err = disk_of(sys.path(), tmpfs).unwrap_err();
        assert!(matches!(err, DiskError::NotBlock { .. }), "{err}");
        assert!(err.to_string().contains("0:45"), "{err}");
    }

    #[test]
    fn fields_are_named_as_configured() {
        let l = IoLimits {
            write_iops: Some(7),
            ..Default::default()
        };
        assert!(l.any() && !IoLimits::default().any());
        assert_eq!(l.fields()[3], ("io_write_iops", Some(7)));
    }
}
