//! Local APIC timer (xAPIC, MMIO at 0xfee00000) and IOAPIC routing for the keyboard IRQ.
//!
//! Used only to idle with `hlt` without burning a host CPU: the i8042's IRQ 1 is routed
//! through the IOAPIC so Ctrl-Alt-Del wakes the CPU immediately, and a periodic timer
//! interrupt wakes it now and then as a safety net, so the i8042 is polled even if that
//! IRQ is lost.
//!
//! The timer counts at the APIC bus frequency, which KVM fixes at 1 GHz (1 ns per tick).

const LAPIC_BASE: usize = 0xfee0_0000;
const TPR: usize = 0x080;
const SVR: usize = 0x0f0;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_DIVIDE: usize = 0x3e0;

const IOAPIC_BASE: usize = 0xfec0_0000;

/// KVM's emulated APIC bus frequency (ticks per second).
const APIC_BUS_HZ: u64 = 1_000_000_000;
/// Divide configuration 0b011 = divide by 16.
const DIVIDE_BY_16: u32 = 0x3;

fn write(reg: usize, val: u32) {
    // SAFETY: the LAPIC page is identity-mapped uncached (see paging.rs) and `reg` is one of
    // the documented 32-bit registers above.
    unsafe { ((LAPIC_BASE + reg) as *mut u32).write_volatile(val) }
}

fn ioapic_write(reg: u32, val: u32) {
    // SAFETY: the IOAPIC's IOREGSEL (offset 0) / IOWIN (offset 0x10) registers are
    // identity-mapped uncached; indirect register writes are the documented access method.
    unsafe {
        (IOAPIC_BASE as *mut u32).write_volatile(reg);
        ((IOAPIC_BASE + 0x10) as *mut u32).write_volatile(val);
    }
}

/// Enable the LAPIC and start a periodic timer interrupt every `period_ms`.
pub fn start_periodic(period_ms: u64) {
    write(SVR, 0x100 | crate::idt::SPURIOUS_VECTOR as u32); // software-enable
    write(TPR, 0);
    write(TIMER_DIVIDE, DIVIDE_BY_16);
    write(LVT_TIMER, (1 << 17) | crate::idt::TIMER_VECTOR as u32); // periodic, unmasked
    let count = APIC_BUS_HZ / 16 / 1000 * period_ms;
    write(TIMER_INITIAL, count.min(u32::MAX as u64) as u32);
}

/// Route IOAPIC pin `pin` (edge, active high) to `vector` on the boot CPU (APIC ID 0).
pub fn route_irq(pin: u32, vector: u8) {
    ioapic_write(0x10 + 2 * pin + 1, 0); // destination APIC ID 0
    ioapic_write(0x10 + 2 * pin, vector as u32); // fixed, physical, edge, high, unmasked
}
