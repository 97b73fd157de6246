//! The test modes selected by `mode=` on the kernel command line (see README.md).

use crate::bootparams::{BootParams, E820_RAM};
use crate::cmdline::{self, Config, Mode};
use crate::i8042::{self, Keyboard};
use crate::{arch, idt, lapic, paging, power, println, tsc, virtio};

/// Print an error line and power off.
pub fn fail(msg: &str) -> ! {
    println!("testguest: error: {}", msg);
    power::off()
}

/// Parse the command line and run the selected mode; never returns.
pub fn run(bp: &BootParams) -> ! {
    let cfg = match cmdline::parse(bp.cmdline()) {
        Ok(cfg) => cfg,
        Err(msg) => fail(msg),
    };
    println!("WARDEN_MARKER {}", cfg.marker);
    match cfg.mode {
        Mode::Poweroff => power::off(),
        Mode::Idle => idle(),
        Mode::Touch => touch(bp, cfg.mib.unwrap_or(0)),
        Mode::Spin => spin(cfg.secs.unwrap_or(0)),
        Mode::Blk => blk(&cfg),
        Mode::Net => virtio::net::run(&cfg),
        Mode::Flood => flood(),
        Mode::State => state(),
    }
}

/// A guest that floods its console: numbered lines, forever, checking for Ctrl-Alt-Del
/// between lines.
fn flood() -> ! {
    let mut kbd = Keyboard::new();
    let mut n: u64 = 0;
    loop {
        println!("WARDEN_FLOOD {} ................................................", n);
        n += 1;
        if kbd.poll() {
            i8042::ctrl_alt_del();
        }
    }
}

/// Milliseconds between two `WARDEN_STATE` lines.
const STATE_PERIOD_MS: u64 = 20;

/// The state of `mode=state`, in guest memory: the token and the counter.
struct State {
    token: core::cell::UnsafeCell<u64>,
    count: core::cell::UnsafeCell<u64>,
}

// SAFETY: the guest runs one thread on one vCPU, and no interrupt handler touches `STATE`.
unsafe impl Sync for State {}

static STATE: State = State {
    token: core::cell::UnsafeCell::new(0),
    count: core::cell::UnsafeCell::new(0),
};

/// A guest with state a fresh boot cannot reproduce: a token read from the TSC at boot and a
/// counter, printed every [`STATE_PERIOD_MS`], forever. Both are kept in memory (a static,
/// read and written with volatile accesses on every line, never only in registers), so a
/// restore shows the snapshot's memory and not just its registers: a memory file from an
/// older snapshot would take the counter back. It waits by polling the TSC (never `hlt`: this
/// host's nested KVM does not wake a restored guest from `hlt`) and checks for Ctrl-Alt-Del
/// about every millisecond.
fn state() -> ! {
    // Read first, before anything whose duration is fixed: the TSC's value at this point
    // depends on how long Firecracker took to start the vCPU, which differs on every boot.
    let (token, count) = (STATE.token.get(), STATE.count.get());
    // SAFETY: see `State`: nothing else accesses these cells.
    unsafe {
        token.write_volatile(arch::rdtsc());
        count.write_volatile(0);
    }
    let (hz, _) = tsc::frequency();
    let period = (hz / 1000).saturating_mul(STATE_PERIOD_MS).max(1);
    let poll_every = (hz / 1000).max(1); // about 1 ms between i8042 polls
    let mut kbd = Keyboard::new();
    let mut next = arch::rdtsc();
    let mut next_poll = next;
    loop {
        let now = arch::rdtsc();
        // A restore may move the TSC; going backwards, or far ahead of the deadline, must not
        // stall the lines, so either case acts now and restarts the period from here.
        if now >= next || next - now > period {
            // SAFETY: see `State`.
            let (t, n) = unsafe { (token.read_volatile(), count.read_volatile()) };
            println!("WARDEN_STATE token={:x} count={}", t, n);
            // SAFETY: see `State`.
            unsafe { count.write_volatile(n + 1) };
            next = now.wrapping_add(period);
        }
        if now >= next_poll || next_poll - now > poll_every {
            if kbd.poll() {
                i8042::ctrl_alt_del();
            }
            next_poll = now.wrapping_add(poll_every);
        }
        core::hint::spin_loop();
    }
}

