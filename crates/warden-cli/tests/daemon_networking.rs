//! Networked VMs through the daemon: addresses from the pool never overlap and come back on
//! delete, and no namespace, TAP, veth or address outlives its VM, whatever ends it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use warden_api::pb;

fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

fn host_links(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

struct BridgeGuard(String);
impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

fn networked(d: &Daemon, id: &str) -> pb::CreateVmRequest {
    let mut r = d.create_req(id, "mode=net secs=60");
    r.config.as_mut().unwrap().network = vec![pb::NetworkInterface::default()];
    r
}

fn bridged_daemon(subnet: u8) -> (Daemon, BridgeGuard) {
    let bridge = format!("wdb{:x}", std::process::id() & 0xffff);
    let pool = format!("10.215.{subnet}.0/24");
    let d = Daemon::start(&[
        ("WARDEN_NETWORK_MODE", "bridge"),
        ("WARDEN_BRIDGE", &bridge),
        ("WARDEN_ADDRESS_POOL", &pool),
    ]);
    (d, BridgeGuard(bridge))
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_networked_vms_created_and_deleted_concurrently_leave_nothing_and_a_whole_pool() {
    let (d, _bridge) = bridged_daemon(1);
    let c = d.client();
    let base = unique("n30");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let c = c.clone();
        let req = networked(&d, &format!("{base}-{i}"));
        tasks.spawn(async move {
            let id = req.vm_id.clone();
            c.create_vm(req).await.unwrap();
            boot(&c, id.clone()).await;
            let info = vm_info(&c, id.clone()).await;
            (id, info)
        });
    }
    let mut infos = Vec::new();
    while let Some(r) = tasks.join_next().await {
        infos.push(r.unwrap());
    }
    let mut ips: Vec<String> = infos.iter().map(|(_, i)| i.guest_ip.clone()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 30, "addresses never overlap: {ips:?}");
    for (id, info) in &infos {
        assert_eq!(info.netns, format!("fc-vm-{id}"));
        assert_eq!(info.tap_device, "tap0");
        assert!(
            info.host_veth.starts_with("wv") && info.host_veth.len() == 15,
            "{info:?}"
        );
        assert!(info.mac.starts_with("06:"));
        assert!(netns_exists(&info.netns));
    }
    let veths: Vec<String> = infos.iter().map(|(_, i)| i.host_veth.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (id, _) in &infos {
        let c = c.clone();
        let id = id.clone();
        tasks.spawn(async move {
            c.delete_vm(pb::DeleteVmRequest {
                vm_id: id,
                force: false,
            })
            .await
            .unwrap()
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for (id, info) in &infos {
        assert!(!netns_exists(&info.netns), "{id}: namespace left");
    }
    let left = host_links("wv");
    assert!(
        veths.iter().all(|v| !left.contains(v)),
        "veths left: {left:?}"
    );
    d.assert_clean();
    // The pool is whole again: the next VM gets the first address.
    let id = format!("{base}-again");
    c.create_vm(networked(&d, &id)).await.unwrap();
    boot(&c, id.clone()).await;
    let info = vm_info(&c, id.clone()).await;
    assert_eq!(info.guest_ip, "10.215.1.2/24");
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id,
        force: false,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_firecrackers_and_a_killed_daemon_leave_no_network_behind() {
    let (mut d, _bridge) = bridged_daemon(2);
    let c = d.client();
    let base = unique("nk");
    let ids: Vec<String> = (0..3).map(|i| format!("{base}-{i}")).collect();
    let mut infos = Vec::new();
    for id in &ids {
        c.create_vm(networked(&d, id)).await.unwrap();
        boot(&c, id.clone()).await;
        infos.push(vm_info(&c, id.clone()).await);
    }
    // A Firecracker killed while the daemon runs: its network goes at once.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(infos[0].pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!netns_exists(&infos[0].netns));
    assert!(!host_links("wv").contains(&infos[0].host_veth));
    // The daemon killed, then one more Firecracker while it is down.
    d.kill();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(infos[1].pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.restart();
    let c = d.client();
    let dead = vm_info(&c, ids[1].clone()).await;
    assert_eq!(dead.state, state(pb::VmState::Shutdown));
    assert!(
        !netns_exists(&infos[1].netns),
        "namespace of a VM that died while the daemon was down"
    );
    assert!(!host_links("wv").contains(&infos[1].host_veth));
    let alive = vm_info(&c, ids[2].clone()).await;
    assert_eq!(alive.state, state(pb::VmState::Running), "re-attached");
    assert!(netns_exists(&infos[2].netns));
    for id in &ids {
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: false,
        })
        .await
        .unwrap();
    }
    for i in &infos {
        assert!(!netns_exists(&i.netns));
        assert!(!host_links("wv").contains(&i.host_veth));
    }
    d.assert_clean();
}
