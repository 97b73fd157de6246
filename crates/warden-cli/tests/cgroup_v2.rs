//! cgroup v2 for real, on this host's cgroup2 mount with the controllers it offers: a jailed VM
//! placed in its own v2 directory (as `0::/...` in the report and in /proc), huge pages denied
//! where `hugetlb` exists, killed and removed with nothing left; derived limits whose controller
//! is missing left out with a warning, explicit ones and production mode refused; and a daemon
//! started inside a delegated cgroup that moves itself into a `supervisor` leaf and boots its
//! VMs beside it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use warden_api::pb;

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

/// The host's cgroup2 mount, or `None` (the test says so and passes: nothing to test).
fn v2() -> Option<jail::cgroup::Hierarchy> {
    let h = jail::cgroup::Hierarchy::host().unwrap();
    if h.v2.is_none() {
        eprintln!("this host has no cgroup2 mount: nothing to test");
        return None;
    }
    Some(h)
}

/// The `0::` line of a process's cgroup file.
fn v2_line(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap_or_default()
}

/// Removes the test's cgroup directories when it ends, even by a panic (deepest first, retried
/// while the kernel still counts a dying task).
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        let mut dirs = self.0.clone();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for _ in 0..100 {
            dirs.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
            if dirs.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn subtree_control(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default()
}

#[test]
fn a_jailed_vm_on_real_cgroup_v2_is_placed_alone_reported_and_removed() {
    let Some(h) = v2() else { return };
    let mount = h.v2.clone().unwrap();
    let parent = unique("wv2");
    let _cleanup = Cgroups(vec![mount.join(&parent)]);
    let base = tempfile::Builder::new()
        .prefix("wv2")
        .tempdir_in("/tmp")
        .unwrap();
    let out = warden()
        .args(["run", "--kernel", &testguest(), "--cgroup-version", "2"])
        .args(["--parent-cgroup", &parent, "--chroot-base"])
        .arg(base.path())
        .args(["--boot-args", "console=ttyS0 mode=poweroff"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let cgroups = text
        .lines()
        .find(|l| l.trim_start().starts_with("cgroups"))
        .unwrap_or_else(|| panic!("no cgroups line: {text}"));
    assert!(cgroups.contains(" on "), "{cgroups}");
    assert!(
        cgroups.contains(&format!("0::/{parent}/run-")),
        "the report shows the kernel's v2 line: {cgroups}"
    );
    for c in ["memory", "cpu", "pids"] {
        if !h.v2_controllers.iter().any(|x| x == c) {
            assert!(
                cgroups.contains(&format!("{c} (")),
                "a missing {c} controller is named in the report: {cgroups}"
            );
            assert!(
                text.contains(&format!("the VM's {c} limit is off")),
                "and warned about: {text}"
            );
        }
    }
    if h.v2_controllers.iter().any(|c| c == "hugetlb") {
        // The jailer enabled hugetlb on the way down to the VM's directory.
        assert!(subtree_control(&mount.join(&parent)).contains("hugetlb"));
    }
    // Nothing left: no VM directory under the parent, no jail.
    let left: Vec<PathBuf> = std::fs::read_dir(mount.join(&parent))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the v2 hierarchy: {left:?}");
    let jails: Vec<_> = std::fs::read_dir(base.path().join("firecracker"))
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    assert!(jails.is_empty(), "jails left: {jails:?}");
}

#[test]
fn a_limit_asked_for_or_production_mode_is_refused_where_v2_lacks_its_controller() {
    let Some(h) = v2() else { return };
    let missing = |c: &str| !h.v2_controllers.iter().any(|x| x == c);
    let plan = |extra: &[&str]| {
        warden()
            .args(["plan", "--kernel", &testguest(), "--cgroup-version", "2"])
            .args(extra)
            .output()
            .unwrap()
    };
    if missing("pids") {
        let out = plan(&["--pids-max", "64"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("invalid pids_max") && err.contains("needs the pids controller"),
            "{err}"
        );
        assert!(err.contains("cgroup.subtree_control"), "the fix: {err}");
    }
    if missing("memory") {
        let out = plan(&["--require-jailer"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("memory controller"), "{err}");
        assert!(err.contains("production mode"), "{err}");
        // The same VM without production mode is planned, its memory limit named as off.
        let out = plan(&[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("memory limit off"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_in_a_delegated_cgroup_moves_into_a_leaf_and_boots_its_vms_beside_it() {
    let Some(h) = v2() else { return };
    let mount = h.v2.clone().unwrap();
    // As systemd starts a `Delegate=yes` service: in a cgroup of its own.
    let service = mount.join(format!("{}.service", unique("wdel")));
    std::fs::create_dir(&service).unwrap();
    // systemd's mark on a Delegate=yes unit's cgroup.
    xattr::set(&service, "trusted.delegate", b"1").unwrap();
    // Declared before the daemon: dropped after it, once nothing runs in them.
    let mut cleanup = Cgroups(vec![service.clone(), service.join("supervisor")]);
    let mut d = Daemon::start_in(
        &[
            ("WARDEN_CGROUP_VERSION", "2"),
            ("WARDEN_REQUIRE_JAILER", "false"),
        ],
        Some(service.clone()),
    );
    cleanup.0.push(service.join(&d.parent_cgroup));
    let daemon_pid = d.child.as_ref().unwrap().id();
    let rel = service.strip_prefix(&mount).unwrap().display().to_string();
    assert_eq!(
        v2_line(daemon_pid),
        format!("/{rel}/supervisor"),
        "the daemon moved into its supervisor leaf\n{}",
        d.logs()
    );
    assert!(
        std::fs::read_to_string(service.join("cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty(),
        "no process is left in the delegated cgroup itself"
    );

    let c = d.client();
    let id = unique("vm");
    c.create_vm(d.create_req(&id, "console=ttyS0 mode=idle"))
        .await
        .unwrap();
    boot(&c, id.as_str()).await;
    let info = vm_info(&c, id.as_str()).await;
    let vm_dir = format!("/{rel}/{}/{id}", d.parent_cgroup);
    assert_eq!(
        v2_line(info.pid),
        vm_dir,
        "Firecracker sits beside the leaf"
    );
    // Stats read what exists: cpu.stat is in every v2 cgroup; the rest only with its controller.
    let cg = info.cgroup.clone().unwrap();
    assert!(cg.cpu_usage_ns.is_some(), "{cg:?}");
    for (name, reading) in [("memory", cg.memory_bytes), ("pids", cg.pids_current)] {
        if !h.v2_controllers.iter().any(|c| c == name) {
            assert_eq!(reading, None, "no {name} controller: unavailable, not 0");
            assert!(
                cg.limits_off
                    .iter()
                    .any(|o| o.starts_with(&format!("{name}:"))),
                "{cg:?}"
            );
        }
    }
    let report = info.isolation.unwrap();
    let cgroups = report.cgroups.unwrap();
    assert!(cgroups.active, "{cgroups:?}");
    assert!(
        cgroups.detail.contains(&format!("0::{vm_dir}")),
        "{cgroups:?}"
    );
    if h.v2_controllers.iter().any(|c| c == "hugetlb") {
        assert!(
            subtree_control(&service).contains("hugetlb"),
            "the jailer enabled hugetlb in the delegated cgroup (allowed: no process in it)"
        );
        assert_eq!(
            std::fs::read_to_string(
                mount
                    .join(vm_dir.trim_start_matches('/'))
                    .join("hugetlb.2MB.max")
            )
            .unwrap_or_default()
            .trim(),
            "0"
        );
    }

    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id.clone(),
        force: false,
    })
    .await
    .unwrap();
    assert!(
        !mount.join(vm_dir.trim_start_matches('/')).exists(),
        "the VM's cgroup is removed"
    );
    d.kill();
    drop(cleanup);
    assert!(
        !service.exists(),
        "the test's cgroup {} is removed",
        service.display()
    );
}

#[test]
fn doctor_in_a_delegated_cgroup_says_where_the_daemon_and_its_vms_go() {
    let Some(h) = v2() else { return };
    let mount = h.v2.clone().unwrap();
    let service = mount.join(format!("{}.service", unique("wdoc")));
    std::fs::create_dir(&service).unwrap();
    xattr::set(&service, "trusted.delegate", b"1").unwrap();
    let _cleanup = Cgroups(vec![service.clone()]);
    let out = Command::new("sh")
        .args([
            "-c",
            "echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"",
            "sh",
        ])
        .arg(&service)
        .arg(env!("CARGO_BIN_EXE_warden"))
        .args(["doctor", "--cgroup-version", "2", "--parent-cgroup", "vms"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("cgroup-delegation"))
        .unwrap_or_else(|| panic!("no delegation check: {text}"));
    let rel = service.strip_prefix(&mount).unwrap().display().to_string();
    assert!(
        line.contains(&format!("{rel}/supervisor")) && line.contains(&format!("{rel}/vms")),
        "{line}"
    );
}
