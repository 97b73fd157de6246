//! `warden run`, `warden plan` and `warden demo`: one VM in the foreground.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use warden::vm::config::{DriveConfig, JailerMode, Serial, VmConfig, VmOptions};
use warden::vm::jailer::JailerConfig;
use warden::vm::{self, ExitReason, VmHandle};

use crate::report;

/// Arguments shared by `run` and `plan`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Kernel image (ELF vmlinux); required, except by `warden plan --restore`.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Root filesystem image (attached read-write; the caller's file is never modified: the VM
    /// writes a private copy).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Extra drive, `PATH` or `PATH:ro`; repeatable.
    #[arg(long = "drive", value_name = "PATH[:ro]")]
    drives: Vec<String>,
    /// VM id (1-64 ASCII letters, digits, '-'); default: `run-<pid>`.
    #[arg(long)]
    id: Option<String>,
    /// vCPUs [default: 1].
    #[arg(long)]
    vcpus: Option<u8>,
    /// Guest memory in MiB [default: 128].
    #[arg(long)]
    memory: Option<u32>,
    /// Kernel command line.
    #[arg(long)]
    boot_args: Option<String>,
    /// Run Firecracker without the jailer (development only: no chroot, cgroups or uid drop).
    #[arg(long, conflicts_with = "require_jailer")]
    no_jailer: bool,
    /// Production mode: fail instead of running unjailed when the jailer is missing, and
    /// instead of leaving out a limit whose cgroup controller is missing.
    #[arg(long)]
    require_jailer: bool,
    /// User the VM runs as; by default it gets a uid of its own, leased host-wide from
    /// 1900000000-1900065535 and released when it ends.
    #[arg(long, alias = "uid", requires = "jailer_gid")]
    jailer_uid: Option<u32>,
    /// The range the VM's own uid/gid is leased from, `FIRST-LAST`, or `off` for the default
    /// jail user (10000); ignored with --jailer-uid/--jailer-gid.
    #[arg(long, value_name = "FIRST-LAST|off", conflicts_with = "jailer_uid")]
    jail_id_range: Option<String>,
    /// Group the VM runs as (with --jailer-uid).
    #[arg(long, alias = "gid", requires = "jailer_uid")]
    jailer_gid: Option<u32>,
    /// CPU cap in percent of one core (default: 100 per vCPU).
    #[arg(long, alias = "cpu-quota", value_name = "PCT")]
    cpu_quota_percent: Option<u32>,
    /// Memory cgroup limit in MiB (default: guest memory + 64 MiB VMM overhead).
    #[arg(long, value_name = "MIB")]
    memory_limit: Option<u32>,
    #[command(flatten)]
    limits: crate::limits::PinAndIo,
    /// Base directory of jails.
    #[arg(long, default_value = "/srv/jailer")]
    chroot_base: PathBuf,
    /// cgroup version (1 or 2); detected when not given.
    #[arg(long)]
    cgroup_version: Option<jail::CgroupVersion>,
    /// Parent cgroup of warden's VMs.
    #[arg(long, default_value = "warden")]
    parent_cgroup: String,
    /// Run Firecracker in a new PID namespace (the default; kept for scripts that pass it).
    #[arg(long, conflicts_with = "share_pid_ns")]
    new_pid_ns: bool,
    /// Run Firecracker in the host's PID namespace instead of a new one.
    #[arg(long)]
    share_pid_ns: bool,
    /// Join this network namespace (e.g. /run/netns/NAME).
    #[arg(long)]
    netns: Option<String>,
    /// Give the VM a network device in its own namespace: `none` (the TAP is reachable only
    /// inside the namespace) or `bridge` (a veth pair to the host bridge).
    #[arg(long, alias = "net", value_name = "none|bridge")]
    network_mode: Option<jail::net::NetMode>,
    /// Host bridge for `--network-mode bridge`.
    #[arg(long, default_value = "warden0")]
    bridge: String,
    /// The guest's address, `A.B.C.D/PREFIX` (required with `--network-mode bridge`); its gateway is the
    /// subnet's first address unless `--gateway` says otherwise.
    #[arg(long, value_name = "A.B.C.D/PREFIX")]
    guest_ip: Option<String>,
    /// The guest's gateway (the bridge's address).
    #[arg(long)]
    gateway: Option<std::net::Ipv4Addr>,
    /// rlimit no-file for Firecracker.
    #[arg(long, alias = "no-file", default_value_t = 2048)]
    fd_limit: u64,
    /// rlimit fsize for Firecracker, in bytes.
    #[arg(long)]
    fsize: Option<u64>,
    /// Most tasks in the VM's cgroup (default 1024; a default is left out with a warning where
    /// the cgroup version has no pids controller, a value given here is refused there).
    #[arg(long)]
    pids_max: Option<u64>,
    /// Jailer binary (default: found by `warden::assets`: $WARDEN_JAILER_BINARY, the asset
    /// folder, /usr/local/bin, /usr/bin).
    #[arg(long, alias = "jailer")]
    jailer_binary: Option<PathBuf>,
    /// Firecracker binary (default: found by `warden::assets`: $WARDEN_FIRECRACKER_BINARY, the
    /// asset folder, /usr/local/bin, /usr/bin).
    #[arg(long, alias = "firecracker")]
    firecracker_binary: Option<PathBuf>,
}

