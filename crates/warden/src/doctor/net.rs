//! Networking: the TUN/TAP clone device opens, and a network namespace can really be created
//! (in a short-lived thread, so the caller's namespace never changes).

use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{access, AccessFlags};

use super::{os_reason, Check};

/// Where `ip netns` and warden keep named network namespaces.
const NETNS_DIR: &str = "/var/run/netns";

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
