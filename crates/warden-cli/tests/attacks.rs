//! Attacks on a real daemon with real jailed VMs, each refused: a file or a parent directory
//! swapped for a symlink between CreateVm and BootVm, a hard link to a root-only file, a FIFO, a
//! world-writable image attached read-only, a sparse 1 TiB image, and VMs sharing a uid. Each
//! test asserts the safe outcome and that nothing was created or left.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use warden_api::{pb, Code};

const SECRET: &[u8] = b"TOP-SECRET-HOST-FILE";

/// A root-only file outside every asset directory, as /etc/shadow is.
fn secret(d: &Daemon) -> PathBuf {
    let p = d.dir.path().join("shadow");
    std::fs::write(&p, SECRET).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn with_drive(
    d: &Daemon,
    id: &str,
    path: &Path,
    read_only: bool,
    args: &str,
) -> pb::CreateVmRequest {
    let mut req = d.create_req(id, args);
    req.config.as_mut().unwrap().storage = vec![pb::StorageDevice {
        path: path.display().to_string(),
        read_only,
        ..Default::default()
    }];
    req
}

fn serial(d: &Daemon, id: &str) -> String {
    std::fs::read_to_string(d.dir.path().join("state/vms").join(id).join("serial.log"))
        .unwrap_or_default()
}

async fn refused_boot(d: &Daemon, id: &str) -> warden_api::ApiError {
    let e = d
        .client()
        .boot_vm(pb::BootVmRequest { vm_id: id.into() })
        .await
        .unwrap_err();
    assert!(
        !d.host_traces().iter().any(|p| p.ends_with(id)),
        "a refused boot left {:?}",
        d.host_traces()
    );
    assert!(jail::Registry::default().read(id).unwrap().is_none());
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drive_swapped_for_a_symlink_after_create_vm_is_refused_at_boot() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let secret = secret(&d);
    let drive = PathBuf::from(d.asset_file("swap.img", b"innocent"));
    let id = unique("atk-swap");
    c.create_vm(with_drive(&d, &id, &drive, true, "mode=blk"))
        .await
        .unwrap();
    std::fs::remove_file(&drive).unwrap();
    std::os::unix::fs::symlink(&secret, &drive).unwrap();
    let e = refused_boot(&d, &id).await;
    assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
    assert!(e.message.contains("config.storage[0].path"), "{e:?}");
    assert!(e.message.contains("symbolic link"), "{e:?}");
    assert!(
        !e.message.contains(&secret.display().to_string()),
        "never echoes the target: {e:?}"
    );
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id,
        force: false,
    })
    .await
    .unwrap();
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parent_directory_swapped_for_a_symlink_after_create_vm_is_refused_at_boot() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let assets = d.dir.path().join("assets");
    std::fs::create_dir(assets.join("images")).unwrap();
    std::fs::write(assets.join("images/disk.img"), b"innocent").unwrap();
    // Where the swapped-in link points: a directory holding a file of the same name, as /etc
    // holds shadow. The last component is then a regular file, so O_NOFOLLOW alone would pass.
    let elsewhere = d.dir.path().join("etc");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("disk.img"), SECRET).unwrap();
    let id = unique("atk-parent");
    c.create_vm(with_drive(
        &d,
        &id,
        &assets.join("images/disk.img"),
        true,
        "mode=blk",
    ))
    .await
    .unwrap();
    std::fs::rename(assets.join("images"), assets.join("images.old")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, assets.join("images")).unwrap();
    let e = refused_boot(&d, &id).await;
    assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
    assert!(e.message.contains("symbolic link"), "{e:?}");
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id,
        force: false,
    })
    .await
    .unwrap();
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_to_a_root_only_file_and_a_fifo_are_refused_at_once() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let secret = secret(&d);
    let link = d.dir.path().join("assets/linked.img");
    std::fs::hard_link(&secret, &link).unwrap();
    let e = c
        .create_vm(with_drive(&d, &unique("atk-link"), &link, true, "mode=blk"))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
    assert!(e.message.contains("hard links"), "{e:?}");

    let fifo = d.dir.path().join("assets/fifo.img");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(5),
        c.create_vm(with_drive(&d, &unique("atk-fifo"), &fifo, true, "mode=blk")),
    )
    .await
    .expect("a FIFO must never block a request")
    .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
    assert!(e.message.contains("not a regular file"), "{e:?}");
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_world_writable_image_attached_read_only_is_copied_and_the_original_never_changes() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let img = PathBuf::from(d.asset_file("shared.img", b"SHARED-BASE-IMAGE"));
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = std::fs::read(&img).unwrap();
    let rootfs = d.asset_file("rw.img", b"per-vm-rootfs");
    let id = unique("atk-ww");
    let mut req = with_drive(&d, &id, &img, true, "mode=blk then=idle");
    req.config
        .as_mut()
        .unwrap()
        .storage
        .push(pb::StorageDevice {
            path: rootfs.clone(),
            is_root_device: true,
            ..Default::default()
        });
    c.create_vm(req).await.unwrap();
    boot(&c, id.clone()).await;
    assert!(
        eventually(Duration::from_secs(10), || serial(&d, &id)
            .contains("WARDEN_BLK_DONE"))
        .await,
        "{}",
        serial(&d, &id)
    );
    let out = serial(&d, &id);
    assert!(out.contains("sector0=SHARED-BASE-IMAGE"), "{out}");
    assert!(
        out.contains("WARDEN_BLK_WROTE 0 ok"),
        "the rootfs copy is writable: {out}"
    );
    let info = vm_info(&c, id.clone()).await;
    let staged = Path::new(&info.chroot_path).join("drive1");
    let m = std::fs::metadata(&staged).unwrap();
    assert_ne!(
        m.ino(),
        std::fs::metadata(&img).unwrap().ino(),
        "a copy, never a link"
    );
    assert_eq!(m.mode() & 0o777, 0o400, "read-only for the jail user only");
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id,
        force: false,
    })
    .await
    .unwrap();
    assert_eq!(std::fs::read(&img).unwrap(), before, "the original changed");
    assert_eq!(
        std::fs::read(&rootfs).unwrap()[..13],
        *b"per-vm-rootfs",
        "the guest wrote its private copy, not the caller's file"
    );
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sparse_1_tib_image_is_staged_without_filling_the_disk() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let img = d.dir.path().join("assets/huge.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(1 << 40).unwrap();
    drop(f);
    let free_before = nix::sys::statvfs::statvfs(d.dir.path())
        .unwrap()
        .blocks_available();
    let id = unique("atk-sparse");
    let mut req = d.create_req(&id, "mode=blk then=idle");
    req.config.as_mut().unwrap().storage = vec![pb::StorageDevice {
        path: img.display().to_string(),
        is_root_device: true,
        ..Default::default()
    }];
    c.create_vm(req).await.unwrap();
    boot(&c, id.clone()).await;
    let info = vm_info(&c, id.clone()).await;
    let staged = std::fs::metadata(Path::new(&info.chroot_path).join("rootfs")).unwrap();
    assert_eq!(staged.len(), 1 << 40);
    assert!(
        staged.blocks() * 512 < 16 << 20,
        "allocated {} bytes",
        staged.blocks() * 512
    );
    let free_after = nix::sys::statvfs::statvfs(d.dir.path())
        .unwrap()
        .blocks_available();
    assert!(
        free_before.saturating_sub(free_after) < 16 << 20 >> 12,
        "the disk filled"
    );
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id,
        force: false,
    })
    .await
    .unwrap();
    d.assert_clean();
}

