//! The jailer side of a VM: [`JailerConfig`] (the guide's fields plus the ones it forgot) and
//! [`start_with_jailer`], which starts a jailed Firecracker with only its API socket, for callers
//! that configure the VM themselves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use firecracker_api::Client;
use jail::cgroup::cpuset::{CpuList, Cpuset};
pub use jail::cgroup::disk::IoLimits;
use jail::cgroup::{CgroupLimits, CgroupVersion, Derived, Hierarchy};
use jail::spec::{JailSpec, ResourceLimits, SpecError, StageRequest};
use jail::{JailId, JailPlan};

use super::config::{Serial, MIN_MEMORY_MB};
use super::exit::Exit;
use super::process::Process;
use super::Phases;
use crate::{assets, Error};

/// How a VM is jailed. Defaults are safe: an unprivileged uid/gid, cgroup limits, the
/// cgroup version the host supports.
#[derive(Debug, Clone, PartialEq)]
pub struct JailerConfig {
    /// The jailer binary (default: found by [`crate::assets`], else `/usr/local/bin/jailer`).
    pub jailer_binary: PathBuf,
    /// Jail id: 1-64 ASCII letters, digits or `-`.
    pub jailer_id: String,
    /// Base directory for jails (default `/srv/jailer`, the jailer's own default).
    pub chroot_base_dir: PathBuf,
    /// The Firecracker binary (default: found by [`crate::assets`]).
    pub exec_file: PathBuf,
    /// vCPUs the CPU quota is sized for, when `cpu_quota_pct` is not set (100% per vCPU).
    pub cpu_count: u8,
    /// Memory cgroup limit in MiB (at least 128).
    pub memory_limit_mb: u32,
    /// Network namespace to join, e.g. `/run/netns/isolated`.
    pub netns: Option<String>,
    /// User Firecracker runs as (never 0).
    pub uid: u32,
    /// Group Firecracker runs as (never 0).
    pub gid: u32,
    /// cgroup version; `None` detects it (v1 where the v1 memory controller is mounted).
    pub cgroup_version: Option<CgroupVersion>,
    /// Parent cgroup of all warden VMs.
    pub parent_cgroup: String,
    /// CPU cap in percent of one core; `None` means `cpu_count * 100`.
    pub cpu_quota_pct: Option<u32>,
    /// Most tasks in the VM's cgroup; `None` means [`DEFAULT_PIDS_MAX`], a derived limit (left
    /// out with a warning where the hierarchy has no `pids` controller).
    pub pids_max: Option<u64>,
    /// Run Firecracker as PID 1 of a new PID namespace (default on: it then cannot see or
    /// signal any host process by pid).
    pub new_pid_ns: bool,
    /// rlimits (`no-file`, `fsize`).
    pub resource_limits: ResourceLimits,
    /// CPUs to pin the VM to, in the kernel's list syntax (`0-3,5`); `None` is unpinned. Every
    /// CPU must be online; the memory nodes are every online node.
    pub cpuset: Option<String>,
    /// Disk I/O limits on the disk holding the chroot base (where every drive's backing file
    /// is); unset is unlimited.
    pub io_limits: IoLimits,
}

/// The default range of per-VM uids/gids: above every range `useradd` gives to subordinate ids
/// (`SUB_UID_MAX` is 600100000) and above systemd's container ranges (524288-1879048191), below
/// 2^31 (tools that treat ids as signed) and below systemd's "foreign" range (from 2147352576).
/// 65536 ids: one per VM that exists at a time.
pub const DEFAULT_JAIL_ID_RANGE: (u32, u32) = (1_900_000_000, 1_900_065_535);

/// What Firecracker may write beyond the memory cap and its largest drive before `fsize` stops
/// it (1 GiB).
pub const DEFAULT_FSIZE_HEADROOM: u64 = 1 << 30;

/// The tasks cap a VM gets when none is given.
pub const DEFAULT_PIDS_MAX: u64 = 1024;

/// Default jail user and group: not root, and not a typical login user's id.
pub const DEFAULT_JAIL_UID: u32 = 10000;

impl Default for JailerConfig {
    fn default() -> Self {
        Self {
            jailer_binary: assets::jailer(),
            jailer_id: "warden-vm".into(),
            chroot_base_dir: PathBuf::from("/srv/jailer"),
            exec_file: assets::firecracker(),
            cpu_count: 1,
            memory_limit_mb: 256,
            netns: None,
            uid: DEFAULT_JAIL_UID,
            gid: DEFAULT_JAIL_UID,
            cgroup_version: None,
            parent_cgroup: "warden".into(),
            cpu_quota_pct: None,
            pids_max: None,
            new_pid_ns: true,
            resource_limits: ResourceLimits::default(),
            cpuset: None,
            io_limits: IoLimits::default(),
        }
    }
}

