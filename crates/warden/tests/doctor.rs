//! `warden doctor` against this host: it passes as the machine is, and each broken setup fails
//! (or warns) with a message naming the path or value at fault and a fix.
//!
//! Real files, binaries and mounts throughout; only the mount table is faked, for the one case
//! (pure cgroup v2 without delegation) this host cannot show.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use warden::doctor::{self, Check, DoctorInput, Linkage, Report, Status};

/// The pinned binaries from `target/assets/` (fails, never skips, when they are missing).
fn asset(name: &str) -> PathBuf {
    let p = match name {
        "jailer" => warden::assets::jailer(),
        _ => warden::assets::firecracker(),
    };
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-assets.sh (or `make assets`)",
        p.display()
    );
    p
}

fn input() -> DoctorInput {
    DoctorInput {
        jailer_binary: asset("jailer"),
        firecracker_binary: asset("firecracker"),
        ..DoctorInput::default()
    }
}

/// The one check called `name`.
fn check<'a>(report: &'a Report, name: &str) -> &'a Check {
    let found = report.named(name);
    assert_eq!(
        found.len(),
        1,
        "expected one {name:?} check in:\n{}",
        report.render_human()
    );
    found[0]
}

fn assert_status(report: &Report, name: &str, status: Status, needles: &[&str]) -> Check {
    let c = check(report, name).clone();
    let text = report.render_human();
    assert_eq!(c.status, status, "{name}:\n{text}");
    for n in needles {
        assert!(c.detail.contains(n), "{name} detail lacks {n:?}:\n{text}");
    }
    if status != Status::Pass {
        assert!(
            c.fix.as_deref().is_some_and(|f| !f.is_empty()),
            "{name} has no fix:\n{text}"
        );
    }
    c
}

/// Writes an executable file and closes it before returning (so it can be executed).
fn write_exe(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A tmpfs mounted on a fresh directory; unmounted when dropped, also when a test panics.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "warden-doctor-test"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {} failed (tests run as root)",
            dir.path().display()
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn this_host_passes() {
    let report = doctor::run(&input());
    print!("{}", report.render_human());
    assert!(
        !report.has_failures(),
        "doctor fails on this host:\n{}",
        report.render_human()
    );
    for name in [
        "kvm",
        "cgroups",
        "cgroup-memory",
        "cgroup-cpu",
        "cgroup-pids",
        "jailer",
        "jailer-static",
        "firecracker",
        "firecracker-static",
        "versions",
        "chroot-base",
        "chroot-fs",
        "jail-user",
        "socket-path",
        "tun",
        "netns",
    ] {
        check(&report, name);
    }
    assert_status(
        &report,
        "kvm",
        Status::Pass,
        &["/dev/kvm", "KVM API version 12"],
    );
    assert_status(&report, "jailer", Status::Pass, &["Jailer v"]);
    assert_status(&report, "firecracker", Status::Pass, &["Firecracker v"]);
    assert_status(
        &report,
        "firecracker-static",
        Status::Pass,
        &["statically linked"],
    );
    // No state directory given: no check for it.
    assert_eq!(report.named("state-dir").len(), 0);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["checks"][0]["name"], "kvm");
    assert_eq!(json["checks"][0]["status"], "pass");
    assert!(json["checks"][0]["fix"].is_null());
}

#[test]
fn netns_probe_leaves_the_calling_thread_alone() {
    let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let report = doctor::run(&input());
    assert_status(
        &report,
        "netns",
        Status::Pass,
        &["created a network namespace"],
    );
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        before
    );
}

#[test]
fn missing_jailer_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("jailer");
    let report = doctor::run(&DoctorInput {
        jailer_binary: missing.clone(),
        ..input()
    });
    assert!(report.has_failures());
    let c = assert_status(
        &report,
        "jailer",
        Status::Fail,
        &["Jailer binary not found", &missing.display().to_string()],
    );
    assert!(c.fix.unwrap().contains("setup-assets.sh"));
    // Nothing else to say about a file that is not there.
    assert_eq!(report.named("jailer-static").len(), 0);
    assert_eq!(report.named("versions").len(), 0);
    assert_status(&report, "firecracker", Status::Pass, &[]);
}

