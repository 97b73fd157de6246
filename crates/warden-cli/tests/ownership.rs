//! Every warden instance touches only what it owns, on a host shared with others: `warden run`
//! in a terminal, a second daemon with another state dir, `warden gc`, the plain jailer's jails.
//! `warden run` never outlives itself silently: a hang-up stops its VM, and a SIGKILL takes its
//! Firecracker with it (the next `gc` removes the rest). An id is reserved host-wide, so two
//! instances never build the same one and a refused boot cleans nothing of the holder's.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden_api::pb;

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

/// `warden run` of an idle test guest, returned once the guest prints its marker, with
/// Firecracker's pid (from warden's "running, pid N" line).
fn run_idle(id: &str, extra: &[&str]) -> (Child, u32) {
    let mut child = warden()
        .args([
            "run",
            "--id",
            id,
            "--require-jailer",
            "--kernel",
            &testguest(),
        ])
        .args(["--boot-args", "mode=idle marker=idle-now"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = out.next().expect("guest output ended early").unwrap();
        if line.contains("WARDEN_MARKER idle-now") {
            break;
        }
    }
    // Keep draining the guest's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in out {});
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let pid = loop {
        let line = err.next().expect("no 'running' line").unwrap();
        if let Some(rest) = line.split(", pid ").nth(1) {
            break rest.split(',').next().unwrap().trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in err {});
    (child, pid)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// The live processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let proc_root = Path::new("/proc");
    jail::proc::pids(proc_root)
        .into_iter()
        .filter(|&p| jail::proc::stat(proc_root, p).is_some_and(|s| s.ppid == pid && s.is_alive()))
        .collect()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// What a `warden run` VM with the default layout has on the host.
fn run_traces(id: &str) -> Vec<PathBuf> {
    let mut t = vec![
        Path::new("/srv/jailer/firecracker").join(id),
        jail::Registry::default().path(id),
        Path::new("/var/run/netns").join(format!("fc-vm-{id}")),
    ];
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        t.push(Path::new("/sys/fs/cgroup").join(c).join("warden").join(id));
    }
    t.retain(|p| p.exists());
    // A uid leased for the VM counts as its host state too.
    for l in jail::Registry::default().uid_leases() {
        if l.vm_id == id {
            t.push(PathBuf::from(format!("/run/warden/uids/{}.json", l.uid)));
        }
    }
    t
}

fn uid_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn two_warden_runs_get_uids_of_their_own_and_give_them_back() {
    let (a, b) = (unique("own-uid-a"), unique("own-uid-b"));
    let (mut ca, fa) = run_idle(&a, &[]);
    let (mut cb, fb) = run_idle(&b, &[]);
    let (ua, ub) = (uid_of(fa), uid_of(fb));
    assert_ne!(ua, ub, "two warden runs share a uid");
    let range = warden::vm::jailer::DEFAULT_JAIL_ID_RANGE;
    assert!((range.0..=range.1).contains(&ua) && (range.0..=range.1).contains(&ub));
    for c in [&mut ca, &mut cb] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        assert_eq!(c.wait().unwrap().code(), Some(130));
    }
    assert_eq!(run_traces(&a), Vec::<PathBuf>::new(), "uid lease released");
    assert_eq!(run_traces(&b), Vec::<PathBuf>::new());
    // An explicit --uid/--gid is used as given.
    let c = unique("own-uid-fixed");
    let (mut cc, fc) = run_idle(&c, &["--uid", "10000", "--gid", "10000"]);
    assert_eq!(uid_of(fc), 10000);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cc.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(cc.wait().unwrap().code(), Some(130));
    assert_eq!(run_traces(&c), Vec::<PathBuf>::new());
}

/// `warden gc` with a state dir of its own.
fn gc(state: &Path) -> std::process::Output {
    warden()
        .arg("gc")
        .env("WARDEN_STATE_DIR", state)
        .env("WARDEN_LOG", "info")
        .output()
        .unwrap()
}

#[test]
fn sighup_and_sigquit_stop_the_vm_like_ctrl_c() {
    for (signal, name) in [
        (nix::sys::signal::Signal::SIGHUP, "hup"),
        (nix::sys::signal::Signal::SIGQUIT, "quit"),
    ] {
        let id = unique(&format!("own-{name}"));
        let (mut child, fc) = run_idle(&id, &["--net", "none"]);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{name}");
        assert!(!alive(fc), "{name}: Firecracker outlived warden run");
        assert_eq!(run_traces(&id), Vec::<PathBuf>::new(), "{name}");
    }
}

#[test]
fn a_sigkilled_warden_run_takes_its_firecracker_along_and_gc_removes_the_rest() {
    let state = tempfile::tempdir().unwrap();
    for pid_ns in [false, true] {
        let id = unique(if pid_ns { "own-kill-pidns" } else { "own-kill" });
        let mut args = vec!["--net", "none"];
        if !pid_ns {
            args.push("--share-pid-ns");
        }
        let (mut child, fc) = run_idle(&id, &args);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || !alive(fc)),
            "pid ns {pid_ns}: Firecracker {fc} outlived its SIGKILLed warden run"
        );
        assert!(
            !run_traces(&id).is_empty(),
            "the dead owner's host state waits for gc"
        );
        let out = gc(&state.path().join("state"));
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert_eq!(run_traces(&id), Vec::<PathBuf>::new(), "{log}");
        assert!(log.contains(&id), "gc names what it removed: {log}");
    }
}