/// A command run as `uid` (and the same gid, no supplementary groups), as a jail user would.
fn as_uid(uid: u32) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
    ]);
    c
}

/// The live report's uid check comes from a pass over /proc shared by every VM and kept about a
/// second: a process that takes a VM's uid must show in GetVmInfo soon after, and leave it once
/// gone (the shared pass is refreshed, never served stale).
#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_takes_a_vms_uid_shows_in_its_live_report_and_leaves_it_when_gone() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let id = unique("atk-uid-share");
    c.create_vm(d.create_req(&id, "mode=idle")).await.unwrap();
    boot(&c, id.clone()).await;
    let info = vm_info(&c, id.clone()).await;
    let uid = std::fs::metadata(format!("/proc/{}", info.pid))
        .unwrap()
        .uid();
    let note = |d: &pb::VmDetails| d.isolation.clone().unwrap().uid_gid.unwrap().detail;
    assert!(
        note(&info).contains("no other process runs as this uid"),
        "{}",
        note(&info)
    );
    let mut intruder = as_uid(uid).args(["sleep", "60"]).spawn().unwrap();
    let expect = format!("shared with 1 other process (pid {})", intruder.id());
    let until = |want: String| {
        let (c, id) = (c.clone(), id.clone());
        async move {
            let t0 = std::time::Instant::now();
            loop {
                let got = note(&vm_info(&c, id.clone()).await);
                if got.contains(&want) {
                    return t0.elapsed();
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "never {want:?}: {got}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until(expect).await;
    intruder.kill().unwrap();
    intruder.wait().unwrap();
    until("no other process runs as this uid".into()).await;
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id.clone(),
        force: false,
    })
    .await
    .unwrap();
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_vm_runs_as_its_own_uid_and_one_cannot_signal_the_others_firecracker() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let ids = [unique("atk-uid-a"), unique("atk-uid-b")];
    let mut vms = Vec::new();
    for id in &ids {
        c.create_vm(d.create_req(id, "mode=idle")).await.unwrap();
        boot(&c, id.clone()).await;
        let info = vm_info(&c, id.clone()).await;
        let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).unwrap();
        let uid: u32 = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        let iso = info.isolation.clone().unwrap();
        assert!(
            iso.uid_gid
                .as_ref()
                .unwrap()
                .detail
                .contains("no other process runs as this uid"),
            "{iso:?}"
        );
        vms.push((info.pid, uid));
    }
    let ((pid_a, uid_a), (pid_b, uid_b)) = (vms[0], vms[1]);
    assert_ne!(uid_a, uid_b, "two VMs share a uid");
    let range = warden::daemon::config::DEFAULT_JAIL_ID_RANGE;
    for uid in [uid_a, uid_b] {
        assert!(
            (range.0..=range.1).contains(&uid),
            "{uid} outside the range"
        );
    }
    let signal = |uid: u32, target: u32| {
        as_uid(uid)
            .args(["kill", "-0", &target.to_string()])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        signal(uid_a, pid_a),
        "the check itself must be able to succeed"
    );
    assert!(
        !signal(uid_a, pid_b),
        "VM a's uid can signal VM b's Firecracker"
    );
    for id in &ids {
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: false,
        })
        .await
        .unwrap();
    }
    let leases = jail::Registry::default().uid_leases();
    assert!(
        !leases.iter().any(|l| ids.contains(&l.vm_id)),
        "uids released on delete: {leases:?}"
    );
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_boot_whose_caller_goes_away_runs_to_completion_and_the_vm_stays_controllable() {
    let d = Daemon::start(&[]);
    let c = d.client();
    for (i, how) in ["disconnect", "deadline"].into_iter().enumerate() {
        let id = unique(&format!("atk-cancel{i}"));
        c.create_vm(d.create_req(&id, "mode=idle")).await.unwrap();
        let url = format!("{}/vmprovisioner.v1.VmService/BootVm", d.url());
        let body = format!(r#"{{"vm_id":"{id}"}}"#);
        // Whether the boot had started on the host before the caller went away.
        let mut started = false;
        match how {
            // The client hangs up mid-boot: once the VM's jail exists on the host.
            "disconnect" => {
                use std::io::Write;
                let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
                write!(
                    s,
                    "POST /vmprovisioner.v1.VmService/BootVm HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                s.flush().unwrap();
                let jail = d.chroot.join("firecracker").join(&id);
                started = eventually(Duration::from_secs(10), || jail.exists()).await;
                assert!(started, "the boot never started: {}", d.logs());
                drop(s);
            }
            // A Connect deadline shorter than any boot: the request may be cut off before or
            // during the boot, never leaving the VM half-booted.
            _ => {
                std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-X", "POST"])
                    .args(["-H", "Content-Type: application/json"])
                    .args(["-H", "Connect-Timeout-Ms: 1", "-d", &body, &url])
                    .status()
                    .unwrap();
            }
        }
        if !started {
            // Settled one way or the other (never stuck in booting): a boot cut off before it
            // began left the VM created, and it boots now.
            let settled = eventually(Duration::from_secs(10), || {
                let c = c.clone();
                let id = id.clone();
                let state = std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async { vm_info(&c, id).await.state })
                })
                .join()
                .unwrap();
                state == state_of(pb::VmState::Running) || state == state_of(pb::VmState::Created)
            })
            .await;
            assert!(settled, "{how}: the VM is stuck: {}", d.logs());
            if vm_info(&c, id.clone()).await.state == state_of(pb::VmState::Created) {
                boot(&c, id.as_str()).await;
            }
        }
        let settled = eventually(Duration::from_secs(10), || {
            let c = c.clone();
            let id = id.clone();
            let state = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async { vm_info(&c, id).await.state })
            })
            .join()
            .unwrap();
            state == state_of(pb::VmState::Running)
        })
        .await;
        let info = vm_info(&c, id.clone()).await;
        assert!(
            settled,
            "{how}: the boot did not finish: {info:?}\n{}",
            d.logs()
        );
        assert!(Path::new(&format!("/proc/{}", info.pid)).exists());
        c.pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
            .await
            .unwrap();
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id,
            force: false,
        })
        .await
        .unwrap();
    }
    d.assert_clean();
}

