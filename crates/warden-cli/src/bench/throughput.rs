//! `warden bench throughput`: VMs created, booted to the marker, stopped and fully cleaned per
//! second, with 1, 2, 4 and 8 of them in flight.
//!
//! Series (each VM is the test guest with `mode=poweroff`, which powers off after the marker):
//! - `bare jailer`: `start`'s bare-jailer loop (prepare the chroot, run the jailer to the
//!   guest's exit, remove the jail and cgroups), N threads in parallel;
//! - `library start_vm`: `warden::vm::start_vm` then `wait()`, N tasks;
//! - `daemon`: CreateVm, WatchVms of the VM, BootVm, `stopped` as WatchVms reports it (then the
//!   marker is checked in the serial log, untimed), DeleteVm, N VMs at a time through one
//!   client (one per cell, its connections kept). Nothing is polled.
//!
//! A cell (series × concurrency) runs `--count` VMs, split over `--rounds` rounds; each round
//! runs every cell in a rotated order, so slow phases of the machine hit all series alike.
//! VMs/s = VMs / summed wall time of the cell's chunks. The phases are those of warden's paths
//! (library: `start_vm`'s steps; daemon: each RPC and wait), per concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use warden_api::pb;

use super::daemon::{self, BenchDaemon};
use super::host::{self, pool};
use super::start::{bare_jailer, library_config, Env};
use super::{Rate, Report, Row};

/// Named durations of one VM's life.
type Phases = Vec<(String, Duration)>;

/// Arguments of `warden bench throughput`.
#[derive(Args, Debug)]
pub struct ThroughputArgs {
    /// VMs per series and concurrency.
    #[arg(long, default_value_t = 40)]
    count: usize,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    concurrency: Vec<usize>,
    /// Rounds each cell's count is split over (cells rotate order every round).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Base directory of the bare and library jails.
    #[arg(long, default_value = "/srv/jailer")]
    chroot_base: std::path::PathBuf,
    /// Give each Firecracker of the library and daemon series its own PID namespace (their
    /// default; off here so that they run the bare jailer's flags).
    #[arg(long, alias = "daemon-pidns")]
    pidns: bool,
    /// The series to run, comma-separated: bare, library, daemon (ratios need bare). One series
    /// alone suits a host-wide profile, e.g. `perf record -a -g -- warden bench throughput
    /// --series library`.
    #[arg(long, value_delimiter = ',', default_value = "bare,library,daemon", value_parser = ["bare", "library", "daemon"])]
    series: Vec<String>,
    /// Record a CPU profile of the daemon (and what it starts) with `perf record` into this
    /// file while the bench runs, and add the hottest symbols to the report.
    #[arg(long, value_name = "FILE")]
    profile: Option<std::path::PathBuf>,
}

const SERIES: [&str; 3] = ["bare jailer", "library start_vm", "daemon"];

