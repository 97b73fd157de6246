//! Raw Ethernet on an interface, for tests that prove the path between a guest and the host:
//! an `AF_PACKET` socket sends frames out of an interface and sees every frame crossing it.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The EtherType the test guest uses for its own frames.
pub const ETHERTYPE: u16 = 0x88b5;

pub struct Packet {
    fd: OwnedFd,
    ifindex: i32,
}

impl Packet {
    /// Opens a packet socket on `ifname` in the calling thread's namespace.
    pub fn open(ifname: &str) -> std::io::Result<Self> {
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: bind with a sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: SO_RCVTIMEO with a timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Self { fd, ifindex })
    }

    /// Sends one frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: a valid buffer for the call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = self.ifindex;
        Ok(())
    }

    /// Waits up to `timeout` for a frame matching `pred`.
    pub fn recv_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let t0 = Instant::now();
        let mut buf = vec![0u8; 65536];
        while t0.elapsed() < timeout {
            // SAFETY: a valid buffer for the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n > 0 && pred(&buf[..n as usize]) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }
}

/// `aa:bb:..` to bytes.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// A test-guest ping frame to `dst` carrying `nonce`.
pub fn ping(dst: [u8; 6], src: [u8; 6], nonce: &str) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(format!("WARDEN-PING {nonce}").as_bytes());
    f.resize(60, 0);
    f
}

/// Whether `frame` is the guest's answer to the ping carrying `nonce`.
pub fn is_pong(frame: &[u8], guest: [u8; 6], nonce: &str) -> bool {
    frame.len() >= 14
        && frame[6..12] == guest
        && frame[12..14] == ETHERTYPE.to_be_bytes()
        && String::from_utf8_lossy(&frame[14..]).starts_with("WARDEN-PONG")
        && String::from_utf8_lossy(&frame[14..]).contains(nonce)
}

/// Sends a ping on `packet` until the guest's pong comes back (the guest may still be booting).
pub fn ping_pong(packet: &Packet, guest: [u8; 6], nonce: &str) -> bool {
    let src = [0x02, 0, 0, 0, 0, 0x01];
    for _ in 0..30 {
        packet.send(&ping(guest, src, nonce)).unwrap();
        if packet
            .recv_until(Duration::from_millis(200), |f| is_pong(f, guest, nonce))
            .is_some()
        {
            return true;
        }
    }
    false
}