impl RunArgs {
    fn vm_id(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("run-{}", std::process::id()))
    }

    fn to_config(&self) -> anyhow::Result<(VmConfig, VmOptions)> {
        let Some(kernel) = &self.kernel else {
            return Err(warden::Error::Invalid(jail::SpecError::new(
                "kernel",
                "is missing: pass --kernel PATH (the guest's ELF vmlinux)",
            ))
            .into());
        };
        let config = VmConfig {
            vm_id: self.vm_id(),
            vcpu_count: self.vcpus.unwrap_or(1),
            memory_mb: self.memory.unwrap_or(128),
            kernel_path: kernel.display().to_string(),
            rootfs_path: self
                .rootfs
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            enable_networking: self.network_mode.is_some(),
        };
        let guest = match &self.guest_ip {
            None => None,
            Some(arg) => {
                // A bare address is a /24.
                let written = if arg.contains('/') {
                    arg.clone()
                } else {
                    format!("{arg}/24")
                };
                let cidr: jail::net::Ipv4Cidr = written
                    .parse()
                    .map_err(|why| anyhow::anyhow!("invalid --guest-ip {arg:?}: {why}"))?;
                Some(jail::net::GuestAddr {
                    address: cidr.address,
                    gateway: self.gateway.unwrap_or(cidr.first_host()),
                    prefix_len: cidr.prefix_len,
                })
            }
        };
        let drives = self
            .drives
            .iter()
            .map(|d| {
                let (path, read_only) = parse_drive(d);
                DriveConfig {
                    path: path.into(),
                    read_only,
                }
            })
            .collect();
        let defaults = JailerConfig::default();
        let options = VmOptions {
            boot_args: self.boot_args.clone(),
            drives,
            jailer: JailerConfig {
                jailer_binary: self.jailer_binary.clone().unwrap_or(defaults.jailer_binary),
                exec_file: self
                    .firecracker_binary
                    .clone()
                    .unwrap_or(defaults.exec_file),
                chroot_base_dir: self.chroot_base.clone(),
                uid: self.jailer_uid.unwrap_or(defaults.uid),
                gid: self.jailer_gid.unwrap_or(defaults.gid),
                cgroup_version: self.cgroup_version,
                parent_cgroup: self.parent_cgroup.clone(),
                cpu_quota_pct: self.cpu_quota_percent,
                pids_max: self.pids_max,
                new_pid_ns: !self.share_pid_ns,
                netns: self.netns.clone(),
                resource_limits: jail::ResourceLimits {
                    no_file: Some(self.fd_limit),
                    fsize: self.fsize,
                },
                cpuset: self.limits.cpuset.clone(),
                io_limits: self.limits.io_limits(),
                ..defaults
            },
            jailer_mode: if self.no_jailer {
                JailerMode::Disabled
            } else if self.require_jailer {
                JailerMode::Required
            } else {
                JailerMode::Auto
            },
            memory_limit_mb: self.memory_limit,
            // Production mode refuses a VM that would lack any of its limits.
            strict_cgroups: self.require_jailer,
            // With --jailer-uid/--jailer-gid the VM runs as exactly those.
            uid_range: match (&self.jailer_uid, &self.jail_id_range) {
                (Some(_), _) => None,
                (None, None) => Some(warden::vm::jailer::DEFAULT_JAIL_ID_RANGE),
                (None, Some(r)) => jail::spec::parse_id_range(r).ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid --jail-id-range {r:?}: use FIRST-LAST with 1000 <= FIRST <= \
                         LAST < 2147483647, or off"
                    )
                })?,
            },
            serial: Serial::CaptureAndEcho,
            network: warden::vm::config::NetworkOptions {
                mode: self.network_mode.unwrap_or(jail::net::NetMode::None),
                bridge: self.bridge.clone(),
                guest,
                ..Default::default()
            },
            ..VmOptions::default()
        };
        Ok((config, options))
    }
    /// The config and options of a restore of the snapshot in `store`: the snapshot's machine
    /// and files, these flags' jail settings. Flags that a snapshot decides are refused.
    fn to_restore_config(&self, store: &std::path::Path) -> anyhow::Result<(VmConfig, VmOptions)> {
        let fixed = [
            ("--kernel", self.kernel.is_some()),
            ("--rootfs", self.rootfs.is_some()),
            ("--drive", !self.drives.is_empty()),
            ("--vcpus", self.vcpus.is_some()),
            ("--memory", self.memory.is_some()),
            ("--boot-args", self.boot_args.is_some()),
            ("--network-mode", self.network_mode.is_some()),
            ("--guest-ip", self.guest_ip.is_some()),
        ];
        if let Some((flag, _)) = fixed.iter().find(|(_, given)| *given) {
            return Err(warden::Error::Invalid(jail::SpecError::new(
                flag.trim_start_matches("--"),
                format!(
                    "{flag} cannot be combined with --restore: the snapshot has its own guest, \
                     drives, machine size and network; drop {flag}"
                ),
            ))
            .into());
        }
        let manifest = warden::vm::snapshot::read_manifest(store)?;
        // The jail settings are those of any VM; the guest is the snapshot's.
        let mut with_kernel = self.clone();
        with_kernel.kernel = Some(store.join(&manifest.state.name));
        let (_, options) = with_kernel.to_config()?;
        Ok(warden::vm::restore_config(
            store,
            manifest,
            &self.vm_id(),
            &options,
        )?)
    }
}

