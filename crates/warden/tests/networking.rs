//! Networking: each networked VM gets its own namespace and a TAP owned by the jail user, and
//! is reachable only the way it is configured. Frames are sent and captured on the real path.

mod common;

use std::path::Path;
use std::time::Duration;

use common::net::{parse_mac, ping_pong, Packet};
use common::*;
use jail::net::{GuestAddr, NetMode};
use warden::vm::config::NetworkOptions;
use warden::vm::start_vm;

fn ns_ino(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("net:[{}]", std::fs::metadata(path).unwrap().ino())
}

fn links_named(prefix: &str) -> Vec<String> {
    jail::net::link::list_with_prefix(prefix).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn networking_off_means_no_interface_at_all() {
    let (config, options) = guest("nonet", "mode=blk");
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(vm.plan.net.is_none());
    let cfg = vm.client().vm_config().await.unwrap();
    assert!(cfg.network_interfaces.unwrap_or_default().is_empty());
    vm.wait().await;
    let out = vm.serial_output();
    assert!(
        out.contains("WARDEN_BLK_DONE 0") && !out.contains("device-id=1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mode_none_reaches_the_guest_only_through_the_tap_in_its_namespace() {
    let (mut config, mut options) = guest("netnone", "mode=net secs=20 marker=n1");
    config.enable_networking = true;
    options.network = NetworkOptions {
        mode: NetMode::None,
        ..Default::default()
    };
    let vm = start_vm(&config, &options).await.unwrap();
    let net = vm.plan.net.clone().unwrap();
    assert_eq!(net.netns, format!("fc-vm-{}", config.vm_id));
    // Firecracker lives in the VM's namespace, not the host's.
    let fc_ns = std::fs::read_link(format!("/proc/{}/ns/net", vm.pid))
        .unwrap()
        .display()
        .to_string();
    assert_eq!(fc_ns, ns_ino(&net.netns_path));
    assert_ne!(
        fc_ns,
        std::fs::read_link("/proc/self/ns/net")
            .unwrap()
            .display()
            .to_string()
    );
    assert!(vm.isolation.net_ns.active);
    // The TAP is inside the namespace, owned by the jail user; the host has no such device.
    let mac = parse_mac(&net.mac);
    let link = std::process::Command::new("ip")
        .args(["-n", &net.netns, "-d", "link", "show", "tap0"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains("tap")
            && link.contains(&format!("user {}", vm.plan.uid))
            && link.contains(&format!("group {}", vm.plan.gid)),
        "{link}"
    );
    assert!(
        vm.wait_for_serial(
            &format!("WARDEN_NET_MAC {}", net.mac),
            Duration::from_secs(5)
        )
        .await,
        "{}",
        vm.serial_output()
    );
    // A frame written to the TAP reaches the guest, and the guest's reply is captured on it.
    let nonce = format!("n{}", std::process::id());
    let sent = nonce.clone();
    let ok = jail::net::netns::run_in(&net.netns_path, move || {
        let p = Packet::open("tap0").unwrap();
        ping_pong(&p, mac, &nonce)
    })
    .unwrap();
    assert!(ok, "no pong on the TAP: {}", vm.serial_output());
    let seen = format!("data=WARDEN-PING.{sent}");
    assert!(
        vm.wait_for_serial(&seen, Duration::from_secs(2)).await,
        "{}",
        vm.serial_output()
    );
    let netns_path = net.netns_path.clone();
    vm.stop().await.unwrap();
    assert!(!netns_path.exists(), "the namespace goes with the VM");
    assert_nothing_left(&base(), &config.vm_id);
}

/// A bridge and subnet of this test's own.
fn bridge_opts(bridge: &str, subnet: u8, last: u8) -> NetworkOptions {
    NetworkOptions {
        mode: NetMode::Bridge,
        bridge: bridge.into(),
        guest: Some(GuestAddr {
            address: [10, 213, subnet, last].into(),
            gateway: [10, 213, subnet, 1].into(),
            prefix_len: 24,
        }),
        ..Default::default()
    }
}

struct Bridge(String);
impl Drop for Bridge {
    fn drop(&mut self) {
        jail::net::link::delete(&self.0).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_mode_carries_frames_both_ways_and_answers_ping() {
    let bridge = Bridge(format!("wtb{:x}", std::process::id() & 0xfffff));
    let (mut config, mut options) = guest("netbr", "mode=net secs=20");
    config.enable_networking = true;
    options.network = bridge_opts(&bridge.0, 1, 2);
    let vm = start_vm(&config, &options).await.unwrap();
    let net = vm.plan.net.clone().unwrap();
    let host_veth = net.host_veth.clone().unwrap();
    assert!(host_veth.len() <= 15);
    assert!(
        vm.wait_for_serial("WARDEN_NET_MAC", Duration::from_secs(5))
            .await
    );
    // From the host side of the veth, through the namespace's bridge and TAP, and back.
    let p = Packet::open(&host_veth).unwrap();
    assert!(
        ping_pong(&p, parse_mac(&net.mac), "bridged"),
        "{}",
        vm.serial_output()
    );
    // The guest was told its address, and the host reaches it at IP level through the bridge.
    let ping = std::process::Command::new("ping")
        .args(["-c", "3", "-i", "0.3", "-W", "2", "10.213.1.2"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping: {}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        vm.serial_output()
    );
    assert!(vm.serial_output().contains("WARDEN_NET_ICMP_REPLY"));
    vm.stop().await.unwrap();
    assert!(
        !links_named(&host_veth).contains(&host_veth),
        "the veth goes with the VM"
    );
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limiters_reach_firecracker() {
    let (mut config, mut options) = guest("netrl", "mode=idle");
    config.enable_networking = true;
    let bucket = firecracker_api::TokenBucket {
        size: 1_000_000,
        one_time_burst: None,
        refill_time: 100,
    };
    options.network.rx_rate_limiter = Some(firecracker_api::RateLimiter {
        bandwidth: Some(bucket.clone()),
        ops: None,
    });
    options.network.tx_rate_limiter = Some(firecracker_api::RateLimiter {
        bandwidth: None,
        ops: Some(bucket.clone()),
    });
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    config.rootfs_path = disk.display().to_string();
    options.drive_rate_limiter = Some(firecracker_api::RateLimiter {
        bandwidth: Some(bucket.clone()),
        ops: None,
    });
    let vm = start_vm(&config, &options).await.unwrap();
    let cfg = vm.client().vm_config().await.unwrap();
    let iface = &cfg.network_interfaces.unwrap()[0];
    assert_eq!(
        iface
            .rx_rate_limiter
            .as_ref()
            .unwrap()
            .bandwidth
            .as_ref()
            .unwrap()
            .size,
        1_000_000
    );
    assert_eq!(
        iface
            .tx_rate_limiter
            .as_ref()
            .unwrap()
            .ops
            .as_ref()
            .unwrap()
            .refill_time,
        100
    );
    let drive = &cfg.drives.unwrap()[0];
    assert_eq!(
        drive
            .rate_limiter
            .as_ref()
            .unwrap()
            .bandwidth
            .as_ref()
            .unwrap()
            .size,
        1_000_000
    );
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_sharing_their_first_15_characters_get_distinct_working_interfaces() {
    let bridge = Bridge(format!("wts{:x}", std::process::id() & 0xfffff));
    let stem = unique_id("share-a-long-common-prefix");
    let mut vms = Vec::new();
    for (i, last) in [(1, 11u8), (2, 12)] {
        let (mut config, mut options) = guest("x", "mode=net secs=20");
        config.vm_id = format!("{stem}-{i}");
        config.enable_networking = true;
        options.network = bridge_opts(&bridge.0, 2, last);
        vms.push(start_vm(&config, &options).await.unwrap());
    }
    let a = vms[0].plan.net.clone().unwrap();
    let b = vms[1].plan.net.clone().unwrap();
    assert_ne!(a.host_veth, b.host_veth);
    assert_ne!(a.mac, b.mac);
    assert_ne!(a.netns, b.netns);
    for (i, (vm, net)) in vms.iter().zip([a, b]).enumerate() {
        assert!(
            vm.wait_for_serial("WARDEN_NET_MAC", Duration::from_secs(5))
                .await
        );
        let p = Packet::open(net.host_veth.as_ref().unwrap()).unwrap();
        assert!(
            ping_pong(&p, parse_mac(&net.mac), &format!("vm{i}")),
            "{}",
            vm.serial_output()
        );
    }
    for vm in vms {
        let id = vm.vm_id.clone();
        vm.stop().await.unwrap();
        assert_nothing_left(&base(), &id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_networked_vm_killed_from_outside_leaves_no_namespace_or_veth() {
    let bridge = Bridge(format!("wtk{:x}", std::process::id() & 0xfffff));
    let (mut config, mut options) = guest("netkill", "mode=net secs=30");
    config.enable_networking = true;
    options.network = bridge_opts(&bridge.0, 3, 21);
    let vm = start_vm(&config, &options).await.unwrap();
    let net = vm.plan.net.clone().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vm.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(2), vm.wait())
        .await
        .unwrap();
    assert!(exit.cleanup_error.is_none(), "{:?}", exit.cleanup_error);
    assert!(!net.netns_path.exists());
    assert!(!links_named("wv").contains(net.host_veth.as_ref().unwrap()));
    assert_nothing_left(&base(), &config.vm_id);
}
