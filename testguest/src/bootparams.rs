//! Reading Linux `boot_params` (the "zero page") that Firecracker fills in for us: the kernel
//! command line pointer and the e820 memory map. Offsets are from Linux's
//! `arch/x86/include/uapi/asm/bootparam.h`.

const E820_ENTRIES: usize = 0x1e8; // u8
const CMD_LINE_PTR: usize = 0x228; // u32 (hdr.cmd_line_ptr)
const CMDLINE_SIZE: usize = 0x238; // u32 (hdr.cmdline_size)
const E820_TABLE: usize = 0x2d0; // [e820_entry; 128], 20 bytes each
const E820_MAX: usize = 128;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// One e820 entry.
#[derive(Clone, Copy, Debug)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// View of the zero page at a physical (= virtual) address.
pub struct BootParams {
    base: usize,
}

impl BootParams {
    /// `base` is the value Firecracker put in `rsi`.
    pub fn new(base: usize) -> Self {
        Self { base }
    }

    fn read<T: Copy>(&self, off: usize) -> T {
        // SAFETY: the zero page is 4 KiB of guest RAM inside the identity map, set up by
        // Firecracker and never written by the guest; all offsets used are within it.
        unsafe { ((self.base + off) as *const T).read_unaligned() }
    }

    /// The kernel command line (empty if absent). It lives in guest RAM that the guest never
    /// writes (Firecracker puts it at 128 KiB), so a `'static` borrow is fine.
    pub fn cmdline(&self) -> &'static [u8] {
        let ptr = self.read::<u32>(CMD_LINE_PTR) as usize;
        if ptr == 0 {
            return &[];
        }
        let max = match self.read::<u32>(CMDLINE_SIZE) as usize {
            0 => 4096,
            n => n.min(64 * 1024),
        };
        let mut len = 0;
        // SAFETY: the command line is NUL-terminated within `cmdline_size` bytes of guest RAM
        // below 1 GiB (identity-mapped); we never read past `max`.
        unsafe {
            while len < max && *((ptr + len) as *const u8) != 0 {
                len += 1;
            }
            core::slice::from_raw_parts(ptr as *const u8, len)
        }
    }

    /// The e820 entries.
    pub fn e820(&self) -> impl Iterator<Item = E820Entry> + '_ {
        let n = (self.read::<u8>(E820_ENTRIES) as usize).min(E820_MAX);
        (0..n).map(move |i| {
            let off = E820_TABLE + i * 20;
            E820Entry {
                addr: self.read(off),
                size: self.read(off + 8),
                kind: self.read(off + 16),
            }
        })
    }
}
