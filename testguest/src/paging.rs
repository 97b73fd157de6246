//! Our own page tables: identity-map the first 4 GiB with 2 MiB pages.
//!
//! Firecracker's boot tables only map the first GiB, but the virtio-mmio devices live at
//! 0xd0000000 and the local APIC at 0xfee00000. The 3..4 GiB range (the 32-bit MMIO hole,
//! never RAM on Firecracker) is mapped uncached (PCD|PWT); the rest write-back.

use core::ptr::addr_of_mut;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;

/// Start of the uncached region.
const MMIO_START: u64 = 3 << 30;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut PML4: Table = Table([0; 512]);
static mut PDPT: Table = Table([0; 512]);
static mut PDS: [Table; 4] = [const { Table([0; 512]) }; 4];

/// Build the tables and load CR3.
///
/// # Safety
/// Must run once, before any access above 1 GiB, while nothing else uses the page tables.
pub unsafe fn init() {
    // SAFETY: single-threaded early boot; these statics are only touched here. The image is
    // linked at its physical address, so a static's address is also its physical address.
    unsafe {
        let pml4 = &mut *addr_of_mut!(PML4);
        let pdpt = &mut *addr_of_mut!(PDPT);
        let pds = &mut *addr_of_mut!(PDS);
        for (g, pd) in pds.iter_mut().enumerate() {
            for (i, e) in pd.0.iter_mut().enumerate() {
                let addr = ((g as u64) << 30) | ((i as u64) << 21);
                let cache = if addr >= MMIO_START { PCD | PWT } else { 0 };
                *e = addr | PRESENT | WRITABLE | HUGE | cache;
            }
            pdpt.0[g] = pd as *const Table as u64 | PRESENT | WRITABLE;
        }
        pml4.0[0] = pdpt as *const Table as u64 | PRESENT | WRITABLE;
        core::arch::asm!("mov cr3, {}", in(reg) pml4 as *const Table as u64, options(nostack));
    }
}

/// End of the identity map: nothing at or above this address is accessible.
pub const MAPPED_END: u64 = 4 << 30;