impl JailerConfig {
    /// Validates the config and turns it into a jail spec staging `files`.
    pub(crate) fn spec(
        &self,
        jailed: bool,
        hierarchy: &Hierarchy,
        files: Vec<StageRequest>,
        net: Option<jail::net::NetPlan>,
    ) -> Result<JailSpec, SpecError> {
        let id = JailId::new(&self.jailer_id)
            .map_err(|e| SpecError::new("jailer_id", format!("{:?} {e}", self.jailer_id)))?;
        if self.memory_limit_mb < MIN_MEMORY_MB {
            return Err(SpecError::new(
                "memory_limit_mb",
                format!(
                    "is {} MiB; use at least {MIN_MEMORY_MB}",
                    self.memory_limit_mb
                ),
            ));
        }
        if self.cpu_count == 0 {
            return Err(SpecError::new("cpu_count", "is 0; use at least 1"));
        }
        if let Some(0) = self.cpu_quota_pct {
            return Err(SpecError::new(
                "cpu_quota_pct",
                "is 0; use a percentage of one core, e.g. 50 or 200",
            ));
        }
        let cpuset = self
            .cpuset
            .as_deref()
            .map(|s| {
                s.parse::<CpuList>()
                    .map(|cpus| Cpuset { cpus, mems: None })
                    .map_err(|e| SpecError::new("cpuset", e))
            })
            .transpose()?;
        let cgroup_version = self
            .cgroup_version
            .unwrap_or_else(|| hierarchy.default_version());
        Ok(JailSpec {
            id,
            jailed,
            jailer_binary: self.jailer_binary.clone(),
            exec_file: self.exec_file.clone(),
            uid: self.uid,
            gid: self.gid,
            chroot_base_dir: self.chroot_base_dir.clone(),
            cgroup_version,
            parent_cgroup: self.parent_cgroup.clone(),
            limits: CgroupLimits {
                memory_bytes: Some(u64::from(self.memory_limit_mb) << 20),
                cpu_quota_pct: Some(
                    self.cpu_quota_pct
                        .unwrap_or(u32::from(self.cpu_count) * 100),
                ),
                pids_max: Some(self.pids_max.unwrap_or(DEFAULT_PIDS_MAX)),
                // warden never gives Firecracker huge pages: their pool stays the host's.
                hugetlb_deny: if jailed {
                    hierarchy.hugepage_sizes.clone()
                } else {
                    Vec::new()
                },
                cpuset,
                io: self.io_limits,
                io_device: None,
            },
            // The caller's own limits; `spec` only knows the CPU quota and the pids cap.
            explicit_limits: [
                (self.cpu_quota_pct.is_some(), Derived::Cpu),
                (self.pids_max.is_some(), Derived::Pids),
            ]
            .into_iter()
            .filter_map(|(set, d)| set.then_some(d))
            .collect(),
            strict_cgroups: false,
            resource_limits: self.resource_limits,
            // Firecracker writes no file past this (its log, the console file, a snapshot of
            // the guest's memory), so a guest cannot fill the disk through it.
            fsize_headroom: Some(DEFAULT_FSIZE_HEADROOM),
            new_pid_ns: self.new_pid_ns,
            netns: self.netns.as_ref().map(PathBuf::from),
            make_netns: false,
            net,
            files,
            sys_root: jail::spec::SYS.into(),
        })
    }
}

/// Whether a path is an executable regular file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Who owns a VM's host state and whether it must end with its owner.
#[derive(Debug, Clone)]
pub(crate) struct Ownership {
    pub(crate) owner: jail::Owner,
    /// The plan's uid was leased for this VM and is released with it.
    pub(crate) uid_leased: bool,
    pub(crate) registry: jail::Registry,
    pub(crate) die_with_owner: bool,
}

