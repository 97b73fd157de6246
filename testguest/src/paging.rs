//! Mapping 1..4 GiB, which Firecracker's boot page tables leave out.
//!
//! Firecracker identity-maps only the first GiB, but the virtio-mmio devices live at
//! 0xd0000000, the IOAPIC at 0xfec00000 and the local APIC at 0xfee00000 (and RAM may extend
//! past 1 GiB). Rather than building new tables, we extend Firecracker's: find its PDPT via
//! CR3 and fill entries 1..=3. With 1 GiB pages (CPUID `pdpe1gb`, present here) this needs
//! no new guest page at all. Otherwise, three 2 MiB-page directories from `.lazy` are used. The 3..4 GiB range (the
//! 32-bit MMIO hole, never RAM on Firecracker) is mapped uncached (PCD|PWT).

use crate::arch;
use core::arch::asm;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Start of the uncached region.
const MMIO_START: u64 = 3 << 30;
const GIB: u64 = 1 << 30;

/// End of the identity map once [`init`] ran: nothing at or above this address is mapped.
pub const MAPPED_END: u64 = 4 << 30;

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[link_section = ".lazy.pagetables"]
static mut PDS: [Table; 3] = [const { Table([0; 512]) }; 3];

static DONE: AtomicBool = AtomicBool::new(false);

fn cache_bits(addr: u64) -> u64 {
    if addr >= MMIO_START {
        PCD | PWT
    } else {
        0
    }
}

/// Identity-map 0..4 GiB (idempotent).
pub fn init() {
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let gib_pages = arch::cpuid(0x8000_0001, 0).3 & (1 << 26) != 0;
    // SAFETY: single-threaded. CR3 points at Firecracker's PML4 whose entry 0 points at a PDPT;
    // both are in identity-mapped low RAM (below 1 MiB) that nothing else uses after boot.
    // Entry 0 of the PDPT (the first GiB, where we run) is left untouched; entries 1..=3 are
    // not present before, so no live mapping changes. The CR3 reload flushes the TLB.
    unsafe {
        let cr3: u64;
        asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
        let pml4 = (cr3 & ADDR_MASK) as *const u64;
        let pdpt = (pml4.read() & ADDR_MASK) as *mut u64;
        for g in 1..4u64 {
            let base = g * GIB;
            let entry = if gib_pages {
                base | PRESENT | WRITABLE | HUGE | cache_bits(base)
            } else {
                let pd = &mut (*addr_of_mut!(PDS))[g as usize - 1];
                for (i, e) in pd.0.iter_mut().enumerate() {
                    let addr = base + ((i as u64) << 21);
                    *e = addr | PRESENT | WRITABLE | HUGE | cache_bits(addr);
                }
                pd as *const Table as u64 | PRESENT | WRITABLE
            };
            pdpt.add(g as usize).write_volatile(entry);
        }
        asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags));
    }
}
