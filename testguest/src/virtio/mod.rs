//! virtio over MMIO (version 2 register layout) and split virtqueues, polled without
//! interrupts. Kept device-agnostic so block (see [`blk`]) and net (see [`net`]) share it.

pub mod blk;
pub mod mmio;
pub mod net;
pub mod queue;

/// Memory the devices read and write (rings, request headers, data buffers).
///
/// A fixed pool of page-aligned pages in `.lazy` (zeroed when handed out), handed out by a bump allocator and
/// never freed: a test guest sets up a handful of devices once. Guest-physical addresses equal
/// virtual addresses because the image is linked at its physical load address.
pub mod dma {
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// Size of one allocation unit.
    pub const PAGE: usize = 4096;
    const PAGES: usize = 64;

    #[repr(C, align(4096))]
    struct Pool([[u8; PAGE]; PAGES]);

    #[link_section = ".lazy.dma"]
    static mut POOL: Pool = Pool([[0; PAGE]; PAGES]);
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    /// A zeroed 4 KiB page for device DMA, or `None` when the pool is exhausted.
    pub fn alloc_page() -> Option<u64> {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        if i >= PAGES {
            return None;
        }
        // SAFETY: page `i` is handed out exactly once, so nobody else references it. The pool
        // is in `.lazy` (not cleared at boot), so clear it here.
        unsafe {
            let page = core::ptr::addr_of_mut!(POOL.0[i]);
            page.write_bytes(0, 1);
            Some(page as u64)
        }
    }
}