#[test]
fn dynamically_linked_firecracker_fails() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fc.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void) { puts(\"Firecracker v1.12.1\"); return 0; }\n",
    )
    .unwrap();
    let bin = dir.path().join("firecracker");
    let out = Command::new("gcc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    match doctor::elf_linkage(&bin).unwrap() {
        Linkage::Dynamic {
            interpreter,
            needed,
        } => {
            assert!(interpreter.is_some_and(|i| i.contains("ld-")));
            assert!(
                needed.iter().any(|n| n.starts_with("libc.so")),
                "{needed:?}"
            );
        }
        other => panic!("gcc's default output is dynamic, got {other:?}"),
    }

    let report = doctor::run(&DoctorInput {
        firecracker_binary: bin.clone(),
        ..input()
    });
    assert!(report.has_failures());
    // It runs and prints the right version: only the linkage is wrong.
    assert_status(
        &report,
        "firecracker",
        Status::Pass,
        &["Firecracker v1.12.1"],
    );
    assert_status(&report, "versions", Status::Pass, &[]);
    assert_status(
        &report,
        "firecracker-static",
        Status::Fail,
        &[&bin.display().to_string(), "dynamically linked", "libc.so"],
    );
}

#[test]
fn static_release_binaries_read_as_static() {
    assert_eq!(
        doctor::elf_linkage(&asset("jailer")).unwrap(),
        Linkage::Static
    );
    assert_eq!(
        doctor::elf_linkage(&asset("firecracker")).unwrap(),
        Linkage::Static
    );
    assert!(matches!(
        doctor::elf_linkage(Path::new("/bin/true")).unwrap(),
        Linkage::Dynamic { .. }
    ));
}

#[test]
fn version_mismatch_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("firecracker");
    write_exe(&bin, b"#!/bin/sh\necho 'Firecracker v1.11.0'\n");
    let report = doctor::run(&DoctorInput {
        firecracker_binary: bin.clone(),
        ..input()
    });
    assert!(report.has_failures());
    assert_status(
        &report,
        "firecracker",
        Status::Pass,
        &["Firecracker v1.11.0"],
    );
    assert_status(
        &report,
        "versions",
        Status::Fail,
        &["version mismatch", "v1.12.1", "v1.11.0"],
    );
    // A script is no static ELF either, and says so separately.
    assert_status(
        &report,
        "firecracker-static",
        Status::Fail,
        &["not a statically linked ELF", "script"],
    );
}

#[test]
fn swapped_binaries_fail() {
    let report = doctor::run(&DoctorInput {
        jailer_binary: asset("firecracker"),
        ..input()
    });
    assert_status(
        &report,
        "jailer",
        Status::Fail,
        &["printed \"Firecracker v", "not the jailer"],
    );
}

#[test]
fn firecracker_name_without_firecracker_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fc");
    std::fs::copy(asset("firecracker"), &bin).unwrap();
    let report = doctor::run(&DoctorInput {
        firecracker_binary: bin,
        ..input()
    });
    assert_status(
        &report,
        "firecracker",
        Status::Fail,
        &["does not contain \"firecracker\""],
    );
}

#[test]
fn chroot_base_on_another_filesystem_warns() {
    let tmpfs = Tmpfs::mount("size=1m,mode=755");
    let base = tmpfs.path().join("jailer");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let assets = asset("firecracker").parent().unwrap().to_owned();
    let report = doctor::run(&DoctorInput {
        chroot_base_dir: base.clone(),
        asset_dirs: vec![assets.clone()],
        ..input()
    });
    assert_status(&report, "chroot-base", Status::Pass, &["owned by root"]);
    let c = assert_status(
        &report,
        "chroot-fs",
        Status::Warn,
        &[
            &assets.display().to_string(),
            "another filesystem",
            "copy images instead of hard-linking",
        ],
    );
    assert!(c.fix.unwrap().contains("--chroot-base"));

    // The same asset directory against a base on its own filesystem passes.
    let same = tempfile::tempdir_in(assets.parent().unwrap()).unwrap();
    let report = doctor::run(&DoctorInput {
        chroot_base_dir: same.path().to_owned(),
        asset_dirs: vec![assets],
        ..input()
    });
    assert_status(&report, "chroot-fs", Status::Pass, &["same filesystem"]);
}

#[test]
fn chroot_base_missing_warns_and_writable_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let report = doctor::run(&DoctorInput {
        chroot_base_dir: missing.clone(),
        ..input()
    });
    let c = assert_status(
        &report,
        "chroot-base",
        Status::Warn,
        &["does not exist", "will be created"],
    );
    assert!(c
        .fix
        .unwrap()
        .contains(&format!("mkdir -p {}", missing.display())));

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let report = doctor::run(&DoctorInput {
        chroot_base_dir: dir.path().to_owned(),
        ..input()
    });
    let c = assert_status(
        &report,
        "chroot-base",
        Status::Fail,
        &["world-writable", "777"],
    );
    assert!(c.fix.unwrap().contains("chmod go-w"));
}

