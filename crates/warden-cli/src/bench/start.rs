//! `warden bench start`: from process start to the guest's marker on the serial console.
//!
//! Series, interleaved round by round (the order rotates every round):
//! - `bare firecracker`: `firecracker --no-api --config-file`, no jail (the floor);
//! - `bare jailer`: the jailer run by hand, with the chroot prepared beforehand (kernel linked,
//!   config file written) and the same cgroup values warden passes; preparation and cleanup are
//!   not timed;
//! - `warden run`: the CLI, jailed, from exec to the marker on its stdout;
//! - `library start_vm`: `warden::vm::start_vm`, jailed, from the call to the marker;
//! - `daemon CreateVm+BootVm`: through a `warden serve` the bench started (its own state dir,
//!   chroot dir, parent cgroup and port), from the CreateVm call to the marker in the VM's
//!   serial log file; then (untimed) wait for `stopped` and DeleteVm;
//! - `daemon from pool`: the same through a second daemon with a warm pool (`pool_size` 2),
//!   whose every boot takes a warm jail: before each, the bench waits (untimed) until the pool
//!   is full again, and the report's note gives the daemon's own count of hits and misses.
//!
//! Each boot ends with the guest powering off; the next starts after the previous is cleaned.
//! The jailed series share one parent cgroup of the bench's own (removed at the end).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use warden::vm::config::{JailerMode, Serial, VmConfig, VmOptions};
use warden::vm::jailer::JailerConfig;

use super::daemon::{self, BenchDaemon};
use super::host::{self, HostGuard};
use super::{Report, Row};

/// Arguments of `warden bench start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Boots per series.
    #[arg(long, default_value_t = 30)]
    count: usize,
    /// Base directory of jails.
    #[arg(long, default_value = "/srv/jailer")]
    chroot_base: PathBuf,
    /// Give each Firecracker of the library and daemon series its own PID namespace (their
    /// default; off here so that they run the bare jailer's flags).
    #[arg(long, alias = "daemon-pidns")]
    pidns: bool,
}

const MARKER: &str = "WARDEN_MARKER bench";
const BOOT_ARGS: &str = "mode=poweroff marker=bench";

/// What the bare and library series need: binaries, the jail base, the parent cgroup.
pub(super) struct Env {
    firecracker: PathBuf,
    jailer: PathBuf,
    kernel: PathBuf,
    base: PathBuf,
    pub(super) parent_cgroup: String,
    tmp: tempfile::TempDir,
    /// The library series' options, made once as a library user would (their defaults look
    /// for the binaries on disk).
    library_options: VmOptions,
}

impl Env {
    /// `pidns`: the library's Firecrackers get their own PID namespace (its default; the bare
    /// jailer's have none).
    pub(super) fn new(chroot_base: &Path, pidns: bool) -> anyhow::Result<Self> {
        let firecracker = need(warden::assets::firecracker())?;
        let jailer = need(warden::assets::jailer())?;
        let parent_cgroup = host::cgroup_prefix();
        let library_options = VmOptions {
            boot_args: Some(BOOT_ARGS.into()),
            jailer: JailerConfig {
                chroot_base_dir: chroot_base.to_owned(),
                jailer_binary: jailer.clone(),
                exec_file: firecracker.clone(),
                parent_cgroup: parent_cgroup.clone(),
                new_pid_ns: pidns,
                ..JailerConfig::default()
            },
            jailer_mode: JailerMode::Required,
            serial: Serial::Capture,
            ..VmOptions::default()
        };
        Ok(Env {
            firecracker,
            jailer,
            kernel: need(warden::assets::testguest())?,
            base: chroot_base.to_owned(),
            parent_cgroup,
            tmp: tempfile::Builder::new()
                .prefix(&host::tmp_prefix())
                .tempdir_in("/tmp")?,
            library_options,
        })
    }

    /// A guard that removes whatever the bare and library VMs left, whatever happens.
    pub(super) fn guard(&self) -> HostGuard {
        HostGuard {
            chroot_base: self.base.clone(),
            parent_cgroup: self.parent_cgroup.clone(),
        }
    }
}