/// Makes the jail's host state ([`jail::apply`]: id reservation, network, chroot, staged files),
/// spawns the jailer and waits for the API socket. Anything made is removed again on failure;
/// an id that another owner holds stops everything before any change.
pub(crate) async fn launch(
    spec: &JailSpec,
    plan: JailPlan,
    ownership: Ownership,
    serial: Serial,
    serial_max: usize,
    socket_timeout: Duration,
    phases: &mut Phases,
) -> Result<(Process, Client), Error> {
    let program = PathBuf::from(&plan.argv[0]);
    if !is_executable(&spec.exec_file) {
        return Err(Error::FirecrackerMissing {
            path: spec.exec_file.clone(),
        });
    }
    if spec.jailed && !is_executable(&program) {
        return Err(Error::JailerMissing { path: program });
    }
    phases.mark("validate+plan");
    let Ownership {
        owner,
        uid_leased,
        registry,
        die_with_owner,
    } = ownership;
    // Copies, netlink and mounts block: off the async workers.
    let applied = tokio::task::spawn_blocking(move || {
        jail::apply(
            &plan,
            owner,
            uid_leased,
            &registry,
            Arc::new(jail::RealHost),
        )
    })
    .await
    .map_err(|e| Error::Os {
        what: "preparing the jail".into(),
        source: std::io::Error::other(e),
    })?;
    let jail = Arc::new(applied?);
    let plan = jail.plan();
    phases.mark("stage");
    tracing::info!(
        vm_id = %plan.id,
        jailer_binary = %program.display(),
        jailer_id = %plan.id,
        chroot_path = %plan.root_dir.display(),
        uid = plan.uid,
        gid = plan.gid,
        memory_limit = spec.limits.memory_bytes.unwrap_or(0),
        cpu_quota = spec.limits.cpu_quota_pct.unwrap_or(0),
        jailed = plan.jailed,
        "starting firecracker"
    );
    let process = match Process::spawn(
        jail.clone(),
        serial,
        serial_max,
        socket_timeout,
        die_with_owner,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || jail.remove()).await;
            return Err(e);
        }
    };
    phases.mark("spawn");
    let pid = process.pid;
    let recorded = {
        let jail = jail.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            // Before InstanceStart, so the vCPU threads are born in it.
            jail.attach_accounting(pid)?;
            // Firecracker does no disk I/O before InstanceStart: the limits the jailer cannot
            // pass (v1 blkio throttles, v2 `io.max`) are in force from the first read. Here
            // rather than after configuring, so `start_with_jailer` gets them too.
            jail::cgroup::write_by_warden(&jail.plan().cgroups, pid)?;
            let start_time = jail::proc::start_time(Path::new(jail::proc::PROC), pid).unwrap_or(0);
            jail.set_firecracker(jail::owner::ProcessRef { pid, start_time })
                .map_err(|e| Error::Os {
                    what: "recording Firecracker's pid in the VM's owner record".into(),
                    source: std::io::Error::other(jail::error_chain(&e)),
                })
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Os {
                what: "recording the VM's process".into(),
                source: std::io::Error::other(e),
            })
        })
    };
    if let Err(e) = recorded {
        // Firecracker may have died first (which is then the error to report).
        let died =
            process.exited().is_some() || !jail::proc::is_alive(Path::new(jail::proc::PROC), pid);
        if !died {
            process.kill();
        }
        let exit = process.wait().await;
        if died {
            return Err(Error::ExitedEarly {
                program,
                status: exit.reason.to_string(),
                output: exit.output,
            });
        }
        return Err(e);
    }
    let client = Client::new(&process.plan.socket_path);
    let mut exit = process.exit_watch();
    tokio::select! {
        ready = client.wait_ready(socket_timeout) => {
            if let Err(e) = ready {
                process.kill();
                let exit = process.wait().await;
                return Err(Error::ExitedEarly { program, status: format!("{e}"), output: exit.output });
            }
        }
        () = gone(&mut exit) => {
            let exit = process.wait().await;
            return Err(Error::ExitedEarly { program, status: exit.reason.to_string(), output: exit.output });
        }
    }
    phases.mark("socket ready");
    Ok((process, client))
}

/// Resolves once the process has exited (the watch's guard never crosses an await).
async fn gone(rx: &mut tokio::sync::watch::Receiver<Option<Exit>>) {
    let _ = rx.wait_for(Option::is_some).await.map(|_| ());
}

/// A Firecracker process started by [`start_with_jailer`]: its API socket is up and the VM is
/// not configured. Dropping it kills Firecracker and removes the jail.
#[derive(Debug)]
pub struct JailedProcess {
    /// Firecracker's pid (host view).
    pub pid: u32,
    /// The API socket, as seen from the host.
    pub api_socket: PathBuf,
    /// Always true: this process runs under the jailer.
    pub jailed: bool,
    /// Every path and value of the jail.
    pub plan: JailPlan,
    process: Process,
    client: Client,
}

impl JailedProcess {
    /// A client for the API socket.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Kills Firecracker (it runs no guest that could shut down) and removes the jail.
    pub async fn stop(self) -> Result<Exit, Error> {
        self.process.note_stop_requested();
        self.process.kill();
        Ok(self.process.wait().await)
    }
}

/// Starts Firecracker under the jailer with only its API socket: configure the VM through
/// [`JailedProcess::client`] or any Firecracker client. Requires the jailer.
pub async fn start_with_jailer(config: &JailerConfig) -> Result<JailedProcess, Error> {
    let hierarchy = Hierarchy::host()?;
    let spec = config.spec(true, &hierarchy, Vec::new(), None)?;
    let plan = spec.plan(&hierarchy)?;
    let (process, client) = launch(
        &spec,
        plan,
        Ownership {
            owner: jail::Owner::this_process(),
            uid_leased: false,
            registry: jail::Registry::default(),
            die_with_owner: true,
        },
        Serial::Discard,
        super::config::DEFAULT_SERIAL_LOG_MAX_BYTES,
        Duration::from_secs(5),
        &mut Phases::start(),
    )
    .await?;
    Ok(JailedProcess {
        pid: process.pid,
        api_socket: process.plan.socket_path.clone(),
        jailed: true,
        plan: process.plan.clone(),
        process,
        client,
    })
}
