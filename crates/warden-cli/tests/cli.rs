//! The `warden` binary as a user runs it: real jailed VMs, exit statuses, and nothing left.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

fn assets() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/assets");
    assert!(
        dir.join("testguest").is_file(),
        "run scripts/setup-assets.sh first"
    );
    dir
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("cli-{prefix}-{}-{:x}", std::process::id(), n & 0xfffff)
}

fn assert_nothing_left(id: &str) {
    let mut left = vec![Path::new("/srv/jailer/firecracker").join(id)];
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        left.push(Path::new("/sys/fs/cgroup").join(c).join("warden").join(id));
    }
    left.retain(|p| p.exists());
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn run_streams_the_guest_and_exits_0_on_guest_power_off() {
    let id = unique("run");
    let out = warden()
        .args(["run", "--id", &id, "--kernel"])
        .arg(assets().join("testguest"))
        .args([
            "--boot-args",
            "mode=poweroff marker=cli-ok",
            "--require-jailer",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("WARDEN_MARKER cli-ok"), "{stdout}");
    assert!(stderr.contains("Sandboxed: true"), "{stderr}");
    assert!(stderr.contains("guest powered off"), "{stderr}");
    assert_nothing_left(&id);
}

#[test]
fn ctrl_c_stops_the_vm_gracefully_and_exits_130() {
    let id = unique("sigint");
    let mut child = warden()
        .args(["run", "--id", &id, "--kernel"])
        .arg(assets().join("testguest"))
        .args(["--boot-args", "mode=idle marker=waiting"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("guest output ended before the marker")
            .unwrap();
        if line.contains("WARDEN_MARKER waiting") {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        rest.iter().any(|l| l.contains("testguest: ctrl-alt-del")),
        "graceful stop expected: {rest:?}"
    );
    assert_nothing_left(&id);
}

#[test]
fn oom_kill_exits_3() {
    let id = unique("oom");
    let out = warden()
        .args([
            "run",
            "--id",
            &id,
            "--memory",
            "256",
            "--memory-limit",
            "128",
            "--kernel",
        ])
        .arg(assets().join("testguest"))
        .args(["--boot-args", "mode=touch mib=200"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("OOM-killed"));
    assert_nothing_left(&id);
}

#[test]
fn plan_json_describes_the_jail_without_creating_it() {
    let id = unique("plan");
    let out = warden()
        .args([
            "plan",
            "--json",
            "--id",
            &id,
            "--cpu-quota",
            "50",
            "--memory",
            "256",
            "--new-pid-ns",
            "--kernel",
        ])
        .arg(assets().join("testguest"))
        .args(["--drive"])
        .arg(format!("{}:ro", assets().join("NOTICE").display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let argv: Vec<&str> = plan["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(argv[0].ends_with("jailer"));
    assert!(
        argv.windows(2)
            .any(|w| w == ["--cgroup", "memory.limit_in_bytes=335544320"]),
        "{argv:?}"
    );
    assert!(
        argv.windows(2)
            .any(|w| w == ["--cgroup", "cpu.cfs_quota_us=50000"]),
        "{argv:?}"
    );
    assert!(argv.contains(&"--new-pid-ns"));
    assert_eq!(
        plan["socket_path"],
        format!("/srv/jailer/firecracker/{id}/root/run/firecracker.socket")
    );
    assert_eq!(
        plan["pid_file"],
        format!("/srv/jailer/firecracker/{id}/root/firecracker.pid")
    );
    let staged = plan["staged"].as_array().unwrap();
    assert_eq!(staged.len(), 2);
    assert_eq!(staged[1]["path_in_jail"], "/drive1");
    assert_eq!(staged[1]["writable"], false);
    assert_eq!(plan["rlimits"][0], serde_json::json!(["no-file", 2048]));
    assert_nothing_left(&id);

    let human = warden()
        .args(["plan", "--id", &id, "--kernel"])
        .arg(assets().join("testguest"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&format!(
            "/sys/fs/cgroup/memory/warden/{id}/memory.limit_in_bytes = "
        )),
        "{text}"
    );
    assert!(text.contains("no-file = 2048"), "{text}");
}

#[test]
fn plan_shows_the_network_a_vm_would_get() {
    let id = unique("plannet");
    let out = warden()
        .args([
            "plan",
            "--id",
            &id,
            "--net",
            "bridge",
            "--bridge",
            "wplan0",
            "--guest-ip",
            "10.216.0.7/24",
            "--kernel",
        ])
        .arg(assets().join("testguest"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("namespace fc-vm-{id} (/var/run/netns/fc-vm-{id})")),
        "{text}"
    );
    assert!(
        text.contains("TAP tap0 in the namespace, owned by 10000:10000, guest MAC 06:"),
        "{text}"
    );
    assert!(text.contains("on bridge wplan0"), "{text}");
    assert!(
        text.contains("guest address: ip=10.216.0.7::10.216.0.1:255.255.255.0::eth0:off"),
        "{text}"
    );
    assert!(
        text.contains(&format!("--netns /var/run/netns/fc-vm-{id}")),
        "{text}"
    );
    assert!(
        !Path::new("/var/run/netns")
            .join(format!("fc-vm-{id}"))
            .exists(),
        "plan creates nothing"
    );
}

#[test]
fn bad_input_exits_2_naming_the_field() {
    let out = warden()
        .args(["run", "--id", "../etc", "--kernel"])
        .arg(assets().join("testguest"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid vm_id") && err.contains("'.'"),
        "{err}"
    );
    let out = warden()
        .args(["run", "--memory", "64", "--kernel"])
        .arg(assets().join("testguest"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("invalid memory_mb: is 64 MiB; use at least 128"));
}

#[test]
fn demo_boots_jailed_and_reports_sandboxed() {
    let out = warden().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Sandboxed: true"), "{stdout}");
    assert!(stdout.contains("left behind: nothing"), "{stdout}");
}

#[test]
fn plan_shows_pinning_and_io_limits_and_refuses_what_the_host_cannot_do() {
    let id = unique("plan-pin");
    let out = warden()
        .args(["plan", "--json", "--id", &id, "--require-jailer"])
        .args([
            "--cpuset",
            "0",
            "--io-read-bps",
            "1048576",
            "--io-write-iops",
            "50",
        ])
        .arg("--kernel")
        .arg(assets().join("testguest"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let argv: Vec<&str> = plan["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for arg in ["cpuset.cpus=0", "cpuset.mems=0"] {
        assert!(argv.windows(2).any(|w| w == ["--cgroup", arg]), "{argv:?}");
    }
    assert!(!argv.iter().any(|a| a.starts_with("blkio.")), "{argv:?}");
    let cgroups = plan["cgroups"].as_array().unwrap();
    let read = cgroups
        .iter()
        .find(|c| c["file"] == "blkio.throttle.read_bps_device")
        .unwrap();
    assert_eq!(read["by_warden"], true);
    assert!(
        read["value"].as_str().unwrap().ends_with(":0 1048576"),
        "{read}"
    );
    let human = warden()
        .args([
            "plan",
            "--id",
            &id,
            "--require-jailer",
            "--io-read-bps",
            "1048576",
        ])
        .arg("--kernel")
        .arg(assets().join("testguest"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&format!(
            "/sys/fs/cgroup/blkio/warden/{id}/blkio.throttle.read_bps_device = "
        )) && text.contains("(written by warden)"),
        "{text}"
    );
    for (args, want) in [
        (
            &["--cpuset", "0-4095"][..],
            "invalid cpuset: names CPUs that are not online",
        ),
        (
            &["--cpuset", "1-0"][..],
            "invalid cpuset: \"1-0\" is not a CPU list",
        ),
        (
            &["--cpuset", "0", "--cgroup-version", "2"][..],
            "no cpuset controller",
        ),
        (&["--io-read-bps", "0"][..], "invalid io_read_bps: is 0"),
    ] {
        let out = warden()
            .args(["run", "--id", &id, "--require-jailer"])
            .args(args)
            .arg("--kernel")
            .arg(assets().join("testguest"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_nothing_left(&id);
}

/// A snapshot store as the daemon and `VmHandle::snapshot` write one: root-owned read-only
/// files in a 0700 directory, and a manifest (its checksums are not checked by a plan).
fn fake_snapshot_store(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let store = dir.join("snap");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = |name: &str, len: usize| {
        let p = store.join(name);
        std::fs::write(&p, vec![7u8; len]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        jail::snapshot::StoredFile {
            name: name.into(),
            len: len as u64,
            sha256: jail::snapshot::sha256_of(&p).unwrap(),
        }
    };
    let manifest = warden::vm::Manifest {
        firecracker_version: "1.12.1".into(),
        source_vm: "plan-src".into(),
        created_at_unix_ms: 1,
        vcpu_count: 2,
        memory_mb: 256,
        state: file("vmstate", 4096),
        memory: file("mem", 65536),
        drives: vec![warden::vm::snapshot::SnapshotDrive {
            file: file("rootfs", 8192),
            writable: true,
        }],
        network_interfaces: Vec::new(),
        guest: None,
        kind: Default::default(),
        parent: None,
        diff_bytes: None,
    };
    std::fs::write(
        store.join(warden::vm::snapshot::MANIFEST),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    store
}

#[test]
fn plan_of_a_restore_shows_the_snapshot_files_it_would_stage_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let store = fake_snapshot_store(dir.path());
    let id = unique("plan-rs");
    let out = warden()
        .args(["plan", "--json", "--id", &id, "--restore"])
        .arg(&store)
        .args(["--jailer-uid", "1900000123", "--jailer-gid", "1900000123"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["restore"]["source_vm"], "plan-src", "{plan:#}");
    assert_eq!(plan["restore"]["firecracker_version"], "1.12.1");
    // The snapshot's files, under the names its state refers to; no kernel.
    let staged: Vec<(&str, &str, bool, u64, u64)> = plan["staged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path_in_jail"].as_str().unwrap(),
                f["method"].as_str().unwrap(),
                f["writable"].as_bool().unwrap(),
                f["mode"].as_u64().unwrap(),
                f["uid"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(staged.len(), 3, "{staged:?}");
    // State and memory: root's read-only files, hard-linked and left as they are.
    for name in ["/vmstate", "/mem"] {
        let f = staged.iter().find(|f| f.0 == name).expect(name);
        assert_eq!((f.1, f.2), ("hard-link", false), "{f:?}");
    }
    // The writable drive: a private copy of the clone's own, owned by its uid.
    let rootfs = staged.iter().find(|f| f.0 == "/rootfs").expect("rootfs");
    assert_eq!(
        (rootfs.1, rootfs.2, rootfs.3, rootfs.4),
        ("copy", true, 0o600, 1900000123),
        "{rootfs:?}"
    );
    let argv: Vec<&str> = plan["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The snapshot's machine decides the limits: 256 MiB + 64 MiB of VMM, two vCPUs.
    assert!(
        argv.windows(2)
            .any(|w| w == ["--cgroup", "memory.limit_in_bytes=335544320"]),
        "{argv:?}"
    );
    assert!(
        argv.windows(2)
            .any(|w| w == ["--cgroup", "cpu.cfs_quota_us=200000"]),
        "{argv:?}"
    );
    assert!(argv.windows(2).any(|w| w == ["--uid", "1900000123"]));
    assert_nothing_left(&id);

    let human = warden()
        .args(["plan", "--id", &id, "--restore"])
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&format!(
            "restore of the snapshot in {} (of VM plan-src, written by Firecracker 1.12.1)",
            store.display()
        )),
        "{text}"
    );
    assert!(text.contains("/rootfs -> "), "{text}");
    assert!(text.contains("(copy, "), "{text}");
    assert!(text.contains("(hard-link, "), "{text}");
    assert_nothing_left(&id);

    // What the snapshot decides cannot be asked for, and a store without a manifest is named.
    let out = warden()
        .args(["plan", "--id", &id, "--memory", "512", "--restore"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--memory cannot be combined with --restore"),
        "{err}"
    );
    let out = warden()
        .args(["plan", "--id", &id, "--restore"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest.json"), "{err}");
    // And a plain plan still wants its kernel.
    let out = warden().args(["plan", "--id", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--kernel"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
