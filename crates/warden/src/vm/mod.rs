//! Starting, watching and stopping microVMs.
//!
//! One VM's path: validate ([`config::VmConfig::validate`], the jail spec) → plan (every path,
//! argv and cgroup value) → stage the kernel and drives into the chroot → spawn the jailer →
//! wait for the API socket → configure (machine, boot source, drives) → InstanceStart → read the
//! isolation report from `/proc`. Nothing is created before validation passes, and every failure
//! after that removes what was made.

pub mod config;
mod console;
mod exit;
pub mod jailer;
mod pidfd;
mod process;
pub mod snapshot;
mod spawn;
pub mod warm;
mod watchdog;

use std::path::PathBuf;
use std::time::Duration;

use firecracker_api::{ActionType, BootSource, Client, Drive, MachineConfiguration};
use jail::cgroup::{CgroupStats, Hierarchy};
use jail::inspect::{self, IsolationReport};
use jail::spec::StageRequest;
use jail::JailPlan;

use crate::Error;
use config::{JailerMode, VmConfig, VmOptions, DEFAULT_BOOT_ARGS, VMM_OVERHEAD_MB};
pub(crate) use console::{read_tail, TAIL_BYTES};
pub(crate) use exit::{classify, Ended};
pub use exit::{Exit, ExitReason};
pub use snapshot::{restore_config, restore_vm, Manifest};

