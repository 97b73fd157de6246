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
