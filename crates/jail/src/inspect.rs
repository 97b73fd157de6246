//! The isolation report: what a running Firecracker process is actually confined by, read from
//! `/proc` rather than assumed from the configuration. This is how warden proves, per VM, that
//! it is jailed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One isolation layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// Whether the layer is in force.
    pub active: bool,
    /// What was seen, or why the layer is off.
    pub detail: String,
}

impl Layer {
    fn on(detail: impl Into<String>) -> Self {
        Self {
            active: true,
            detail: detail.into(),
        }
    }
    fn off(detail: impl Into<String>) -> Self {
        Self {
            active: false,
            detail: detail.into(),
        }
    }
}

/// Every layer warden can put around a VM, each checked on the live process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsolationReport {
    /// True when the mandatory layers (jailer, uid/gid, chroot, cgroups, seccomp) are all on.
    pub is_sandboxed: bool,
    /// Started by the jailer.
    pub jailer: Layer,
    /// Running as an unprivileged user and group.
    pub uid_gid: Layer,
    /// Confined to the jail's root.
    pub chroot: Layer,
    /// Placed in its own cgroups.
    pub cgroups: Layer,
    /// Every thread under a seccomp filter.
    pub seccomp: Layer,
    /// Own PID namespace.
    pub pid_ns: Layer,
    /// Own network namespace.
    pub net_ns: Layer,
}

/// What the report is checked against.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// Whether the jailer was used.
    pub jailed: bool,
    /// The chroot the process should see as `/`.
    pub root_dir: &'a Path,
    /// The cgroup directories it should be in.
    pub cgroup_dirs: &'a [PathBuf],
    /// Why the jailer is not used, when it is not.
    pub unjailed_reason: Option<&'a str>,
    /// Limits left out of its cgroups, and why (named in the cgroups line).
    pub limits_off: &'a [crate::cgroup::LimitOff],
}

/// Inspects process `pid` (found under `proc_root`, normally `/proc`).
pub fn report(proc_root: &Path, pid: u32, expected: &Expected<'_>) -> IsolationReport {
    let dir = crate::proc::dir(proc_root, pid);
    let own = proc_root.join("self");
    let status = crate::proc::status(proc_root, pid).unwrap_or_default();

    let jailer = if expected.jailed {
        Layer::on("started by the jailer")
    } else {
        Layer::off(expected.unjailed_reason.unwrap_or("jailer not used"))
    };

    let uid_gid = match (status.uids, status.gids) {
        (Some(u), Some(g)) if u.iter().all(|&x| x != 0) && g.iter().all(|&x| x != 0) => {
            Layer::on(format!("uid {} gid {}", u[0], g[0]))
        }
        (Some(u), Some(g)) => Layer::off(format!("runs as uid {} gid {} (root)", u[0], g[0])),
        _ => Layer::off("process status unreadable"),
    };

    let chroot = match (
        std::fs::metadata(dir.join("root")),
        std::fs::metadata(expected.root_dir),
    ) {
        (Ok(seen), Ok(want)) if (seen.dev(), seen.ino()) == (want.dev(), want.ino()) => {
            Layer::on(format!("root is {}", expected.root_dir.display()))
        }
        (Ok(_), Ok(_)) => Layer::off("root directory is not the jail's"),
        _ => Layer::off("root directory unreadable"),
    };

    let cgroups = cgroup_layer(proc_root, pid, expected.cgroup_dirs, expected.limits_off);

    let seccomp = seccomp_layer(proc_root, pid);

    let ns = |name: &str, why_off: &str| match (ns_id(&dir, name), ns_id(&own, name)) {
        (Some(a), Some(b)) if a != b => Layer::on(format!("own {name} namespace ({a})")),
        (Some(_), Some(_)) => Layer::off(why_off.to_owned()),
        _ => Layer::off(format!("{name} namespace unreadable")),
    };
    let pid_ns = ns("pid", "shares the host's PID namespace (new_pid_ns is off)");
    let net_ns = ns(
        "net",
        "shares the host's network namespace (no netns configured)",
    );

    let mut report = IsolationReport {
        is_sandboxed: false,
        jailer,
        uid_gid,
        chroot,
        cgroups,
        seccomp,
        pid_ns,
        net_ns,
    };
    report.is_sandboxed = report.mandatory_layers_on();
    report
}

impl IsolationReport {
    fn mandatory_layers_on(&self) -> bool {
        self.jailer.active
            && self.uid_gid.active
            && self.chroot.active
            && self.cgroups.active
            && self.seccomp.active
    }

