//! Wall-clock time from the TSC.
//!
//! The TSC frequency is taken, in order of preference, from CPUID leaf 0x15 (crystal clock
//! ratio, if it reports the crystal frequency), the KVM/VMware timing leaf 0x40000010, or by
//! counting TSC ticks during a 50 ms one-shot of PIT channel 2 (ports 0x42/0x43, gated and read
//! back through port 0x61), which always works on Firecracker's in-kernel PIT.

use crate::arch;

/// How the frequency was found.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    Cpuid15,
    Hypervisor,
    Pit,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Cpuid15 => "cpuid-0x15",
            Source::Hypervisor => "cpuid-0x40000010",
            Source::Pit => "pit",
        }
    }
}

/// TSC ticks per second and how that was determined.
pub fn frequency() -> (u64, Source) {
    let (max, ..) = arch::cpuid(0, 0);
    if max >= 0x15 {
        let (den, num, crystal, _) = arch::cpuid(0x15, 0);
        if den != 0 && num != 0 && crystal != 0 {
            return (crystal as u64 * num as u64 / den as u64, Source::Cpuid15);
        }
    }
    let (_, _, ecx, _) = arch::cpuid(1, 0);
    if ecx & (1 << 31) != 0 {
        let (hmax, ..) = arch::cpuid(0x4000_0000, 0);
        if (0x4000_0010..0x4001_0000).contains(&hmax) {
            let (khz, ..) = arch::cpuid(0x4000_0010, 0);
            if khz != 0 {
                return (khz as u64 * 1000, Source::Hypervisor);
            }
        }
    }
    (pit_calibrate(), Source::Pit)
}

/// PIT input clock.
const PIT_HZ: u64 = 1_193_182;

fn pit_calibrate() -> u64 {
    const MS: u64 = 50;
    let latch = (PIT_HZ * MS / 1000) as u16;
    // Gate channel 2 on, speaker off.
    arch::outb(0x61, (arch::inb(0x61) & !0x02) | 0x01);
    // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
    arch::outb(0x43, 0xb0);
    arch::outb(0x42, latch as u8);
    arch::outb(0x42, (latch >> 8) as u8);
    let start = arch::rdtsc();
    // OUT2 (port 0x61 bit 5) goes high when the count reaches zero.
    while arch::inb(0x61) & 0x20 == 0 {}
    let end = arch::rdtsc();
    (end - start) * 1000 / MS
}
