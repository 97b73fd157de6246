//! `warden bench scale`: N idle jailed VMs (`mode=idle`) held at once through the bench's
//! daemon, for N = 100, 250, 500, 1000 (up to `--max`), each step from an empty daemon:
//! - the time to create and boot them all (`--parallel` requests in flight);
//! - the daemon's RSS, its growth per VM, Firecracker's RSS per VM, and MemAvailable's drop
//!   per VM (the host's whole cost: guest pages touched, page tables, KVM, cgroups);
//! - ListVms and GetVmInfo latency (`--calls` each) with N VMs held;
//! - the time to delete them all, and the jail and cgroup directories left afterwards (0).
//!
//! Before each step the bench checks MemAvailable (against the cost per VM measured so far)
//! and the kernel's thread limits, and stops with a warning when N would not fit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use warden_api::pb;

use super::daemon::{self, BenchDaemon};
use super::host::{self, pool};
use super::{quantile_ms, Report, ScaleStep};

/// Arguments of `warden bench scale`.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Largest N.
    #[arg(long, default_value_t = 1000)]
    max: usize,
    /// The Ns to measure, comma-separated (those above --max are skipped).
    #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000")]
    steps: Vec<usize>,
    /// CreateVm+BootVm (and DeleteVm) requests in flight.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// ListVms and GetVmInfo calls timed at each step.
    #[arg(long, default_value_t = 50)]
    calls: usize,
    /// Record a CPU profile of the daemon (and what it starts) with `perf record` into this
    /// file while the bench runs, and add the hottest symbols to the report.
    #[arg(long, value_name = "FILE")]
    profile: Option<std::path::PathBuf>,
}

/// Memory kept free for the host while the bench runs.
const RESERVE_KIB: u64 = 1 << 20;

/// Runs the scenario.
pub async fn run(args: ScaleArgs) -> anyhow::Result<Report> {
    let mut steps: Vec<usize> = args
        .steps
        .iter()
        .copied()
        .filter(|n| *n > 0 && *n <= args.max)
        .collect();
    if args.steps.iter().any(|n| *n > args.max) && !steps.contains(&args.max) && args.max > 0 {
        steps.push(args.max);
    }
    anyhow::ensure!(!steps.is_empty(), "no step: give --steps and --max");
    let daemon = Arc::new(BenchDaemon::start(true)?);
    let profile = super::profile::Profile::start_if(args.profile.as_deref(), daemon.pid())?;
    let mut report = Report::new(
        "scale",
        format!(
            "N idle jailed VMs (1 vCPU, 128 MiB, mode=idle) held at once through warden serve (pidns on, the daemon's default); {} requests in flight for starts and deletes; {} ListVms/GetVmInfo calls per step",
            args.parallel, args.calls
        ),
    );
    // The host's cost per VM assumed before the first step measures it (an idle test guest
    // touches little of its 128 MiB; measured here: about 1-3 MiB).
    let mut est_kib: u64 = 16 << 10;
    for &n in &steps {
        super::check_interrupted()?;
        let avail = host::mem_available_kib();
        let need = n as u64 * est_kib + RESERVE_KIB;
        if avail < need {
            report.warnings.push(format!(
                "stopped before N={n}: MemAvailable is {} MiB, {n} VMs need about {} MiB (at {} KiB per VM measured so far, plus {} MiB kept free)",
                avail >> 10,
                need >> 10,
                est_kib,
                RESERVE_KIB >> 10
            ));
            break;
        }
        if let Some(w) = threads_short(n) {
            report.warnings.push(format!("stopped before N={n}: {w}"));
            break;
        }
        let step = match one_step(&daemon, n, &args).await {
            Ok(step) => step,
            Err(e) => {
                super::check_interrupted()?;
                // Keep what the earlier steps measured; the VMs of this one are deleted below.
                report.warnings.push(format!("N={n} failed: {e:#}"));
                break;
            }
        };
        est_kib = ((step
            .mem_available_per_vm_kib
            .max(step.firecracker_rss_per_vm_kib)
            * 1.3) as u64)
            .max(4 << 10);
        let dirty = step.jail_dirs_left + step.cgroup_dirs_left > 0;
        report.steps.push(step);
        if dirty {
            report
                .warnings
                .push(format!("N={n}: the deletes left host resources behind"));
            break;
        }
    }
    if let Some(p) = profile {
        p.finish_into(&mut report);
    }
    let daemon = Arc::into_inner(daemon).context("daemon still shared")?;
    report.leftovers = daemon.finish().await?;
    report.leftovers.temp_dirs = host::temp_dirs_left();
    Ok(report)
}

/// Why `n` more VMs would not fit the kernel's thread limits, if they would not.
fn threads_short(n: usize) -> Option<String> {
    let proc_root = std::path::Path::new(jail::proc::PROC);
    let limit = jail::proc::kernel_u64(proc_root, "pid_max")?
        .min(jail::proc::kernel_u64(proc_root, "threads-max")?);
    let now = jail::proc::task_count(proc_root)?;
    // A jailed Firecracker with one vCPU runs about 4 threads; keep a margin.
    let need = n as u64 * 6;
    (now + need > limit * 9 / 10).then(|| {
        format!("{now} threads run, {n} VMs need about {need} more, and the limit is {limit}")
    })
}