/// Runs the scenario.
pub async fn run(args: ThroughputArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    anyhow::ensure!(
        !args.concurrency.is_empty() && args.concurrency.iter().all(|c| *c > 0),
        "--concurrency takes positive numbers, e.g. 1,2,4,8"
    );
    let env = Arc::new(Env::new(&args.chroot_base, args.pidns)?);
    let guard = env.guard();
    let daemon = Arc::new(BenchDaemon::start(args.pidns)?);
    let profile = super::profile::Profile::start_if(args.profile.as_deref(), daemon.pid())?;
    let rounds = args.rounds.clamp(1, args.count);
    let chosen: Vec<usize> = (0..SERIES.len())
        .filter(|&s| {
            args.series
                .iter()
                .any(|a| SERIES[s].starts_with(a.as_str()))
        })
        .collect();
    let cells: Vec<(usize, usize)> = args
        .concurrency
        .iter()
        .flat_map(|c| chosen.iter().map(move |s| (*s, *c)))
        .collect();
    // Per cell: wall time, VMs done, per-VM latencies.
    let mut wall = vec![Duration::ZERO; cells.len()];
    let mut done = vec![0usize; cells.len()];
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); cells.len()];
    let mut cpu = vec![0f64; cells.len()];
    let mut tree = vec![0f64; cells.len()];
    let daemon_pid: Vec<u32> = daemon.pid().into_iter().collect();
    let mut phases: Vec<(String, Vec<Duration>)> = Vec::new();
    let seq = Arc::new(AtomicUsize::new(0));
    for round in 0..rounds {
        // This round's share of the count (the first rounds take the remainder).
        let n = args.count / rounds + usize::from(round < args.count % rounds);
        for k in 0..cells.len() {
            super::check_interrupted()?;
            // Rotate by a stride coprime with the series count so that both the series order and
            // the concurrency order change from round to round.
            let idx = (k + round * (chosen.len() + 1)) % cells.len();
            let (series, conc) = cells[idx];
            let cpu0 = host::cpu_busy_ms();
            let tree0 = host::tree_cpu_ms(&daemon_pid);
            let (t, l) = match series {
                0 => bare_cell(env.clone(), conc, n, seq.clone()).await?,
                1 => library_cell(env.clone(), conc, n, seq.clone()).await?,
                _ => daemon_cell(daemon.clone(), conc, n, seq.clone()).await?,
            };
            cpu[idx] += host::cpu_busy_ms() - cpu0;
            tree[idx] += host::tree_cpu_ms(&daemon_pid) - tree0;
            let l: Vec<Duration> = l
                .into_iter()
                .map(|(total, p)| {
                    for (name, d) in p {
                        let name = format!("x{conc} {name}");
                        match phases.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, v)) => v.push(d),
                            None => phases.push((name, vec![d])),
                        }
                    }
                    total
                })
                .collect();
            wall[idx] += t;
            done[idx] += l.len();
            lat[idx].extend(l);
        }
    }
    let mut report = Report::new(
        "throughput",
        format!(
            "VMs created, booted to the marker, stopped and cleaned per second; {} VMs per cell in {rounds} rounds, cells interleaved; ratio = VMs/s / bare jailer VMs/s at the same concurrency; rows: one VM's whole life under that load",
            args.count
        ),
    );
    for (idx, &(series, conc)) in cells.iter().enumerate() {
        let vms_per_s = done[idx] as f64 / wall[idx].as_secs_f64();
        report.rates.push(Rate {
            series: SERIES[series].into(),
            concurrency: conc,
            vms: done[idx],
            seconds: wall[idx].as_secs_f64(),
            vms_per_s,
            ratio: None,
            cpu_ms_per_vm: cpu[idx] / done[idx].max(1) as f64,
            tree_cpu_ms_per_vm: Some(tree[idx] / done[idx].max(1) as f64),
        });
        let mut row = Row::new(&format!("{} x{conc}", SERIES[series]), &lat[idx]);
        let base = cells.iter().position(|&(s, c)| s == 0 && c == conc);
        if let Some(b) = base {
            row.ratio = Some(row.median_ms / super::quantile_ms(&lat[b], 0.5));
        }
        report.rows.push(row);
    }
    for i in 0..report.rates.len() {
        let (conc, rate) = (report.rates[i].concurrency, report.rates[i].vms_per_s);
        let base = report
            .rates
            .iter()
            .find(|r| r.series == SERIES[0] && r.concurrency == conc)
            .map(|r| r.vms_per_s);
        report.rates[i].ratio = base.map(|b| rate / b);
    }
    phases.sort_by_key(|(name, _)| {
        let conc: usize = name[1..]
            .split(' ')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        (conc, name.contains("daemon"))
    });
    report.phases = phases.iter().map(|(n, s)| Row::new(n, s)).collect();
    if let Some(p) = profile {
        p.finish_into(&mut report);
    }
    let daemon = Arc::into_inner(daemon).context("daemon still shared")?;
    let left = daemon.finish().await?;
    report.leftovers = left.add(guard.finish());
    drop(env);
    report.leftovers.temp_dirs = host::temp_dirs_left();
    Ok(report)
}

fn next_id(seq: &AtomicUsize) -> String {
    format!(
        "{}t{}",
        host::id_prefix(),
        seq.fetch_add(1, Ordering::Relaxed)
    )
}

