//! Output on the 16550 UART at I/O port 0x3f8 (COM1), which Firecracker copies to its stdout.
//!
//! Firecracker's UART accepts a byte at any time, so the transmitter status is not polled:
//! every port access is a VM exit, and skipping the LSR read halves the cost of printing.

use crate::arch;

const THR: u16 = 0x3f8;

/// Write raw bytes.
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        arch::outb(THR, b);
    }
}

/// Write a string.
pub fn write_str(s: &str) {
    write_bytes(s.as_bytes());
}

/// `core::fmt` sink for `print!`/`println!`.
pub struct Serial;

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_str(s);
        Ok(())
    }
}

/// Print formatted text on the serial port.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::serial::Serial, format_args!($($arg)*));
    }};
}

/// Print a formatted line (terminated by "\n") on the serial port.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        $crate::print!($($arg)*);
        $crate::serial::write_str("\n");
    }};
}