fn state_of(s: pb::VmState) -> i32 {
    s as i32
}

fn curl_status(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_page_a_rebinding_name_and_an_unauthenticated_metrics_scrape_are_refused() {
    let d = Daemon::start(&[("WARDEN_AUTH_TOKEN", "s3cret")]);
    let create = format!("{}/vmprovisioner.v1.VmService/CreateVm", d.url());
    let body = format!(
        r#"{{"vm_id":"{}","config":{{"boot":{{"kernel_path":"{}"}}}}}}"#,
        unique("atk-web"),
        testguest()
    );
    let auth = "Authorization: Bearer s3cret";
    // A form POST from a web page: no preflight, but the browser adds its Origin.
    let (code, resp) = curl_status(&[
        "-H",
        auth,
        "-H",
        "Origin: http://evil.example",
        "-d",
        &body,
        &create,
    ]);
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains("permission_denied"), "{resp}");
    let (code, _) = curl_status(&[
        "-H",
        auth,
        "-H",
        "Sec-Fetch-Site: cross-site",
        "-d",
        &body,
        &create,
    ]);
    assert_eq!(code, 403);
    // A DNS name that rebinds to 127.0.0.1.
    let (code, resp) = curl_status(&["-H", auth, "-H", "Host: evil.example", "-d", &body, &create]);
    assert_eq!(code, 403, "{resp}");
    // The token guards /metrics and /readyz too; /healthz stays open for probes.
    assert_eq!(curl_status(&[&format!("{}/metrics", d.url())]).0, 401);
    assert_eq!(curl_status(&[&format!("{}/readyz", d.url())]).0, 401);
    assert_eq!(curl_status(&[&format!("{}/healthz", d.url())]).0, 200);
    assert_eq!(
        curl_status(&["-H", auth, &format!("{}/metrics", d.url())]).0,
        200
    );
    // Nothing was created; the seed's plain curl -d still works.
    let list = curl_status(&[
        "-H",
        auth,
        "-d",
        "{}",
        &format!("{}/vmprovisioner.v1.VmService/ListVms", d.url()),
    ]);
    assert_eq!(list.0, 200);
    assert!(!list.1.contains("atk-web"), "{}", list.1);
    let (code, resp) = curl_status(&["-H", auth, "-d", &body, &create]);
    assert_eq!(code, 200, "{resp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_lift_the_operators_limits_or_exceed_the_caps() {
    let d = Daemon::start(&[
        ("UNKEY_METALD_JAILER_MEMORY_LIMIT", "268435456"),
        ("UNKEY_METALD_JAILER_CPU_QUOTA", "50"),
        ("WARDEN_MAX_VMS", "2"),
    ]);
    let c = d.client();
    let mut req = d.create_req(&unique("atk-mem"), "mode=idle");
    req.config.as_mut().unwrap().memory_limit_mib = Some(4096);
    let e = c.create_vm(req).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
    assert!(
        e.message.contains("config.memory_limit_mib") && e.message.contains("at most 256"),
        "{e:?}"
    );
    let mut req = d.create_req(&unique("atk-cpu"), "mode=idle");
    req.config.as_mut().unwrap().cpu_quota_percent = Some(400);
    let e = c.create_vm(req).await.unwrap_err();
    assert!(
        e.message.contains("config.cpu_quota_percent") && e.message.contains("at most 50"),
        "{e:?}"
    );
    // A tighter cap is fine.
    let mut req = d.create_req(&unique("atk-less"), "mode=idle");
    req.config.as_mut().unwrap().memory_limit_mib = Some(200);
    c.create_vm(req).await.unwrap();

    let drive = d.asset_file("d.img", b"d");
    let mut req = d.create_req(&unique("atk-drives"), "mode=idle");
    req.config.as_mut().unwrap().storage = (0..1000)
        .map(|_| pb::StorageDevice {
            path: drive.clone(),
            read_only: true,
            ..Default::default()
        })
        .collect();
    let e = c.create_vm(req).await.unwrap_err();
    assert_eq!(e.code, Code::ResourceExhausted, "{e:?}");
    assert!(e.message.contains("max_drives"), "{e:?}");

    c.create_vm(d.create_req(&unique("atk-vm2"), "mode=idle"))
        .await
        .unwrap();
    let e = c
        .create_vm(d.create_req(&unique("atk-vm3"), "mode=idle"))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::ResourceExhausted, "{e:?}");
    assert!(e.message.contains("max_vms"), "{e:?}");
    d.assert_clean();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_flooding_its_console_fills_neither_the_disk_nor_the_daemons_memory() {
    const CAP: u64 = 128 * 1024;
    let d = Daemon::start(&[("WARDEN_SERIAL_LOG_MAX_BYTES", &CAP.to_string())]);
    let c = d.client();
    let id = unique("atk-flood");
    c.create_vm(d.create_req(&id, "mode=flood")).await.unwrap();
    boot(&c, id.clone()).await;
    let daemon = d.child.as_ref().unwrap().id();
    let log = d.dir.path().join("state/vms").join(&id).join("serial.log");
    let on_disk = || {
        [log.clone(), PathBuf::from(format!("{}.1", log.display()))]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    let numbers = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("WARDEN_FLOOD "))
            .filter(|l| l.ends_with('.'))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = rss_kib(daemon);
    // Until the guest has written four times the cap (each line is 70 bytes); on a loaded
    // machine that takes longer, never less.
    let mut most = 0;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        most = most.max(on_disk());
        let written = numbers(&serial(&d, &id)).into_iter().max().unwrap_or(0) * 70;
        if written > 4 * CAP {
            break;
        }
    }
    let rss_end = rss_kib(daemon);
    let text = serial(&d, &id);
    let kept = numbers(&text);
    let last = kept.iter().copied().max().unwrap_or(0);
    // The guest wrote far more than the cap (each line is 70 bytes)...
    assert!(last * 70 > 2 * CAP, "the guest wrote only {last} lines");
    // ...but at most the cap (plus what arrives between two checks) stays on disk...
    assert!(most <= CAP + 64 * 1024, "{most} bytes kept on disk");
    // ...and what stays is the newest: the first lines are gone, later ones keep coming.
    assert!(
        !kept.contains(&0),
        "the oldest lines should have been dropped"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = numbers(&serial(&d, &id)).into_iter().max().unwrap_or(0);
    assert!(
        later > last,
        "the newest lines are kept ({later} after {last})"
    );
    assert!(
        rss_end < rss_start + 4096,
        "daemon memory grew from {rss_start} KiB to {rss_end} KiB"
    );
    c.delete_vm(pb::DeleteVmRequest {
        vm_id: id,
        force: false,
    })
    .await
    .unwrap();
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn pinning_and_io_limits_are_the_operators_default_and_maximum() {
    let d = Daemon::start(&[("WARDEN_CPUSET", "0"), ("WARDEN_IO_READ_BPS", "2097152")]);
    let c = d.client();
    let refused = |req: pb::CreateVmRequest| {
        let c = c.clone();
        async move { c.create_vm(req).await.unwrap_err() }
    };
    let mut req = d.create_req(&unique("pin-out"), "mode=idle");
    req.config.as_mut().unwrap().cpuset = Some("0-1".into());
    let e = refused(req).await;
    assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
    assert!(
        e.message.contains("config.cpuset") && e.message.contains("subset of 0"),
        "{e:?}"
    );
    let mut req = d.create_req(&unique("pin-bad"), "mode=idle");
    req.config.as_mut().unwrap().cpuset = Some("zero".into());
    let e = refused(req).await;
    assert!(
        e.message.contains("config.cpuset") && e.message.contains("0-3,5"),
        "{e:?}"
    );
    let mut req = d.create_req(&unique("io-over"), "mode=idle");
    req.config.as_mut().unwrap().io_read_bps = Some(4 << 20);
    let e = refused(req).await;
    assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
    assert!(
        e.message.contains("config.io_read_bps") && e.message.contains("at most 2097152"),
        "{e:?}"
    );
    let mut req = d.create_req(&unique("io-zero"), "mode=idle");
    req.config.as_mut().unwrap().io_write_iops = Some(0);
    let e = refused(req).await;
    assert!(e.message.contains("config.io_write_iops"), "{e:?}");

    // Unset: the operator's cpuset and read limit. Asked: a tighter read limit and a write one.
    let disk = {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(d.dir.path()).unwrap().dev();
        jail::cgroup::disk::disk_of(
            Path::new("/sys"),
            jail::cgroup::disk::BlockDevice::from_dev(dev),
        )
        .unwrap()
    };
    let default_id = unique("pin-default");
    c.create_vm(d.create_req(&default_id, "mode=idle"))
        .await
        .unwrap();
    let asked_id = unique("pin-asked");
    let mut req = d.create_req(&asked_id, "mode=idle");
    {
        let cfg = req.config.as_mut().unwrap();
        cfg.io_read_bps = Some(1 << 20);
        cfg.io_write_iops = Some(100);
    }
    c.create_vm(req).await.unwrap();
    for (id, read_bps) in [(&default_id, 2u64 << 20), (&asked_id, 1 << 20)] {
        boot(&c, id.as_str()).await;
        let info = vm_info(&c, id.as_str()).await;
        let settings = info.cgroup.as_ref().unwrap().settings.clone();
        let value = |file: &str| {
            settings
                .iter()
                .find(|s| s.file == file)
                .map(|s| s.value.clone())
        };
        assert_eq!(value("cpuset.cpus").as_deref(), Some("0"), "{settings:?}");
        assert_eq!(
            value("blkio.throttle.read_bps_device"),
            Some(format!("{disk} {read_bps}"))
        );
        let blkio = settings
            .iter()
            .find(|s| s.file == "blkio.throttle.read_bps_device")
            .unwrap();
        assert!(blkio.by_warden);
        assert_eq!(
            std::fs::read_to_string(&blkio.path).unwrap().trim(),
            format!("{disk} {read_bps}")
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Cpus_allowed_list:", "0"]),
            "{status}"
        );
    }
    let asked = get_info(&c, asked_id.as_str()).await;
    let cfg = asked.config.clone().unwrap();
    assert_eq!(
        (cfg.io_read_bps, cfg.io_write_iops, cfg.cpuset),
        (Some(1 << 20), Some(100), None)
    );
    let settings = asked.details().cgroup.unwrap().settings;
    assert!(settings
        .iter()
        .any(|s| s.file == "blkio.throttle.write_iops_device" && s.value == format!("{disk} 100")));
    for id in [&default_id, &asked_id] {
        c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: false,
        })
        .await
        .unwrap();
    }
    d.assert_clean();
}
