//! The virtio-mmio transport, version 2 ("modern") register layout.

/// "virt" in little endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Device feature bit: the device follows virtio 1.x (required for the v2 layout).
pub const F_VERSION_1: u64 = 1 << 32;

mod reg {
    pub const MAGIC: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: usize = 0x0a4;
    pub const CONFIG: usize = 0x100;
}

mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const FAILED: u32 = 128;
}

/// One virtio-mmio device window.
pub struct Device {
    base: usize,
}

impl Device {
    /// # Safety
    /// `base` must be the start of a virtio-mmio register window (at least 0x200 bytes) that is
    /// identity-mapped uncached and not driven by anyone else.
    pub unsafe fn new(base: u64) -> Self {
        Self { base: base as usize }
    }

    fn read(&self, off: usize) -> u32 {
        // SAFETY: `new`'s contract: the window is mapped device memory; `off` is a register.
        unsafe { ((self.base + off) as *const u32).read_volatile() }
    }

    fn write(&self, off: usize, val: u32) {
        // SAFETY: as for `read`.
        unsafe { ((self.base + off) as *mut u32).write_volatile(val) }
    }

    /// Check magic and version; return the device id (0 means "no device here").
    pub fn probe(&self) -> Result<u32, &'static str> {
        if self.read(reg::MAGIC) != MAGIC {
            return Err("bad magic");
        }
        if self.read(reg::VERSION) != 2 {
            return Err("not virtio-mmio version 2");
        }
        Ok(self.read(reg::DEVICE_ID))
    }

    /// Reset, acknowledge, and negotiate features: accept `VERSION_1` (required) plus those
    /// of `wanted` the device offers. Returns the negotiated set. Queues are set up next.
    pub fn negotiate(&self, wanted: u64) -> Result<u64, &'static str> {
        self.write(reg::STATUS, 0);
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let mut offered = 0u64;
        for sel in 0..2u32 {
            self.write(reg::DEVICE_FEATURES_SEL, sel);
            offered |= (self.read(reg::DEVICE_FEATURES) as u64) << (32 * sel);
        }
        if offered & F_VERSION_1 == 0 {
            self.fail();
            return Err("device does not offer VIRTIO_F_VERSION_1");
        }
        let accepted = offered & (wanted | F_VERSION_1);
        for sel in 0..2u32 {
            self.write(reg::DRIVER_FEATURES_SEL, sel);
            self.write(reg::DRIVER_FEATURES, (accepted >> (32 * sel)) as u32);
        }
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(reg::STATUS, s);
        if self.read(reg::STATUS) & status::FEATURES_OK == 0 {
            self.fail();
            return Err("device rejected features");
        }
        Ok(accepted)
    }

    /// Give queue `index` to the device. `queue` must stay alive while the device runs.
    pub fn setup_queue(&self, index: u32, queue: &super::queue::Queue) -> Result<(), &'static str> {
        self.write(reg::QUEUE_SEL, index);
        if self.read(reg::QUEUE_READY) != 0 {
            return Err("queue already in use");
        }
        let max = self.read(reg::QUEUE_NUM_MAX);
        if max < queue.size() as u32 {
            return Err("queue too small");
        }
        self.write(reg::QUEUE_NUM, queue.size() as u32);
        let (desc, avail, used) = queue.addresses();
        self.write(reg::QUEUE_DESC_LOW, desc as u32);
        self.write(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.write(reg::QUEUE_DRIVER_LOW, avail as u32);
        self.write(reg::QUEUE_DRIVER_HIGH, (avail >> 32) as u32);
        self.write(reg::QUEUE_DEVICE_LOW, used as u32);
        self.write(reg::QUEUE_DEVICE_HIGH, (used >> 32) as u32);
        self.write(reg::QUEUE_READY, 1);
        Ok(())
    }

    /// Finish initialisation: the device may now use its queues.
    pub fn driver_ok(&self) -> Result<(), &'static str> {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        self.write(reg::STATUS, s);
        if self.read(reg::STATUS) & status::FAILED != 0 {
            return Err("device failed to start");
        }
        Ok(())
    }

    /// Mark the device as failed (after an initialisation error).
    pub fn fail(&self) {
        self.write(reg::STATUS, self.read(reg::STATUS) | status::FAILED);
    }

    /// Tell the device that queue `index` has new buffers.
    pub fn notify(&self, index: u32) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.write(reg::QUEUE_NOTIFY, index);
    }

    /// Acknowledge whatever interrupts are pending (we poll, but keep the line quiet).
    pub fn ack_interrupts(&self) {
        let pending = self.read(reg::INTERRUPT_STATUS);
        if pending != 0 {
            self.write(reg::INTERRUPT_ACK, pending);
        }
    }

    /// Read a 32-bit word of the device-specific configuration space (the net driver reads
    /// its MAC address this way; the block test does not use it).
    pub fn config_read32(&self, off: usize) -> u32 {
        self.read(reg::CONFIG + off)
    }
}
