//! TAP devices through the TUN driver's ioctls: a persistent TAP owned by the jail user, so the
//! jailed Firecracker (which is not root) can open it by name.

use std::os::fd::AsRawFd;

use super::NetError;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates persistent TAP `name` in the calling thread's network namespace, owned by
/// `uid`/`gid`, with the flags Firecracker opens it with.
pub fn create(name: &str, uid: u32, gid: u32) -> Result<(), NetError> {
    let err = |action: &str, e: std::io::Error| NetError::new(action, format!("TAP {name}"), e);
    if name.len() >= libc::IFNAMSIZ {
        return Err(err(
            "name",
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| err("open /dev/net/tun for", e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let fd = tun.as_raw_fd();
    // SAFETY: TUNSETIFF reads and writes an ifreq that lives for the call.
    if unsafe { libc::ioctl(fd, TUNSETIFF, &mut req) } < 0 {
        return Err(err("create", std::io::Error::last_os_error()));
    }
    for (op, value, what) in [
        (TUNSETOWNER, uid as libc::c_ulong, "set the owner of"),
        (TUNSETGROUP, gid as libc::c_ulong, "set the group of"),
        (TUNSETPERSIST, 1, "make persistent"),
    ] {
        // SAFETY: these ioctls take an integer argument.
        if unsafe { libc::ioctl(fd, op, value) } < 0 {
            return Err(err(what, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