/// Runs the scenario.
pub async fn run(args: StartArgs) -> anyhow::Result<Report> {
    let env = Env::new(&args.chroot_base, args.pidns)?;
    let guard = env.guard();
    let daemon = BenchDaemon::start(args.pidns)?;
    let pooled = BenchDaemon::start_with(args.pidns, &[("WARDEN_POOL_SIZE", POOL)])?;
    let names = [
        "bare firecracker",
        "bare jailer",
        "warden run (jailed)",
        "library start_vm (jailed)",
        "daemon CreateVm+BootVm (jailed)",
        "daemon from pool (jailed)",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut phases: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut add_phases = |p: Vec<(String, Duration)>| {
        for (name, d) in p {
            match phases.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(d),
                None => phases.push((name, vec![d])),
            }
        }
    };
    for round in 0..args.count {
        for k in 0..names.len() {
            super::check_interrupted()?;
            let which = (round + k) % names.len();
            let id = format!("{}{round}-{which}", host::id_prefix());
            let t = match which {
                0 => bare_firecracker(&env, &id)?,
                1 => bare_jailer(&env, &id)?,
                2 => warden_run(&env, &id)?,
                3 => {
                    let (t, p) = library(&env, &id).await?;
                    add_phases(p);
                    t
                }
                4 => {
                    let (t, p) = via_daemon(&daemon, &id).await?;
                    add_phases(p);
                    t
                }
                _ => {
                    wait_for_pool(&pooled).await?;
                    via_daemon(&pooled, &id).await?.0
                }
            };
            samples[which].push(t);
        }
    }
    let mut rows: Vec<Row> = names
        .iter()
        .zip(&samples)
        .map(|(n, s)| Row::new(n, s))
        .collect();
    let baseline = rows[1].median_ms;
    for r in rows.iter_mut().skip(1) {
        r.ratio = Some(r.median_ms / baseline);
    }
    rows[0].ratio = Some(rows[0].median_ms / baseline);
    let pool = pool_counts(&pooled.metrics().await.unwrap_or_default());
    let mut report = Report::new(
        "start",
        format!(
            "process start (daemon: CreateVm call) to guest marker, {} boots per series, interleaved; ratio = median / bare jailer median; daemon pidns {}; pool {} (hits {}, misses {})",
            args.count,
            if args.pidns { "on" } else { "off" },
            POOL,
            pool.0,
            pool.1
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

/// The pooled daemon's `pool_size`.
pub(super) const POOL: &str = "2";

/// Waits (untimed) until the pooled daemon's pool is full again after the previous boot.
pub(super) async fn wait_for_pool(d: &BenchDaemon) -> anyhow::Result<()> {
    let want: usize = POOL.parse().expect("a number");
    let t0 = Instant::now();
    while d.warm_jails_ready() < want {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "the pool did not refill; daemon log: {}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// `(hits, misses)` from `warden_pool_boots_total` in a `/metrics` text.
fn pool_counts(metrics: &str) -> (u64, u64) {
    let count = |result: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("warden_pool_boots_total{{result=\"{result}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    (count("hit"), count("miss"))
}

pub(super) fn need(p: PathBuf) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        p.is_file(),
        "{} is missing: run scripts/setup-assets.sh",
        p.display()
    );
    Ok(p)
}

/// Spawns `cmd` with stdout piped and returns the time until `MARKER` appears, then waits for
/// the process to exit.
fn time_to_marker(mut cmd: Command) -> anyhow::Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let mut out = child.stdout.take().expect("piped");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let elapsed = loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            let _ = child.wait();
            anyhow::bail!("no marker; output: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
            break t0.elapsed();
        }
    };
    let _ = std::io::copy(&mut out, &mut std::io::sink());
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "exited with {status}");
    Ok(elapsed)
}

fn vm_json(kernel: &str) -> String {
    serde_json::json!({
        "boot-source": { "kernel_image_path": kernel, "boot_args": BOOT_ARGS },
        "drives": [],
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 }
    })
    .to_string()
}

fn bare_firecracker(env: &Env, id: &str) -> anyhow::Result<Duration> {
    let cfg = env.tmp.path().join(format!("{id}.json"));
    std::fs::write(&cfg, vm_json(&env.kernel.display().to_string()))?;
    // Firecracker's log goes to a file, as warden's does, not into the serial output.
    let log = env.tmp.path().join(format!("{id}.log"));
    std::fs::write(&log, b"")?;
    let mut cmd = Command::new(&env.firecracker);
    cmd.args(["--no-api", "--id", id, "--config-file"])
        .arg(&cfg)
        .arg("--log-path")
        .arg(&log);
    let t = time_to_marker(cmd);
    std::fs::remove_file(&cfg)?;
    std::fs::remove_file(&log)?;
    t
}

/// The jail of one bare-jailer boot: warden's own plan (jailer argv with the host's cgroup
/// version, paths, cgroup values), with Firecracker booting from a config file instead of the
/// API. Nothing is staged or reserved: the bench prepares the chroot itself.
fn bare_jailer_plan(env: &Env, id: &str) -> anyhow::Result<jail::JailPlan> {
    let hierarchy = jail::cgroup::Hierarchy::host()?;
    let spec = jail::JailSpec {
        id: jail::JailId::new(id)?,
        jailed: true,
        jailer_binary: env.jailer.clone(),
        exec_file: env.firecracker.clone(),
        uid: BARE_JAILER_ID,
        gid: BARE_JAILER_ID,
        chroot_base_dir: env.base.clone(),
        cgroup_version: hierarchy.default_version(),
        parent_cgroup: env.parent_cgroup.clone(),
        // What warden gives a 128 MiB, one-vCPU guest.
        limits: jail::CgroupLimits {
            memory_bytes: Some(192 << 20),
            cpu_quota_pct: Some(100),
            pids_max: Some(1024),
            hugetlb_deny: hierarchy.hugepage_sizes.clone(),
            ..Default::default()
        },
        explicit_limits: Vec::new(),
        strict_cgroups: false,
        resource_limits: jail::ResourceLimits {
            no_file: Some(2048),
            fsize: None,
        },
        fsize_headroom: None,
        new_pid_ns: false,
        netns: None,
        make_netns: false,
        net: None,
        files: Vec::new(),
        sys_root: jail::spec::SYS.into(),
    };
    Ok(spec.plan_with_firecracker_args(
        &hierarchy,
        &[
            "--no-api",
            "--config-file",
            "/vm.json",
            "--log-path",
            jail::plan::LOG_IN_JAIL,
        ],
    )?)
}

