//! `testguest`: a tiny bare-metal x86-64 guest for Firecracker.
//!
//! Firecracker loads this ELF at 16 MiB and jumps to `_start` in 64-bit long mode with the
//! first GiB identity-mapped, interrupts off and `rsi` pointing at the Linux `boot_params`
//! ("zero page"). The entry code below sets up a stack, zeroes `.bss`, enables SSE and calls
//! [`rust_main`], which reads the kernel command line and runs one of the test modes described
//! in `README.md`.
//!
//! The code is nevertheless compiled WITHOUT SSE (see `.cargo/config.toml`): this host runs
//! Firecracker on `kvm-pvm`, which after an MMIO exit emulates the following guest instructions
//! in a batch and fails the VM (`KVM_EXIT_INTERNAL_ERROR`) on SSE instructions such as the
//! `xorps`/`movaps` LLVM uses to clear structs. SSE is still enabled in case `core` uses it.
//!
//! Everything is synchronous and polled; interrupts only wake `hlt` (the LAPIC timer, the
//! keyboard and, in `mode=net`, the virtio-net device).
#![no_std]
#![no_main]

mod arch;
mod bootparams;
mod cmdline;
mod i8042;
mod idt;
mod lapic;
mod mem;
mod modes;
mod paging;
mod power;
mod serial;
mod tsc;
mod virtio;

use core::arch::global_asm;

/// Size of the boot stack (in `.lazy`: not cleared, only the pages actually used get touched).
const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// The only stack. Referenced by symbol from the entry assembly.
#[no_mangle]
#[link_section = ".lazy.stack"]
static mut BOOT_STACK: Stack = Stack([0; STACK_SIZE]);

// Entry point. Firecracker enters here with rsi = &boot_params.
global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
    .code64
_start:
    cli
    cld
    mov r15, rsi                       /* keep boot_params across the bss clear */
    lea rsp, [rip + BOOT_STACK + {stack_size}]
    /* Zero the small .bss (16-byte aligned and sized; see link.ld). Plain stores, not
       `rep stosb`, which is very slow on fresh pages under nested KVM (see mem.rs). */
    lea rdi, [rip + __bss_start]
    lea rcx, [rip + __bss_end]
1:  cmp rdi, rcx
    jae 3f
    mov qword ptr [rdi], 0
    mov qword ptr [rdi + 8], 0
    add rdi, 16
    jmp 1b
3:
    /* Enable SSE: CR0.EM=0, CR0.MP=1, CR4.OSFXSR=1, CR4.OSXMMEXCPT=1. */
    mov rax, cr0
    and rax, ~(1 << 2)
    or rax, (1 << 1)
    mov cr0, rax
    mov rax, cr4
    or rax, (1 << 9) | (1 << 10)
    mov cr4, rax
    mov rdi, r15
    call rust_main
2:  cli
    hlt
    jmp 2b
    "#,
    stack_size = const STACK_SIZE,
);

/// First Rust code to run. `boot_params` is the physical (= virtual) address of the zero page.
#[no_mangle]
extern "C" fn rust_main(boot_params: usize) -> ! {
    serial::write_str("testguest: boot\n");
    let bp = bootparams::BootParams::new(boot_params);
    modes::run(&bp)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("testguest: error: panic: {}", info.message());
    power::off()
}
