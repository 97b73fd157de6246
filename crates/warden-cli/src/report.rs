//! Human output: isolation reports, plans and error chains.

use jail::JailPlan;
use warden::IsolationReport;

/// Prints an error and its causes as numbered levels.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for (i, cause) in e.chain().skip(1).enumerate() {
        eprintln!("  {}: {cause}", i + 1);
    }
}

/// The isolation report, one layer a line.
pub fn isolation(r: &IsolationReport) -> String {
    let mut s = format!("Isolation report:\n  Sandboxed: {}\n", r.is_sandboxed);
    for (name, layer) in [
        ("jailer", &r.jailer),
        ("uid/gid", &r.uid_gid),
        ("chroot", &r.chroot),
        ("cgroups", &r.cgroups),
        ("seccomp", &r.seccomp),
        ("pid ns", &r.pid_ns),
        ("net ns", &r.net_ns),
    ] {
        s.push_str(&format!(
            "  {name:<8} {:<4} {}\n",
            if layer.active { "on" } else { "off" },
            layer.detail
        ));
    }
    s
}

/// A plan for people.
pub fn plan(p: &JailPlan) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "VM {} ({})\n",
        p.id,
        if p.jailed {
            "jailed"
        } else {
            "UNJAILED: development mode"
        }
    ));
    s.push_str(&format!("command:\n  {}\n", shell_words(&p.argv)));
    s.push_str(&format!("jail directory: {}\n", p.jail_dir.display()));
    s.push_str(&format!("chroot:         {}\n", p.root_dir.display()));
    s.push_str(&format!("API socket:     {}\n", p.socket_path.display()));
    s.push_str(&format!("pid file:       {}\n", p.pid_file.display()));
    s.push_str(&format!("log file:       {}\n", p.log_file.display()));
    s.push_str(&format!("runs as:        uid {} gid {}\n", p.uid, p.gid));
    s.push_str(&format!(
        "pid namespace:  {}\n",
        if p.new_pid_ns { "new" } else { "host's" }
    ));
    s.push_str(&format!(
        "net namespace:  {}\n",
        p.netns
            .as_ref()
            .map_or("host's".to_owned(), |n| n.display().to_string())
    ));
    if let Some(n) = &p.net {
        s.push_str(&format!("network ({:?}):\n", n.mode));
        s.push_str(&format!(
            "  namespace {} ({})\n",
            n.netns,
            n.netns_path.display()
        ));
        s.push_str(&format!(
            "  TAP {} in the namespace, owned by {}:{}, guest MAC {}\n",
            n.tap, n.uid, n.gid, n.mac
        ));
        if let (Some(h), Some(peer), Some(b)) = (&n.host_veth, &n.peer_veth, &n.bridge) {
            s.push_str(&format!(
                "  veth {h} (host, on bridge {b}) <-> {peer} (namespace, on br0 with {})\n",
                n.tap
            ));
        }
        if let Some(arg) = n.boot_arg() {
            s.push_str(&format!("  guest address: {arg}\n"));
        }
    }
    s.push_str("staged files:\n");
    for f in &p.staged {
        s.push_str(&format!(
            "  {} -> {} ({}, {}:{} {:04o}, {}) from {}\n",
            f.path_in_jail.display(),
            f.dest.display(),
            f.method,
            f.uid,
            f.gid,
            f.mode,
            if f.writable {
                "read-write"
            } else {
                "read-only"
            },
            f.source.display()
        ));
    }
    s.push_str(&format!("cgroups (v{}):\n", p.cgroup_version.as_arg()));
    for c in &p.cgroups {
        let path = c
            .path
            .as_ref()
            .map_or(c.file.clone(), |p| p.display().to_string());
        // The jailer cannot pass these (several '='): warden writes them before InstanceStart.
        let by = if c.by_warden {
            "  (written by warden)"
        } else {
            ""
        };
        s.push_str(&format!("  {path} = {}{by}\n", c.value));
    }
    if p.cgroups.is_empty() {
        s.push_str("  none\n");
    }
    if let Some(leaf) = &p.cgroup_leaf {
        s.push_str(&format!(
            "  {} (made by warden, joined by the jailer)\n",
            leaf.display()
        ));
    }
    for off in &p.cgroups_off {
        s.push_str(&format!("  {} limit off: {}\n", off.controller, off.why));
    }
    s.push_str("rlimits:\n");
    for (name, value) in &p.rlimits {
        s.push_str(&format!("  {name} = {value}\n"));
    }
    s
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
