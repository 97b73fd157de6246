//! Detecting Ctrl-Alt-Del from Firecracker's `SendCtrlAltDel` action.
//!
//! Firecracker's i8042 emulation queues the scancode-set-2 bytes 0x14 (Ctrl), 0x11 (Alt),
//! 0xe0 0x71 (Del) and sets bit 0 (output buffer full) of the status port 0x64. We drain
//! port 0x60 whenever data is available and treat a Del make code (set 2: 0xe0 0x71; set 1:
//! 0xe0 0x53, in case a future Firecracker changes sets) as the trigger. Nothing else in this
//! guest makes the i8042 produce data, so any stray byte is simply ignored.

use crate::arch;

const DATA: u16 = 0x60;
const STATUS: u16 = 0x64;
const OUTPUT_FULL: u8 = 1 << 0;

/// Scancode state across polls.
pub struct Keyboard {
    extended: bool,
}

impl Keyboard {
    pub const fn new() -> Self {
        Self { extended: false }
    }

    /// Drain pending bytes; true once the Ctrl-Alt-Del sequence (its Del key) was seen.
    pub fn poll(&mut self) -> bool {
        let mut seen = false;
        // Bounded: the emulated buffer holds 16 bytes.
        for _ in 0..32 {
            if arch::inb(STATUS) & OUTPUT_FULL == 0 {
                break;
            }
            let b = arch::inb(DATA);
            if self.extended && (b == 0x71 || b == 0x53) {
                seen = true;
            }
            self.extended = b == 0xe0;
        }
        seen
    }
}

/// Print the Ctrl-Alt-Del line and power off.
pub fn ctrl_alt_del() -> ! {
    crate::serial::write_str("testguest: ctrl-alt-del\n");
    crate::power::off()
}