/// `n` bare-jailer VMs with `conc` threads; the cell's wall time and each VM's time.
async fn bare_cell(
    env: Arc<Env>,
    conc: usize,
    n: usize,
    seq: Arc<AtomicUsize>,
) -> anyhow::Result<(Duration, Vec<(Duration, Phases)>)> {
    tokio::task::spawn_blocking(move || {
        let next = AtomicUsize::new(0);
        let lat = Mutex::new(Vec::new());
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..conc.min(n))
                .map(|_| {
                    s.spawn(|| -> anyhow::Result<()> {
                        while next.fetch_add(1, Ordering::Relaxed) < n {
                            super::check_interrupted()?;
                            let t = Instant::now();
                            bare_jailer(&env, &next_id(&seq))?;
                            lat.lock().unwrap().push((t.elapsed(), Vec::new()));
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("bare jailer worker panicked"))
        })?;
        Ok((t0.elapsed(), lat.into_inner().unwrap()))
    })
    .await?
}

/// `n` library VMs with `conc` tasks: start_vm, the marker, wait() for the power-off and the
/// cleanup.
async fn library_cell(
    env: Arc<Env>,
    conc: usize,
    n: usize,
    seq: Arc<AtomicUsize>,
) -> anyhow::Result<(Duration, Vec<(Duration, Phases)>)> {
    let t0 = Instant::now();
    let lat = pool(n, conc, move |_| {
        let (env, seq) = (env.clone(), seq.clone());
        async move {
            let t = Instant::now();
            let (config, options) = library_config(&env, &next_id(&seq));
            let vm = warden::vm::start_vm(&config, &options).await?;
            let started = t.elapsed();
            let mut p: Phases = vm
                .phases
                .iter()
                .map(|(n, d)| (format!("library: {n}"), *d))
                .collect();
            anyhow::ensure!(
                vm.wait_for_serial(daemon::MARKER, Duration::from_secs(20))
                    .await,
                "no marker from {}",
                vm.vm_id
            );
            let marked = t.elapsed();
            p.push(("library: marker after start".into(), marked - started));
            let exit = vm.wait().await;
            p.push((
                "library: wait (power-off + cleanup)".into(),
                t.elapsed() - marked,
            ));
            anyhow::ensure!(
                matches!(exit.reason, warden::vm::ExitReason::GuestPowerOff),
                "{} ended with {} instead of a power-off: {}",
                vm.vm_id,
                exit.reason,
                exit.output
            );
            anyhow::ensure!(
                exit.cleanup_error.is_none(),
                "cleanup failed: {:?}",
                exit.cleanup_error
            );
            Ok((t.elapsed(), p))
        }
    })
    .await?;
    Ok((t0.elapsed(), lat))
}

/// `n` daemon VMs with `conc` clients: CreateVm, BootVm, the marker in the serial log, state
/// `stopped` (the guest powered off and the daemon cleaned its jail), DeleteVm.
async fn daemon_cell(
    daemon: Arc<BenchDaemon>,
    conc: usize,
    n: usize,
    seq: Arc<AtomicUsize>,
) -> anyhow::Result<(Duration, Vec<(Duration, Phases)>)> {
    // One client for the cell, as a control plane holds one: its connections are kept and
    // shared by the VMs' calls.
    let client = daemon.client();
    let t0 = Instant::now();
    let lat = pool(n, conc, move |_| {
        let (daemon, seq, client) = (daemon.clone(), seq.clone(), client.clone());
        async move {
            let id = next_id(&seq);
            let t = Instant::now();
            client
                .create_vm(daemon.create_req(&id, daemon::POWEROFF))
                .await
                .with_context(|| format!("CreateVm {id}"))?;
            let created = t.elapsed();
            // Told by the daemon, not polled: the bench's own CPU stays out of the figures.
            let mut events = client
                .watch_vms(pb::WatchVmsRequest { vm_id: id.clone() })
                .await
                .with_context(|| format!("WatchVms {id}"))?;
            client
                .boot_vm(pb::BootVmRequest { vm_id: id.clone() })
                .await
                .with_context(|| format!("BootVm {id}"))?;
            let booted = t.elapsed();
            daemon::until_state(
                &mut events,
                &id,
                pb::VmState::Shutdown,
                Duration::from_secs(20),
            )
            .await?;
            let stopped = t.elapsed();
            drop(events);
            // The guest powers off right after its marker: the marker is checked, not timed.
            let serial = std::fs::read(daemon.serial_path(&id)).unwrap_or_default();
            anyhow::ensure!(
                serial
                    .windows(daemon::MARKER.len())
                    .any(|w| w == daemon::MARKER.as_bytes()),
                "{id} stopped without its marker: {}",
                String::from_utf8_lossy(&serial)
            );
            client
                .delete_vm(pb::DeleteVmRequest {
                    vm_id: id.clone(),
                    force: false,
                })
                .await
                .with_context(|| format!("DeleteVm {id}"))?;
            let total = t.elapsed();
            let p: Phases = vec![
                ("daemon: CreateVm".into(), created),
                ("daemon: BootVm".into(), booted - created),
                (
                    "daemon: stopped after BootVm (WatchVms)".into(),
                    stopped - booted,
                ),
                ("daemon: DeleteVm".into(), total - stopped),
            ];
            Ok((total, p))
        }
    })
    .await?;
    Ok((t0.elapsed(), lat))
}
