//! virtio-blk test: read sector 0 of every block device, and write/verify it when writable;
//! with `mib=N`, then read the device's first N MiB, a page per request (the I/O-limit tests).
//!
//! One request at a time: header (device-readable), 512-byte data buffer, 1-byte status
//! (device-writable), submitted on queue 0 and completed by polling the used ring.

use super::mmio::{Device, F_VERSION_1};
use super::queue::{Buf, Queue};
use crate::cmdline::Config;
use crate::{arch, paging, power, println, serial};

/// virtio device id of a block device.
pub const DEVICE_ID: u32 = 2;
/// Feature bit: the device is read-only.
const F_RO: u64 = 1 << 5;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const SECTOR: usize = 512;

// Layout of the per-device request page.
const HDR_OFF: u64 = 0;
const STATUS_OFF: u64 = 16;
const DATA_OFF: u64 = 512;

/// Give up on a request after this many TSC ticks (seconds, at any plausible frequency).
const TIMEOUT_TICKS: u64 = 20_000_000_000;

struct Blk {
    dev: Device,
    queue: Queue,
    page: u64,
    /// A whole page of data for the bulk reads of `mib=N`.
    bulk: u64,
    read_only: bool,
}

/// Bytes per bulk read request: one page.
const BULK: u32 = 4096;

fn fail(i: usize, msg: &str) -> ! {
    println!("testguest: error: virtio {}: {}", i, msg);
    power::off()
}

/// Run the test on every virtio-mmio device from the command line; returns how many block
/// devices were handled. Errors print a `testguest: error:` line and power off.
pub fn run_all(cfg: &Config) -> usize {
    let mut count = 0;
    for (i, d) in cfg.virtio[..cfg.virtio_count].iter().flatten().enumerate() {
        if d.base < (1 << 30) || d.base.saturating_add(d.size.max(0x200)) > paging::MAPPED_END {
            fail(i, "window outside the MMIO hole");
        }
        // SAFETY: the window lies in the 1..4 GiB range we map uncached, where Firecracker
        // places virtio-mmio devices; each command-line device is driven only here, once.
        let dev = unsafe { Device::new(d.base) };
        let id = dev.probe().unwrap_or_else(|e| fail(i, e));
        if id != DEVICE_ID {
            println!("testguest: virtio {} device-id={}", i, id);
            continue;
        }
        let mut blk = Blk::init(dev).unwrap_or_else(|e| fail(i, e));
        blk.test(i);
        if let Some(mib) = cfg.mib {
            blk.read_mib(i, mib);
        }
        count += 1;
    }
    count
}

impl Blk {
    fn init(dev: Device) -> Result<Self, &'static str> {
        let features = dev.negotiate(F_VERSION_1 | F_RO)?;
        let queue = Queue::new().ok_or("out of DMA memory")?;
        let page = super::dma::alloc_page().ok_or("out of DMA memory")?;
        let bulk = super::dma::alloc_page().ok_or("out of DMA memory")?;
        dev.setup_queue(0, &queue)?;
        dev.driver_ok()?;
        Ok(Blk { dev, queue, page, bulk, read_only: features & F_RO != 0 })
    }

    fn data(&mut self) -> &mut [u8; SECTOR] {
        // SAFETY: DATA_OFF..DATA_OFF+512 is inside our own DMA page, and no request is in
        // flight whenever the driver touches it (requests are synchronous).
        unsafe { &mut *((self.page + DATA_OFF) as *mut [u8; SECTOR]) }
    }

    /// Submit one request for sector `sector` and wait for it; returns the virtio status.
    fn request(&mut self, kind: u32, sector: u64) -> Result<u8, &'static str> {
        self.request_into(kind, sector, self.page + DATA_OFF, SECTOR as u32)
    }

    /// [`Self::request`] with `len` bytes of data at `addr` (inside one of our DMA pages).
    fn request_into(
        &mut self,
        kind: u32,
        sector: u64,
        addr: u64,
        len: u32,
    ) -> Result<u8, &'static str> {
        // SAFETY: header and status bytes are inside our own DMA page; no request in flight.
        unsafe {
            ((self.page + HDR_OFF) as *mut u32).write_volatile(kind);
            ((self.page + HDR_OFF + 4) as *mut u32).write_volatile(0);
            ((self.page + HDR_OFF + 8) as *mut u64).write_volatile(sector);
            ((self.page + STATUS_OFF) as *mut u8).write_volatile(0xff);
        }
        let bufs = [
            Buf { addr: self.page + HDR_OFF, len: 16, device_writes: false },
            Buf { addr, len, device_writes: kind == T_IN },
            Buf { addr: self.page + STATUS_OFF, len: 1, device_writes: true },
        ];
        let head = self.queue.add(&bufs).ok_or("virtqueue full")?;
        self.dev.notify(0);
        let start = arch::rdtsc();
        loop {
            if let Some((id, _len)) = self.queue.pop_used() {
                self.dev.ack_interrupts();
                if id != head {
                    return Err("unexpected used descriptor");
                }
                // SAFETY: the device has completed the request and written the status byte.
                return Ok(unsafe { ((self.page + STATUS_OFF) as *const u8).read_volatile() });
            }
            if arch::rdtsc().wrapping_sub(start) > TIMEOUT_TICKS {
                return Err("request timed out");
            }
            core::hint::spin_loop();
        }
    }

    fn test(&mut self, i: usize) {
        match self.request(T_IN, 0) {
            Ok(0) => {}
            Ok(_) => fail(i, "read of sector 0 failed"),
            Err(e) => fail(i, e),
        }
        let mut text = [0u8; 64];
        for (t, &b) in text.iter_mut().zip(self.data().iter()) {
            *t = if b.is_ascii_graphic() { b } else { b'.' };
        }
        crate::print!("WARDEN_BLK {} ro={} sector0=", i, self.read_only as u8);
        serial::write_bytes(&text);
        serial::write_str("\n");
        if self.read_only {
            return;
        }
        let mut pattern = [0u8; SECTOR];
        let mut w = Cursor { buf: &mut pattern, pos: 0 };
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!("WARDEN-GUEST-WROTE-{}", i));
        *self.data() = pattern;
        let wrote = matches!(self.request(T_OUT, 0), Ok(0));
        self.data().fill(0);
        let read = matches!(self.request(T_IN, 0), Ok(0));
        let ok = wrote && read && *self.data() == pattern;
        println!("WARDEN_BLK_WROTE {} {}", i, if ok { "ok" } else { "fail" });
    }
}

impl Blk {
    /// Reads the first `mib` MiB of the device, one page per request, then prints
    /// `WARDEN_BLK_READ <i> <mib>`. The host times it; the guest only reads.
    fn read_mib(&mut self, i: usize, mib: u64) {
        let pages = mib * (1 << 20) / u64::from(BULK);
        let per_page = u64::from(BULK) / SECTOR as u64;
        for p in 0..pages {
            match self.request_into(T_IN, p * per_page, self.bulk, BULK) {
                Ok(0) => {}
                Ok(_) => fail(i, "bulk read failed (is the drive smaller than mib=?)"),
                Err(e) => fail(i, e),
            }
        }
        println!("WARDEN_BLK_READ {} {}", i, mib);
    }
}

/// Formats into a byte buffer (truncating).
pub(super) struct Cursor<'a> {
    pub buf: &'a mut [u8],
    pub pos: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.pos);
        self.buf[self.pos..self.pos + n].copy_from_slice(&s.as_bytes()[..n]);
        self.pos += n;
        Ok(())
    }
}