/// A `--drive` value: `PATH`, `PATH:rw` or `PATH:ro`, as (path, read-only).
pub fn parse_drive(arg: &str) -> (&str, bool) {
    match arg.strip_suffix(":ro") {
        Some(p) => (p, true),
        None => (arg.strip_suffix(":rw").unwrap_or(arg), false),
    }
}

/// `warden plan`: the plan of a boot, or with `restore` of a restore of the snapshot in that
/// store directory (what `warden::vm::restore_vm` would do with these flags).
pub fn plan(args: RunArgs, restore: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let (config, options) = match &restore {
        Some(store) => args.to_restore_config(store)?,
        None => args.to_config()?,
    };
    let vm::Planned {
        plan,
        unjailed_reason: unjailed,
        ..
    } = vm::plan_vm(&config, &options)?;
    let leased = options
        .uid_range
        .filter(|_| plan.jailed)
        .map(|(a, b)| format!("{a}-{b}"));
    if json {
        let mut v = serde_json::to_value(&plan)?;
        v["unjailed_reason"] = serde_json::json!(unjailed);
        // `run` leases the VM a uid/gid of its own from this range; uid/gid above are then
        // replaced by the leased one.
        v["uid_range"] = serde_json::json!(leased);
        if let Some(r) = &options.restore {
            v["restore"] = serde_json::json!({
                "store": r.store,
                "source_vm": r.manifest.source_vm,
                "firecracker_version": r.manifest.firecracker_version,
            });
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(r) = &options.restore {
            println!(
                "restore of the snapshot in {} (of VM {}, written by Firecracker {}): its files are staged, the kernel is not; the snapshot is loaded with resume_vm",
                r.store.display(),
                r.manifest.source_vm,
                r.manifest.firecracker_version
            );
        }
        print!("{}", report::plan(&plan));
        if let Some(range) = leased {
            println!(
                "uid/gid: `warden run` leases this VM one of its own from {range} (pass --jailer-uid/--jailer-gid for a fixed one)"
            );
        }
        if let Some(why) = unjailed {
            println!("WARNING: {why}");
        }
    }
    Ok(0)
}

/// `warden run`.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    use tokio::signal::unix::{signal, SignalKind};
    let (config, options) = args.to_config()?;
    // Registered before the VM starts: a signal that arrives while it boots is kept, and the VM
    // is then stopped as soon as it is up, never left behind.
    // SIGHUP (a closed terminal or ssh session) and SIGQUIT stop the VM like Ctrl-C: warden run
    // never leaves its VM behind silently.
    let signals = [
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
        signal(SignalKind::quit())?,
    ];
    let vm = vm::start_vm(&config, &options)
        .await
        .with_context(|| format!("cannot start VM {}", config.vm_id))?;
    eprintln!(
        "warden: VM {} running, pid {}, API socket {}",
        vm.vm_id,
        vm.pid,
        vm.socket_path.display()
    );
    eprint!("{}", report::isolation(&vm.isolation));
    supervise_foreground(vm, signals).await
}