#[test]
fn uid_zero_fails() {
    let report = doctor::run(&DoctorInput { uid: 0, ..input() });
    assert!(report.has_failures());
    let c = assert_status(&report, "jail-user", Status::Fail, &["uid is 0 (root)"]);
    assert!(c.fix.unwrap().contains("useradd"));
    let report = doctor::run(&DoctorInput { gid: 0, ..input() });
    assert_status(&report, "jail-user", Status::Fail, &["gid is 0 (root)"]);
}

#[test]
fn configured_user_must_exist_with_those_ids() {
    let report = doctor::run(&DoctorInput {
        user_name: Some("warden-no-such-user".into()),
        ..input()
    });
    let c = assert_status(
        &report,
        "jail-user",
        Status::Fail,
        &["user warden-no-such-user does not exist"],
    );
    assert!(c.fix.unwrap().contains("useradd -r"));

    // `nobody` exists everywhere; its ids are not the default 10000.
    let report = doctor::run(&DoctorInput {
        user_name: Some("nobody".into()),
        ..input()
    });
    assert_status(
        &report,
        "jail-user",
        Status::Fail,
        &["user nobody has uid", "configured with uid 10000"],
    );
}

#[test]
fn too_long_chroot_base_fails() {
    let base = PathBuf::from(format!("/srv/{}", "b".repeat(40)));
    let report = doctor::run(&DoctorInput {
        chroot_base_dir: base,
        ..input()
    });
    assert!(report.has_failures());
    // 45 + "/firecracker/" 13 + 64 + "/root/run/firecracker.socket" 28 = 150.
    let c = assert_status(
        &report,
        "socket-path",
        Status::Fail,
        &[
            "is 150 bytes",
            "limit of 107",
            "ids can be at most 21 characters",
            "2 bytes for 64-char ids",
            "30 bytes for 36-char ids",
        ],
    );
    assert!(c.fix.unwrap().contains("--chroot-base /srv/jailer"));

    // The jailer's default base, /srv/jailer: 11 + 13 + 64 + 28 = 116 bytes. A UUID still
    // fits, so this is a warning about id length, not a failure.
    let report = doctor::run(&DoctorInput {
        chroot_base_dir: PathBuf::from("/srv/jailer"),
        ..input()
    });
    assert_status(
        &report,
        "socket-path",
        Status::Warn,
        &["is 116 bytes", "at most 55 characters"],
    );

    // A short base fits everything.
    let report = doctor::run(&DoctorInput {
        chroot_base_dir: PathBuf::from("/j"),
        ..input()
    });
    assert_status(
        &report,
        "socket-path",
        Status::Pass,
        &["107 bytes (limit 107)"],
    );
}

#[test]
fn unwritable_state_dir_fails() {
    // Root writes anywhere, so: a file where the directory should be...
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, "").unwrap();
    let report = doctor::run(&DoctorInput {
        state_dir: Some(file.clone()),
        ..input()
    });
    assert!(report.has_failures());
    assert_status(
        &report,
        "state-dir",
        Status::Fail,
        &[&file.display().to_string(), "not a directory"],
    );

    // ...and a read-only filesystem.
    let ro = Tmpfs::mount("size=1m,ro");
    let report = doctor::run(&DoctorInput {
        state_dir: Some(ro.path().to_owned()),
        ..input()
    });
    assert_status(
        &report,
        "state-dir",
        Status::Fail,
        &["not writable", "Read-only file system"],
    );

    // A writable one passes and is left as it was.
    let report = doctor::run(&DoctorInput {
        state_dir: Some(dir.path().to_owned()),
        ..input()
    });
    assert_status(&report, "state-dir", Status::Pass, &["is writable"]);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "the probe file is removed"
    );
    let later = dir.path().join("a/b");
    let report = doctor::run(&DoctorInput {
        state_dir: Some(later),
        ..input()
    });
    assert_status(&report, "state-dir", Status::Pass, &["can be created"]);
}

#[test]
fn missing_kvm_and_tun_fail() {
    let dir = tempfile::tempdir().unwrap();
    let report = doctor::run(&DoctorInput {
        kvm_path: dir.path().join("kvm"),
        tun_path: dir.path().join("tun"),
        ..input()
    });
    let c = assert_status(&report, "kvm", Status::Fail, &["kvm does not exist"]);
    assert!(c.fix.unwrap().contains("modprobe kvm_intel"));
    assert_status(&report, "tun", Status::Fail, &["tun does not exist"]);

    // A file that is not the KVM device.
    let report = doctor::run(&DoctorInput {
        kvm_path: PathBuf::from("/dev/null"),
        ..input()
    });
    assert_status(&report, "kvm", Status::Fail, &["/dev/null"]);
}

