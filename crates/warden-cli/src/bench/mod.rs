//! `warden bench`: warden's costs measured against bare Firecracker and the bare jailer in the
//! same run, interleaved, so that the noise of a shared machine hits every row alike. Figures
//! are reported as ratios to the baselines.
//!
//! Every scenario cleans up after itself: what it creates lives under names that carry the
//! bench's pid (`/tmp/wb<pid>-*`, jails `bench-<pid>-*`, parent cgroups `wbench-<pid>*`), guards
//! remove it on every path out (errors and Ctrl-C/SIGTERM included), and the report counts what
//! was left on the host (`leftovers`, which must be all zero).

mod daemon;
mod host;
mod profile;
mod recover;
mod restore;
mod scale;
mod start;
mod throughput;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

/// `warden bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Process start to the guest's marker: bare firecracker, bare jailer, `warden run`, the
    /// library, the daemon (CreateVm+BootVm); plus the phases of warden's own path.
    Start(start::StartArgs),
    /// VMs created, booted to the marker, stopped and cleaned per second, at several
    /// concurrencies: the bare jailer, the library and the daemon.
    Throughput(throughput::ThroughputArgs),
    /// N idle VMs held at once through the daemon: start and delete times, memory, API
    /// latency, leftovers.
    Scale(scale::ScaleArgs),
    /// SIGKILL the daemon with N running VMs and time its restart until every VM answers.
    Recover(recover::RecoverArgs),
    /// Restore from a snapshot to the guest's first line after resume: bare unjailed
    /// Firecracker, the library (jailed), the daemon, and N concurrent clones (p50, p99).
    Restore(restore::RestoreArgs),
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once Ctrl-C or SIGTERM arrived: loops stop starting new work.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fails with "interrupted" once Ctrl-C or SIGTERM arrived.
pub(crate) fn check_interrupted() -> anyhow::Result<()> {
    anyhow::ensure!(!interrupted(), "interrupted");
    Ok(())
}

async fn signalled() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    INTERRUPTED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Runs a scenario. On Ctrl-C or SIGTERM the scenario is dropped, and with it every guard:
/// VMs are deleted, the bench's daemon is stopped, jails, cgroups and temp dirs are removed.
pub async fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    host::raise_fd_limit();
    let run = async {
        match args.scenario {
            Scenario::Start(a) => start::run(a).await,
            Scenario::Throughput(a) => throughput::run(a).await,
            Scenario::Scale(a) => scale::run(a).await,
            Scenario::Recover(a) => recover::run(a).await,
            Scenario::Restore(a) => restore::run(a).await,
        }
    };
    let report = tokio::select! {
        biased;
        r = signalled() => {
            r?;
            None
        }
        r = run => Some(r?),
    };
    let Some(report) = report else {
        eprintln!("warden bench: interrupted; everything the bench created was removed");
        return Ok(130);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(0)
}

/// One measured series.
#[derive(Debug, Serialize)]
pub struct Row {
    name: String,
    n: usize,
    median_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Median over the baseline's median (the bare jailer), when this row is compared.
    ratio: Option<f64>,
}

impl Row {
    fn new(name: &str, samples: &[Duration]) -> Self {
        Self {
            name: name.to_owned(),
            n: samples.len(),
            median_ms: quantile_ms(samples, 0.5),
            p95_ms: quantile_ms(samples, 0.95),
            p99_ms: quantile_ms(samples, 0.99),
            max_ms: quantile_ms(samples, 1.0),
            ratio: None,
        }
    }
}