/// Period of the safety-net timer while idle. The keyboard IRQ wakes us for Ctrl-Alt-Del
/// right away, so the timer only bounds the delay should that IRQ ever be lost; a slow timer
/// keeps the cost of many idle VMs on one host negligible.
const IDLE_TIMER_MS: u64 = 1000;

/// Halt until Ctrl-Alt-Del, waking on the keyboard IRQ and a periodic LAPIC timer.
fn idle() -> ! {
    paging::init();
    idt::init();
    let mut kbd = Keyboard::new();
    lapic::start_periodic(IDLE_TIMER_MS);
    lapic::route_irq(1, idt::KBD_VECTOR);
    loop {
        if kbd.poll() {
            i8042::ctrl_alt_del();
        }
        arch::wait_for_interrupt();
    }
}

/// First address the touch mode may write: above the image, stack and tables.
const TOUCH_START: u64 = 32 << 20;
const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

fn touch(bp: &BootParams, mib: u64) -> ! {
    extern "C" {
        static __image_end: u8;
    }
    // SAFETY: only the address of the linker-defined symbol is taken.
    let image_end = unsafe { &__image_end as *const u8 as u64 };
    let start = TOUCH_START.max((image_end + MIB - 1) & !(MIB - 1));
    // The RAM region containing `start`, clipped to what our page tables map.
    let end = bp
        .e820()
        .filter(|e| e.kind == E820_RAM && e.addr <= start && start < e.addr + e.size)
        .map(|e| (e.addr + e.size).min(paging::MAPPED_END))
        .next()
        .unwrap_or(start);
    let fits = (end.saturating_sub(start)) / MIB;
    let todo = if mib > fits {
        println!("testguest: only {} MiB fit (asked for {})", fits, mib);
        fits
    } else {
        mib
    };
    if start + todo * MIB > 1 << 30 {
        paging::init();
    }
    let mut kbd = Keyboard::new();
    for m in 0..todo {
        let base = start + m * MIB;
        let mut p = base;
        while p < base + MIB {
            // SAFETY: [start, end) is usable RAM per e820, identity-mapped, and not used by
            // anything else (the image, stack and boot data all live below 32 MiB).
            unsafe { (p as *mut u8).write_volatile(1) };
            p += PAGE;
        }
        let done = m + 1;
        if done % 16 == 0 {
            println!("testguest: touched {} MiB", done);
        }
        if kbd.poll() {
            i8042::ctrl_alt_del();
        }
    }
    println!("WARDEN_TOUCHED {}", todo);
    power::off()
}

fn spin(secs: u64) -> ! {
    let (hz, source) = tsc::frequency();
    println!("testguest: tsc {} kHz via {}", hz / 1000, source.name());
    let mut kbd = Keyboard::new();
    let start = arch::rdtsc();
    let total = hz.saturating_mul(secs);
    let poll_every = hz / 1000; // about 1 ms between i8042 polls
    let mut next_poll = start;
    loop {
        let now = arch::rdtsc();
        if now.wrapping_sub(start) >= total {
            break;
        }
        if now.wrapping_sub(next_poll) < u64::MAX / 2 {
            if kbd.poll() {
                i8042::ctrl_alt_del();
            }
            next_poll = now + poll_every;
        }
        core::hint::spin_loop();
    }
    println!("WARDEN_SPUN {}", secs);
    power::off()
}

fn blk(cfg: &Config) -> ! {
    paging::init();
    let count = virtio::blk::run_all(cfg);
    println!("WARDEN_BLK_DONE {}", count);
    if cfg.then_idle {
        idle()
    }
    power::off()
}
