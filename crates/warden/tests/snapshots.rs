//! Snapshots of a real jailed VM and restores into new jails (Firecracker v1.12.1 under the
//! jailer): the store holds root-owned read-only files that match the manifest, the source VM
//! runs on, two clones restored from it run in jails, uids and cgroups of their own and share the
//! memory file read-only, each guest carries on where the snapshot left it (the `mode=state`
//! guest's boot token and counter), a diff snapshot merged onto its parent restores the guest as
//! it was at the diff, a damaged or truncated store is refused, and nothing is left.

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

/// The `(token, count)` of every `WARDEN_STATE token=<hex> count=<n>` line of a `mode=state`
/// test guest.
fn states(serial: &str) -> Vec<(String, u64)> {
    serial
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("WARDEN_STATE token=")? + "WARDEN_STATE token=".len()..];
            let (token, count) = rest.split_once(" count=")?;
            Some((token.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// Waits until the VM printed a `WARDEN_STATE` line with a count above `above`, and returns
/// every line so far.
async fn state_above(vm: &warden::vm::VmHandle, above: u64) -> Vec<(String, u64)> {
    for _ in 0..1000 {
        let s = states(&vm.serial_output());
        if s.last().is_some_and(|(_, n)| *n > above) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "VM {} printed no count above {above}: {:?}",
        vm.vm_id,
        vm.serial_output()
    );
}

/// Restores a clone of `store` and checks that it goes on from the snapshot: the source's
/// token, counting on from at least `from` (no fresh boot), under a uid of its own.
async fn clone_goes_on(store: &Path, tag: &str, token: &str, from: u64) -> warden::vm::VmHandle {
    let (c, o) = guest(tag, "mode=state");
    let clone = restore_vm(store, &c.vm_id, &o).await.unwrap();
    assert!(clone.is_sandboxed, "{:?}", clone.isolation);
    let s = state_above(&clone, from + 3).await;
    let out = clone.serial_output();
    assert!(
        !out.contains("testguest: boot"),
        "a clone does not boot again: {out:?}"
    );
    assert!(
        s.iter().all(|(t, _)| t == token),
        "the source's token {token}: {s:?}"
    );
    assert!(
        s[0].1 >= from,
        "the clone starts from the snapshot's count: {s:?} (>= {from})"
    );
    assert!(
        s.windows(2).all(|w| w[1].1 == w[0].1 + 1),
        "counting on: {s:?}"
    );
    let uid = status_field(clone.pid, "Uid");
    assert!(
        uid.split_whitespace()
            .all(|u| u == clone.plan.uid.to_string()),
        "{uid} is the clone's own uid {}",
        clone.plan.uid
    );
    clone
}

#[tokio::test]
async fn a_jailed_vm_is_snapshotted_and_restored_into_two_clones_that_run_on() {
    // A guest with a token from its boot-time TSC and a counter in memory: a clone that shows
    // the same token and counts on from where the snapshot was taken runs the snapshot's
    // guest, not a fresh boot. (It polls: this host's nested KVM does not wake a restored
    // guest from `hlt`.)
    let (config, options) = guest("snap", "mode=state");
    let vm = start_vm(&config, &options).await.unwrap();
    let seen = state_above(&vm, 5).await;
    let (token, before) = seen.last().cloned().unwrap();
    let store = store_dir("s");
    let manifest = vm.snapshot(&store, true).await.unwrap();
    assert!(vm.exited().is_none(), "the source VM runs on");
    assert_eq!(manifest.source_vm, config.vm_id);
    assert_eq!(manifest.kind, warden::vm::snapshot::SnapshotKind::Full);
    assert_eq!(manifest.memory.len, 128 << 20);
    assert_eq!(manifest.firecracker_version, "1.12.1");
    // The store: root-owned, read-only, only root may enter it; nothing half-written beside.
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(!warden::vm::snapshot::partial_exists(&store));
    for f in [&manifest.state, &manifest.memory] {
        let m = std::fs::metadata(store.join(&f.name)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{}", f.name);
        assert_eq!(m.permissions().mode() & 0o777, 0o444, "{}", f.name);
    }
    // Nothing of the snapshot is left in the source's chroot.
    assert!(!vm.plan.root_dir.join("snapshot").exists());

    let mut clones = Vec::new();
    for i in 0..2 {
        clones.push(clone_goes_on(&store, &format!("clone{i}"), &token, before).await);
    }
    // The source runs on too, with its own token.
    let after = state_above(&vm, before + 10).await;
    assert!(after.iter().all(|(t, _)| *t == token), "{after:?}");
    // A fresh boot has another token: the token is the boot's, not a constant.
    let (f, o) = guest("fresh", "mode=state");
    let fresh = start_vm(&f, &o).await.unwrap();
    let fresh_token = state_above(&fresh, 0).await[0].0.clone();
    assert_ne!(
        fresh_token, token,
        "a fresh boot cannot reproduce the token"
    );
    fresh.stop().await.unwrap();
    assert_nothing_left(&base(), &f.vm_id);

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
    let good = std::fs::read(&state).unwrap();
    let mut bytes = good.clone();
    bytes[0] ^= 0xff;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&state, bytes).unwrap();
    let (c, o) = guest("damaged", "mode=state");
    let err = restore_vm(&store, &c.vm_id, &o).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_nothing_left(&base(), &c.vm_id);
    // And so is a truncated one (as a full disk or an interrupted copy leaves it).
    std::fs::write(&state, good).unwrap();
    let memory = store.join(&manifest.memory.name);
    std::fs::set_permissions(&memory, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_len(manifest.memory.len / 2)
        .unwrap();
    let (c, o) = guest("truncated", "mode=state");
    let err = restore_vm(&store, &c.vm_id, &o).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("truncated") && msg.contains(&format!("{}", 64 << 20)),
        "{msg}"
    );
    assert_nothing_left(&base(), &c.vm_id);
    std::fs::remove_dir_all(&store).unwrap();
}

#[tokio::test]
async fn a_diff_snapshot_on_top_of_a_full_one_restores_the_guest_as_it_was_at_the_diff() {
    let (config, mut options) = guest("diff", "mode=state");
    options.track_dirty_pages = true;
    let vm = start_vm(&config, &options).await.unwrap();
    let (token, _) = state_above(&vm, 5).await.last().cloned().unwrap();
    let full = store_dir("df");
    let other = store_dir("do");
    // No snapshot yet: nothing to diff against (a store of this name does not even exist).
    let err = vm.snapshot_diff(&other, &full, true).await.unwrap_err();
    assert!(err.to_string().contains("(parent)"), "{err}");
    let fm = vm.snapshot(&full, true).await.unwrap();
    let at_full = states(&vm.serial_output()).last().unwrap().1;
    // The guest runs on and its counter grows past the full snapshot's.
    let before = state_above(&vm, at_full + 20).await.last().unwrap().1;
    let diff = store_dir("dd");
    let started = std::time::Instant::now();
    let dm = vm.snapshot_diff(&diff, &full, true).await.unwrap();
    let took = started.elapsed();
    assert_eq!(dm.kind, warden::vm::snapshot::SnapshotKind::Diff);
    assert_eq!(
        dm.parent.as_deref(),
        full.file_name().and_then(|n| n.to_str())
    );
    let carried = dm.diff_bytes.unwrap();
    assert!(
        carried > 0 && carried < dm.memory.len / 4,
        "the diff carried only the dirtied pages: {carried} of {}",
        dm.memory.len
    );
    assert_eq!(
        dm.memory.len, fm.memory.len,
        "the store's memory is complete"
    );
    assert_ne!(
        dm.memory.sha256, fm.memory.sha256,
        "and differs from the parent's"
    );
    eprintln!(
        "diff snapshot: {carried} bytes of {} dirtied, taken in {took:?}",
        dm.memory.len
    );
    // The full snapshot is no longer the last one: a diff on top of it is refused.
    let err = vm.snapshot_diff(&other, &full, true).await.unwrap_err();
    assert!(err.to_string().contains("not the last snapshot"), "{err}");
    assert!(!other.exists() && !warden::vm::snapshot::partial_exists(&other));

    // The clone counts on from the diff, not from the full snapshot: the merged memory holds
    // the pages the guest changed after it.
    let clone = clone_goes_on(&diff, "diffclone", &token, before).await;
    // The parent may go: the diff's store is complete on its own.
    std::fs::remove_dir_all(&full).unwrap();
    let clone2 = clone_goes_on(&diff, "diffclone2", &token, before).await;
    for c in [clone, clone2] {
        let id = c.vm_id.clone();
        c.stop().await.unwrap();
        assert_nothing_left(&base(), &id);
    }
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);
    std::fs::remove_dir_all(&diff).unwrap();
}

#[tokio::test]
async fn a_diff_snapshot_of_a_vm_booted_without_dirty_page_tracking_is_refused() {
    let (config, options) = guest("nodiff", "mode=state");
    let vm = start_vm(&config, &options).await.unwrap();
    state_above(&vm, 0).await;
    let full = store_dir("nf");
    vm.snapshot(&full, true).await.unwrap();
    let diff = store_dir("nd");
    let err = vm.snapshot_diff(&diff, &full, true).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("(track_dirty_pages)") && msg.contains("--track-dirty-pages"),
        "{msg}"
    );
    assert!(!diff.exists());
    assert!(vm.exited().is_none());
    let n = states(&vm.serial_output()).last().unwrap().1;
    state_above(&vm, n + 2).await;
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);
    std::fs::remove_dir_all(&full).unwrap();
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

#[tokio::test]
async fn a_snapshot_that_does_not_fit_on_the_stores_filesystem_is_refused_before_the_pause() {
    // A 100 MiB filesystem for the store; the VM has 128 MiB of guest memory.
    let mnt = base().join(format!("snapshot-tmpfs-{}", unique_id("full")));
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=100m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success());
    let (config, options) = guest("snapfull", "mode=state");
    let vm = start_vm(&config, &options).await.unwrap();
    let n = state_above(&vm, 2).await.last().unwrap().1;
    let store = mnt.join("store");
    let err = vm.snapshot(&store, true).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not enough disk for the snapshot")
            && msg.contains(&store.display().to_string())
            && msg.contains("guest memory 128 MiB")
            && msg.contains("64 MiB margin")
            && msg.contains("free "),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "nothing written"
    );
    assert!(!vm.plan.root_dir.join("snapshot").exists());
    // Never paused: it counts on.
    state_above(&vm, n + 5).await;
    vm.stop().await.unwrap();
    assert_nothing_left(&base(), &config.vm_id);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    std::fs::remove_dir(&mnt).unwrap();
}