    /// Reads the seccomp layer again from the live process `pid`: all that changes once
    /// Firecracker runs, as its vCPU threads install their filters when InstanceStart makes
    /// them. Its uid, root, cgroups and namespaces are fixed from before then: the jailer set
    /// them before its exec, warden's accounting cgroup is joined before the report is first
    /// read, and Firecracker's own filters forbid the calls that would change them.
    pub fn reread_seccomp(&mut self, proc_root: &Path, pid: u32) {
        self.seccomp = seccomp_layer(proc_root, pid);
        self.is_sandboxed = self.mandatory_layers_on();
    }
}

pub use crate::proc::{is_running, start_time};

/// The uid/gid layer's note (see [`uid_note`]) added to `report`: a VM's uid should be its own.
pub fn add_uid_note(report: &mut IsolationReport, note: &str) {
    if !report.uid_gid.active {
        return;
    }
    report.uid_gid.detail.push_str("; ");
    report.uid_gid.detail.push_str(note);
}

/// Every process by its effective uid (the owner of `/proc/<pid>`): one pass over `/proc`, for
/// callers that answer for many VMs from one pass.
pub fn processes_by_uid(proc_root: &Path) -> std::collections::HashMap<u32, Vec<u32>> {
    let mut by_uid: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for p in crate::proc::pids(proc_root) {
        if let Ok(m) = std::fs::metadata(crate::proc::dir(proc_root, p)) {
            by_uid.entry(m.uid()).or_default().push(p);
        }
    }
    for v in by_uid.values_mut() {
        v.sort_unstable();
    }
    by_uid
}

/// The uid/gid layer's note on the other processes (`others`) that run as the VM's uid.
pub fn uid_note(others: &[u32]) -> String {
    match others.len() {
        0 => "no other process runs as this uid".to_owned(),
        n => format!(
            "shared with {n} other process{} (pid {}): they can signal each other",
            if n == 1 { "" } else { "es" },
            others
                .iter()
                .take(5)
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn ns_id(proc_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_link(proc_dir.join("ns").join(name))
        .ok()
        .map(|p| p.display().to_string())
}

fn seccomp_layer(proc_root: &Path, pid: u32) -> Layer {
    let Some(threads) = crate::proc::thread_statuses(proc_root, pid) else {
        return Layer::off("threads unreadable");
    };
    let total = threads.len();
    let filtered = threads.iter().filter(|t| t.seccomp == Some(2)).count();
    if total > 0 && filtered == total {
        Layer::on(format!("all {total} threads filtered (Seccomp: 2)"))
    } else {
        Layer::off(format!("{filtered} of {total} threads filtered"))
    }
}

/// The process must be in each expected directory: for v1 the line of that directory's
/// controller, for v2 the single `0::` line.
fn cgroup_layer(
    proc_root: &Path,
    pid: u32,
    expected: &[PathBuf],
    limits_off: &[crate::cgroup::LimitOff],
) -> Layer {
    let off = if limits_off.is_empty() {
        String::new()
    } else {
        format!(
            "; limits off: {}",
            limits_off
                .iter()
                .map(|o| format!("{} ({})", o.controller, o.why))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if expected.is_empty() {
        return Layer::off(format!("no cgroup limits applied{off}"));
    }
    let entries = crate::proc::cgroups(proc_root, pid);
    let mut shown = Vec::new();
    let mut missing = Vec::new();
    for d in expected {
        // `<mount>/<parent>/<id>` must end with a path the process is in.
        match entries
            .iter()
            .find(|e| e.path != "/" && d.to_string_lossy().ends_with(&e.path))
        {
            // v2 as the kernel shows it (`0::/warden/vm-1`); v1 by directory.
            Some(e) if e.hierarchy_id == 0 => shown.push(format!("0::{}", e.path)),
            Some(_) => shown.push(d.display().to_string()),
            None => missing.push(d.display().to_string()),
        }
    }
    shown.dedup();
    if missing.is_empty() {
        Layer::on(format!("in {}{off}", shown.join(", ")))
    } else {
        Layer::off(format!("not in {}{off}", missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_a_process() {
        let me = std::process::id();
        let t = start_time(Path::new("/proc"), me).unwrap();
        assert!(t > 0);
        assert_eq!(start_time(Path::new("/proc"), me), Some(t));
        assert_eq!(start_time(Path::new("/proc"), u32::MAX), None);
    }

    #[test]
    fn our_own_process_is_not_sandboxed() {
        let me = std::process::id();
        let r = report(
            Path::new("/proc"),
            me,
            &Expected {
                jailed: false,
                root_dir: Path::new("/nonexistent"),
                cgroup_dirs: &[],
                limits_off: &[],
                unjailed_reason: Some("test"),
            },
        );
        assert!(!r.is_sandboxed);
        assert!(!r.pid_ns.active && !r.net_ns.active);
        assert_eq!(r.jailer.detail, "test");
    }
}
