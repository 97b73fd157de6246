//! A split virtqueue (virtio 1.x section 2.7), driver side, in one DMA page:
//! descriptor table at +0x000, available ring at +0x400, used ring at +0x800.
//!
//! Buffers are submitted as chains with [`Queue::add`] and completions collected with
//! [`Queue::pop_used`]; descriptors are recycled through a free list, so several chains can be
//! outstanding at once (as a net driver's receive queue needs).

use core::sync::atomic::{fence, Ordering};

/// Default number of descriptors (a power of two; small is enough for polled test I/O).
pub const SIZE: u16 = 16;
/// Largest queue that fits the one-page layout (64 descriptors = 0x400 bytes; the used ring,
/// 4 + 8 * 64 bytes, still fits in the last 0x800 bytes).
pub const MAX_SIZE: u16 = 64;

const DESC_OFF: u64 = 0x000;
const AVAIL_OFF: u64 = 0x400;
const USED_OFF: u64 = 0x800;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// One buffer of a chain.
#[derive(Clone, Copy)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    pub len: u32,
    /// True if the device writes this buffer (device-writable), false if it reads it.
    pub device_writes: bool,
}

/// Driver state of one virtqueue.
pub struct Queue {
    page: u64,
    size: u16,
    free_head: u16,
    num_free: u16,
    avail_idx: u16,
    last_used: u16,
}

impl Queue {
    /// A queue of [`SIZE`] descriptors in a fresh zeroed DMA page.
    pub fn new() -> Option<Self> {
        Self::with_size(SIZE)
    }

    /// A queue of `size` descriptors (a power of two, at most [`MAX_SIZE`]) in a fresh zeroed
    /// DMA page.
    pub fn with_size(size: u16) -> Option<Self> {
        if !size.is_power_of_two() || size > MAX_SIZE {
            return None;
        }
        let page = super::dma::alloc_page()?;
        let mut q = Queue { page, size, free_head: 0, num_free: size, avail_idx: 0, last_used: 0 };
        for i in 0..size {
            q.desc(i).next = (i + 1) % size;
        }
        Some(q)
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// (descriptor table, available ring, used ring) guest-physical addresses.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.page + DESC_OFF, self.page + AVAIL_OFF, self.page + USED_OFF)
    }

    fn desc(&mut self, i: u16) -> &mut Desc {
        // SAFETY: the descriptor table is `size` entries at the start of our own DMA page; the
        // device only reads descriptors of chains we made available (not free ones).
        unsafe { &mut *((self.page + DESC_OFF) as *mut Desc).add((i % self.size) as usize) }
    }

    fn avail_ptr(&self, off: u64) -> *mut u16 {
        (self.page + AVAIL_OFF + off) as *mut u16
    }

    /// Make a chain of buffers available to the device; returns its head descriptor index,
    /// or `None` if there are not enough free descriptors. Call `Device::notify` afterwards.
    pub fn add(&mut self, bufs: &[Buf]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.num_free as usize {
            return None;
        }
        let head = self.free_head;
        let mut i = head;
        for (n, b) in bufs.iter().enumerate() {
            let last = n + 1 == bufs.len();
            let d = self.desc(i);
            let next = d.next;
            d.addr = b.addr;
            d.len = b.len;
            d.flags = if b.device_writes { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            if !last {
                i = next;
            } else {
                self.free_head = next;
            }
        }
        self.num_free -= bufs.len() as u16;
        let slot = (self.avail_idx % self.size) as u64;
        // SAFETY: the available ring (flags, idx, ring[size]) is in our DMA page; the device
        // only reads it. The fence orders descriptor/ring writes before the index update.
        unsafe {
            self.avail_ptr(4 + 2 * slot).write_volatile(head);
            fence(Ordering::SeqCst);
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.avail_ptr(2).write_volatile(self.avail_idx);
        }
        Some(head)
    }

    /// Collect one completed chain: (head descriptor index, bytes written by the device).
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        let used = self.page + USED_OFF;
        // SAFETY: the used ring (flags, idx, ring[size] of {u32 id, u32 len}) is in our DMA
        // page; the device writes it, so every read is volatile, and the fence keeps the ring
        // entry (and the buffers) from being read before the index that publishes them.
        let (id, len) = unsafe {
            let idx = ((used + 2) as *const u16).read_volatile();
            if idx == self.last_used {
                return None;
            }
            fence(Ordering::SeqCst);
            let elem = used + 4 + 8 * (self.last_used % self.size) as u64;
            ((elem as *const u32).read_volatile(), ((elem + 4) as *const u32).read_volatile())
        };
        self.last_used = self.last_used.wrapping_add(1);
        // Return the chain to the free list.
        let head = id as u16 % self.size;
        let mut i = head;
        let mut n = 1;
        while self.desc(i).flags & F_NEXT != 0 {
            i = self.desc(i).next;
            n += 1;
        }
        let old_free = self.free_head;
        self.desc(i).next = old_free;
        self.free_head = head;
        self.num_free += n;
        Some((head, len))
    }
}
