//! WatchVms on a real daemon: the stream starts with each VM's current state, then carries every
//! change (create, boot, pause, resume, stop, a guest's own power-off, delete) with its reason,
//! over Connect streaming (the Rust client and `warden vm events --json`) and gRPC.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use warden_api::pb::{self, VmState};

/// (vm id, old state, new state, reason) of the next `n` events.
async fn take(
    events: &mut warden_api::EventStream,
    n: usize,
) -> Vec<(String, VmState, VmState, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {out:?}"))
            .expect("the stream ended")
            .expect("an event");
        out.push((ev.vm_id.clone(), ev.old_state(), ev.new_state(), ev.reason));
    }
    out
}

fn ev(id: &str, old: VmState, new: VmState, reason: &str) -> (String, VmState, VmState, String) {
    (id.to_owned(), old, new, reason.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_vms_streams_the_current_state_then_every_change() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let a = unique("watch-a");
    let b = unique("watch-b");
    c.create_vm(d.create_req(&a, "mode=idle")).await.unwrap();

    let mut all = c.watch_vms(pb::WatchVmsRequest::default()).await.unwrap();
    // A VM that does not exist yet: the stream ends at once with not_found.
    let mut only_b = c
        .watch_vms(pb::WatchVmsRequest { vm_id: b.clone() })
        .await
        .unwrap();
    let e = only_b.next().await.unwrap().unwrap_err();
    assert_eq!(e.code, warden_api::Code::NotFound, "{e:?}");
    assert!(only_b.next().await.is_none());
    // `warden vm events --json`, one event per line.
    let mut cli = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["vm", "--endpoint", &d.url(), "--json", "events", &a])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cli_out = BufReader::new(cli.stdout.take().unwrap()).lines();
    // Its first line (a's current state) says it has subscribed: only then does a change, or a
    // slow start of the CLI would make it miss changes (and this test wait for them forever).
    let first = cli_out.next().expect("the CLI's first event").unwrap();
    let cli_lines = std::thread::spawn(move || {
        std::iter::once(Ok(first))
            .chain(cli_out)
            .take(8)
            .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    // gRPC, for b only once it exists.
    let mut grpc = pb::vm_service_client::VmServiceClient::connect(d.url())
        .await
        .unwrap();

    assert_eq!(
        take(&mut all, 1).await,
        vec![ev(&a, VmState::Unspecified, VmState::Created, "current")]
    );
    c.create_vm(d.create_req(&b, "mode=poweroff"))
        .await
        .unwrap();
    let mut grpc_b = grpc
        .watch_vms(pb::WatchVmsRequest { vm_id: b.clone() })
        .await
        .unwrap()
        .into_inner();
    boot(&c, a.clone()).await;
    c.pause_vm(pb::PauseVmRequest { vm_id: a.clone() })
        .await
        .unwrap();
    c.resume_vm(pb::ResumeVmRequest { vm_id: a.clone() })
        .await
        .unwrap();
    c.shutdown_vm(pb::ShutdownVmRequest {
        vm_id: a.clone(),
        force: true,
        timeout_seconds: 0,
    })
    .await
    .unwrap();
    // b powers itself off: the exit watcher's change is an event too.
    boot(&c, b.clone()).await;
    let want_a = vec![
        ev(&a, VmState::Created, VmState::Booting, "booting"),
        ev(&a, VmState::Booting, VmState::Running, "booted"),
        ev(&a, VmState::Running, VmState::Paused, "paused"),
        ev(&a, VmState::Paused, VmState::Running, "resumed"),
        ev(&a, VmState::Running, VmState::Stopping, "stopping"),
        ev(&a, VmState::Stopping, VmState::Shutdown, "stopped_by_api"),
    ];
    let want_b = vec![
        ev(&b, VmState::Unspecified, VmState::Created, "created"),
        ev(&b, VmState::Created, VmState::Booting, "booting"),
        ev(&b, VmState::Booting, VmState::Running, "booted"),
        ev(&b, VmState::Running, VmState::Shutdown, "guest_power_off"),
    ];
    let got = take(&mut all, want_a.len() + want_b.len()).await;
    let (got_a, got_b): (Vec<_>, Vec<_>) = got.into_iter().partition(|e| e.0 == a);
    assert_eq!(got_a, want_a, "{}", d.logs());
    assert_eq!(got_b, want_b, "{}", d.logs());

    // The gRPC stream of b: its state when it subscribed, then its changes.
    let mut grpc_got = Vec::new();
    while grpc_got
        .last()
        .map(|e: &pb::WatchVmsResponse| e.new_state())
        != Some(VmState::Shutdown)
    {
        let e = tokio::time::timeout(Duration::from_secs(30), grpc_b.message())
            .await
            .expect("a gRPC event")
            .unwrap()
            .unwrap();
        assert_eq!(e.vm_id, b);
        assert!(e.at_unix_ms > 0);
        grpc_got.push(e);
    }
    assert_eq!(grpc_got[0].reason, "current");
    assert_eq!(grpc_got[0].new_state(), VmState::Created);

    c.delete_vm(pb::DeleteVmRequest {
        vm_id: a.clone(),
        force: false,
    })
    .await
    .unwrap();
    assert_eq!(
        take(&mut all, 1).await,
        vec![ev(&a, VmState::Shutdown, VmState::Deleted, "deleted")]
    );

    // The CLI saw a's whole life, as JSON lines.
    let lines = cli_lines.join().unwrap();
    let states: Vec<&str> = lines
        .iter()
        .map(|l| l["newState"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "VM_STATE_CREATED",
            "VM_STATE_BOOTING",
            "VM_STATE_RUNNING",
            "VM_STATE_PAUSED",
            "VM_STATE_RUNNING",
            "VM_STATE_STOPPING",
            "VM_STATE_SHUTDOWN",
            "VM_STATE_DELETED"
        ],
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l["vmId"] == a.as_str()));
    let _ = cli.kill();
    let _ = cli.wait();
    drop(all);
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: b,
        force: false,
    })
    .await
    .unwrap();
    d.assert_clean();
}
