//! virtio-net test (`mode=net`): send a hello frame, then for `secs` seconds print every frame
//! received and answer `WARDEN-PING` frames, ARP requests and ICMP echo requests.
//!
//! Only `VIRTIO_F_VERSION_1` and `VIRTIO_NET_F_MAC` are negotiated, so every buffer starts with
//! the 12-byte `virtio_net_hdr_v1`, all zero on transmit, and no offloads are in play.
//!
//! Receive queue 0 has [`RX_BUFS`] single-descriptor buffers of 2 KiB (enough for a 1514-byte
//! frame plus the header). That is more than "a few" on purpose: Firecracker only reads a frame
//! from the tap when the buffers posted add up to at least 65562 bytes (the largest possible
//! frame with offloads). With v1.12.1, 16 buffers of 2 KiB were measured to receive nothing.
//! Transmit queue 1 sends one frame at a time and waits for its completion.
//!
//! The device's IRQ line (from `virtio_mmio.device=...:<irq>`) is routed through the IOAPIC
//! so that a received frame wakes the `sti; hlt` loop at once; a 50 ms LAPIC timer bounds the
//! wait in case an IRQ is missed. The used rings are polled either way.

use super::blk::Cursor;
use super::mmio::{Device, F_VERSION_1};
use super::queue::{Buf, Queue};
use crate::cmdline::Config;
use crate::i8042::{self, Keyboard};
use crate::{arch, idt, lapic, paging, power, println, serial, tsc};
use core::fmt;

/// virtio device id of a network device.
pub const DEVICE_ID: u32 = 1;
/// Feature bit: the device has a MAC address in its configuration space.
const F_MAC: u64 = 1 << 5;
/// Size of `virtio_net_hdr_v1` (with `VIRTIO_F_VERSION_1`).
const HDR: usize = 12;

const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
const RX_QUEUE_SIZE: u16 = 64;
/// Size of one receive buffer (header included).
const RX_BUF: usize = 2048;
/// Number of receive buffers: 80 KiB in all, see the module comment.
const RX_BUFS: usize = 40;

/// Ethernet header length and minimum frame length (without the FCS).
const ETH_HDR: usize = 14;
const MIN_FRAME: usize = 60;
/// Largest frame we build (fits a receive buffer, so any received frame can be echoed).
const MAX_FRAME: usize = RX_BUF - HDR;

const ETHERTYPE_WARDEN: u16 = 0x88b5;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;

const PING: &[u8] = b"WARDEN-PING";
const PONG: &[u8] = b"WARDEN-PONG";

/// Period of the LAPIC timer that bounds each `hlt`. The device's IRQ wakes the loop when a
/// frame arrives, so this is only a safety net (and the granularity of the `secs` deadline).
const TIMER_MS: u64 = 50;
/// Give up waiting for a transmit completion after this many TSC ticks.
const TX_TIMEOUT_TICKS: u64 = 20_000_000_000;

/// Used if the device offers no MAC address (Firecracker without `guest_mac`).
const FALLBACK_MAC: Mac = Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
const BROADCAST: Mac = Mac([0xff; 6]);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Mac([u8; 6]);

