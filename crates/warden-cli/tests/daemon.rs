//! `warden serve` end to end: a real daemon process, real jailed VMs with the test guest, called
//! the way the process manager's guide calls it (curl), through gRPC, and through `warden vm`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use warden_api::{pb, Code};

fn curl(url: &str, body: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", url, "-d", body])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_curl_command_creates_and_boots_a_jailed_vm() {
    let d = Daemon::start(&[
        ("UNKEY_METALD_BACKEND", "firecracker"),
        ("UNKEY_METALD_JAILER_ENABLED", "true"),
        ("UNKEY_METALD_JAILER_UID", "10007"),
    ]);
    let id = unique("curl");
    // As the guide writes it: `curl -X POST .../CreateVm -d '{"config":{...}}'` (a form content type).
    let created = curl(
        &format!("{}/vmprovisioner.v1.VmService/CreateVm", d.url()),
        &format!(
            r#"{{"vm_id":"{id}","customer_id":"acme","config":{{"cpu":{{"vcpu_count":1}},"memory":{{"size_bytes":134217728}},"boot":{{"kernel_path":"{}","kernel_args":"mode=idle marker=seed"}}}}}}"#,
            testguest()
        ),
    );
    assert_eq!(created["state"], "VM_STATE_CREATED", "{created}");
    let booted = curl(
        &format!("{}/vmprovisioner.v1.VmService/BootVm", d.url()),
        &format!(r#"{{"vm_id":"{id}"}}"#),
    );
    assert_eq!(
        booted["state"],
        "VM_STATE_RUNNING",
        "{booted}\n{}",
        d.logs()
    );

    // Health, readiness and metrics beside the API.
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", &format!("{}{path}", d.url())])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(get("/healthz").ends_with("200"));
    assert!(get("/readyz").ends_with("200"));
    let metrics = get("/metrics");
    assert!(
        metrics.contains("warden_vms{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("warden_vm_memory_bytes{{vm_id=\"{id}\"}}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("warden_request_duration_seconds_count{op=\"boot\"} 1"),
        "{metrics}"
    );
    // JSON logs carry the guide's fields, and the VM id on every line about a VM.
    let start_line = d
        .logs()
        .lines()
        .find(|l| l.contains("starting firecracker") && l.contains(&id))
        .map(str::to_owned)
        .expect("start logged");
    let log: serde_json::Value = serde_json::from_str(&start_line).unwrap();
    for field in [
        "jailer_binary",
        "jailer_id",
        "chroot_path",
        "uid",
        "gid",
        "memory_limit",
        "cpu_quota",
        "vm_id",
    ] {
        assert!(!log[field].is_null(), "{field} missing in {start_line}");
    }
    assert_eq!(log["uid"], 10007);

    // The same VM through gRPC.
    let mut grpc = pb::vm_service_client::VmServiceClient::connect(d.url())
        .await
        .unwrap();
    let full = grpc
        .get_vm_info(pb::GetVmInfoRequest { vm_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    // metald's fields: the common state, the config as sent, metrics, backend details.
    assert_eq!(full.state, state(pb::VmState::Running));
    let config = full.config.clone().unwrap();
    assert_eq!(config.memory_in_mib(), 128);
    assert_eq!(config.kernel_path(), testguest());
    assert_eq!(full.backend_info["customer_id"], "acme");
    assert_eq!(full.backend_info["jailer_id"], id);
    assert!(
        full.metrics.as_ref().unwrap().memory_usage_bytes > 0,
        "{full:?}"
    );
    let info = full.details();
    assert_eq!(info.state, state(pb::VmState::Running));
    assert_eq!(full.backend_info["pid"], info.pid.to_string());
    let iso = info.isolation.unwrap();
    assert!(iso.is_sandboxed, "{iso:?}");
    assert!(iso.uid_gid.unwrap().detail.contains("uid 10007"));
    assert!(info
        .chroot_path
        .starts_with(&d.chroot.display().to_string()));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/status", info.pid))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .split_whitespace()
            .nth(1),
        Some("10007")
    );
    let serial =
        std::fs::read_to_string(d.dir.path().join("state/vms").join(&id).join("serial.log"))
            .unwrap();
    assert!(serial.contains("WARDEN_MARKER seed"), "{serial}");

    // And through `warden vm`.
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "vm",
            "--endpoint",
            &d.url(),
            "create",
            "--boot",
            "--id",
            &format!("{id}-cli"),
            "--kernel",
            &testguest(),
            "--boot-args",
            "mode=idle",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{id}-cli running")
    );
    let ls = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["vm", "--endpoint", &d.url(), "ls"])
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines()
            .filter(|l| l.contains(" running ") && l.contains(" yes "))
            .count()
            == 2,
        "{ls}"
    );
    let get = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["vm", "--endpoint", &d.url(), "--json", "get", &id])
        .output()
        .unwrap();
    let get: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(get["warden"]["isolation"]["isSandboxed"], true);
    assert_eq!(get["state"], "VM_STATE_RUNNING");
    for vm in [id.clone(), format!("{id}-cli")] {
        let rm = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["vm", "--endpoint", &d.url(), "rm", &vm])
            .output()
            .unwrap();
        assert!(rm.status.success());
    }
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lifecycle_call_and_the_transitions_it_forbids() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let id = unique("life");
    c.create_vm(d.create_req(&id, "mode=idle")).await.unwrap();
    let err = c
        .create_vm(d.create_req(&id, "mode=idle"))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::AlreadyExists);
    let err = c
        .pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    assert!(
        err.message.contains("is created") && err.message.contains("running"),
        "{}",
        err.message
    );

    boot(&c, id.clone()).await;
    let info = vm_info(&c, id.clone()).await;
    let fc = warden::firecracker_api::Client::new(&info.socket_path);
    assert_eq!(
        fc.instance_info().await.unwrap().state,
        warden::firecracker_api::InstanceState::Running
    );

    let err = c
        .boot_vm(pb::BootVmRequest { vm_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    let err = c
        .resume_vm(pb::ResumeVmRequest { vm_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);

    let r = c
        .pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
        .await
        .unwrap();
    assert_eq!(r.state, state(pb::VmState::Paused));
    assert_eq!(
        fc.instance_info().await.unwrap().state,
        warden::firecracker_api::InstanceState::Paused
    );
    let r = c
        .resume_vm(pb::ResumeVmRequest { vm_id: id.clone() })
        .await
        .unwrap();
    assert_eq!(r.state, state(pb::VmState::Running));
    assert_eq!(
        fc.instance_info().await.unwrap().state,
        warden::firecracker_api::InstanceState::Running
    );

    let old_pid = info.pid;
    let r = c
        .reboot_vm(pb::RebootVmRequest {
            vm_id: id.clone(),
            force: false,
        })
        .await
        .unwrap();
    assert_eq!(r.state, state(pb::VmState::Running));
    let info = vm_info(&c, id.clone()).await;
    assert_ne!(info.pid, old_pid, "a reboot starts a new Firecracker");

    let r = c
        .shutdown_vm(pb::ShutdownVmRequest {
            vm_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.state, state(pb::VmState::Shutdown));
    let info = vm_info(&c, id.clone()).await;
    assert_eq!(info.exit.unwrap().reason, "stopped_by_api");
    d.assert_clean();
    let err = c
        .shutdown_vm(pb::ShutdownVmRequest {
            vm_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);

    // A stopped VM boots again.
    boot(&c, id.clone()).await;
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id.clone(),
        force: false,
    })
    .await
    .unwrap();
    let err = c
        .get_vm_info(pb::GetVmInfoRequest { vm_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_killed_from_outside_is_shown_stopped_with_the_reason_within_a_second() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let id = unique("kill");
    c.create_vm(d.create_req(&id, "mode=idle")).await.unwrap();
    boot(&c, id.clone()).await;
    let pid = vm_info(&c, id.clone()).await.pid;
    // Watch first (its first event is the current state), then kill.
    let mut events = c
        .watch_vms(pb::WatchVmsRequest { vm_id: id.clone() })
        .await
        .unwrap();
    let now = events.next().await.unwrap().unwrap();
    assert_eq!(now.new_state(), pb::VmState::Running, "{now:?}");
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(event.new_state(), pb::VmState::Shutdown, "{event:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "not noticed within a second: {:?}",
        t0.elapsed()
    );
    assert_eq!(event.reason, "signaled", "{event:?}");
    let info = vm_info(&c, id.clone()).await;
    assert_eq!(info.state, state(pb::VmState::Shutdown));
    let exit = info.exit.unwrap();
    assert_eq!(exit.reason, "signaled", "{exit:?}");
    assert!(exit.detail.contains("signal 9"), "{exit:?}");
    d.assert_clean();
    // A guest that powers off by itself is recorded too.
    let id2 = unique("off");
    c.create_vm(d.create_req(&id2, "mode=poweroff"))
        .await
        .unwrap();
    boot(&c, id2.clone()).await;
    let off = wait_state(
        &c,
        id2.clone(),
        pb::VmState::Shutdown,
        Duration::from_secs(2),
    )
    .await
    .expect("powered off within 2 s");
    assert_eq!(off.reason, "guest_power_off", "{off:?}");
    assert_eq!(
        vm_info(&c, id2).await.exit.map(|e| e.reason).as_deref(),
        Some("guest_power_off")
    );
    d.assert_clean();
}

/// ListVms through the binary protocol (whose entries the daemon keeps until a VM changes) and
/// through JSON (made anew every time) after each change of two VMs.
#[tokio::test(flavor = "multi_thread")]
async fn list_entries_follow_every_change_and_match_a_list_made_anew() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let base = unique("ls");
    let (a, b) = (format!("{base}-a"), format!("{base}-b"));
    let lists = || async {
        let proto = c.list_vms(pb::ListVmsRequest::default()).await.unwrap();
        let json: pb::ListVmsResponse = c
            .call("ListVms", &pb::ListVmsRequest::default())
            .await
            .unwrap();
        (proto, json)
    };
    let check = |(proto, json): (pb::ListVmsResponse, pb::ListVmsResponse),
                 want: &[(&str, pb::VmState)]| {
        let strip = |mut l: pb::ListVmsResponse| {
            // Readings may move between the two calls; everything else may not.
            for v in &mut l.vms {
                if let Some(cg) = v.warden.as_mut().and_then(|w| w.cgroup.as_mut()) {
                    cg.memory_bytes = None;
                    cg.cpu_usage_ns = None;
                    cg.pids_current = None;
                }
            }
            l
        };
        let (proto, json) = (strip(proto), strip(json));
        assert_eq!(proto, json);
        let got: Vec<(String, i32)> = proto
            .vms
            .iter()
            .map(|v| (v.vm_id.clone(), v.state))
            .collect();
        let want: Vec<(String, i32)> = want
            .iter()
            .map(|(id, s)| (id.to_string(), *s as i32))
            .collect();
        assert_eq!(got, want);
        proto
    };
    c.create_vm(d.create_req(&a, "mode=idle")).await.unwrap();
    check(lists().await, &[(&a, pb::VmState::Created)]);
    c.create_vm(d.create_req(&b, "mode=idle")).await.unwrap();
    boot(&c, a.clone()).await;
    let l = check(
        lists().await,
        &[(&a, pb::VmState::Running), (&b, pb::VmState::Created)],
    );
    let running = l.vms[0].warden.clone().unwrap();
    assert_eq!(running.pid, vm_info(&c, a.clone()).await.pid);
    assert!(running.isolation.unwrap().is_sandboxed);
    c.pause_vm(pb::PauseVmRequest { vm_id: a.clone() })
        .await
        .unwrap();
    check(
        lists().await,
        &[(&a, pb::VmState::Paused), (&b, pb::VmState::Created)],
    );
    c.resume_vm(pb::ResumeVmRequest { vm_id: a.clone() })
        .await
        .unwrap();
    boot(&c, b.clone()).await;
    check(
        lists().await,
        &[(&a, pb::VmState::Running), (&b, pb::VmState::Running)],
    );
    // A page at a time: the same entries.
    let first = c
        .list_vms(pb::ListVmsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let second = c
        .list_vms(pb::ListVmsRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let paged: Vec<&str> = first
        .vms
        .iter()
        .chain(&second.vms)
        .map(|v| v.vm_id.as_str())
        .collect();
    assert_eq!(paged, [a.as_str(), b.as_str()]);
    assert!(second.next_page_token.is_empty());
    c.shutdown_vm(pb::ShutdownVmRequest {
        vm_id: a.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let l = check(
        lists().await,
        &[(&a, pb::VmState::Shutdown), (&b, pb::VmState::Running)],
    );
    assert_eq!(l.vms[0].warden.as_ref().unwrap().pid, 0);
    assert!(l.vms[0].warden.as_ref().unwrap().exit.is_some());
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: a.clone(),
        force: false,
    })
    .await
    .unwrap();
    check(lists().await, &[(&b, pb::VmState::Running)]);
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: b.clone(),
        force: true,
    })
    .await
    .unwrap();
    check(lists().await, &[]);
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_the_right_code_and_create_nothing() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let url = format!("{}/vmprovisioner.v1.VmService/CreateVm", d.url());
    let k = testguest();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!(r#"{{"config":{{"boot":{{"kernel_path":"{k}"}},"bogus":1}}}}"#),
            "invalid_argument",
            "bogus",
        ),
        (
            r#"{"config":{"cpu":{"vcpu_count":"two"}}}"#.to_owned(),
            "invalid_argument",
            "vcpu_count",
        ),
        (
            format!(
                r#"{{"config":{{"boot":{{"kernel_path":"{k}"}},"memory":{{"size_bytes":67108864}}}}}}"#
            ),
            "invalid_argument",
            "config.memory.size_bytes",
        ),
        (
            format!(r#"{{"config":{{"boot":{{"kernel_path":"{k}"}},"cpu":{{"vcpu_count":64}}}}}}"#),
            "invalid_argument",
            "config.cpu.vcpu_count",
        ),
        (
            format!(r#"{{"vm_id":"../etc","config":{{"boot":{{"kernel_path":"{k}"}}}}}}"#),
            "invalid_argument",
            "vm_id",
        ),
        (
            format!(r#"{{"vm_id":"a/b","config":{{"boot":{{"kernel_path":"{k}"}}}}}}"#),
            "invalid_argument",
            "vm_id",
        ),
        (
            r#"{"config":{"boot":{"kernel_path":"/etc/passwd"}}}"#.to_owned(),
            "invalid_argument",
            "outside the asset directories",
        ),
        (
            format!(
                r#"{{"config":{{"boot":{{"kernel_path":"{k}"}},"storage":[{{"path":"{k}","is_root_device":true}},{{"path":"/etc/shadow"}}]}}}}"#
            ),
            "invalid_argument",
            "config.storage[1].path",
        ),
        // metald's fields that warden cannot honour, each named.
        (
            format!(r#"{{"config":{{"boot":{{"kernel_path":"{k}","initrd_path":"{k}"}}}}}}"#),
            "invalid_argument",
            "config.boot.initrd_path",
        ),
        (
            format!(
                r#"{{"config":{{"boot":{{"kernel_path":"{k}"}},"network":[{{"ipv6_config":{{"address":"fd00::2"}}}}]}}}}"#
            ),
            "invalid_argument",
            "config.network[0].ipv6_config",
        ),
        (
            format!(
                r#"{{"config":{{"boot":{{"kernel_path":"{k}"}},"memory":{{"size_bytes":134217728,"hotplug_enabled":true}}}}}}"#
            ),
            "invalid_argument",
            "config.memory.hotplug_enabled",
        ),
    ];
    for (body, code, needle) in cases {
        let v = curl(&url, &body);
        assert_eq!(v["code"], code, "{body} -> {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body} -> {v}"
        );
    }
    // A symlink inside an asset directory that points outside it.
    let link = d.dir.path().join("assets/escape");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    let v = curl(
        &url,
        &format!(
            r#"{{"config":{{"boot":{{"kernel_path":"{}"}}}}}}"#,
            link.display()
        ),
    );
    assert_eq!(v["code"], "invalid_argument", "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("symbolic link"), "{v}");
    assert!(
        !msg.contains("/etc/shadow"),
        "never echoes where a link points: {v}"
    );
    // A 10 MiB body.
    let big = d.dir.path().join("big.json");
    std::fs::write(
        &big,
        format!(
            r#"{{"config":{{"boot":{{"kernel_args":"{}"}}}}}}"#,
            "x".repeat(10 << 20)
        ),
    )
    .unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", &url, "--data-binary"])
        .arg(format!("@{}", big.display()))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "resource_exhausted", "{v}");
    let err = c
        .get_vm_info(pb::GetVmInfoRequest {
            vm_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert!(
        c.list_vms(pb::ListVmsRequest::default())
            .await
            .unwrap()
            .vms
            .is_empty(),
        "nothing was created"
    );
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_creates_and_deletes_leave_a_consistent_store_and_a_clean_host() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let base = unique("par");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let c = c.clone();
        let req = d.create_req(&format!("{base}-{i}"), "mode=idle");
        tasks.spawn(async move {
            let id = req.vm_id.clone();
            c.create_vm(req).await.unwrap();
            if i % 5 == 0 {
                boot(&c, id.clone()).await;
            }
            if i % 2 == 0 {
                c.delete_vm(pb::DeleteVmRequest {
                    vm_id: id,
                    force: false,
                })
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let vms = c.list_vms(pb::ListVmsRequest::default()).await.unwrap().vms;
    let mut ids: Vec<String> = vms.iter().map(|v| v.vm_id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..50)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("{base}-{i}"))
        .collect();
    want.sort();
    assert_eq!(ids, want);
    let running = vms
        .iter()
        .filter(|v| v.state == state(pb::VmState::Running))
        .count();
    assert_eq!(running, 5, "ids 5, 15, 25, 35, 45 were booted and kept");
    for id in ids {
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id,
            force: false,
        })
        .await
        .unwrap();
    }
    assert!(c
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap()
        .vms
        .is_empty());
    d.assert_clean();
}
