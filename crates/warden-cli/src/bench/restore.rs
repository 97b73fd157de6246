//! `warden bench restore`: from process start (or the restore call) to the guest's first serial
//! line after it resumed from a snapshot.
//!
//! The bench's daemon boots one polling guest (`mode=flood`: numbered lines, forever; a halted
//! guest is not woken after a restore on this nested host), takes a full snapshot of it into its
//! store, and deletes it. Then, interleaved round by round (the order rotates every round):
//! - `bare firecracker`: `firecracker --api-sock`, unjailed, then `PUT /snapshot/load` with
//!   `resume_vm` on the store's own files (the floor);
//! - `library restore_vm`: `warden::vm::restore_vm`, jailed, from the call;
//! - `daemon RestoreVm`: through the bench's `warden serve`, from the call, to the line in the
//!   clone's serial log file;
//! - `daemon RestoreVm from pool`: the same through a second daemon with a warm pool
//!   (`pool_size` 2) holding a copy of the snapshot; before each restore the bench waits
//!   (untimed) until the pool is full again;
//! - `daemon N concurrent clones`: N RestoreVm calls of the one snapshot at once, each clone
//!   timed from the common start to its own first line (in `--bursts` of the rounds, spread
//!   evenly; p50 and p99 over every clone of every burst).
//!
//! A line counts once it is whole: the first `WARDEN_FLOOD <n>` and its newline, so the tail
//! of the line the snapshot interrupted is not mistaken for new output. Each VM is killed once
//! timed (untimed) and cleaned before the next starts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use warden::firecracker_api::{self, MemoryBackend, SnapshotLoadParams};
use warden::vm::config::{JailerMode, Serial, VmOptions};
use warden::vm::jailer::JailerConfig;
use warden_api::pb;

use super::daemon::BenchDaemon;
use super::host::{self, HostGuard};
use super::start::need;
use super::{Report, Row};

/// Arguments of `warden bench restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Restores per single-VM series.
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// Clones per concurrent burst.
    #[arg(long, default_value_t = 50)]
    clones: usize,
    /// Concurrent bursts, spread over the rounds.
    #[arg(long, default_value_t = 1)]
    bursts: usize,
    /// Base directory of the library's jails.
    #[arg(long, default_value = "/srv/jailer")]
    chroot_base: PathBuf,
}

/// The guest the snapshot is taken of.
const FLOOD: &str = "mode=flood";
/// The start of each of its lines.
const LINE: &[u8] = b"WARDEN_FLOOD ";
/// The snapshot's name in the bench daemon's store.
const SNAPSHOT: &str = "bench-base";

/// Whether `out` holds a whole line of the guest's (its start and its newline).
pub(crate) fn has_first_line(out: &[u8]) -> bool {
    out.windows(LINE.len())
        .position(|w| w == LINE)
        .is_some_and(|at| out[at..].contains(&b'\n'))
}

/// Whether the first bytes of `path` hold a whole line (the file grows fast; the first line is
/// within its first KiB).
fn file_has_first_line(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    has_first_line(&buf[..len])
}

struct Env {
    firecracker: PathBuf,
    jailer: PathBuf,
    base: PathBuf,
    parent_cgroup: String,
    tmp: tempfile::TempDir,
    /// The snapshot, in the bench daemon's store.
    store: PathBuf,
}

