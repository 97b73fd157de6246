//! Parsing the kernel command line into the test [`Config`].
//!
//! Words are separated by spaces; `key=value` words we know are used, everything else is
//! ignored (Firecracker adds its own words, e.g. `virtio_mmio.device=4K@0xd0000000:5` for
//! each virtio-mmio device, in the order the devices were attached).

/// Maximum number of virtio-mmio devices remembered.
pub const MAX_VIRTIO: usize = 16;

/// What to do after booting.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Poweroff,
    /// Write numbered lines to the serial console as fast as it takes them, until Ctrl-Alt-Del.
    Flood,
    /// Print a boot-time token and a growing counter every 20 ms, until Ctrl-Alt-Del.
    State,
    Idle,
    Touch,
    Spin,
    Blk,
    Net,
}

/// A virtio-mmio device announced on the command line.
#[derive(Clone, Copy, Debug)]
pub struct VirtioMmio {
    pub base: u64,
    pub size: u64,
    /// Interrupt line (IOAPIC pin). Only `mode=net` uses it, to wake from `hlt`.
    pub irq: u32,
}

/// Everything the command line can ask for.
pub struct Config {
    pub mode: Mode,
    pub marker: &'static str,
    pub mib: Option<u64>,
    pub secs: Option<u64>,
    pub then_idle: bool,
    /// The guest's IPv4 address: the first field of a Linux-style `ip=` word, if it is one.
    pub ip: Option<[u8; 4]>,
    pub virtio: [Option<VirtioMmio>; MAX_VIRTIO],
    pub virtio_count: usize,
}

/// Parse the command line; `Err` holds a message for a `testguest: error:` line.
pub fn parse(line: &'static [u8]) -> Result<Config, &'static str> {
    let line = core::str::from_utf8(line).map_err(|_| "command line is not UTF-8")?;
    let mut cfg = Config {
        mode: Mode::Poweroff,
        marker: "ready",
        mib: None,
        secs: None,
        then_idle: false,
        ip: None,
        virtio: [None; MAX_VIRTIO],
        virtio_count: 0,
    };
    for word in line.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else { continue };
        match key {
            "mode" => {
                cfg.mode = match value {
                    "poweroff" => Mode::Poweroff,
                    "idle" => Mode::Idle,
                    "touch" => Mode::Touch,
                    "spin" => Mode::Spin,
                    "blk" => Mode::Blk,
                    "net" => Mode::Net,
                    "flood" => Mode::Flood,
                    "state" => Mode::State,
                    _ => return Err("unknown mode"),
                }
            }
            "marker" if !value.is_empty() => cfg.marker = value,
            "marker" => return Err("empty marker"),
            "mib" => cfg.mib = Some(parse_u64(value).ok_or("bad mib=")?),
            "secs" => cfg.secs = Some(parse_u64(value).ok_or("bad secs=")?),
            "then" => match value {
                "idle" => cfg.then_idle = true,
                "poweroff" => cfg.then_idle = false,
                _ => return Err("bad then="),
            },
            // Linux form `ip=<client>:<server>:<gw>:<netmask>:<host>:<dev>:<autoconf>`; only
            // the client address matters. Other forms (`ip=dhcp`, `ip=off`) mean "no address".
            "ip" => cfg.ip = parse_ipv4(value.split(':').next().unwrap_or("")),
            "virtio_mmio.device" => {
                let dev = parse_virtio(value).ok_or("bad virtio_mmio.device=")?;
                if cfg.virtio_count == MAX_VIRTIO {
                    return Err("too many virtio_mmio devices");
                }
                cfg.virtio[cfg.virtio_count] = Some(dev);
                cfg.virtio_count += 1;
            }
            _ => {}
        }
    }
    match cfg.mode {
        Mode::Touch if cfg.mib.is_none() => Err("mode=touch needs mib=N"),
        Mode::Spin if cfg.secs.is_none() => Err("mode=spin needs secs=N"),
        _ => Ok(cfg),
    }
}

/// Decimal, or hexadecimal with a `0x` prefix.
fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

/// Dotted-quad IPv4 address.
fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut parts = s.split('.');
    for b in ip.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *b = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(ip)
}

/// `<size>[KMG]@<base>:<irq>[:<id>]` as in Linux's `virtio_mmio.device=`.
fn parse_virtio(s: &str) -> Option<VirtioMmio> {
    let (size, rest) = s.split_once('@')?;
    let (mult, digits) = match size.as_bytes().last()? {
        b'K' | b'k' => (1u64 << 10, &size[..size.len() - 1]),
        b'M' | b'm' => (1 << 20, &size[..size.len() - 1]),
        b'G' | b'g' => (1 << 30, &size[..size.len() - 1]),
        _ => (1, size),
    };
    let size = parse_u64(digits)?.checked_mul(mult)?;
    let mut parts = rest.split(':');
    let base = parse_u64(parts.next()?)?;
    let irq = parse_u64(parts.next()?)? as u32;
    Some(VirtioMmio { base, size, irq })
}
