//! `/dev/kvm`: present, openable read-write, and speaking the stable KVM API.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::{os_reason, Check};

/// `KVM_GET_API_VERSION`, `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// The only KVM API version there has ever been since Linux 2.6.22.
const KVM_API_VERSION: i32 = 12;

const NAME: &str = "kvm";

pub(super) fn check(path: &Path) -> Check {
    let p = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::fail(
                NAME,
                format!("{p} does not exist: the kvm module is not loaded or the CPU has no virtualization"),
                format!(
                    "modprobe kvm_intel || modprobe kvm_amd (enable VT-x/AMD-V in the firmware; on a cloud VM \
                     enable nested virtualization); then check with `ls -l {p}`"
                ),
            )
        }
        Err(e) => {
            return Check::fail(NAME, format!("cannot stat {p}: {}", os_reason(&e)), format!("ls -l {p}"))
        }
    };
    if !meta.file_type().is_char_device() {
        return Check::fail(
            NAME,
            format!("{p} is not a character device"),
            format!("rm {p} && mknod {p} c 10 232 && chmod 660 {p} (or reboot so that udev recreates it)"),
        );
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot open {p} read-write: {}", os_reason(&e)),
                format!("run warden as root, or grant access: setfacl -m u:$(id -un):rw {p}"),
            )
        }
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; `file` is an open
    // descriptor that outlives the call.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version < 0 {
        let e = io::Error::last_os_error();
        return Check::fail(
            NAME,
            format!("{p} is not a KVM device: KVM_GET_API_VERSION failed ({})", os_reason(&e)),
            format!("check `ls -l {p}` shows character device 10,232; modprobe kvm_intel || modprobe kvm_amd"),
        );
    }
    if version != KVM_API_VERSION {
        return Check::fail(
            NAME,
            format!("{p} reports KVM API version {version}, Firecracker needs {KVM_API_VERSION}"),
            "upgrade the host kernel to a supported one (Firecracker supports 5.10 and 6.1)",
        );
    }
    Check::pass(NAME, format!("{p} usable (KVM API version {version})"))
}
