//! The CPU pinning and disk I/O flags, shared by `warden run`/`plan` and `warden vm create`.

use clap::Args;

/// `--cpuset` and the four `--io-*` limits.
#[derive(Args, Debug, Clone, Default)]
pub struct PinAndIo {
    /// Pin the VM to these CPUs (kernel list syntax, e.g. `0-3,5`; every CPU online, and within
    /// the daemon's `cpuset` for `warden vm`); default unpinned.
    #[arg(long, value_name = "LIST")]
    pub cpuset: Option<String>,
    /// Most bytes per second the VM's drives may read (on the disk under the chroot base; at
    /// most the daemon's `io_read_bps` for `warden vm`).
    #[arg(long, value_name = "BYTES")]
    pub io_read_bps: Option<u64>,
    /// Most bytes per second the VM's drives may write.
    #[arg(long, value_name = "BYTES")]
    pub io_write_bps: Option<u64>,
    /// Most read operations per second.
    #[arg(long, value_name = "N")]
    pub io_read_iops: Option<u64>,
    /// Most write operations per second.
    #[arg(long, value_name = "N")]
    pub io_write_iops: Option<u64>,
}

impl PinAndIo {
    /// The I/O limits as the library takes them.
    pub fn io_limits(&self) -> warden::vm::jailer::IoLimits {
        warden::vm::jailer::IoLimits {
            read_bps: self.io_read_bps,
            write_bps: self.io_write_bps,
            read_iops: self.io_read_iops,
            write_iops: self.io_write_iops,
        }
    }
}