/// Runs the scenario.
pub async fn run(args: RestoreArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.count >= 1 && args.clones >= 1,
        "--count and --clones must be at least 1"
    );
    let guard = HostGuard {
        chroot_base: args.chroot_base.clone(),
        parent_cgroup: host::cgroup_prefix(),
    };
    let daemon = BenchDaemon::start(false)?;
    let env = Env {
        firecracker: need(warden::assets::firecracker())?,
        jailer: need(warden::assets::jailer())?,
        base: args.chroot_base.clone(),
        parent_cgroup: host::cgroup_prefix(),
        tmp: tempfile::Builder::new()
            .prefix(&host::tmp_prefix())
            .tempdir_in("/tmp")?,
        store: daemon.snapshot_dir(SNAPSHOT),
    };
    take_snapshot(&daemon).await?;
    let pooled = BenchDaemon::start_with(false, &[("WARDEN_POOL_SIZE", super::start::POOL)])?;
    copy_store(&env.store, &pooled.snapshot_dir(SNAPSHOT))?;
    let burst_name = format!("daemon {} concurrent clones (each)", args.clones);
    let names = [
        "bare firecracker (unjailed) load+resume",
        "library restore_vm (jailed)",
        "daemon RestoreVm (jailed)",
        "daemon RestoreVm from pool (jailed)",
        burst_name.as_str(),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut phases: Vec<(String, Vec<Duration>)> = Vec::new();
    let bursts = args.bursts.min(args.count);
    for round in 0..args.count {
        // `bursts` of the rounds, spread evenly, also run the concurrent series.
        let with_burst = (round * bursts) / args.count != ((round + 1) * bursts) / args.count;
        let series: Vec<usize> = (0..names.len()).filter(|&s| s < 4 || with_burst).collect();
        for k in 0..series.len() {
            super::check_interrupted()?;
            let which = series[(round + k) % series.len()];
            let id = format!("{}r{round}-{which}", host::id_prefix());
            match which {
                0 => samples[0].push(bare(&env, &id).await?),
                1 => {
                    let (t, p) = library(&env, &id).await?;
                    for (name, d) in p {
                        match phases.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, v)) => v.push(d),
                            None => phases.push((name, vec![d])),
                        }
                    }
                    samples[1].push(t);
                }
                2 => samples[2].push(via_daemon(&daemon, &id).await?),
                3 => {
                    super::start::wait_for_pool(&pooled).await?;
                    samples[3].push(via_daemon(&pooled, &id).await?)
                }
                _ => samples[4].extend(burst(&daemon, &id, args.clones).await?),
            }
        }
    }
    let mut rows: Vec<Row> = names
        .iter()
        .zip(&samples)
        .map(|(n, s)| Row::new(n, s))
        .collect();
    let baseline = rows[0].median_ms;
    for r in &mut rows {
        r.ratio = Some(r.median_ms / baseline);
    }
    let mut report = Report::new(
        "restore",
        format!(
            "process start (library, daemon: the restore call) to the guest's first whole serial line after resume, from one full snapshot of a 128 MiB polling guest ({FLOOD}); {} restores per series, interleaved, and {bursts} burst(s) of {} concurrent clones through the daemon (each clone from the burst's start); ratio = median / bare firecracker median",
            args.count, args.clones
        ),
    );
    report.rows = rows;
    report.phases = phases.iter().map(|(n, s)| Row::new(n, s)).collect();
    let left = daemon.finish().await?.add(pooled.finish().await?);
    report.leftovers = left.add(guard.finish());
    drop(env);
    report.leftovers.temp_dirs = host::temp_dirs_left();
    Ok(report)
}

/// Copies a snapshot store (root's read-only files, a 0700 directory) into another daemon's.
fn copy_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::create_dir_all(to.parent().expect("under a state dir"))?;
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        std::fs::copy(e.path(), &dest)?;
    }
    Ok(())
}

/// Boots the guest through the daemon, snapshots it once its lines flow, and deletes it (a
/// flooding guest left running would take CPU from every series).
async fn take_snapshot(daemon: &BenchDaemon) -> anyhow::Result<()> {
    let client = daemon.client();
    let id = BenchDaemon::vm_id("source");
    client.create_vm(daemon.create_req(&id, FLOOD)).await?;
    client
        .boot_vm(pb::BootVmRequest { vm_id: id.clone() })
        .await?;
    super::daemon::wait_for_file(
        &daemon.serial_path(&id),
        "WARDEN_FLOOD 1 ",
        Duration::from_millis(5),
        Duration::from_secs(20),
    )
    .await?;
    client
        .snapshot_vm(pb::SnapshotVmRequest {
            vm_id: id.clone(),
            name: SNAPSHOT.into(),
            keep_paused: false,
            ..Default::default()
        })
        .await?;
    client
        .delete_vm(pb::DeleteVmRequest {
            vm_id: id,
            force: true,
        })
        .await?;
    Ok(())
}

/// Bare, unjailed Firecracker: spawned with an API socket, the snapshot loaded from the store
/// with `resume_vm`, timed from the spawn to the first whole line on its stdout.
async fn bare(env: &Env, id: &str) -> anyhow::Result<Duration> {
    let sock = env.tmp.path().join(format!("{id}.sock"));
    // Firecracker's log goes to a file, as warden's does, not into the serial output.
    let log = env.tmp.path().join(format!("{id}.log"));
    std::fs::write(&log, b"")?;
    let mut cmd = Command::new(&env.firecracker);
    cmd.arg("--api-sock")
        .arg(&sock)
        .args(["--id", id, "--log-path"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let mut out = child.stdout.take().expect("piped");
    // The reader notes the moment of the first line, then drains until the process is gone.
    let (tx, rx) = std::sync::mpsc::channel::<Result<Duration, String>>();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut sent = false;
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !sent && seen.len() < 1 << 16 {
                        seen.extend_from_slice(&buf[..n]);
                        if has_first_line(&seen) {
                            let _ = tx.send(Ok(t0.elapsed()));
                            sent = true;
                        }
                    }
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(String::from_utf8_lossy(&seen).into_owned()));
        }
    });
    let loaded = async {
        let client = firecracker_api::Client::new(&sock);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(5),
                "Firecracker's socket {} not up after 5 s",
                sock.display()
            );
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        let path = |name: &str| env.store.join(name).display().to_string();
        client
            .load_snapshot(&SnapshotLoadParams {
                snapshot_path: path(jail::snapshot::STATE_FILE),
                mem_backend: MemoryBackend {
                    backend_type: "File".into(),
                    backend_path: path(jail::snapshot::MEMORY_FILE),
                },
                enable_diff_snapshots: None,
                resume_vm: Some(true),
            })
            .await?;
        let got =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10))).await?;
        match got {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(seen)) => anyhow::bail!("Firecracker ended without a line; output: {seen}"),
            Err(_) => anyhow::bail!("no line from the restored guest after 10 s"),
        }
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = std::fs::remove_file(&sock);
    std::fs::remove_file(&log)?;
    loaded
}

