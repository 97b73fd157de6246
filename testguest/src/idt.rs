//! Interrupt descriptor table.
//!
//! Exceptions (vectors 0..32) print `testguest: error: exception ...` and power off, so a bug
//! never turns into a silent triple-fault reboot loop. The LAPIC timer (vector 0x20) counts
//! ticks in [`TIMER_TICKS`]; any other vector just gets an EOI. All handlers are assembly
//! stubs that only touch `rax`, so the interrupted code's state (including SSE) is preserved.

use crate::arch;
use core::arch::{asm, global_asm};
use core::ptr::addr_of_mut;
use core::sync::atomic::AtomicU64;

/// Vector of the LAPIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector for the i8042 keyboard IRQ (IOAPIC pin 1).
pub const KBD_VECTOR: u8 = 0x21;
/// Vector for a virtio-net device's IRQ (`mode=net`, only to wake from `hlt`).
pub const NET_VECTOR: u8 = 0x22;
/// Spurious-interrupt vector of the LAPIC.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Incremented by every LAPIC timer interrupt.
#[no_mangle]
pub static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
testguest_exc_\n:
    push \n
    jmp testguest_exc_common
    .endr

testguest_exc_common:
    mov rdi, [rsp]          /* vector */
    lea rsi, [rsp + 8]      /* [error code,] rip, cs, rflags, ... */
    and rsp, -16
    call testguest_exception
    ud2

    .global testguest_timer_irq
testguest_timer_irq:
    push rax
    lock inc qword ptr [rip + TIMER_TICKS]
    mov rax, 0xfee000b0     /* LAPIC EOI */
    mov dword ptr [rax], 0
    pop rax
    iretq

    .global testguest_other_irq
testguest_other_irq:
    push rax
    mov rax, 0xfee000b0
    mov dword ptr [rax], 0
    pop rax
    iretq

    .global testguest_spurious_irq
testguest_spurious_irq:
    iretq

    .section .rodata
    .balign 8
    .global testguest_exc_table
testguest_exc_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad testguest_exc_\n
    .endr
    "#
);

extern "C" {
    static testguest_exc_table: [u64; 32];
    fn testguest_timer_irq();
    fn testguest_other_irq();
    fn testguest_spurious_irq();
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    attr: u8,
    offset_mid: u16,
    offset_hi: u32,
    reserved: u32,
}

const EMPTY: Gate = Gate {
    offset_lo: 0,
    selector: 0,
    ist: 0,
    attr: 0,
    offset_mid: 0,
    offset_hi: 0,
    reserved: 0,
};

#[repr(C, align(16))]
struct Idt([Gate; 256]);

#[link_section = ".lazy.idt"]
static mut IDT: Idt = Idt([EMPTY; 256]);

fn gate(handler: u64, cs: u16) -> Gate {
    Gate {
        offset_lo: handler as u16,
        selector: cs,
        ist: 0,
        attr: 0x8e, // present, DPL 0, 64-bit interrupt gate
        offset_mid: (handler >> 16) as u16,
        offset_hi: (handler >> 32) as u32,
        reserved: 0,
    }
}

/// Install the IDT and mask the legacy 8259 PICs (we only use the LAPIC and IOAPIC).
/// Interrupts stay disabled; they are only enabled inside [`arch::wait_for_interrupt`].
pub fn init() {
    arch::outb(0x21, 0xff);
    arch::outb(0xa1, 0xff);
    let cs: u16;
    // SAFETY: reading CS has no side effects. We reuse Firecracker's code segment.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    // SAFETY: single-threaded, interrupts are off, and this is the only code touching IDT.
    // The exception table is a read-only array defined in the assembly above.
    unsafe {
        let idt = &mut *addr_of_mut!(IDT);
        for (v, &h) in testguest_exc_table.iter().enumerate() {
            idt.0[v] = gate(h, cs);
        }
        for g in idt.0[32..].iter_mut() {
            *g = gate(testguest_other_irq as *const () as u64, cs);
        }
        idt.0[TIMER_VECTOR as usize] = gate(testguest_timer_irq as *const () as u64, cs);
        idt.0[SPURIOUS_VECTOR as usize] = gate(testguest_spurious_irq as *const () as u64, cs);
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let ptr = Pointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: idt as *const Idt as u64 };
        asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
}

/// Called by the exception stubs: report and power off.
#[no_mangle]
extern "C" fn testguest_exception(vector: u64, frame: *const u64) -> ! {
    let has_error = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
    // SAFETY: `frame` points at the CPU-pushed exception frame on our stack.
    let (err, rip) = unsafe {
        if has_error { (*frame, *frame.add(1)) } else { (0, *frame) }
    };
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    crate::println!(
        "testguest: error: exception {} err={:#x} rip={:#x} cr2={:#x}",
        vector, err, rip, cr2
    );
    crate::power::off()
}
