//! `warden bench`: warden's costs measured against bare Firecracker and the bare jailer in the
//! same run, interleaved, so that the noise of a shared machine hits every row alike. Figures
//! are reported as ratios to the baselines.

mod start;

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
    /// library; plus the phases of warden's own path.
    Start(start::StartArgs),
}

/// Runs a scenario.
pub async fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    let report = match args.scenario {
        Scenario::Start(a) => start::run(a).await?,
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
    max_ms: f64,
    /// Median over the baseline's median (the bare jailer), when this row is compared.
    ratio: Option<f64>,
}

impl Row {
    fn new(name: &str, samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            name: name.to_owned(),
            n: ms.len(),
            median_ms: pick(0.5),
            p95_ms: pick(0.95),
            max_ms: pick(1.0),
            ratio: None,
        }
    }
}

/// A scenario's result.
#[derive(Debug, Serialize)]
pub struct Report {
    scenario: String,
    machine: String,
    note: String,
    rows: Vec<Row>,
    phases: Vec<Row>,
}

impl Report {
    fn render(&self) -> String {
        let mut s = format!(
            "scenario: {}   machine: {}\n{}\n\n",
            self.scenario, self.machine, self.note
        );
        s.push_str(&format!(
            "{:<34} {:>4} {:>10} {:>10} {:>10} {:>8}\n",
            "series", "n", "median ms", "p95 ms", "max ms", "ratio"
        ));
        for r in &self.rows {
            s.push_str(&format!(
                "{:<34} {:>4} {:>10.2} {:>10.2} {:>10.2} {:>8}\n",
                r.name,
                r.n,
                r.median_ms,
                r.p95_ms,
                r.max_ms,
                r.ratio.map_or("-".into(), |x| format!("{x:.3}"))
            ));
        }
        if !self.phases.is_empty() {
            s.push_str("\nphases of warden's path (library, jailed):\n");
            for r in &self.phases {
                s.push_str(&format!(
                    "  {:<32} {:>4} {:>10.2} {:>10.2} {:>10.2}\n",
                    r.name, r.n, r.median_ms, r.p95_ms, r.max_ms
                ));
            }
        }
        s
    }
}

/// A one-line description of this machine.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 20);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), {mem} GiB RAM")
}