/// The one case this host cannot show for real: pure cgroup v2 with controllers listed but the
/// root's `cgroup.subtree_control` not writable, as in a service without `Delegate=yes`. The
/// mount table names a read-only tmpfs as the cgroup2 root.
#[test]
fn pure_v2_without_delegation_fails_with_delegate_fix() {
    let root = Tmpfs::mount("size=1m,mode=755");
    std::fs::write(
        root.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    let status = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(root.path())
        .status()
        .unwrap();
    assert!(status.success());
    let dir = tempfile::tempdir().unwrap();
    let mounts = dir.path().join("mounts");
    std::fs::write(
        &mounts,
        format!(
            "cgroup2 {} cgroup2 rw,nsdelegate 0 0\n",
            root.path().display()
        ),
    )
    .unwrap();

    let report = doctor::run(&DoctorInput {
        mounts_file: mounts.clone(),
        ..input()
    });
    assert_status(
        &report,
        "cgroups",
        Status::Pass,
        &["unified", "cgroup v2 (detected"],
    );
    for controller in ["memory", "cpu", "pids"] {
        let c = assert_status(
            &report,
            &format!("cgroup-{controller}"),
            Status::Fail,
            &["cgroup.subtree_control is not writable"],
        );
        assert!(c.fix.unwrap().contains("Delegate=yes"));
    }

    // A controller missing from a unified root: not delegated either.
    std::fs::write(&mounts, "").unwrap();
    let report = doctor::run(&DoctorInput {
        mounts_file: mounts,
        ..input()
    });
    assert_status(
        &report,
        "cgroups",
        Status::Fail,
        &["no cgroup filesystem is mounted"],
    );
}

/// v2 on this hybrid host has no memory controller: choosing it warns that the limit is left
/// out (fails in production mode), and the fix says to use v1.
#[test]
fn v2_on_hybrid_host_warns_fails_in_production_and_points_to_v1() {
    let h = jail::cgroup::Hierarchy::host().unwrap();
    if h.layout != jail::cgroup::Layout::Hybrid || !h.v2_controllers.is_empty() {
        // The hybrid layout is what this project's machines have; elsewhere the other tests cover it.
        return;
    }
    let report = doctor::run(&DoctorInput {
        cgroup_version: Some(jail::CgroupVersion::V2),
        ..input()
    });
    let c = assert_status(
        &report,
        "cgroup-memory",
        Status::Warn,
        &["memory is not in", "VMs run without this limit"],
    );
    assert!(c.fix.unwrap().contains("--cgroup-version 1"));
    let report = doctor::run(&DoctorInput {
        cgroup_version: Some(jail::CgroupVersion::V2),
        production: true,
        ..input()
    });
    assert_status(
        &report,
        "cgroup-memory",
        Status::Fail,
        &["production mode refuses"],
    );
    // The test process is in the root cgroup of this host's v2 mount, without systemd.
    assert_status(
        &report,
        "cgroup-delegation",
        Status::Pass,
        &["not in a delegated cgroup"],
    );
}

#[test]
fn render_human_has_one_line_per_check_and_fix_lines() {
    let report = doctor::run(&DoctorInput { uid: 0, ..input() });
    let text = report.render_human();
    let lines: Vec<&str> = text.lines().collect();
    let fixes = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("fix: "))
        .count();
    let not_pass = report
        .checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .count();
    assert_eq!(lines.len(), report.checks.len() + fixes, "{text}");
    assert_eq!(fixes, not_pass, "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL jail-user")),
        "{text}"
    );
    assert!(
        lines.iter().any(
            |l| l.starts_with("PASS kvm") && l.contains("/dev/kvm usable (KVM API version 12)")
        ),
        "{text}"
    );
}

/// The daemon's `cpuset` must name online CPUs: the check reads them from sysfs.
#[test]
fn a_cpuset_of_offline_cpus_fails_naming_them() {
    let sys = tempfile::tempdir().unwrap();
    let online = sys.path().join("devices/system/cpu");
    std::fs::create_dir_all(&online).unwrap();
    std::fs::write(online.join("online"), "0-1\n").unwrap();
    let run = |set: &str| {
        doctor::run(&DoctorInput {
            cpuset: Some(set.parse().unwrap()),
            sys_root: sys.path().to_owned(),
            ..input()
        })
    };
    assert_status(&run("1"), "cpuset", Status::Pass, &["every CPU is online"]);
    let c = assert_status(
        &run("0,3-4"),
        "cpuset",
        Status::Fail,
        &["3-4", "online: 0-1"],
    );
    assert!(c.fix.unwrap().contains("0-1"));
}