/// Waits for the guest to power off or for Ctrl-C, SIGTERM, SIGHUP or SIGQUIT (then stops the
/// VM gracefully), and turns the way it ended into an exit status.
async fn supervise_foreground(
    vm: VmHandle,
    [mut int, mut term, mut hup, mut quit]: [tokio::signal::unix::Signal; 4],
) -> anyhow::Result<u8> {
    let interrupted = tokio::select! {
        _ = vm.wait() => false,
        _ = int.recv() => true,
        _ = term.recv() => true,
        _ = hup.recv() => true,
        _ = quit.recv() => true,
    };
    let vm_id = vm.vm_id.clone();
    let exit = if interrupted {
        eprintln!("warden: stopping VM {vm_id}");
        vm.stop().await?
    } else {
        let exit = vm.wait().await;
        if let Some(e) = &exit.cleanup_error {
            anyhow::bail!("VM {vm_id} ended but not everything was removed: {e}");
        }
        exit
    };
    eprintln!(
        "warden: VM {vm_id} ended: {}; jail and cgroups removed",
        exit.reason
    );
    if matches!(exit.reason, ExitReason::FirecrackerError { .. }) && !exit.output.is_empty() {
        eprintln!("warden: Firecracker's last output:\n{}", exit.output);
    }
    Ok(match exit.reason {
        _ if interrupted => 130,
        ExitReason::GuestPowerOff => 0,
        ExitReason::Stopped | ExitReason::Killed => 130,
        ExitReason::OomKilled => 3,
        ExitReason::Signaled { .. } | ExitReason::Unknown => 4,
        ExitReason::FirecrackerError { .. } => 5,
    })
}

/// Arguments of `warden demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Base directory of jails.
    #[arg(long, default_value = "/srv/jailer")]
    chroot_base: PathBuf,
}

/// `warden demo`: the test guest, jailed in a new PID namespace and its own network namespace
/// (with a TAP only it can reach), its isolation report, a graceful stop, and proof that
/// nothing is left.
pub async fn demo(args: DemoArgs) -> anyhow::Result<u8> {
    let kernel = warden::assets::testguest();
    let config = VmConfig {
        vm_id: format!("demo-{}", std::process::id()),
        vcpu_count: 1,
        memory_mb: 128,
        kernel_path: kernel.display().to_string(),
        rootfs_path: String::new(),
        enable_networking: true,
    };
    let options = VmOptions {
        boot_args: Some("mode=idle marker=hello-from-a-jailed-guest".into()),
        network: warden::vm::config::NetworkOptions {
            mode: jail::net::NetMode::None,
            ..Default::default()
        },
        jailer: JailerConfig {
            chroot_base_dir: args.chroot_base,
            new_pid_ns: true,
            ..JailerConfig::default()
        },
        jailer_mode: JailerMode::Required,
        serial: Serial::CaptureAndEcho,
        ..VmOptions::default()
    };
    eprintln!(
        "warden demo: booting {} under {}",
        kernel.display(),
        options.jailer.jailer_binary.display()
    );
    let vm = vm::start_vm(&config, &options)
        .await
        .context("cannot start the demo VM (did `make assets` run?)")?;
    // The whole marker line: it is echoed before it is buffered, so our lines come after it.
    if !vm
        .wait_for_serial(
            "WARDEN_MARKER hello-from-a-jailed-guest\n",
            Duration::from_secs(5),
        )
        .await
    {
        anyhow::bail!(
            "the guest printed no marker within 5 s; serial so far: {:?}",
            vm.serial_output()
        );
    }
    println!(
        "warden demo: VM {} pid {} socket {}",
        vm.vm_id,
        vm.pid,
        vm.socket_path.display()
    );
    print!("{}", report::isolation(&vm.isolation));
    let plan = vm.plan.clone();
    println!("warden demo: stopping with Ctrl-Alt-Del");
    let exit = vm::stop_firecracker(vm).await?;
    let left: Vec<_> = std::iter::once(&plan.jail_dir)
        .chain(&plan.cgroup_dirs)
        .chain(plan.net.as_ref().map(|n| &n.netns_path))
        .filter(|p| p.exists())
        .collect();
    println!(
        "warden demo: VM ended ({}); left behind: {}",
        exit.reason,
        if left.is_empty() {
            "nothing".into()
        } else {
            format!("{left:?}")
        }
    );
    Ok(if left.is_empty() && plan.jailed { 0 } else { 1 })
}
