//! Thin wrappers over the x86 instructions the guest needs (port I/O, cpuid, MSRs, halting).

use core::arch::asm;

/// Write a byte to an I/O port.
pub fn outb(port: u16, val: u8) {
    // SAFETY: port I/O has no memory effects; the guest owns the whole (virtual) machine and
    // only touches ports of devices it drives (serial, i8042, PIT, PIC).
    unsafe { asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags)) }
}

/// Read a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let val: u8;
    // SAFETY: as for `outb`; reading these ports has no memory effects.
    unsafe { asm!("in al, dx", out("al") val, in("dx") port, options(nomem, nostack, preserves_flags)) }
    val
}

/// Result of `cpuid`: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Read the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects (CR4.TSD is clear at ring 0 anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Enable interrupts and halt until the next one, atomically (`sti` takes effect after `hlt`
/// starts, so a pending interrupt cannot slip in between), then disable interrupts again.
pub fn wait_for_interrupt() {
    // SAFETY: the IDT is installed (see `idt::init`) before any interrupt source is enabled;
    // all handlers preserve every register they touch.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Halt forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stops the CPU; nothing else to preserve.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