/// A running microVM. Stop it with [`stop_firecracker`]; dropping it kills the VM and removes
/// its jail.
#[derive(Debug)]
pub struct VmHandle {
    /// The VM id.
    pub vm_id: String,
    /// Firecracker's pid (host view).
    pub pid: u32,
    /// The API socket, as seen from the host.
    pub socket_path: PathBuf,
    /// True when the jailer, an unprivileged uid/gid, the chroot, cgroups and seccomp are all
    /// in force, as read from `/proc` after boot.
    pub is_sandboxed: bool,
    /// Each isolation layer, with what was seen or why it is off.
    pub isolation: IsolationReport,
    /// Every path, argv and cgroup value of the VM's jail.
    pub plan: JailPlan,
    /// How long each step of the start took, in order.
    pub phases: Vec<(&'static str, Duration)>,
    process: process::Process,
    client: Client,
    stop_timeout: Duration,
    /// The store of the last snapshot taken of this VM by this handle, which a diff snapshot
    /// must name as its parent (see [`snapshot`]). `None` before the first, after a failed
    /// one, and after [`VmHandle::attach`].
    last_snapshot: std::sync::Mutex<Option<PathBuf>>,
}

/// How old the host's processes-by-uid may be in a live isolation report.
const UID_NOTE_TTL: Duration = Duration::from_secs(1);

type ByUid = std::sync::Arc<std::collections::HashMap<u32, Vec<u32>>>;

/// The last pass over the host's processes by uid, and when it began.
static UID_PASS: std::sync::Mutex<Option<(std::time::Instant, ByUid)>> =
    std::sync::Mutex::new(None);
static UID_PASS_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One pass, kept for the other callers unless a later one is kept already.
fn uid_pass(proc_root: &std::path::Path) -> ByUid {
    let began = std::time::Instant::now();
    let m = std::sync::Arc::new(inspect::processes_by_uid(proc_root));
    let mut kept = UID_PASS.lock().unwrap();
    if kept.as_ref().is_none_or(|(at, _)| *at < began) {
        *kept = Some((began, m.clone()));
    }
    m
}

/// The host's processes by uid, shared by every live isolation report for [`UID_NOTE_TTL`].
/// Once a pass is half that old, the next caller starts a fresh one on a thread of its own and
/// still gets the current one, so callers that come steadily never wait for a pass; only the
/// first after a quiet spell does.
fn processes_by_uid(proc_root: &std::path::Path) -> ByUid {
    use std::sync::atomic::Ordering;
    let current = UID_PASS
        .lock()
        .unwrap()
        .as_ref()
        .filter(|(at, _)| at.elapsed() < UID_NOTE_TTL)
        .map(|(at, m)| (at.elapsed(), m.clone()));
    let Some((age, m)) = current else {
        return uid_pass(proc_root);
    };
    if age >= UID_NOTE_TTL / 2 && !UID_PASS_RUNNING.swap(true, Ordering::SeqCst) {
        let root = proc_root.to_owned();
        // At normal priority (unlike `background` work): a caller that comes once the pass is
        // a full TTL old makes one itself, so a starved refresh would cost a caller its wait.
        let spawned = std::thread::Builder::new()
            .name("warden-uid-pass".into())
            .spawn(move || {
                uid_pass(&root);
                UID_PASS_RUNNING.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            UID_PASS_RUNNING.store(false, Ordering::SeqCst);
        }
    }
    m
}

/// Adds the uid/gid layer's note on other processes that run as `uid` (not `pid`) to `report`,
/// from the pass `by_uid`. A pass may be older than the VM (see [`UID_NOTE_TTL`]): each process
/// it names is checked again, so one that has ended since (the last VM with this uid, say) is
/// not named.
fn add_uid_note(report: &mut IsolationReport, by_uid: &ByUid, pid: u32, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let proc_root = std::path::Path::new(jail::proc::PROC);
    let others: Vec<u32> = by_uid
        .get(&uid)
        .map(|v| {
            v.iter()
                .copied()
                .filter(|&p| p != pid)
                .filter(|&p| {
                    std::fs::metadata(jail::proc::dir(proc_root, p)).is_ok_and(|m| m.uid() == uid)
                })
                .collect()
        })
        .unwrap_or_default();
    inspect::add_uid_note(report, &inspect::uid_note(&others));
}

impl VmHandle {
    /// Takes charge again of a VM started earlier (e.g. by a daemon before it restarted): checks
    /// that `pid` is still the same process (`start_time`, from [`jail::proc::start_time`])
    /// and that its API answers, then supervises it like a VM started here. `None` when the
    /// process is gone or is not that VM's Firecracker.
    pub async fn attach(
        vm_id: &str,
        jail: jail::Jail,
        pid: u32,
        start_time: u64,
        serial_file: Option<PathBuf>,
        serial_max: usize,
        stop_timeout: Duration,
    ) -> Result<Option<VmHandle>, Error> {
        let proc_root = std::path::Path::new(jail::proc::PROC);
        if !jail::proc::is_running(proc_root, pid, start_time) {
            jail.disarm();
            return Ok(None);
        }
        let plan = jail.plan();
        let process =
            process::Process::attach(std::sync::Arc::new(jail), pid, serial_file, serial_max)?;
        let client = Client::new(&plan.socket_path).with_timeout(Duration::from_secs(2));
        if let Err(e) = client.instance_info().await {
            // Not answering: not a VM we can control. It is ended (and cleaned) by the caller.
            return Err(Error::Unresponsive {
                vm_id: vm_id.to_owned(),
                pid,
                socket: plan.socket_path.clone(),
                source: Box::new(e),
            });
        }
        let socket_path = plan.socket_path.clone();
        let unjailed = (!plan.jailed).then_some("jailer not used");
        let mut isolation = isolation_report(&process, &plan, unjailed);
        // Recovery re-attaches every VM at once: they share passes at most UID_NOTE_TTL old.
        add_uid_note(&mut isolation, &processes_by_uid(proc_root), pid, plan.uid);
        Ok(Some(VmHandle {
            vm_id: vm_id.to_owned(),
            pid,
            socket_path: plan.socket_path.clone(),
            is_sandboxed: isolation.is_sandboxed,
            isolation,
            plan,
            phases: Vec::new(),
            process,
            client: Client::new(&socket_path),
            stop_timeout,
            last_snapshot: Default::default(),
        }))
    }

    /// Lets the VM run on without this handle: no stop, no cleanup on drop. A later
    /// [`VmHandle::attach`] takes charge of it again.
    pub fn detach(self) {
        self.process.detach();
    }

    /// The process start time that, with the pid, identifies this VM's Firecracker.
    pub fn start_time(&self) -> Option<u64> {
        jail::proc::start_time(std::path::Path::new(jail::proc::PROC), self.pid)
    }

    /// A client for the VM's API socket.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Serial console output so far (when captured).
    pub fn serial_output(&self) -> String {
        self.process.serial.text()
    }

    /// Waits until the serial output contains `needle`; false after `timeout`.
    pub async fn wait_for_serial(&self, needle: &str, timeout: Duration) -> bool {
        self.process.serial.wait_for(needle, timeout).await
    }

    /// Waits until the VM ends on its own (or is killed), after its jail is removed.
    pub async fn wait(&self) -> Exit {
        self.process.wait().await
    }

    /// The exit, if the VM has already ended.
    pub fn exited(&self) -> Option<Exit> {
        self.process.exited()
    }

    /// A receiver that holds `Some(exit)` once the VM has ended and been cleaned; for watching
    /// a VM without borrowing its handle.
    pub fn exit_watch(&self) -> tokio::sync::watch::Receiver<Option<Exit>> {
        self.process.exit_watch()
    }

    /// The isolation report read again from `/proc` now.
    pub fn isolation_now(&self) -> IsolationReport {
        let unjailed = (!self.plan.jailed).then_some(self.isolation.jailer.detail.as_str());
        let expected = inspect::Expected {
            jailed: self.plan.jailed,
            root_dir: &self.plan.root_dir,
            cgroup_dirs: &self.plan.cgroup_dirs,
            unjailed_reason: unjailed,
            limits_off: &self.plan.cgroups_off,
        };
        let proc_root = std::path::Path::new(jail::proc::PROC);
        let mut report = inspect::report(proc_root, self.pid, &expected);
        // The uid check is one pass over every process of the host (about 15 ms with 1,000
        // VMs): live reports of all VMs, and the reports kept from starts, share one pass at
        // most UID_NOTE_TTL old; the rest of the report is read every time.
        add_uid_note(
            &mut report,
            &processes_by_uid(proc_root),
            self.pid,
            self.plan.uid,
        );
        report
    }

    /// What the VM's cgroups report now.
    pub fn cgroup_stats(&self) -> CgroupStats {
        jail::cgroup::stats(self.plan.cgroup_version, &self.plan.cgroup_dirs)
    }

    /// Pauses the vCPUs.
    pub async fn pause(&self) -> Result<(), Error> {
        Ok(self.client.pause().await?)
    }

    /// Resumes the vCPUs.
    pub async fn resume(&self) -> Result<(), Error> {
        Ok(self.client.resume().await?)
    }

    /// Stops the VM: Ctrl-Alt-Del, then SIGKILL after the stop timeout; returns once its jail
    /// and cgroups are removed. An error means something could not be removed (it is named).
    pub async fn stop(self) -> Result<Exit, Error> {
        let timeout = self.stop_timeout;
        self.stop_within(timeout).await
    }

    /// [`VmHandle::stop`] with its own graceful deadline; zero kills at once.
    pub async fn stop_within(self, timeout: Duration) -> Result<Exit, Error> {
        if self.process.exited().is_none() {
            self.process.note_stop_requested();
            let graceful =
                !timeout.is_zero() && self.client.action(ActionType::SendCtrlAltDel).await.is_ok();
            if !graceful || self.process.wait_timeout(timeout).await.is_none() {
                self.process.kill();
            }
        }
        let exit = self.process.wait().await;
        match &exit.cleanup_error {
            Some(detail) => Err(Error::Leftover {
                vm_id: self.vm_id.clone(),
                detail: detail.clone(),
            }),
            None => Ok(exit),
        }
    }
}

/// Durations of the steps of a start, for benchmarks and logs.
#[derive(Debug)]
pub struct Phases(Vec<(&'static str, Duration)>, std::time::Instant);

impl Phases {
    /// Starts timing now.
    pub fn start() -> Self {
        Self(Vec::new(), std::time::Instant::now())
    }

    /// Records the time since the previous mark under `name`.
    pub(crate) fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.0.push((name, now - self.1));
        self.1 = now;
    }
}

/// Boots a VM with default [`VmOptions`]: jailed if the jailer is found (a loud warning and
/// `is_sandboxed == false` otherwise).
pub async fn start_firecracker(config: &VmConfig) -> Result<VmHandle, Error> {
    start_vm(config, &VmOptions::default()).await
}

/// Stops a VM and removes everything it had on the host.
pub async fn stop_firecracker(vm: VmHandle) -> Result<Exit, Error> {
    vm.stop().await
}

/// A VM's validated jail spec and plan, ready for [`start_planned`].
#[derive(Debug, Clone)]
pub struct Planned {
    /// The validated spec.
    pub spec: jail::JailSpec,
    /// Every path, argv and cgroup value.
    pub plan: JailPlan,
    /// Why the VM would run unjailed, if it would.
    pub unjailed_reason: Option<String>,
}

/// Decides jailed or not, and builds the jail spec and its plan, without touching the host.
pub fn plan_vm(config: &VmConfig, options: &VmOptions) -> Result<Planned, Error> {
    plan_inner(config, options, true)
}

/// [`plan_vm`], or without any staged file (`with_files` false: a warm jail, whose VM is not
/// known yet).
fn plan_inner(config: &VmConfig, options: &VmOptions, with_files: bool) -> Result<Planned, Error> {
    config.validate()?;
    let jailer_found = jailer::is_executable(&options.jailer.jailer_binary);
    let (jailed, unjailed_reason) = match options.jailer_mode {
        JailerMode::Disabled => (
            false,
            Some("jailer disabled by configuration (development mode)".to_owned()),
        ),
        JailerMode::Required if !jailer_found => {
            return Err(Error::JailerMissing {
                path: options.jailer.jailer_binary.clone(),
            })
        }
        JailerMode::Auto if !jailer_found => (
            false,
            Some(format!(
                "jailer not found at {} (development mode)",
                options.jailer.jailer_binary.display()
            )),
        ),
        _ => (true, None),
    };
    let mut files = match &options.restore {
        Some(r) => snapshot::restore_files(&r.store, &r.manifest),
        None => vec![StageRequest {
            source: config.kernel_path.clone().into(),
            name: "kernel".into(),
            writable: false,
            field: "kernel_path".into(),
            opened: None,
        }],
    };
    if options.restore.is_some() {
        // The snapshot has its drives.
    } else if !config.rootfs_path.is_empty() {
        files.push(StageRequest {
            source: config.rootfs_path.clone().into(),
            name: "rootfs".into(),
            writable: !options.rootfs_read_only,
            field: "rootfs_path".into(),
            opened: None,
        });
    }
    let drives = if options.restore.is_some() {
        &[][..]
    } else {
        &options.drives[..]
    };
    for (i, d) in drives.iter().enumerate() {
        files.push(StageRequest {
            source: d.path.clone(),
            name: format!("drive{}", i + 1),
            writable: !d.read_only,
            field: format!("drives[{i}].path"),
            opened: None,
        });
    }
    if !with_files {
        files.clear();
    }
    // Untrusted paths are opened now, beneath their asset directory; staging works from these
    // open files, so nothing swapped in after this point is ever used.
    if let Some(dirs) = &options.asset_dirs {
        let dirs = jail::source::AssetDirs::open(dirs);
        for f in &mut files {
            f.opened = Some(dirs.open_file(&f.field, &f.source)?);
        }
    }
    let mut jc = options.jailer.clone();
    jc.jailer_id = config.vm_id.clone();
    jc.cpu_count = config.vcpu_count;
    jc.memory_limit_mb = options
        .memory_limit_mb
        .unwrap_or(config.memory_mb + VMM_OVERHEAD_MB);
    // An unjailed VM has no cgroups, so the host's need not be read.
    let hierarchy = if jailed {
        Hierarchy::host()?
    } else {
        Hierarchy::empty()
    };
    let net = config.enable_networking.then(|| {
        let n = &options.network;
        let (uid, gid) = if jailed { (jc.uid, jc.gid) } else { (0, 0) };
        let bridge = match (n.mode, n.guest) {
            (jail::net::NetMode::Bridge, Some(g)) => Some((n.bridge.clone(), g)),
            (_, Some(g)) => Some((String::new(), g)),
            _ => None,
        };
        let netns = jail::layout::Layout::new(
            &jc.chroot_base_dir,
            &jc.exec_file,
            &jc.parent_cgroup,
            jail::CgroupVersion::V1,
            Hierarchy::empty(),
        )
        .netns_path(&config.vm_id);
        jail::net::NetPlan::new(&config.vm_id, &netns, n.mode, uid, gid, bridge)
    });
    if let Some(n) = &net {
        if n.mode == jail::net::NetMode::Bridge && n.guest.is_none() {
            return Err(jail::SpecError::new(
                "network.guest",
                "is missing; bridge mode needs the guest's address and gateway",
            )
            .into());
        }
        if jc.netns.is_some() {
            return Err(jail::SpecError::new(
                "netns",
                "cannot be combined with enable_networking: a networked VM gets its own namespace; drop netns",
            )
            .into());
        }
    }
    let mut spec = jc.spec(jailed, &hierarchy, files, net)?;
    if options.memory_limit_mb.is_some() {
        spec.explicit_limits.push(jail::cgroup::Derived::Memory);
    }
    spec.strict_cgroups = options.strict_cgroups;
    if options.own_netns && !config.enable_networking {
        if spec.netns.is_some() {
            return Err(jail::SpecError::new(
                "netns",
                "cannot be combined with own_netns: the VM gets a namespace of its own; drop one",
            )
            .into());
        }
        spec.netns = Some(spec.layout(&hierarchy).netns_path(&config.vm_id));
        spec.make_netns = true;
    }
    let plan = spec.plan(&hierarchy)?;
    Ok(Planned {
        spec,
        plan,
        unjailed_reason,
    })
}

/// Boots a VM: jail, configure, InstanceStart, isolation report.
pub async fn start_vm(config: &VmConfig, options: &VmOptions) -> Result<VmHandle, Error> {
    let phases = Phases::start();
    // A uid set in the jailer config is used as given; the range applies to the default only.
    let default_ids = options.jailer.uid == jailer::DEFAULT_JAIL_UID
        && options.jailer.gid == jailer::DEFAULT_JAIL_UID;
    let Some(range) = options
        .uid_range
        .filter(|_| default_ids && options.jailer_mode != JailerMode::Disabled)
    else {
        let planned = plan_vm(config, options)?;
        return start_planned(config, options, planned, phases).await;
    };
    // A uid of its own, leased host-wide before the plan (the uid is in the argv and owns the
    // staged files); the jail's removal releases it.
    let owner = options
        .owner
        .clone()
        .unwrap_or_else(jail::Owner::this_process);
    let registry = options.registry.clone();
    let (vm, who) = (config.vm_id.clone(), owner.clone());
    let leased = tokio::task::spawn_blocking(move || {
        registry.lease_uid(range, &Default::default(), &vm, &who)
    })
    .await
    .map_err(|e| Error::Os {
        what: "leasing a uid".into(),
        source: std::io::Error::other(e),
    })?
    .map_err(|e| Error::Os {
        what: "leasing a uid".into(),
        source: std::io::Error::other(jail::error_chain(&e)),
    })?
    .ok_or_else(|| {
        Error::Invalid(jail::SpecError::new(
            "uid_range",
            format!(
                "has no free uid left ({}-{}); stop VMs or widen the range",
                range.0, range.1
            ),
        ))
    })?;
    let mut options = options.clone();
    options.jailer.uid = leased;
    options.jailer.gid = leased;
    options.owner = Some(owner.clone());
    let started = match plan_vm(config, &options) {
        Ok(planned) => start_inner(config, &options, planned, phases, true).await,
        Err(e) => Err(e),
    };
    if started.is_err() {
        let _ = options.registry.release_uid(leased, &owner, &config.vm_id);
    }
    started
}

/// Boots a VM from a plan made by [`plan_vm`] with the same config and options (for callers
/// that record the plan before acting on it, as the daemon does).
pub async fn start_planned(
    config: &VmConfig,
    options: &VmOptions,
    planned: Planned,
    phases: Phases,
) -> Result<VmHandle, Error> {
    start_inner(config, options, planned, phases, false).await
}

async fn start_inner(
    config: &VmConfig,
    options: &VmOptions,
    planned: Planned,
    mut phases: Phases,
    uid_leased: bool,
) -> Result<VmHandle, Error> {
    let Planned {
        spec,
        plan,
        unjailed_reason,
    } = planned;
    if let Some(reason) = &unjailed_reason {
        if options.jailer_mode == JailerMode::Auto {
            tracing::warn!(
                vm_id = %config.vm_id,
                "RUNNING UNJAILED: {reason}. This VM has no chroot, no cgroup limits and runs as root; \
                 never do this in production (set jailer_mode Required)"
            );
        }
    }
    for off in &plan.cgroups_off {
        tracing::warn!(
            vm_id = %config.vm_id,
            "the VM's {} limit is off: {}; enable the controller, or choose the other cgroup \
             version (production mode refuses such a VM)",
            off.controller,
            off.why
        );
    }
    verify_restore(options, &plan).await?;
    // Launch removes whatever it made when it fails.
    let (process, client) = launch(&spec, plan, options, uid_leased, &mut phases).await?;
    let plan = process.plan.clone();
    finish(
        &config.vm_id,
        config,
        options,
        process,
        client,
        plan,
        unjailed_reason.as_deref(),
        phases,
    )
    .await
}

/// Once per start from a snapshot, at the moment of use: the clone's copies fit on the disk,
/// and the store's files still match the manifest (see [`snapshot::verify`]).
async fn verify_restore(options: &VmOptions, plan: &JailPlan) -> Result<(), Error> {
    let Some(r) = options.restore.clone() else {
        return Ok(());
    };
    let p = plan.clone();
    tokio::task::spawn_blocking(move || {
        snapshot::check_restore_space(&p)?;
        snapshot::verify(&r.store, &r.manifest)
    })
    .await
    .map_err(|e| Error::Os {
        what: "checking the snapshot".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// Makes the jail's host state and starts the jailer with `options`' owner, console and
/// timeouts (see [`jailer::launch`]).
async fn launch(
    spec: &jail::JailSpec,
    plan: JailPlan,
    options: &VmOptions,
    uid_leased: bool,
    phases: &mut Phases,
) -> Result<(process::Process, Client), Error> {
    let ownership = jailer::Ownership {
        uid_leased,
        owner: options
            .owner
            .clone()
            .unwrap_or_else(jail::Owner::this_process),
        registry: options.registry.clone(),
        die_with_owner: options.die_with_owner,
    };
    jailer::launch(
        spec,
        plan,
        ownership,
        options.serial.clone(),
        options.serial_log_max_bytes,
        options.socket_timeout,
        phases,
    )
    .await
}

/// Configures (or loads the snapshot into) a Firecracker whose API is up, starts it and reads
/// the isolation report: the second half of every start, fresh or into a warm jail.
#[allow(clippy::too_many_arguments)]
async fn finish(
    vm_id: &str,
    config: &VmConfig,
    options: &VmOptions,
    process: process::Process,
    client: Client,
    plan: JailPlan,
    unjailed_reason: Option<&str>,
    mut phases: Phases,
) -> Result<VmHandle, Error> {
    // One connection for the start's requests; the handle's client connects per request, so
    // an idle VM holds no connection.
    let api = client.keep_alive();
    // From here a failure must end the process; dropping `process` kills it and cleans up.
    let (before, started) = match &options.restore {
        Some(r) => {
            let before = isolation_report(&process, &plan, unjailed_reason);
            let loaded = snapshot::load(&api, &plan, &r.manifest.firecracker_version).await;
            phases.mark("snapshot load");
            match loaded {
                Ok(()) => (before, Ok(())),
                Err(snapshot::LoadError::Api(e)) => (before, Err(e)),
                Err(e @ snapshot::LoadError::Version { .. }) => {
                    process.note_stop_requested();
                    process.kill();
                    let _ = process.wait().await;
                    return Err(jail::SpecError::new("snapshot", e.to_string()).into());
                }
            }
        }
        None => {
            let configured = configure(config, options, &plan, &api).await;
            phases.mark("configure");
            // Read before InstanceStart too: a guest may power off before the report after it
            // is read.
            let before = isolation_report(&process, &plan, unjailed_reason);
            let started = match configured {
                Ok(()) => api.action(ActionType::InstanceStart).await,
                Err(e) => Err(e),
            };
            phases.mark("instance start");
            (before, started)
        }
    };
    drop(api);
    if let Err(source) = started {
        process.note_stop_requested();
        process.kill();
        let exit = process.wait().await;
        return Err(Error::Configure {
            vm_id: vm_id.to_owned(),
            log: exit.output,
            source: Box::new(source),
        });
    }
    let after = settled_report(&process, &plan, &before, options.uid_check_at_start).await;
    let isolation = if process.exited().is_some()
        || !jail::proc::is_alive(std::path::Path::new(jail::proc::PROC), process.pid)
    {
        before
    } else {
        after
    };
    phases.mark("isolation report");
    Ok(VmHandle {
        vm_id: vm_id.to_owned(),
        pid: process.pid,
        socket_path: plan.socket_path.clone(),
        is_sandboxed: isolation.is_sandboxed,
        isolation,
        plan,
        process,
        client,
        stop_timeout: options.stop_timeout,
        last_snapshot: Default::default(),
        phases: phases.0,
    })
}

async fn configure(
    config: &VmConfig,
    options: &VmOptions,
    plan: &JailPlan,
    client: &Client,
) -> Result<(), firecracker_api::Error> {
    let path = |name: &str| {
        plan.path_in_jail(name)
            .expect("staged")
            .display()
            .to_string()
    };
    client
        .put_machine_config(&MachineConfiguration {
            vcpu_count: config.vcpu_count,
            mem_size_mib: config.memory_mb,
            track_dirty_pages: options.track_dirty_pages.then_some(true),
            ..Default::default()
        })
        .await?;
    let mut boot_args = options
        .boot_args
        .clone()
        .unwrap_or_else(|| DEFAULT_BOOT_ARGS.to_owned());
    if let Some(ip) = plan.net.as_ref().and_then(|n| n.boot_arg()) {
        boot_args.push(' ');
        boot_args.push_str(&ip);
    }
    client
        .put_boot_source(&BootSource {
            kernel_image_path: path("kernel"),
            boot_args: Some(boot_args),
            initrd_path: None,
        })
        .await?;
    if let Some(net) = &plan.net {
        client
            .put_network_interface(&firecracker_api::NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: net.tap.clone(),
                guest_mac: Some(net.mac.clone()),
                rx_rate_limiter: options.network.rx_rate_limiter.clone(),
                tx_rate_limiter: options.network.tx_rate_limiter.clone(),
            })
            .await?;
    }
    for f in &plan.staged {
        let name = f
            .dest
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name == "kernel" {
            continue;
        }
        client
            .put_drive(&Drive {
                drive_id: name.clone(),
                path_on_host: path(&name),
                is_root_device: name == "rootfs",
                is_read_only: !f.writable,
                rate_limiter: options.drive_rate_limiter.clone(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Reads the isolation report of `process` (every layer, from `/proc`).
fn isolation_report(
    process: &process::Process,
    plan: &JailPlan,
    unjailed_reason: Option<&str>,
) -> IsolationReport {
    let expected = inspect::Expected {
        jailed: plan.jailed,
        root_dir: &plan.root_dir,
        cgroup_dirs: &plan.cgroup_dirs,
        unjailed_reason,
        limits_off: &plan.cgroups_off,
    };
    inspect::report(
        std::path::Path::new(jail::proc::PROC),
        process.pid,
        &expected,
    )
}

/// The report kept from a start: `before` (read before InstanceStart or the snapshot load)
/// with its seccomp layer read again (see [`IsolationReport::reread_seccomp`]). vCPU threads
/// install their filters as they start, so a jailed VM is re-read briefly until every thread
/// shows one. With `uid_check`, the uid note is added from the shared pass over the host's
/// processes (see [`processes_by_uid`]): a pass that cost a start a fifth of its own CPU when
/// each start made one. The uid is leased for the VM by now, so no other warden VM takes it.
async fn settled_report(
    process: &process::Process,
    plan: &JailPlan,
    before: &IsolationReport,
    uid_check: bool,
) -> IsolationReport {
    let proc_root = std::path::Path::new(jail::proc::PROC);
    let mut report = before.clone();
    report.reread_seccomp(proc_root, process.pid);
    for _ in 0..50 {
        if !plan.jailed || report.seccomp.active || process.exited().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        report.reread_seccomp(proc_root, process.pid);
    }
    if uid_check {
        let by_uid = processes_by_uid(proc_root);
        add_uid_note(&mut report, &by_uid, process.pid, plan.uid);
    }
    report
}