/// The `q` quantile (nearest rank) of `samples`, in milliseconds; NaN when empty.
fn quantile_ms(samples: &[Duration], q: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// A rate: VMs through their whole life (create, boot to the marker, stop, clean) per second.
#[derive(Debug, Serialize)]
pub struct Rate {
    series: String,
    concurrency: usize,
    vms: usize,
    seconds: f64,
    vms_per_s: f64,
    /// `vms_per_s` over the bare jailer's at the same concurrency.
    ratio: Option<f64>,
    /// Busy CPU time of the whole host (all processes: the bench and its polling included)
    /// during the cell, per VM.
    cpu_ms_per_vm: f64,
    /// CPU time of the bench's own processes during the cell, per VM: the bench (its library
    /// VMs and client calls included), its daemon, and every jailer, Firecracker and guest
    /// they reaped. The rest of the host does not count, so it is the steadier figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    tree_cpu_ms_per_vm: Option<f64>,
}

/// One step of `scale`: N idle VMs held at once through the daemon.
#[derive(Debug, Serialize)]
pub struct ScaleStep {
    vms: usize,
    /// Wall time to create and boot all N (with `parallel` requests in flight).
    start_all_s: f64,
    start_vms_per_s: f64,
    /// One VM's CreateVm+BootVm while the others start.
    boot_p50_ms: f64,
    boot_p99_ms: f64,
    /// The daemon's VmRSS with the N VMs running.
    daemon_rss_mib: f64,
    /// (daemon VmRSS now - with no VM) / N.
    daemon_rss_per_vm_kib: f64,
    /// Sum of the Firecracker processes' VmRSS / N.
    firecracker_rss_per_vm_kib: f64,
    /// (MemAvailable before - after starting them) / N: the host's whole cost per VM.
    mem_available_per_vm_kib: f64,
    /// Busy CPU of the whole host while the N VMs idle (1 s), in % of all CPUs.
    idle_cpu_pct: f64,
    list_vms_p50_ms: f64,
    list_vms_p99_ms: f64,
    get_vm_info_p50_ms: f64,
    get_vm_info_p99_ms: f64,
    /// Wall time to delete all N (DeleteVm: Ctrl-Alt-Del, wait, remove jail and cgroups).
    delete_all_s: f64,
    /// Jail directories left under the chroot dir after the deletes (must be 0).
    jail_dirs_left: usize,
    /// cgroup directories left under the parent cgroup after the deletes (must be 0).
    cgroup_dirs_left: usize,
}

/// What the bench's VMs left on the host once it cleaned up. All must be zero.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Leftovers {
    /// Jail directories (`<chroot>/firecracker/<id>`) of the bench's VMs.
    jail_dirs: usize,
    /// cgroup directories of the bench's VMs (any controller).
    cgroup_dirs: usize,
    /// The bench's own parent cgroups (any controller).
    parent_cgroups: usize,
    /// The bench's temp dirs (daemon state, chroot).
    temp_dirs: usize,
    /// Firecracker processes of the bench's VMs still alive.
    processes: usize,
}

impl Leftovers {
    fn add(self, o: Leftovers) -> Leftovers {
        Leftovers {
            jail_dirs: self.jail_dirs + o.jail_dirs,
            cgroup_dirs: self.cgroup_dirs + o.cgroup_dirs,
            parent_cgroups: self.parent_cgroups + o.parent_cgroups,
            temp_dirs: self.temp_dirs + o.temp_dirs,
            processes: self.processes + o.processes,
        }
    }

    fn is_zero(&self) -> bool {
        self.jail_dirs + self.cgroup_dirs + self.parent_cgroups + self.temp_dirs + self.processes
            == 0
    }
}

/// A scenario's result.
#[derive(Debug, Serialize)]
pub struct Report {
    scenario: String,
    machine: String,
    note: String,
    /// Latency series (ms).
    rows: Vec<Row>,
    /// The steps of warden's start path (ms).
    phases: Vec<Row>,
    /// `throughput`: VMs per second by series and concurrency.
    rates: Vec<Rate>,
    /// `scale`: one entry per N.
    steps: Vec<ScaleStep>,
    /// What was left on the host after the bench cleaned up (all zero).
    leftovers: Leftovers,
    /// Steps skipped or anything else worth knowing (e.g. memory ran short).
    warnings: Vec<String>,
    /// `--profile`: where the daemon's CPU went.
    profile: Vec<String>,
}