/// Not a test on its own: the library user that the next test SIGKILLs. It starts three VMs,
/// lets the third go (`detach`), prints their pids and waits to be killed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "started by a_sigkilled_library_user_takes_its_vms_along_but_not_one_it_let_go"]
async fn library_user_with_three_vms() {
    use warden::vm::config::{JailerMode, Serial, VmConfig, VmOptions};
    let Ok(base) = std::env::var("WARDEN_TEST_LIBRARY_USER") else {
        return;
    };
    let options = VmOptions {
        boot_args: Some("mode=idle".into()),
        jailer_mode: JailerMode::Required,
        serial: Serial::Capture,
        ..VmOptions::default()
    };
    let mut pids = Vec::new();
    let mut kept = Vec::new();
    for i in 0..3 {
        let config = VmConfig {
            vm_id: format!("{base}-{i}"),
            vcpu_count: 1,
            memory_mb: 128,
            kernel_path: testguest(),
            rootfs_path: String::new(),
            enable_networking: false,
        };
        let vm = warden::vm::start_vm(&config, &options).await.unwrap();
        pids.push(vm.pid.to_string());
        if i == 2 {
            vm.detach();
        } else {
            kept.push(vm);
        }
    }
    println!("pids {}", pids.join(" "));
    std::future::pending::<()>().await;
}

