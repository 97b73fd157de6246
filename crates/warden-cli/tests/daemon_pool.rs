//! The warm pool of a real daemon process (`WARDEN_POOL_SIZE`): warm jails appear, a first boot
//! takes one (shown in `/metrics`), and after a SIGKILL of the daemon the jails nobody took are
//! removed at its next start, while the VM that took one is re-attached and then cleaned like
//! any other.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use warden_api::pb;

fn warm_jails(d: &Daemon) -> Vec<PathBuf> {
    std::fs::read_dir(d.chroot.join("firecracker"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pool-"))
        })
        .collect()
}

fn ready(d: &Daemon) -> usize {
    warm_jails(d)
        .iter()
        .filter(|j| j.join("root/run/firecracker.socket").exists())
        .count()
}

fn metrics(d: &Daemon) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", d.url())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_jails_are_taken_and_those_left_after_a_daemon_sigkill_are_removed() {
    let mut d = Daemon::start(&[("WARDEN_POOL_SIZE", "2")]);
    assert!(
        eventually(Duration::from_secs(20), || ready(&d) == 2).await,
        "warm jails: {:?}\n{}",
        warm_jails(&d),
        d.logs()
    );
    assert!(
        metrics(&d).contains("warden_pool_ready 2"),
        "{}",
        metrics(&d)
    );

    let c = d.client();
    let id = unique("pool");
    c.create_vm(d.create_req(&id, "mode=flood")).await.unwrap();
    boot(&c, id.as_str()).await;
    let m = metrics(&d);
    assert!(
        m.contains("warden_pool_boots_total{result=\"hit\"} 1"),
        "{m}"
    );
    assert_eq!(
        vm_info(&c, id.as_str()).await.state,
        pb::VmState::Running as i32
    );

    // The refill makes a new one; then the daemon is SIGKILLed with two warm jails ready and
    // one taken by a VM.
    assert!(eventually(Duration::from_secs(20), || ready(&d) == 3).await);
    d.kill();
    assert_eq!(
        warm_jails(&d).len(),
        3,
        "nothing is removed by the kill itself"
    );

    // Without a pool now: the two nobody took are orphans of this daemon and are removed; the
    // VM in the third is re-attached.
    d.env.retain(|(k, _)| k != "WARDEN_POOL_SIZE");
    d.restart();
    let c = d.client();
    let left = warm_jails(&d);
    assert_eq!(left.len(), 1, "{left:?}\n{}", d.logs());
    // Their console directories went with them; the VM's is kept.
    let consoles: Vec<_> = std::fs::read_dir(d.dir.path().join("state/vms"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pool-"))
        .collect();
    assert_eq!(
        consoles,
        [left[0].file_name().unwrap().to_string_lossy().into_owned()],
        "{consoles:?}"
    );
    let info = vm_info(&c, id.as_str()).await;
    assert_eq!(info.state, pb::VmState::Running as i32);
    c.pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
        .await
        .unwrap();
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id.clone(),
        force: true,
    })
    .await
    .unwrap();
    d.assert_clean();
    // No uid lease of this daemon is left either.
    let owner = jail::Owner::daemon(&d.dir.path().join("state"));
    for l in jail::Registry::default().uid_leases() {
        assert_ne!(l.owner, owner, "uid lease left: {l:?}");
    }
}
