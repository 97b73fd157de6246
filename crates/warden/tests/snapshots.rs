//! Snapshots of a real jailed VM and restores into new jails (Firecracker v1.12.1 under the
//! jailer): the store holds root-owned read-only files that match the manifest, the source VM
//! runs on, two clones restored from it run in jails, uids and cgroups of their own and share the
//! memory file read-only, each guest carries on where the snapshot left it (it answers
//! Ctrl-Alt-Del by powering off), a damaged store is refused, and nothing is left.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use std::path::Path;
use std::time::Duration;

use common::*;
use warden::vm::{restore_vm, start_vm};

fn store_dir(tag: &str) -> std::path::PathBuf {
    // On the chroot base's filesystem, so clones hard-link the read-only files.
    base().join(format!("snapshot-test-{}", unique_id(tag)))
}

/// The counters of the `WARDEN_FLOOD <n>` lines a flooding test guest printed.
fn flood_counters(serial: &str) -> Vec<u64> {
    serial
        .lines()
        .filter_map(|l| {
            l.strip_prefix("WARDEN_FLOOD ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test]
async fn a_jailed_vm_is_snapshotted_and_restored_into_two_clones_that_run_on() {
    // A guest that prints numbered lines as fast as it can: a restored clone that goes on
    // counting from where the snapshot was taken (not from 0, with no boot line) runs the
    // snapshot's guest. (This host's nested KVM does not wake a restored guest from `hlt`,
    // so the halting `mode=idle` guest cannot show it.)
    let (config, options) = guest("snap", "mode=flood");
    let vm = start_vm(&config, &options).await.unwrap();
    assert!(
        vm.wait_for_serial("WARDEN_FLOOD 100 ", Duration::from_secs(10))
            .await,
        "{}",
        vm.serial_output()
    );
    let before = *flood_counters(&vm.serial_output()).last().unwrap();
    let store = store_dir("s");
    let manifest = vm.snapshot(&store, true).await.unwrap();
    assert!(vm.exited().is_none(), "the source VM runs on");
    assert_eq!(manifest.source_vm, config.vm_id);
    assert_eq!(manifest.memory.len, 128 << 20);
    assert_eq!(manifest.firecracker_version, "1.12.1");
    // The store: root-owned, read-only, only root may enter it.
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in [&manifest.state, &manifest.memory] {
        let m = std::fs::metadata(store.join(&f.name)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{}", f.name);
        assert_eq!(m.permissions().mode() & 0o777, 0o444, "{}", f.name);
    }
    // Nothing of the snapshot is left in the source's chroot.
    assert!(!vm.plan.root_dir.join("snapshot").exists());

    let mut clones = Vec::new();
    for i in 0..2 {
        let (c, o) = guest(&format!("clone{i}"), "mode=flood");
        let clone = restore_vm(&store, &c.vm_id, &o).await.unwrap();
        assert!(clone.is_sandboxed, "{:?}", clone.isolation);
        clones.push(clone);
    }
    let mem = std::fs::metadata(store.join(&manifest.memory.name)).unwrap();
    for (a, b) in [(&clones[0], &clones[1]), (&clones[0], &vm)] {
        assert_ne!(a.pid, b.pid);
        assert_ne!(a.plan.uid, b.plan.uid, "a uid of its own");
        assert_ne!(a.plan.jail_dir, b.plan.jail_dir);
        assert_ne!(a.plan.cgroup_dirs, b.plan.cgroup_dirs);
    }
    for c in &clones {
        // The memory file is shared read-only: the store's inode, linked into the jail.
        let staged = std::fs::metadata(c.plan.root_dir.join(&manifest.memory.name)).unwrap();
        assert_eq!(staged.ino(), mem.ino());
        assert_eq!(staged.permissions().mode() & 0o222, 0, "not writable");
        // It goes on counting where the snapshot was taken.
        let mut counters = Vec::new();
        for _ in 0..500 {
            counters = flood_counters(&c.serial_output());
            if counters.len() > 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let out = c.serial_output();
        assert!(counters.len() > 10, "the clone prints nothing: {out:?}");
        assert!(
            !out.contains("testguest: boot"),
            "a clone does not boot again"
        );
        assert!(counters[0] >= before, "{} < {before}", counters[0]);
    }
    for c in clones {
        let id = c.vm_id.clone();
        c.stop().await.unwrap();
        assert_nothing_left(&base(), &id);
    }
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);

    // A damaged store is refused before anything is made.
    let state = store.join(&manifest.state.name);
    let mut bytes = std::fs::read(&state).unwrap();
    bytes[0] ^= 0xff;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&state, bytes).unwrap();
    let (c, o) = guest("damaged", "mode=flood");
    let err = restore_vm(&store, &c.vm_id, &o).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_nothing_left(&base(), &c.vm_id);
    std::fs::remove_dir_all(&store).unwrap();
}

#[tokio::test]
async fn a_snapshot_store_that_exists_is_not_overwritten() {
    let (config, options) = guest("snapx", "mode=idle");
    let vm = start_vm(&config, &options).await.unwrap();
    let store = store_dir("x");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("keep"), b"someone's").unwrap();
    let err = vm.snapshot(&store, true).await.unwrap_err();
    assert!(
        err.to_string().contains(&store.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(store.join("keep")).unwrap(), b"someone's");
    assert!(vm.exited().is_none());
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);
    std::fs::remove_dir_all(&store).unwrap();
}

#[tokio::test]
async fn a_networked_vms_clones_each_get_tap0_in_a_namespace_of_their_own() {
    use warden::vm::config::NetworkOptions;
    use warden::NetMode;
    let (mut config, mut options) = guest("snapnet", "mode=flood");
    config.enable_networking = true;
    options.network = NetworkOptions {
        mode: NetMode::None,
        ..Default::default()
    };
    let vm = start_vm(&config, &options).await.unwrap();
    let store = store_dir("n");
    let manifest = vm.snapshot(&store, true).await.unwrap();
    assert_eq!(manifest.network_interfaces.len(), 1);

    // Bridge mode would give every clone the same address on one bridge: refused, clearly.
    let (c, mut o) = guest("netbr", "mode=flood");
    o.network.mode = NetMode::Bridge;
    let err = restore_vm(&store, &c.vm_id, &o).await.unwrap_err();
    assert!(err.to_string().contains("network.mode"), "{err}");
    assert_nothing_left(&base(), &c.vm_id);

    let mut clones = Vec::new();
    for i in 0..2 {
        let (c, mut o) = guest(&format!("netclone{i}"), "mode=flood");
        o.network.mode = NetMode::None;
        let clone = restore_vm(&store, &c.vm_id, &o).await.unwrap();
        let net = clone.plan.net.clone().expect("a namespace of its own");
        // Firecracker restored the snapshot's network device on tap0 of this namespace, owned
        // by this clone's jail user.
        let link = std::process::Command::new("ip")
            .args(["-n", &net.netns, "-d", "link", "show", "tap0"])
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(link.contains(&format!("user {}", clone.plan.uid)), "{link}");
        assert!(
            clone.isolation.net_ns.active,
            "{:?}",
            clone.isolation.net_ns
        );
        let ns = std::fs::read_link(format!("/proc/{}/ns/net", clone.pid)).unwrap();
        assert_ne!(
            ns,
            std::fs::read_link("/proc/self/ns/net").unwrap(),
            "not the host's"
        );
        clones.push((clone, net.netns, ns));
    }
    assert_ne!(clones[0].2, clones[1].2, "two namespaces");
    for (clone, netns, _) in clones {
        let id = clone.vm_id.clone();
        clone.stop().await.unwrap();
        assert_nothing_left(&base(), &id);
        assert!(
            !Path::new("/run/netns").join(&netns).exists(),
            "{netns} is removed"
        );
    }
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);
    std::fs::remove_dir_all(&store).unwrap();
}
