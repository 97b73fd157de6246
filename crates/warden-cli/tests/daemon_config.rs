//! The process manager's configuration, honoured: each of its environment variables changes the
//! jailer argv or cgroup value it should; bad values stop start-up naming the variable; a
//! production daemon refuses a host that fails its checks.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use warden_api::pb;

#[tokio::test(flavor = "multi_thread")]
async fn each_seed_variable_reaches_the_jail() {
    let d = Daemon::start(&[
        ("UNKEY_METALD_BACKEND", "firecracker"),
        ("UNKEY_METALD_JAILER_ENABLED", "true"),
        ("UNKEY_METALD_JAILER_UID", "10011"),
        ("UNKEY_METALD_JAILER_GID", "10012"),
        ("UNKEY_METALD_JAILER_NETNS", "true"),
        ("UNKEY_METALD_JAILER_PIDNS", "true"),
        ("UNKEY_METALD_JAILER_MEMORY_LIMIT", "268435456"),
        ("UNKEY_METALD_JAILER_CPU_QUOTA", "50"),
        ("UNKEY_METALD_JAILER_FD_LIMIT", "1000"),
        (
            "UNKEY_METALD_JAILER_BINARY",
            &assets().join("jailer").display().to_string(),
        ),
        (
            "UNKEY_METALD_FIRECRACKER_BINARY",
            &assets().join("firecracker").display().to_string(),
        ),
    ]);
    let c = d.client();
    let id = unique("cfg");
    c.create_vm(d.create_req(&id, "mode=idle")).await.unwrap();
    c.boot_vm(pb::BootVmRequest { vm_id: id.clone() })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.logs()));
    let info = vm_info(&c, id.clone()).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:")[0], "10011");
    assert_eq!(field("Gid:")[0], "10012");
    assert_eq!(field("NSpid:").len(), 2, "own PID namespace");
    let cg = |ctl: &str, f: &str| {
        std::fs::read_to_string(
            Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join(&d.parent_cgroup)
                .join(&id)
                .join(f),
        )
        .unwrap()
        .trim()
        .to_owned()
    };
    assert_eq!(cg("memory", "memory.limit_in_bytes"), "268435456");
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "50000");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", info.pid)).unwrap();
    assert!(limits.lines().any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("1000")), "{limits}");
    assert!(info
        .chroot_path
        .starts_with(&d.chroot.display().to_string()));
    // Its own, empty network namespace, named after the VM.
    assert_eq!(info.netns, format!("fc-vm-{id}"));
    let ns_file = Path::new("/var/run/netns").join(&info.netns);
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(&ns_file).unwrap().ino();
    let got = std::fs::read_link(format!("/proc/{}/ns/net", info.pid)).unwrap();
    assert_eq!(got.display().to_string(), format!("net:[{want}]"));
    assert!(info.isolation.unwrap().net_ns.unwrap().active);
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id,
        force: false,
    })
    .await
    .unwrap();
    assert!(!ns_file.exists(), "the namespace goes with the VM");
    d.assert_clean();
}

fn serve_with(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("serve")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WARDEN_STATE_DIR", dir.path().join("state"))
        .env("WARDEN_ASSET_DIRS", assets())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn a_bad_value_stops_start_up_naming_the_variable_and_the_form() {
    for (var, value, form) in [
        ("UNKEY_METALD_JAILER_UID", "abc", "uid"),
        ("UNKEY_METALD_JAILER_UID", "0", "uid"),
        ("UNKEY_METALD_JAILER_MEMORY_LIMIT", "128MB", "bytes"),
        ("UNKEY_METALD_JAILER_CPU_QUOTA", "-5", "percent"),
        ("UNKEY_METALD_JAILER_NETNS", "maybe", "true"),
        ("UNKEY_METALD_BACKEND", "cloud-hypervisor", "firecracker"),
    ] {
        let out = serve_with(&[(var, value)], &["--listen", "127.0.0.1:1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(
            err.contains(var) && err.contains(value),
            "{var}={value}: {err}"
        );
        assert!(
            err.to_lowercase().contains(form),
            "{var}={value}: no accepted form in: {err}"
        );
    }
}

#[test]
fn a_missing_jailer_stops_start_up_and_never_falls_back_to_unjailed_vms() {
    let out = serve_with(
        &[
            ("UNKEY_METALD_JAILER_ENABLED", "true"),
            ("UNKEY_METALD_JAILER_BINARY", "/nonexistent/jailer"),
        ],
        &["--listen", "127.0.0.1:1"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without its jailer: {err}");
    assert!(
        err.contains("/nonexistent/jailer") && err.contains("jailer_enabled=false"),
        "names the path and the ways out: {err}"
    );
}

#[test]
fn print_config_shows_each_value_and_where_it_came_from() {
    let out = serve_with(
        &[
            ("UNKEY_METALD_JAILER_UID", "1234"),
            ("WARDEN_AUTH_TOKEN", "s3cret"),
        ],
        &["--print-config", "--listen", "127.0.0.1:9999"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .to_owned()
    };
    assert!(
        line("jailer_uid").contains("1234")
            && line("jailer_uid").contains("UNKEY_METALD_JAILER_UID"),
        "{text}"
    );
    assert!(
        line("listen").contains("127.0.0.1:9999") && line("listen").contains("--listen"),
        "{text}"
    );
    assert!(line("chroot_base").contains("default"), "{text}");
    assert!(!text.contains("s3cret"), "the token is hidden");
}

#[test]
fn production_mode_refuses_a_host_that_fails_the_checks() {
    let out = serve_with(
        &[
            ("WARDEN_REQUIRE_JAILER", "true"),
            (
                "UNKEY_METALD_FIRECRACKER_BINARY",
                "/nonexistent/firecracker",
            ),
        ],
        &["--listen", "127.0.0.1:1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FAIL firecracker") && err.contains("/nonexistent/firecracker"),
        "{err}"
    );
    assert!(
        err.contains("refusing to start in production mode"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_guards_tcp_and_a_0600_unix_socket_serves_too() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("warden.sock");
    let d = Daemon::start(&[
        ("WARDEN_AUTH_TOKEN", "t0ken"),
        ("WARDEN_UNIX_SOCKET", &sock.display().to_string()),
    ]);
    let err = d
        .client()
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, warden_api::Code::Unauthenticated);
    let authed = warden_api::Client::new(warden_api::Endpoint::Tcp(d.url()), Some("t0ken".into()));
    authed
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let local = warden_api::Client::new(
        warden_api::Endpoint::Unix(sock.clone()),
        Some("t0ken".into()),
    );
    local.list_vms(pb::ListVmsRequest::default()).await.unwrap();
    // `warden vm` over the Unix socket.
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "vm",
            "--endpoint",
            &format!("unix:{}", sock.display()),
            "--token",
            "t0ken",
            "ls",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