#[test]
fn a_sigkilled_library_user_takes_its_vms_along_but_not_one_it_let_go() {
    let base = unique("own-lib");
    let ids: Vec<String> = (0..3).map(|i| format!("{base}-{i}")).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "library_user_with_three_vms", "--ignored"])
        .arg("--nocapture")
        .env("WARDEN_TEST_LIBRARY_USER", &base)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = loop {
        let line = out.next().expect("the library user ended early").unwrap();
        if let Some(rest) = line.strip_prefix("pids ") {
            break rest.split(' ').map(|p| p.parse().unwrap()).collect();
        }
    };
    assert!(pids.iter().all(|&p| alive(p)));
    // Its children besides the Firecrackers: one watchdog for all its VMs.
    let watchdogs: Vec<u32> = children_of(child.id())
        .into_iter()
        .filter(|p| !pids.contains(p))
        .collect();
    assert_eq!(watchdogs.len(), 1, "watchdogs {watchdogs:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pids[0])
            && !alive(pids[1])),
        "a Firecracker outlived its SIGKILLed library user (one watchdog for both)"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pids[2]), "the VM it let go died with it");

    // The one let go runs on until someone ends it; then gc removes what the dead owner left.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[2] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pids[2])));
    let state = tempfile::tempdir().unwrap();
    let out = gc(&state.path().join("state"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for id in &ids {
        assert_eq!(run_traces(id), Vec::<PathBuf>::new(), "{id}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_and_a_second_daemon_leave_a_running_warden_run_vm_and_a_foreign_jail_alone() {
    let id = unique("own-live");
    let (mut child, fc) = run_idle(&id, &["--net", "none"]);
    let before = run_traces(&id);
    assert_eq!(
        before.len(),
        8,
        "jail, record, netns, 4 cgroups, uid lease: {before:?}"
    );

    // A jail the plain jailer (or another tool) left, with warden's naming and no owner record.
    let plain = unique("own-plain");
    let plain_jail = Path::new("/srv/jailer/firecracker")
        .join(&plain)
        .join("root");
    std::fs::create_dir_all(&plain_jail).unwrap();
    let plain_cgroup = Path::new("/sys/fs/cgroup/memory/warden").join(&plain);
    std::fs::create_dir_all(&plain_cgroup).unwrap();

    let state = tempfile::tempdir().unwrap();
    let out = gc(&state.path().join("state"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&id) && log.contains("left a VM of another live owner alone"),
        "gc lists the live owner's VM: {log}"
    );
    // Another daemon, with its own state dir, starting up on the same host.
    let d = Daemon::start(&[
        ("WARDEN_JAILER_CHROOT_DIR", "/srv/jailer"),
        ("WARDEN_PARENT_CGROUP", "warden"),
    ]);
    assert!(
        d.logs().contains("left a VM of another live owner alone"),
        "{}",
        d.logs()
    );
    drop(d);

    assert!(alive(fc), "warden run's VM was killed");
    assert_eq!(run_traces(&id), before, "warden run's VM lost host state");
    assert!(
        plain_jail.is_dir() && plain_cgroup.is_dir(),
        "the foreign jail was touched"
    );
    std::fs::remove_dir_all(plain_jail.parent().unwrap()).unwrap();
    std::fs::remove_dir(&plain_cgroup).unwrap();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(run_traces(&id), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_is_built_by_one_instance_only_and_a_refused_boot_cleans_nothing_of_the_holder() {
    let a = Daemon::start(&[]);
    let b = Daemon::start(&[]);
    let (ca, cb) = (a.client(), b.client());
    let id = unique("own-dup");
    // Both may create it (CreateVm makes nothing); the first boot reserves it host-wide.
    ca.create_vm(a.create_req(&id, "mode=idle")).await.unwrap();
    cb.create_vm(b.create_req(&id, "mode=idle")).await.unwrap();
    boot(&ca, id.clone()).await;
    let held = vm_info(&ca, id.clone()).await;
    let traces = a.host_traces();
    assert!(!traces.is_empty());

    let refused = cb
        .boot_vm(pb::BootVmRequest { vm_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(refused.code, warden_api::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message.contains("in use on this host"),
        "{refused:?}"
    );
    // A later CreateVm of the same id is refused at once.
    let again = cb
        .create_vm(b.create_req(&id, "mode=idle"))
        .await
        .unwrap_err();
    assert_eq!(again.code, warden_api::Code::AlreadyExists, "{again:?}");
    // B deleting its refused VM takes nothing of A's.
    cb.delete_vm(pb::DeleteVmRequest {
        vm_id: id.clone(),
        force: false,
    })
    .await
    .unwrap();
    // Nor does a `warden run` with the same id.
    let run = warden()
        .args(["run", "--id", &id, "--kernel", &testguest()])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("in use on this host"));

    let still = vm_info(&ca, id.clone()).await;
    assert_eq!(
        (still.state, still.pid),
        (state(pb::VmState::Running), held.pid)
    );
    assert!(alive(held.pid));
    assert_eq!(a.host_traces(), traces, "the holder's host state is intact");
    ca.pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
        .await
        .unwrap();
    ca.delete_vm(pb::DeleteVmRequest {
        vm_id: id.clone(),
        force: false,
    })
    .await
    .unwrap();
    a.assert_clean();
    b.assert_clean();
}

/// The first `ip netns` on a host bind-mounts `/run/netns` over itself. warden prepares the
/// directory the same way before its first namespace, so an operator's `ip netns add` while a VM
/// runs hides nothing and the VM's namespace is removed when it stops. The test arranges a fresh
/// host's state (no mount on `/run/netns`) in a mount namespace of its own.
#[test]
fn ip_netns_on_a_fresh_host_does_not_hide_a_running_vms_namespace() {
    let id = unique("own-ipns");
    let other = unique("opns");
    let script = format!(
        r#"set -u
while umount -l /run/netns 2>/dev/null; do :; done
mkdir -p /run/netns
if grep -q ' /run/netns ' /proc/self/mountinfo; then echo "setup: /run/netns still mounted"; exit 9; fi
{warden} run --id {id} --require-jailer --net none --kernel {kernel} --boot-args 'mode=idle marker=up' >/dev/null 2>"$ERR" &
pid=$!
i=0
until grep -q 'running, pid' "$ERR"; do i=$((i+1)); [ $i -gt 500 ] && {{ echo "never up"; cat "$ERR"; exit 8; }}; sleep 0.02; done
ip netns add {other} && ip netns del {other} || {{ echo "ip netns failed"; exit 7; }}
kill -INT $pid
wait $pid
echo "exit=$?"
[ -e /run/netns/fc-vm-{id} ] && echo "LEFT file"
grep -q 'fc-vm-{id}' /proc/self/mountinfo && echo "LEFT mount"
cat "$ERR"
"#,
        warden = env!("CARGO_BIN_EXE_warden"),
        kernel = testguest(),
    );
    let err = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("ERR", err.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exit=130"), "{stdout}");
    assert!(!stdout.contains("LEFT"), "{stdout}");
    assert!(!stdout.contains("cannot remove"), "{stdout}");
    assert_eq!(run_traces(&id), Vec::<PathBuf>::new(), "{stdout}");
}

/// The state warden no longer makes, made on purpose in a mount namespace of the test's own:
/// a namespace mounted on the plain directory, then hidden by a first `ip netns` (whose copy is
/// then unmounted). `warden doctor` reports it, and a removal says why it cannot reach it and
/// what to run.
#[test]
fn a_namespace_hidden_under_a_later_mount_is_reported_and_its_removal_says_why() {
    let id = unique("own-hid");
    let other = unique("ohid");
    let ns = format!("/run/netns/fc-vm-{id}");
    // A dead owner's record naming that namespace: the next gc tries to remove it.
    let plan = jail::JailPlan {
        id: id.clone(),
        jailed: true,
        argv: vec!["jailer".into()],
        jail_dir: PathBuf::from("/nonexistent/jail").join(&id),
        root_dir: PathBuf::from("/nonexistent/jail").join(&id).join("root"),
        socket_path: PathBuf::from("/nonexistent/s"),
        pid_file: PathBuf::from("/nonexistent/p"),
        log_file: PathBuf::from("/nonexistent/l"),
        owner_file: PathBuf::from("/nonexistent/o"),
        uid: 10000,
        gid: 10000,
        cgroup_version: jail::CgroupVersion::V1,
        cgroups: vec![],
        cgroup_dirs: vec![],
        cgroup_accounting_dir: None,
        cgroup_leaf: None,
        cgroups_off: vec![],
        rlimits: vec![],
        new_pid_ns: false,
        netns: Some(PathBuf::from(&ns)),
        netns_owned: true,
        net: None,
        staged: vec![],
    };
    let registry = jail::Registry::default();
    registry
        .reserve(&jail::OwnerRecord {
            id: id.clone(),
            owner: dead_owner(),
            plan,
            firecracker: None,
            reserved_at_unix_ms: 0,
            uid_leased: false,
        })
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let script = format!(
        r#"set -u
while umount -l /run/netns 2>/dev/null; do :; done
mkdir -p /run/netns
touch {ns}
unshare -n mount --bind /proc/self/ns/net {ns}
ip netns add {other} && ip netns del {other}
umount {ns}
echo "--- doctor"
{warden} doctor 2>&1 | grep netns-dir
echo "--- gc"
WARDEN_STATE_DIR={state} WARDEN_LOG=info {warden} gc 2>&1
echo "--- cleanup"
umount -l /run/netns; umount -l {ns}; rm -f {ns}
"#,
        warden = env!("CARGO_BIN_EXE_warden"),
        state = state.path().join("state").display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = registry.release(&id);
    let _ = std::fs::remove_file(&ns);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (doctor, rest) = stdout
        .split_once("--- gc")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        doctor.contains("WARN") && doctor.contains(&format!("fc-vm-{id}")),
        "doctor reports the hidden namespace: {doctor}"
    );
    assert!(
        rest.contains("cannot remove network namespace") && rest.contains("umount -l"),
        "the removal says why and what to run: {rest}"
    );
}