impl Report {
    fn new(scenario: &str, note: String) -> Self {
        Self {
            scenario: scenario.into(),
            machine: machine(),
            note,
            rows: Vec::new(),
            phases: Vec::new(),
            rates: Vec::new(),
            steps: Vec::new(),
            leftovers: Leftovers::default(),
            warnings: Vec::new(),
            profile: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let mut s = format!(
            "scenario: {}   machine: {}\n{}\n\n",
            self.scenario, self.machine, self.note
        );
        if !self.rows.is_empty() {
            s.push_str(&format!(
                "{:<44} {:>4} {:>10} {:>10} {:>10} {:>10} {:>8}\n",
                "series", "n", "median ms", "p95 ms", "p99 ms", "max ms", "ratio"
            ));
            for r in &self.rows {
                s.push_str(&format!(
                    "{:<44} {:>4} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8}\n",
                    r.name,
                    r.n,
                    r.median_ms,
                    r.p95_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.ratio.map_or("-".into(), |x| format!("{x:.3}"))
                ));
            }
        }
        if !self.phases.is_empty() {
            s.push_str("\nphases of warden's path (jailed):\n");
            for r in &self.phases {
                s.push_str(&format!(
                    "  {:<42} {:>4} {:>10.2} {:>10.2} {:>10.2}\n",
                    r.name, r.n, r.median_ms, r.p95_ms, r.max_ms
                ));
            }
        }
        if !self.rates.is_empty() {
            s.push_str(&format!(
                "\n{:<28} {:>11} {:>5} {:>9} {:>8} {:>8} {:>10} {:>10}\n",
                "series",
                "concurrency",
                "vms",
                "seconds",
                "VMs/s",
                "ratio",
                "CPU ms/VM",
                "host CPU"
            ));
            for r in &self.rates {
                s.push_str(&format!(
                    "{:<28} {:>11} {:>5} {:>9.2} {:>8.2} {:>8} {:>10} {:>10.1}\n",
                    r.series,
                    r.concurrency,
                    r.vms,
                    r.seconds,
                    r.vms_per_s,
                    r.ratio.map_or("-".into(), |x| format!("{x:.3}")),
                    r.tree_cpu_ms_per_vm
                        .map_or("-".into(), |x| format!("{x:.1}")),
                    r.cpu_ms_per_vm
                ));
            }
        }
        if !self.steps.is_empty() {
            s.push_str(&format!(
                "\n{:>5} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}\n",
                "N", "start s", "VMs/s", "boot p50", "boot p99", "dRSS MiB", "dRSS/VM", "fcRSS/VM",
                "memAv/VM", "idle", "list p50", "list p99", "get p50", "get p99", "delete s", "left"
            ));
            s.push_str(&format!(
                "{:>5} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}\n",
                "", "", "", "ms", "ms", "", "KiB", "KiB", "KiB", "CPU%", "ms", "ms", "ms", "ms", "", ""
            ));
            for t in &self.steps {
                s.push_str(&format!(
                    "{:>5} {:>8.2} {:>6.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>9.0} {:>9.0} {:>6.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>5}\n",
                    t.vms,
                    t.start_all_s,
                    t.start_vms_per_s,
                    t.boot_p50_ms,
                    t.boot_p99_ms,
                    t.daemon_rss_mib,
                    t.daemon_rss_per_vm_kib,
                    t.firecracker_rss_per_vm_kib,
                    t.mem_available_per_vm_kib,
                    t.idle_cpu_pct,
                    t.list_vms_p50_ms,
                    t.list_vms_p99_ms,
                    t.get_vm_info_p50_ms,
                    t.get_vm_info_p99_ms,
                    t.delete_all_s,
                    t.jail_dirs_left + t.cgroup_dirs_left,
                ));
            }
        }
        let l = &self.leftovers;
        s.push_str(&format!(
            "\nleft on the host: {} jail dirs, {} cgroup dirs, {} parent cgroups, {} temp dirs, {} processes{}\n",
            l.jail_dirs,
            l.cgroup_dirs,
            l.parent_cgroups,
            l.temp_dirs,
            l.processes,
            if l.is_zero() { " (clean)" } else { " (NOT CLEAN)" }
        ));
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        if !self.profile.is_empty() {
            s.push('\n');
            for l in &self.profile {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// A one-line description of this machine.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = jail::proc::meminfo_kib(std::path::Path::new(jail::proc::PROC), "MemTotal")
        .map_or(0, |kb| kb >> 20);
    let model = jail::proc::cpu_model(std::path::Path::new(jail::proc::PROC)).unwrap_or_default();
    format!("{cpus} CPUs ({model}), {mem} GiB RAM")
}