async fn one_step(
    daemon: &Arc<BenchDaemon>,
    n: usize,
    args: &ScaleArgs,
) -> anyhow::Result<ScaleStep> {
    let dpid = daemon.pid().context("daemon not running")?;
    let rss_idle = host::rss_kib(dpid);
    let avail_before = host::mem_available_kib();
    let ids: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|i| BenchDaemon::vm_id(&format!("s{n}-{i}")))
            .collect(),
    );

    let t0 = Instant::now();
    let boots = {
        let (daemon, ids) = (daemon.clone(), ids.clone());
        pool(n, args.parallel, move |i| {
            let (daemon, ids) = (daemon.clone(), ids.clone());
            async move {
                let client = daemon.client();
                let t = Instant::now();
                client
                    .create_vm(daemon.create_req(&ids[i], daemon::IDLE))
                    .await
                    .with_context(|| format!("CreateVm {}", ids[i]))?;
                client
                    .boot_vm(pb::BootVmRequest {
                        vm_id: ids[i].clone(),
                    })
                    .await
                    .with_context(|| format!("BootVm {}: {}", ids[i], daemon.logs()))?;
                Ok(t.elapsed())
            }
        })
        .await?
    };
    let start_all = t0.elapsed();

    // Untimed: every guest really is up (its marker is in its serial log).
    {
        let (daemon, ids) = (daemon.clone(), ids.clone());
        pool(n, 16, move |i| {
            let (daemon, ids) = (daemon.clone(), ids.clone());
            async move {
                daemon::wait_for_file(
                    &daemon.serial_path(&ids[i]),
                    daemon::MARKER,
                    Duration::from_millis(10),
                    Duration::from_secs(60),
                )
                .await
            }
        })
        .await?;
    }
    let (cpu0, t_idle) = (host::cpu_busy_ms(), Instant::now());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let idle_cpu_pct =
        (host::cpu_busy_ms() - cpu0) / (t_idle.elapsed().as_secs_f64() * 1e3 * cpus) * 100.0;

    let client = daemon.client();
    let list = client.list_all_vms(Vec::new()).await?;
    anyhow::ensure!(list.len() == n, "ListVms shows {} VMs, not {n}", list.len());
    let running = list
        .iter()
        .filter(|v| v.state == pb::VmState::Running as i32)
        .count();
    anyhow::ensure!(running == n, "{running} of {n} VMs running");
    let fc_rss: u64 = list.iter().map(|v| host::rss_kib(v.details().pid)).sum();
    let rss = host::rss_kib(dpid);
    let avail_after = host::mem_available_kib();

    let mut list_t = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        super::check_interrupted()?;
        let t = Instant::now();
        let got = client.list_all_vms(Vec::new()).await?.len();
        list_t.push(t.elapsed());
        anyhow::ensure!(got == n, "ListVms shows {got} VMs, not {n}");
    }
    let mut get_t = Vec::with_capacity(args.calls);
    for k in 0..args.calls {
        super::check_interrupted()?;
        let id = ids[(k * 7919) % n].clone();
        let t = Instant::now();
        client
            .get_vm_info(pb::GetVmInfoRequest { vm_id: id })
            .await?;
        get_t.push(t.elapsed());
    }

    let t1 = Instant::now();
    {
        let (daemon, ids) = (daemon.clone(), ids.clone());
        pool(n, args.parallel, move |i| {
            let (daemon, ids) = (daemon.clone(), ids.clone());
            async move {
                daemon
                    .client()
                    .delete_vm(pb::DeleteVmRequest {
                        vm_id: ids[i].clone(),
                        force: false,
                    })
                    .await
                    .with_context(|| format!("DeleteVm {}", ids[i]))?;
                Ok(())
            }
        })
        .await?;
    }
    let delete_all = t1.elapsed();
    let (jails, cgroups) = host::traces(daemon.chroot(), daemon.parent_cgroup());

    let per_vm = |kib: f64| kib / n as f64;
    Ok(ScaleStep {
        vms: n,
        start_all_s: start_all.as_secs_f64(),
        start_vms_per_s: n as f64 / start_all.as_secs_f64(),
        boot_p50_ms: quantile_ms(&boots, 0.5),
        boot_p99_ms: quantile_ms(&boots, 0.99),
        daemon_rss_mib: rss as f64 / 1024.0,
        daemon_rss_per_vm_kib: per_vm(rss as f64 - rss_idle as f64),
        firecracker_rss_per_vm_kib: per_vm(fc_rss as f64),
        mem_available_per_vm_kib: per_vm(avail_before as f64 - avail_after as f64),
        idle_cpu_pct,
        list_vms_p50_ms: quantile_ms(&list_t, 0.5),
        list_vms_p99_ms: quantile_ms(&list_t, 0.99),
        get_vm_info_p50_ms: quantile_ms(&get_t, 0.5),
        get_vm_info_p99_ms: quantile_ms(&get_t, 0.99),
        delete_all_s: delete_all.as_secs_f64(),
        jail_dirs_left: jails,
        cgroup_dirs_left: cgroups,
    })
}