impl Mac {
    fn from(b: &[u8]) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        Mac(m)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

fn fail(msg: &str) -> ! {
    println!("testguest: error: virtio-net: {}", msg);
    power::off()
}

struct Net {
    dev: Device,
    rx: Queue,
    tx: Queue,
    /// Address of the receive buffer each head descriptor currently holds.
    rx_addr: [u64; RX_QUEUE_SIZE as usize],
    tx_page: u64,
    mac: Mac,
    ip: Option<[u8; 4]>,
}

/// Run `mode=net` on the first virtio-net device of the command line; never returns.
pub fn run(cfg: &Config) -> ! {
    paging::init();
    idt::init();
    let (hz, _) = tsc::frequency();
    let mut found = None;
    for d in cfg.virtio[..cfg.virtio_count].iter().flatten() {
        if d.base < (1 << 30) || d.base.saturating_add(d.size.max(0x200)) > paging::MAPPED_END {
            fail("window outside the MMIO hole");
        }
        // SAFETY: the window lies in the 1..4 GiB range we map uncached, where Firecracker
        // places virtio-mmio devices; probing only reads identification registers.
        let dev = unsafe { Device::new(d.base) };
        if dev.probe() == Ok(DEVICE_ID) {
            found = Some((dev, d.irq));
            break;
        }
    }
    let Some((dev, irq)) = found else {
        fail("no virtio-net device on the command line")
    };
    let mut net = Net::init(dev, cfg.ip).unwrap_or_else(|e| fail(e));
    println!("WARDEN_NET_MAC {}", net.mac);

    let mut frame = [0u8; MAX_FRAME];
    let mut len = eth_header(&mut frame, BROADCAST, net.mac, ETHERTYPE_WARDEN);
    let mut w = Cursor {
        buf: &mut frame[len..],
        pos: 0,
    };
    let _ = fmt::Write::write_fmt(&mut w, format_args!("WARDEN-HELLO {}", cfg.marker));
    len += w.pos;
    net.send(&frame[..len]).unwrap_or_else(|e| fail(e));
    println!("WARDEN_NET_SENT 1");

    let secs = cfg.secs.unwrap_or(10);
    let mut kbd = Keyboard::new();
    lapic::start_periodic(TIMER_MS);
    lapic::route_irq(1, idt::KBD_VECTOR);
    if irq < 24 {
        lapic::route_irq(irq, idt::NET_VECTOR);
    }
    let start = arch::rdtsc();
    let total = hz.saturating_mul(secs);
    loop {
        if kbd.poll() {
            i8042::ctrl_alt_del();
        }
        net.poll_rx();
        if arch::rdtsc().wrapping_sub(start) >= total {
            break;
        }
        // Interrupts are off until here, so an IRQ raised since the poll above is pending
        // and ends this `hlt` at once.
        arch::wait_for_interrupt();
    }
    println!("WARDEN_NET_DONE");
    power::off()
}

impl Net {
    fn init(dev: Device, ip: Option<[u8; 4]>) -> Result<Self, &'static str> {
        let features = dev.negotiate(F_VERSION_1 | F_MAC)?;
        let rx = Queue::with_size(RX_QUEUE_SIZE).ok_or("out of DMA memory")?;
        let tx = Queue::new().ok_or("out of DMA memory")?;
        let tx_page = super::dma::alloc_page().ok_or("out of DMA memory")?;
        dev.setup_queue(RX_QUEUE, &rx)?;
        dev.setup_queue(TX_QUEUE, &tx)?;
        let mac = if features & F_MAC != 0 {
            let (lo, hi) = (
                dev.config_read32(0).to_le_bytes(),
                dev.config_read32(4).to_le_bytes(),
            );
            Mac([lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]])
        } else {
            FALLBACK_MAC
        };
        dev.driver_ok()?;
        let mut net = Net {
            dev,
            rx,
            tx,
            rx_addr: [0; RX_QUEUE_SIZE as usize],
            tx_page,
            mac,
            ip,
        };
        let mut page = 0;
        for k in 0..RX_BUFS {
            if k % (super::dma::PAGE / RX_BUF) == 0 {
                page = super::dma::alloc_page().ok_or("out of DMA memory")?;
            }
            net.post_rx(page + ((k * RX_BUF) % super::dma::PAGE) as u64)?;
        }
        net.dev.notify(RX_QUEUE);
        Ok(net)
    }

    /// Make one receive buffer available (the caller notifies the device).
    fn post_rx(&mut self, addr: u64) -> Result<(), &'static str> {
        let buf = Buf {
            addr,
            len: RX_BUF as u32,
            device_writes: true,
        };
        let head = self.rx.add(&[buf]).ok_or("receive queue full")?;
        self.rx_addr[head as usize] = addr;
        Ok(())
    }

    /// Transmit one frame (padded to the 60-byte minimum) and wait until the device took it.
    fn send(&mut self, frame: &[u8]) -> Result<(), &'static str> {
        let len = frame.len().clamp(MIN_FRAME, MAX_FRAME);
        // SAFETY: the transmit page is ours and no transmission is in flight (each `send`
        // waits for its completion), so the device does not read it right now.
        let buf = unsafe { core::slice::from_raw_parts_mut(self.tx_page as *mut u8, HDR + len) };
        buf.fill(0);
        let n = frame.len().min(MAX_FRAME);
        buf[HDR..HDR + n].copy_from_slice(&frame[..n]);
        let bufs = [Buf {
            addr: self.tx_page,
            len: (HDR + len) as u32,
            device_writes: false,
        }];
        let head = self.tx.add(&bufs).ok_or("transmit queue full")?;
        self.dev.notify(TX_QUEUE);
        let start = arch::rdtsc();
        loop {
            if let Some((id, _)) = self.tx.pop_used() {
                return if id == head {
                    Ok(())
                } else {
                    Err("unexpected used descriptor")
                };
            }
            if arch::rdtsc().wrapping_sub(start) > TX_TIMEOUT_TICKS {
                return Err("transmit timed out");
            }
            core::hint::spin_loop();
        }
    }

    /// Handle every received frame and give the buffers back.
    fn poll_rx(&mut self) {
        let mut reposted = false;
        while let Some((head, len)) = self.rx.pop_used() {
            let addr = self.rx_addr[head as usize];
            let len = (len as usize).min(RX_BUF);
            if len >= HDR {
                // SAFETY: the device has finished with this buffer (it is in the used ring)
                // and wrote `len` bytes of it; we repost it only after this borrow ends.
                let frame = unsafe {
                    core::slice::from_raw_parts((addr as usize + HDR) as *const u8, len - HDR)
                };
                self.handle(frame);
            }
            self.post_rx(addr).unwrap_or_else(|e| fail(e));
            reposted = true;
        }
        if reposted {
            self.dev.notify(RX_QUEUE);
            // Keep the interrupt status tidy. Reading it is a VM exit to Firecracker, so only
            // after real work; Firecracker raises the IRQ again for new frames either way.
            self.dev.ack_interrupts();
        }
    }

    /// Print one received frame and answer it if it is a ping, an ARP request or an ICMP echo
    /// request for us. The answer goes out before the lines are printed: each serial byte is a
    /// VM exit, so printing first would add milliseconds to the round trip.
    fn handle(&mut self, frame: &[u8]) {
        if frame.len() < ETH_HDR {
            println!("testguest: net: runt frame len={}", frame.len());
            return;
        }
        let src = Mac::from(&frame[6..12]);
        let ty = u16::from_be_bytes([frame[12], frame[13]]);
        let payload = &frame[ETH_HDR..];

        let mut reply = [0u8; MAX_FRAME];
        let answer = match ty {
            ETHERTYPE_WARDEN if payload.starts_with(PING) => {
                let n = eth_header(&mut reply, src, self.mac, ETHERTYPE_WARDEN);
                let len = (n + payload.len()).min(MAX_FRAME);
                reply[n..n + PONG.len()].copy_from_slice(PONG);
                reply[n + PONG.len()..len].copy_from_slice(&payload[PING.len()..len - n]);
                Some((len, "WARDEN_NET_PONG"))
            }
            ETHERTYPE_ARP => self
                .arp_reply(payload, &mut reply)
                .map(|n| (n, "WARDEN_NET_ARP_REPLY")),
            ETHERTYPE_IPV4 => self
                .icmp_reply(src, payload, &mut reply)
                .map(|n| (n, "WARDEN_NET_ICMP_REPLY")),
            _ => None,
        };
        if let Some((len, _)) = answer {
            self.send(&reply[..len]).unwrap_or_else(|e| fail(e));
        }

        let mut text = [0u8; 32];
        let shown = payload.len().min(text.len());
        for (t, &b) in text.iter_mut().zip(payload) {
            *t = if b.is_ascii_graphic() { b } else { b'.' };
        }
        crate::print!(
            "WARDEN_NET_RX len={} src={} type={:04x} data=",
            frame.len(),
            src,
            ty
        );
        serial::write_bytes(&text[..shown]);
        serial::write_str("\n");
        if let Some((_, line)) = answer {
            println!("{}", line);
        }
    }

    /// Build the reply to an ARP request (Ethernet/IPv4) for our address; returns its length.
    fn arp_reply(&self, arp: &[u8], out: &mut [u8]) -> Option<usize> {
        let ip = self.ip?;
        if arp.len() < 28 || arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || arp[24..28] != ip {
            return None;
        }
        let (sha, spa) = (&arp[8..14], &arp[14..18]);
        let n = eth_header(out, Mac::from(sha), self.mac, ETHERTYPE_ARP);
        let a = &mut out[n..n + 28];
        a[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        a[8..14].copy_from_slice(&self.mac.0);
        a[14..18].copy_from_slice(&ip);
        a[18..24].copy_from_slice(sha);
        a[24..28].copy_from_slice(spa);
        Some(n + 28)
    }

    /// Build the reply to an unfragmented ICMP echo request for our address; returns its length.
    fn icmp_reply(&self, src: Mac, pkt: &[u8], out: &mut [u8]) -> Option<usize> {
        let ip = self.ip?;
        if pkt.len() < 20 || pkt[0] >> 4 != 4 {
            return None;
        }
        let ihl = (pkt[0] & 0xf) as usize * 4;
        let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
        let fragmented = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0;
        if ihl < 20 || total < ihl + 8 || total > pkt.len() || fragmented || pkt[9] != 1 {
            return None;
        }
        if pkt[16..20] != ip || pkt[ihl] != 8 || pkt[ihl + 1] != 0 {
            return None;
        }
        let n = eth_header(out, src, self.mac, ETHERTYPE_IPV4);
        if n + total > out.len() {
            return None;
        }
        let r = &mut out[n..n + total];
        r.copy_from_slice(&pkt[..total]);
        r[12..16].copy_from_slice(&pkt[16..20]);
        r[16..20].copy_from_slice(&pkt[12..16]);
        r[8] = 64; // TTL
        r[10..12].fill(0);
        let sum = checksum(&r[..ihl]);
        r[10..12].copy_from_slice(&sum.to_be_bytes());
        let icmp = &mut r[ihl..];
        icmp[0] = 0; // echo reply
        icmp[2..4].fill(0);
        let sum = checksum(icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        Some(n + total)
    }
}

/// Write an Ethernet header; returns its length.
fn eth_header(out: &mut [u8], dst: Mac, src: Mac, ty: u16) -> usize {
    out[0..6].copy_from_slice(&dst.0);
    out[6..12].copy_from_slice(&src.0);
    out[12..14].copy_from_slice(&ty.to_be_bytes());
    ETH_HDR
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(c[0]) << 8 | u32::from(c.get(1).copied().unwrap_or(0));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