/// The uid and gid of the bare jailer's Firecracker.
const BARE_JAILER_ID: u32 = 10000;

pub(super) fn bare_jailer(env: &Env, id: &str) -> anyhow::Result<Duration> {
    use std::os::unix::fs::chown;
    let plan = bare_jailer_plan(env, id)?;
    let root = &plan.root_dir;
    std::fs::create_dir_all(root)?;
    std::fs::hard_link(&env.kernel, root.join("kernel"))
        .or_else(|_| std::fs::copy(&env.kernel, root.join("kernel")).map(|_| ()))?;
    std::fs::write(root.join("vm.json"), vm_json("/kernel"))?;
    chown(root.join("vm.json"), Some(plan.uid), Some(plan.gid))?;
    // Firecracker's log goes to a file in the jail, as warden's does.
    std::fs::write(&plan.log_file, b"")?;
    chown(&plan.log_file, Some(plan.uid), Some(plan.gid))?;
    let mut cmd = Command::new(&plan.argv[0]);
    cmd.args(&plan.argv[1..]);
    let t = time_to_marker(cmd);
    std::fs::remove_dir_all(&plan.jail_dir)?;
    for dir in &plan.cgroup_dirs {
        let _ = jail::cgroup::remove(std::slice::from_ref(dir), Duration::from_secs(2));
    }
    t
}

fn warden_run(env: &Env, id: &str) -> anyhow::Result<Duration> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["run", "--require-jailer", "--id", id, "--kernel"])
        .arg(&env.kernel)
        .args(["--boot-args", BOOT_ARGS, "--chroot-base"])
        .arg(&env.base)
        .args(["--parent-cgroup", &env.parent_cgroup]);
    time_to_marker(cmd)
}

/// The library's configuration of one poweroff guest, jailed like the other series.
pub(super) fn library_config(env: &Env, id: &str) -> (VmConfig, VmOptions) {
    let config = VmConfig {
        vm_id: id.to_owned(),
        vcpu_count: 1,
        memory_mb: 128,
        kernel_path: env.kernel.display().to_string(),
        rootfs_path: String::new(),
        enable_networking: false,
    };
    let options = env.library_options.clone();
    (config, options)
}

async fn library(env: &Env, id: &str) -> anyhow::Result<(Duration, Vec<(String, Duration)>)> {
    let (config, options) = library_config(env, id);
    let t0 = Instant::now();
    let vm = warden::vm::start_vm(&config, &options).await?;
    let started = t0.elapsed();
    anyhow::ensure!(
        vm.wait_for_serial(MARKER, Duration::from_secs(10)).await,
        "no marker"
    );
    let t = t0.elapsed();
    let mut phases: Vec<(String, Duration)> =
        vm.phases.iter().map(|(n, d)| (n.to_string(), *d)).collect();
    phases.push(("marker after start".into(), t - started));
    let t1 = Instant::now();
    let exit = vm.wait().await;
    anyhow::ensure!(
        exit.cleanup_error.is_none(),
        "cleanup failed: {:?}",
        exit.cleanup_error
    );
    phases.push(("power-off + cleanup".into(), t1.elapsed()));
    Ok((t, phases))
}

/// CreateVm + BootVm through the daemon, timed to the marker in the serial log file; then,
/// untimed, wait for the guest's power-off to be recorded and DeleteVm.
async fn via_daemon(
    daemon: &BenchDaemon,
    id: &str,
) -> anyhow::Result<(Duration, Vec<(String, Duration)>)> {
    let client = daemon.client();
    let serial = daemon.serial_path(id);
    let t0 = Instant::now();
    client
        .create_vm(daemon.create_req(id, daemon::POWEROFF))
        .await?;
    let created = t0.elapsed();
    client
        .boot_vm(warden_api::pb::BootVmRequest { vm_id: id.into() })
        .await?;
    let booted = t0.elapsed();
    // A tight poll: this is the measured moment.
    loop {
        if let Ok(s) = std::fs::read(&serial) {
            if s.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                break;
            }
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "no marker in {}; daemon log: {}",
            serial.display(),
            daemon.logs()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let t = t0.elapsed();
    daemon::wait_for_state(
        &client,
        id,
        warden_api::pb::VmState::Shutdown,
        Duration::from_secs(20),
    )
    .await?;
    client
        .delete_vm(warden_api::pb::DeleteVmRequest {
            vm_id: id.into(),
            force: false,
        })
        .await?;
    Ok((
        t,
        vec![
            ("daemon: CreateVm".into(), created),
            ("daemon: BootVm".into(), booted - created),
            ("daemon: marker after BootVm".into(), t - booted),
        ],
    ))
}
