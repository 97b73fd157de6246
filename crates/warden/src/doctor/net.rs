//! Networking: the TUN/TAP clone device opens, and a network namespace can really be created
//! (in a short-lived thread, so the caller's namespace never changes).

use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{access, AccessFlags};

use super::{os_reason, Check};

use jail::layout::NETNS_DIR;

pub(super) fn tun(path: &Path) -> Check {
    const NAME: &str = "tun";
    let p = path.display();
    match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => Check::pass(NAME, format!("{p} opens read-write")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::fail(
            NAME,
            format!("{p} does not exist: TAP devices for VM networking cannot be created"),
            format!("modprobe tun (or: mkdir -p {dir} && mknod {p} c 10 200 && chmod 666 {p})", dir = path.parent().unwrap_or(Path::new("/dev/net")).display()),
        ),
        Err(e) => Check::fail(
            NAME,
            format!("cannot open {p} read-write: {}", os_reason(&e)),
            format!("run warden as root (it needs CAP_NET_ADMIN), and check `ls -l {p}` shows character device 10,200"),
        ),
    }
}

fn ns_id(path: &str) -> String {
    std::fs::read_link(path)
        .map(|l| l.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

pub(super) fn netns() -> Check {
    const NAME: &str = "netns";
    // unshare() changes only the calling thread: do it in a thread that then exits, which
    // drops the new namespace with it.
    let created = std::thread::Builder::new()
        .name("doctor-netns".into())
        .spawn(|| {
            let before = ns_id("/proc/thread-self/ns/net");
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| e.desc().to_owned())?;
            let after = ns_id("/proc/thread-self/ns/net");
            if before == after {
                return Err(format!(
                    "unshare succeeded but the thread is still in {before}"
                ));
            }
            Ok(after)
        })
        .map_err(|e| os_reason(&e))
        .and_then(|t| {
            t.join()
                .map_err(|_| "the probe thread panicked".to_owned())
                .and_then(|r| r)
        });
    let ns = match created {
        Ok(ns) => ns,
        Err(why) => {
            return Check::fail(
                NAME,
                format!("cannot create a network namespace (unshare(CLONE_NEWNET)): {why}"),
                "run warden as root (it needs CAP_SYS_ADMIN); in a container, start it with --privileged; \
                 check the kernel has CONFIG_NET_NS (`ip netns add t && ip netns del t`)",
            )
        }
    };
    let dir = Path::new(NETNS_DIR);
    let (target, exists) = match dir.ancestors().find(|p| p.exists()) {
        Some(p) => (p, p == dir),
        None => (Path::new("/"), false),
    };
    match access(target, AccessFlags::W_OK) {
        Ok(()) if exists => Check::pass(NAME, format!("created a network namespace ({ns}) in a probe thread; {NETNS_DIR} is writable")),
        Ok(()) => Check::pass(
            NAME,
            format!("created a network namespace ({ns}) in a probe thread; {NETNS_DIR} will be created in {}", target.display()),
        ),
        Err(e) => Check::fail(
            NAME,
            format!("{} is not writable ({}): named network namespaces cannot be created under {NETNS_DIR}", target.display(), e.desc()),
            format!("mkdir -p {NETNS_DIR} as root, and run warden as root"),
        ),
    }
}

/// Namespaces hidden under a later mount of the namespace directory (made by a first `ip netns`
/// after they were created, by a warden before it prepared the directory, or by another tool):
/// no path reaches them, so they can be neither joined nor removed.
pub(super) fn netns_dir(mountinfo: &Path) -> Check {
    const NAME: &str = "netns-dir";
    let dir = Path::new(NETNS_DIR);
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let text = match std::fs::read_to_string(mountinfo) {
        Ok(t) => t,
        Err(e) => {
            return Check::warn(
                NAME,
                format!("cannot read {}: {}", mountinfo.display(), os_reason(&e)),
                "run warden doctor as root on the host (not in a container without /proc)",
            )
        }
    };
    let hidden = jail::net::netns::hidden_mounts(&text, &real);
    if !hidden.is_empty() {
        let names: Vec<String> = hidden.iter().map(|p| p.display().to_string()).collect();
        return Check::warn(
            NAME,
            format!(
                "{} network namespace(s) are hidden under a later mount of {}: {}; they cannot be joined or removed by path",
                hidden.len(),
                real.display(),
                names.join(", ")
            ),
            format!(
                "they are freed at reboot; to free them now, stop what uses namespaces in {dir} and run `umount -l {dir}` (warden makes it a shared mount of its own again before its next namespace)",
                dir = real.display()
            ),
        );
    }
    let mounted = text
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*real.to_string_lossy()));
    Check::pass(
        NAME,
        if mounted {
            format!(
                "{} is a mount of its own, as `ip netns` makes it; no namespace is hidden",
                real.display()
            )
        } else {
            format!("{} is not a mount point yet; warden makes it one before its first namespace, as `ip netns` does", real.display())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_hidden_under_a_later_mount_is_a_warning_with_a_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(NETNS_DIR).unwrap_or_else(|_| NETNS_DIR.into());
        let d = dir.display();
        let info = format!(
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             63 27 0:4 net:[1] {d}/fc-vm-a rw - nsfs nsfs rw\n\
             64 27 254:0 {d} {d} rw shared:1 - ext4 /dev/vda rw\n"
        );
        let f = tmp.path().join("mountinfo");
        std::fs::write(&f, info).unwrap();
        let c = netns_dir(&f);
        assert_eq!(c.status, super::super::Status::Warn, "{c:?}");
        assert!(c.detail.contains("fc-vm-a"), "{c:?}");
        assert!(c.fix.unwrap().contains("umount -l"));
    }
}