/// The library's restore: jailed like the other series (the bench's parent cgroup and chroot
/// base, a uid leased from the default range).
async fn library(env: &Env, id: &str) -> anyhow::Result<(Duration, Vec<(String, Duration)>)> {
    let options = VmOptions {
        jailer: JailerConfig {
            chroot_base_dir: env.base.clone(),
            jailer_binary: env.jailer.clone(),
            exec_file: env.firecracker.clone(),
            parent_cgroup: env.parent_cgroup.clone(),
            ..JailerConfig::default()
        },
        jailer_mode: JailerMode::Required,
        serial: Serial::Capture,
        ..VmOptions::default()
    };
    let t0 = Instant::now();
    let vm = warden::vm::restore_vm(&env.store, id, &options).await?;
    let started = t0.elapsed();
    loop {
        if has_first_line(vm.serial_output().as_bytes()) {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(10),
            "no line from the restored guest after 10 s; serial: {:?}",
            vm.serial_output()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let t = t0.elapsed();
    let mut phases: Vec<(String, Duration)> =
        vm.phases.iter().map(|(n, d)| (n.to_string(), *d)).collect();
    phases.push(("first line after restore_vm returned".into(), t - started));
    let exit = vm.stop_within(Duration::ZERO).await?;
    anyhow::ensure!(
        exit.cleanup_error.is_none(),
        "cleanup failed: {:?}",
        exit.cleanup_error
    );
    Ok((t, phases))
}

/// Waits until the clone's serial log holds a whole line, polling every `every`.
async fn first_line_in_log(
    daemon: &BenchDaemon,
    id: &str,
    t0: Instant,
    every: Duration,
) -> anyhow::Result<Duration> {
    let serial = daemon.serial_path(id);
    loop {
        if file_has_first_line(&serial) {
            return Ok(t0.elapsed());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "no line in {} after 60 s; daemon log: {}",
            serial.display(),
            daemon.logs()
        );
        tokio::time::sleep(every).await;
    }
}

/// One RestoreVm through the daemon, timed from the call to the clone's first line in its
/// serial log; then (untimed) DeleteVm.
async fn via_daemon(daemon: &BenchDaemon, id: &str) -> anyhow::Result<Duration> {
    let client = daemon.client();
    let t0 = Instant::now();
    client
        .restore_vm(pb::RestoreVmRequest {
            vm_id: id.into(),
            snapshot: SNAPSHOT.into(),
        })
        .await?;
    let t = first_line_in_log(daemon, id, t0, Duration::from_micros(200)).await?;
    client
        .delete_vm(pb::DeleteVmRequest {
            vm_id: id.into(),
            force: true,
        })
        .await?;
    Ok(t)
}

/// `n` RestoreVm calls at once; each clone's time from the common start to its first line.
/// Then (untimed) every clone is deleted.
async fn burst(daemon: &BenchDaemon, prefix: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let client = daemon.client();
    let ids: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("{prefix}-{i}")).collect());
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, ids) = (client.clone(), ids.clone());
        set.spawn(async move {
            client
                .restore_vm(pb::RestoreVmRequest {
                    vm_id: ids[i].clone(),
                    snapshot: SNAPSHOT.into(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("RestoreVm {}: {e}", ids[i]))
        });
    }
    // One poller for all, from the start, while the calls are in flight (n tasks polling n
    // files would take the CPU the clones need).
    let mut failed = Vec::new();
    let mut times = Vec::with_capacity(n);
    let mut pending: Vec<&String> = ids.iter().collect();
    loop {
        while let Some(r) = set.try_join_next() {
            if let Err(e) = r? {
                failed.push(e.to_string());
            }
        }
        pending.retain(|id| {
            if file_has_first_line(&daemon.serial_path(id)) {
                times.push(t0.elapsed());
                false
            } else {
                true
            }
        });
        if set.is_empty() && (pending.is_empty() || !failed.is_empty()) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            failed.push(format!("{} clones printed no line in 120 s", pending.len()));
            while set.join_next().await.is_some() {}
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    daemon.delete_all(8).await?;
    anyhow::ensure!(failed.is_empty(), "the burst failed: {}", failed.join("; "));
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_line_after_resume_counts() {
        // The tail of the line the snapshot interrupted is not a line of its own.
        assert!(!has_first_line(b"........\n"));
        assert!(!has_first_line(b"...\nWARDEN_FLOOD 7 ...."));
        assert!(has_first_line(b"...\nWARDEN_FLOOD 7 ....\n"));
        assert!(!has_first_line(b""));
    }
}
