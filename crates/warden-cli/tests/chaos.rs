//! A bounded chaos run against the real daemon with real jailed, networked (bridge-mode) VMs.
//!
//! A seeded random sequence of at least 60 steps creates, boots and deletes VMs, SIGKILLs their
//! Firecrackers, and SIGKILLs the daemon and restarts it: while idle, with Firecrackers killed
//! while it is down, and 0-150 ms into a BootVm, DeleteVm or CreateVm request. Requests that
//! race a kill may fail; what this proves is that no sequence breaks the daemon's ownership of
//! the host. After every step (every restart included) and at the end, an audit checks that
//!
//! 1. every VM listed as running (or paused) has a live Firecracker of its own (its pid is in
//!    the VM's cgroup or jail, not a zombie), and every running VM answers a GetVmInfo with that
//!    pid and a PauseVm + ResumeVm round trip; no VM is left booting or stopping;
//! 2. no process of this daemon's jails (cgroup under its parent cgroup, root or command line
//!    under its chroot base) runs that no running VM lists;
//! 3. no VM that is not running holds anything on the host (jail, cgroup, network namespace,
//!    veth), and no jail or cgroup exists for an id this test never used;
//! 4. no two running guests share a pool address;
//! 5. across a daemon restart, every VM that was running (and whose Firecracker the test did not
//!    kill) is re-attached with the same pid, and a request the daemon answered before it died
//!    holds: a created VM exists, a booted one runs, a deleted one is gone.
//!
//! At the end every VM is deleted and the host must hold nothing of the test: no jail, no cgroup
//! under the parent cgroup on any mount, no `fc-vm-<id>` namespace, no veth and no host-wide owner
//! record or uid lease of any id the test ever used, no process. Short grace periods allow for exits and clean-ups in progress.
//!
//! The seed is printed; `WARDEN_CHAOS_SEED` replays a run (`WARDEN_CHAOS_STEPS` changes its
//! length). A failed run, or any run with `WARDEN_CHAOS_KEEP_LOG` set, copies the daemon's log to
//! `/tmp/warden-chaos-<seed>.log`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use warden_api::{pb, Client};

/// Steps of a run, unless `WARDEN_CHAOS_STEPS` says otherwise.
const STEPS: u64 = 250;
/// Most VMs the daemon knows at once (keeps a run within a few minutes on two cores).
const MAX_VMS: usize = 6;
/// How long an exit or clean-up in progress may take before the audit calls it a violation.
const GRACE: Duration = Duration::from_secs(3);
/// A request that takes longer than this is a hang, itself a violation.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// xorshift64*: tiny, seedable, good enough to pick steps.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 once, so small or similar seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn seed() -> u64 {
    env_u64("WARDEN_CHAOS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    })
}

/// A VM as ListVms or GetVmInfo shows it: its id and warden's details (the finer state).
#[derive(Debug, Clone, Default)]
struct Vm {
    vm_id: String,
    d: pb::VmDetails,
}

impl std::ops::Deref for Vm {
    type Target = pb::VmDetails;
    fn deref(&self) -> &pb::VmDetails {
        &self.d
    }
}

impl From<pb::VmInfo> for Vm {
    fn from(v: pb::VmInfo) -> Vm {
        Vm {
            d: v.details(),
            vm_id: v.vm_id,
        }
    }
}

impl From<pb::GetVmInfoResponse> for Vm {
    fn from(v: pb::GetVmInfoResponse) -> Vm {
        Vm {
            d: v.details(),
            vm_id: v.vm_id,
        }
    }
}

fn vm_state(v: &Vm) -> pb::VmState {
    pb::VmState::try_from(v.state).unwrap_or(pb::VmState::Unspecified)
}

fn state_name(v: &Vm) -> &'static str {
    vm_state(v).as_str_name().trim_start_matches("VM_STATE_")
}

fn may_run(v: &Vm) -> bool {
    matches!(vm_state(v), pb::VmState::Running | pb::VmState::Paused)
}

fn bootable(v: &Vm) -> bool {
    matches!(
        vm_state(v),
        pb::VmState::Created | pb::VmState::Shutdown | pb::VmState::Failed
    )
}

/// A request bounded by [`REQUEST_LIMIT`]; the error as text.
async fn bounded<T, F>(f: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, warden_api::ApiError>>,
{
    match tokio::time::timeout(REQUEST_LIMIT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("HUNG: no answer within {REQUEST_LIMIT:?}")),
    }
}

/// `/proc/<pid>/stat`'s state letter; `None` when the process is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Alive: exists and is not a zombie (PID 1 here does not always reap, so a zombie has exited).
fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// A live process that belongs to this daemon's jails.
#[derive(Debug)]
struct JailProc {
    pid: u32,
    cmdline: String,
    cgroup: String,
    root: Option<PathBuf>,
}

impl std::fmt::Display for JailProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} `{}` root={:?} cgroups={:?}",
            self.pid,
            self.cmdline,
            self.root,
            self.cgroup.lines().collect::<Vec<_>>()
        )
    }
}

/// Every live process whose cgroup is under `parent_cgroup`, or whose root or command line is
/// under `chroot` (a jailer before it joins its cgroups, a Firecracker after).
fn jail_processes(chroot: &Path, parent_cgroup: &str) -> Vec<JailProc> {
    let me = std::process::id();
    let marker = format!("/{parent_cgroup}/");
    let chroot_s = chroot.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let root = std::fs::read_link(e.path().join("root")).ok();
        let ours = cgroup.contains(&marker)
            || cmdline.contains(&chroot_s)
            || root.as_ref().is_some_and(|r| r.starts_with(chroot));
        // Re-check: a process that exited while being read is not a leak.
        if ours && alive(pid) {
            out.push(JailProc {
                pid,
                cmdline,
                cgroup,
                root,
            });
        }
    }
    out
}

/// Names of the host's network interfaces.
fn host_links() -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("ip -br link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap().to_owned())
        .collect()
}

fn netns_path(id: &str) -> PathBuf {
    Path::new("/run/netns").join(format!("fc-vm-{id}"))
}

fn veth_names(id: &str) -> [String; 2] {
    [
        jail::net::link_name(jail::net::HOST_VETH_PREFIX, id),
        jail::net::link_name(jail::net::PEER_VETH_PREFIX, id),
    ]
}

fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

fn subdir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect()
}

/// Everything VM `id` has on the host: its jail, cgroup directories, namespace and veths.
fn traces_of(
    chroot: &Path,
    parent_cgroup: &str,
    id: &str,
    links: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let jail = chroot.join("firecracker").join(id);
    if jail.exists() {
        out.push(format!("jail {}", jail.display()));
    }
    for m in cgroup_mounts() {
        let dir = m.join(parent_cgroup).join(id);
        if dir.is_dir() {
            out.push(format!("cgroup {}", dir.display()));
        }
    }
    let ns = netns_path(id);
    if ns.exists() {
        out.push(format!("netns {}", ns.display()));
    }
    for l in veth_names(id) {
        if links.contains(&l) {
            out.push(format!("veth {l}"));
        }
    }
    out
}

/// Host-wide owner records of VM `id`: its id reservation (`/run/warden/vms/<id>.json`) and its
/// uid lease (`/run/warden/uids/<uid>.json`), where the daemon keeps them. A deleted VM has none.
fn registry_traces(id: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = vec![Path::new("/run/warden/vms").join(format!("{id}.json"))];
    out.retain(|p| p.exists());
    for e in std::fs::read_dir("/run/warden/uids")
        .into_iter()
        .flatten()
        .flatten()
    {
        let lease: Option<serde_json::Value> = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if lease.is_some_and(|l| l.get("vm_id").and_then(|v| v.as_str()) == Some(id)) {
            out.push(e.path());
        }
    }
    out
}

/// Whether `pid` is VM `id`'s Firecracker: in the VM's cgroup, or rooted in its jail.
fn is_vms_process(pid: u32, id: &str, parent_cgroup: &str, chroot_path: &str) -> bool {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let own = format!("/{parent_cgroup}/{id}");
    let root = std::fs::read_link(format!("/proc/{pid}/root")).ok();
    cg.lines().any(|l| l.ends_with(&own))
        || (!chroot_path.is_empty() && root.is_some_and(|r| r == Path::new(chroot_path)))
}

/// Removes whatever a failed run leaves that the daemon harness does not: processes still in
/// the test's jails, namespaces and veths of the test's ids, cgroups, the bridge. Declared
/// before the daemon, so it runs after the daemon's own clean-up.
struct HostGuard {
    ids: Arc<Mutex<Vec<String>>>,
    chroot: PathBuf,
    parent_cgroup: String,
    bridge: String,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        for p in jail_processes(&self.chroot, &self.parent_cgroup) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        let links = host_links();
        for id in self.ids.lock().unwrap().iter() {
            if netns_path(id).exists() {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "delete", &format!("fc-vm-{id}")])
                    .status();
            }
            for l in veth_names(id) {
                if links.contains(&l) {
                    let _ = std::process::Command::new("ip")
                        .args(["link", "del", &l])
                        .status();
                }
            }
            for p in registry_traces(id) {
                let _ = std::fs::remove_file(p);
            }
        }
        for m in cgroup_mounts() {
            let parent = m.join(&self.parent_cgroup);
            for id in subdir_names(&parent) {
                let _ = std::fs::remove_dir(parent.join(id));
            }
            let _ = std::fs::remove_dir(parent);
        }
        let _ = std::fs::remove_dir_all(self.chroot.join("firecracker"));
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

struct Chaos {
    d: Daemon,
    c: Client,
    rng: Rng,
    seed: u64,
    base: String,
    next_vm: u32,
    /// Every id the test ever created (or tried to), shared with the guard.
    ids: Arc<Mutex<Vec<String>>>,
    step: u64,
    fc_kills: u64,
    /// Pids the test SIGKILLed.
    killed: BTreeSet<u32>,
    daemon_kills: u64,
    vms_audited: u64,
    request_errors: u64,
    /// Requests that failed with nothing racing them: not violations, but worth a look.
    odd_errors: Vec<String>,
    violations: Vec<String>,
}

impl Chaos {
    fn say(&self, what: &str) {
        eprintln!("chaos[{}] step {}: {what}", self.seed, self.step);
    }

    fn violation(&mut self, what: String) {
        let v = format!("step {}: {what}", self.step);
        eprintln!("chaos[{}] VIOLATION {v}", self.seed);
        self.violations.push(v);
    }

    fn ever(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    fn new_id(&mut self) -> String {
        let id = format!("{}-{}", self.base, self.next_vm);
        self.next_vm += 1;
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    fn create_req(&self, id: &str) -> pb::CreateVmRequest {
        let mut r = self.d.create_req(id, "mode=idle");
        r.config.as_mut().unwrap().network = vec![pb::NetworkInterface::default()];
        r
    }

    /// A request error with nothing racing it: counted and kept for the report. A hang is a
    /// violation.
    fn odd(&mut self, what: String) {
        if what.contains("HUNG") {
            self.violation(what.clone());
        }
        self.request_errors += 1;
        self.say(&format!("request failed with nothing racing it: {what}"));
        self.odd_errors.push(format!("step {}: {what}", self.step));
    }

    async fn list(&mut self) -> Option<Vec<Vm>> {
        match bounded(self.c.list_vms(pb::ListVmsRequest {
            page_size: 1000,
            ..Default::default()
        }))
        .await
        {
            Ok(r) => Some(r.vms.into_iter().map(Vm::from).collect()),
            Err(e) => {
                self.violation(format!("ListVms of an idle, running daemon failed: {e}"));
                None
            }
        }
    }

    fn kill_pid(&mut self, id: &str, pid: u32) {
        self.say(&format!("SIGKILL Firecracker of {id} (pid {pid})"));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.fc_kills += 1;
        self.killed.insert(pid);
    }

    /// Waits until `pid` has exited (a zombie counts), up to [`GRACE`].
    async fn wait_exited(&self, pid: u32) -> bool {
        let t0 = Instant::now();
        while alive(pid) {
            if t0.elapsed() > GRACE {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// After a request to a running VM failed: true when the test SIGKILLed its Firecracker,
    /// which has died meanwhile, and the daemon has noticed (it no longer lists the VM as
    /// running) within [`GRACE`].
    async fn died_meanwhile(&mut self, id: &str, pid: u32) -> bool {
        if !self.killed.contains(&pid) {
            return false;
        }
        let t0 = Instant::now();
        loop {
            if !alive(pid) {
                let req = pb::GetVmInfoRequest { vm_id: id.into() };
                if let Ok(r) = bounded(self.c.get_vm_info(req)).await {
                    if !may_run(&Vm::from(r)) {
                        self.say(&format!("{id} (pid {pid}) died during the audit"));
                        return true;
                    }
                }
            }
            if t0.elapsed() > GRACE {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create(&mut self) {
        let id = self.new_id();
        self.say(&format!("create {id}"));
        if let Err(e) = bounded(self.c.create_vm(self.create_req(&id))).await {
            self.odd(format!("CreateVm {id}: {e}"));
        }
    }

    async fn boot(&mut self, id: &str) {
        self.say(&format!("boot {id}"));
        if let Err(e) = bounded(self.c.boot_vm(pb::BootVmRequest { vm_id: id.into() })).await {
            self.odd(format!("BootVm {id}: {e}"));
        }
    }

    async fn delete(&mut self, vm: &Vm) {
        let id = vm.vm_id.clone();
        self.say(&format!("delete {id} ({})", state_name(vm)));
        match bounded(self.c.delete_vm(pb::DeleteVmRequest {
            vm_id: id.clone(),
            force: false,
        }))
        .await
        {
            Ok(_) => {
                // DeleteVm returns once everything of the VM is gone from the host.
                let mut left = traces_of(&self.d.chroot, &self.d.parent_cgroup, &id, &host_links());
                left.extend(registry_traces(&id).iter().map(|p| p.display().to_string()));
                if !left.is_empty() {
                    self.violation(format!("DeleteVm {id} succeeded but left {left:?}"));
                }
                if let Ok(i) = bounded(
                    self.c
                        .get_vm_info(pb::GetVmInfoRequest { vm_id: id.clone() }),
                )
                .await
                {
                    self.violation(format!("deleted VM {id} still answers GetVmInfo: {i:?}"));
                }
            }
            Err(e) => self.odd(format!("DeleteVm {id}: {e}")),
        }
    }

    async fn kill_firecracker(&mut self, vm: &Vm) {
        let id = vm.vm_id.clone();
        match bounded(
            self.c
                .get_vm_info(pb::GetVmInfoRequest { vm_id: id.clone() }),
        )
        .await
        {
            Ok(r) => {
                let pid = r.details().pid;
                if pid == 0 {
                    self.violation(format!("running VM {id}: GetVmInfo gives no pid"));
                } else {
                    self.kill_pid(&id, pid);
                    if !self.wait_exited(pid).await {
                        self.say(&format!("pid {pid} outlived SIGKILL by {GRACE:?}"));
                    }
                }
            }
            Err(e) => self.odd(format!("GetVmInfo {id}: {e}")),
        }
    }

    /// SIGKILLs the daemon, perhaps some Firecrackers while it is down, restarts it and audits.
    async fn kill_daemon(&mut self, running: &[Vm]) {
        self.say("SIGKILL the daemon");
        self.d.kill();
        self.daemon_kills += 1;
        self.down_then_restart(running, None).await;
    }

    /// With the daemon down: perhaps SIGKILLs a running VM's Firecracker, restarts the daemon,
    /// and checks that every other VM that was running (but `busy`, the one a cut-off request
    /// was about) was re-attached with its process.
    async fn down_then_restart(&mut self, running: &[Vm], busy: Option<&str>) {
        let mut survivors: Vec<(String, u32)> = running
            .iter()
            .filter(|v| v.pid != 0 && Some(v.vm_id.as_str()) != busy)
            .filter(|v| !self.killed.contains(&v.pid))
            .map(|v| (v.vm_id.clone(), v.pid))
            .collect();
        if self.rng.percent(35) {
            if let Some(vm) = self.rng.pick(running).cloned() {
                if vm.pid != 0 {
                    self.kill_pid(&format!("{} (daemon down)", vm.vm_id), vm.pid);
                    survivors.retain(|(id, _)| id != &vm.vm_id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(self.rng.below(100))).await;
        self.say("restart the daemon");
        self.d.restart();
        self.c = self.d.client();
        let Some(vms) = self.list().await else {
            return;
        };
        for (id, pid) in survivors {
            let now = vms.iter().find(|v| v.vm_id == id);
            if !now.is_some_and(|v| may_run(v) && v.pid == pid) {
                self.violation(format!(
                    "healthy {id} (pid {pid}, alive: {}) was not re-attached by the restart: {}",
                    alive(pid),
                    now.map_or("no longer listed".into(), |v| format!(
                        "{} pid {} exit {:?}",
                        state_name(v),
                        v.pid,
                        v.exit
                    ))
                ));
            }
        }
    }

    /// A request on a task, the daemon SIGKILLed 0-150 ms into it, then a restart.
    async fn kill_daemon_during(&mut self, what: &str, id: String, running: &[Vm]) {
        // 0-40 ms lands in the request's first phases (intent, network, staging); a boot takes
        // about 100 ms here, so sometimes reach into the jailer's spawn, configuration and
        // InstanceStart as well.
        let delay = if self.rng.percent(50) {
            self.rng.below(41)
        } else {
            self.rng.below(151)
        };
        self.say(&format!(
            "{what} {id}, SIGKILL the daemon {delay} ms into it"
        ));
        let c = self.c.clone();
        let req = match what {
            "boot" => {
                let vm_id = id.clone();
                tokio::spawn(async move {
                    bounded(c.boot_vm(pb::BootVmRequest { vm_id }))
                        .await
                        .map(|_| ())
                })
            }
            "delete" => {
                let vm_id = id.clone();
                tokio::spawn(async move {
                    bounded(c.delete_vm(pb::DeleteVmRequest {
                        vm_id,
                        force: false,
                    }))
                    .await
                    .map(|_| ())
                })
            }
            _ => {
                let r = self.create_req(&id);
                tokio::spawn(async move { bounded(c.create_vm(r)).await.map(|_| ()) })
            }
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.d.kill();
        self.daemon_kills += 1;
        let acknowledged = match req.await.unwrap() {
            Ok(()) => {
                self.say(&format!("{what} {id} finished before the kill"));
                true
            }
            Err(e) => {
                if e.starts_with("HUNG") {
                    self.violation(format!("{what} {id}: {e}"));
                }
                self.request_errors += 1;
                self.say(&format!("{what} {id} cut off: {e}"));
                false
            }
        };
        self.down_then_restart(running, Some(&id)).await;
        if !acknowledged {
            return;
        }
        // What the daemon answered before it died holds after the restart.
        let req = pb::GetVmInfoRequest { vm_id: id.clone() };
        let now = bounded(self.c.get_vm_info(req)).await.ok().map(Vm::from);
        let held = match (what, &now) {
            ("delete", now) => now.is_none(),
            ("create", now) => now.is_some(),
            // Only VMs already running before the step are killed while the daemon is down.
            (_, Some(v)) => may_run(v),
            (_, None) => false,
        };
        if !held {
            self.violation(format!(
                "{what} {id} succeeded before the daemon died, but after the restart {id} is {}",
                now.map_or("not known".into(), |v| format!(
                    "{} exit {:?}",
                    state_name(&v),
                    v.exit
                ))
            ));
        }
    }

    /// The host-side checks (1-4 of the module docs) once; the problems found.
    async fn check_host(&mut self) -> (Vec<String>, Vec<Vm>) {
        let vms = match bounded(self.c.list_vms(pb::ListVmsRequest {
            page_size: 1000,
            ..Default::default()
        }))
        .await
        {
            Ok(r) => r.vms.into_iter().map(Vm::from).collect::<Vec<Vm>>(),
            Err(e) => return (vec![format!("ListVms failed: {e}")], Vec::new()),
        };
        let (chroot, parent) = (self.d.chroot.clone(), self.d.parent_cgroup.clone());
        let mut problems = Vec::new();
        let mut running_pids = BTreeSet::new();
        let mut addresses: BTreeMap<String, String> = BTreeMap::new();
        for vm in &vms {
            let id = &vm.vm_id;
            match vm_state(vm) {
                pb::VmState::Running | pb::VmState::Paused => {
                    let pid = vm.pid;
                    if pid == 0 {
                        problems.push(format!("{id} is {} without a pid", state_name(vm)));
                    } else if !alive(pid) {
                        problems.push(format!(
                            "{id} is listed {} but its Firecracker pid {pid} is {}",
                            state_name(vm),
                            proc_state(pid).map_or("gone".into(), |s| format!("in state {s}"))
                        ));
                    } else if !is_vms_process(pid, id, &parent, &vm.chroot_path) {
                        problems.push(format!(
                            "{id} is listed {} with pid {pid}, which is not its Firecracker",
                            state_name(vm)
                        ));
                    } else {
                        running_pids.insert(pid);
                    }
                }
                pb::VmState::Booting | pb::VmState::Stopping => problems.push(format!(
                    "{id} is {} with no request in flight",
                    state_name(vm)
                )),
                _ => {}
            }
            // Only a running guest's reported address is sure to be the one it holds.
            if !vm.guest_ip.is_empty() && may_run(vm) {
                if let Some(other) = addresses.insert(vm.guest_ip.clone(), id.clone()) {
                    problems.push(format!(
                        "{id} and {other} both hold address {}",
                        vm.guest_ip
                    ));
                }
            }
        }
        for p in jail_processes(&chroot, &parent) {
            if !running_pids.contains(&p.pid) {
                problems.push(format!("a process no running VM lists: {p}"));
            }
        }
        let links = host_links();
        let listed: BTreeMap<&str, &Vm> = vms.iter().map(|v| (v.vm_id.as_str(), v)).collect();
        let ever = self.ever();
        for id in &ever {
            let vm = listed.get(id.as_str());
            if vm.is_some_and(|v| may_run(v)) {
                continue;
            }
            let left = traces_of(&chroot, &parent, id, &links);
            if !left.is_empty() {
                problems.push(format!(
                    "{id} ({}) holds {left:?}",
                    vm.map_or("not listed", |v| state_name(v))
                ));
            }
        }
        let known: BTreeSet<&str> = ever.iter().map(String::as_str).collect();
        let mut unknown: Vec<String> = subdir_names(&chroot.join("firecracker"))
            .into_iter()
            .filter(|n| !known.contains(n.as_str()))
            .map(|n| format!("jail {n}"))
            .collect();
        for m in cgroup_mounts() {
            unknown.extend(
                subdir_names(&m.join(&parent))
                    .into_iter()
                    .filter(|n| !known.contains(n.as_str()))
                    .map(|n| format!("cgroup {}/{parent}/{n}", m.display())),
            );
        }
        if !unknown.is_empty() {
            problems.push(format!(
                "host holds things of no id of this test: {unknown:?}"
            ));
        }
        (problems, vms)
    }

    /// The audit: the host checks, given [`GRACE`] to settle, then every running VM must answer.
    async fn audit(&mut self, when: &str) -> Vec<Vm> {
        let t0 = Instant::now();
        let (problems, vms) = loop {
            let (problems, vms) = self.check_host().await;
            if problems.is_empty() || t0.elapsed() > GRACE {
                break (problems, vms);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for p in problems {
            self.violation(format!("audit {when}: {p}"));
        }
        for vm in vms.iter().filter(|v| vm_state(v) == pb::VmState::Running) {
            let (id, pid) = (vm.vm_id.clone(), vm.pid);
            let info = bounded(
                self.c
                    .get_vm_info(pb::GetVmInfoRequest { vm_id: id.clone() }),
            )
            .await
            .map(Vm::from);
            match info {
                Ok(i) if i.pid == vm.pid && i.pid != 0 && vm_state(&i) == pb::VmState::Running => {}
                Ok(_) if self.died_meanwhile(&id, pid).await => continue,
                Ok(i) => {
                    self.violation(format!(
                        "audit {when}: {id} listed running with pid {} but GetVmInfo says {} pid {}",
                        vm.pid,
                        state_name(&i),
                        i.pid
                    ));
                    continue;
                }
                Err(_) if self.died_meanwhile(&id, pid).await => continue,
                Err(e) => {
                    self.violation(format!("audit {when}: GetVmInfo {id} failed: {e}"));
                    continue;
                }
            }
            if let Err(e) = bounded(self.c.pause_vm(pb::PauseVmRequest { vm_id: id.clone() })).await
            {
                if self.died_meanwhile(&id, pid).await {
                    continue;
                }
                self.violation(format!("audit {when}: running {id} cannot be paused: {e}"));
                continue;
            }
            if let Err(e) =
                bounded(self.c.resume_vm(pb::ResumeVmRequest { vm_id: id.clone() })).await
            {
                if self.died_meanwhile(&id, pid).await {
                    continue;
                }
                self.violation(format!("audit {when}: paused {id} cannot be resumed: {e}"));
                continue;
            }
            self.vms_audited += 1;
        }
        vms
    }

    async fn run_step(&mut self, vms: &[Vm]) {
        let runnable: Vec<Vm> = vms.iter().filter(|v| bootable(v)).cloned().collect();
        let running: Vec<Vm> = vms
            .iter()
            .filter(|v| vm_state(v) == pb::VmState::Running)
            .cloned()
            .collect();
        let room = vms.len() < MAX_VMS;
        loop {
            match self.rng.below(100) {
                0..=19 if room => return self.create().await,
                20..=43 => {
                    if let Some(vm) = self.rng.pick(&runnable) {
                        let id = vm.vm_id.clone();
                        return self.boot(&id).await;
                    }
                }
                44..=55 => {
                    if let Some(vm) = self.rng.pick(vms).cloned() {
                        return self.delete(&vm).await;
                    }
                }
                56..=69 => {
                    if let Some(vm) = self.rng.pick(&running).cloned() {
                        return self.kill_firecracker(&vm).await;
                    }
                }
                70..=79 => return self.kill_daemon(&running).await,
                80..=91 => {
                    if let Some(vm) = self.rng.pick(&runnable) {
                        let id = vm.vm_id.clone();
                        return self.kill_daemon_during("boot", id, &running).await;
                    }
                }
                92..=96 => {
                    if let Some(vm) = self.rng.pick(vms) {
                        let id = vm.vm_id.clone();
                        return self.kill_daemon_during("delete", id, &running).await;
                    }
                }
                97..=99 if room => {
                    let id = self.new_id();
                    return self.kill_daemon_during("create", id, &running).await;
                }
                _ => {}
            }
        }
    }

    /// Deletes every VM, then nothing of the test may be left on the host.
    async fn finish(&mut self) -> usize {
        let before = self.violations.len();
        for vm in self.audit("before the final deletes").await {
            self.say(&format!("final delete {} ({})", vm.vm_id, state_name(&vm)));
            if let Err(e) = bounded(self.c.delete_vm(pb::DeleteVmRequest {
                vm_id: vm.vm_id.clone(),
                force: false,
            }))
            .await
            {
                self.violation(format!("final DeleteVm {} failed: {e}", vm.vm_id));
            }
        }
        let left = self.audit("after deleting every VM").await;
        if !left.is_empty() {
            let ids: Vec<&str> = left.iter().map(|v| v.vm_id.as_str()).collect();
            self.violation(format!("VMs still listed after deleting all: {ids:?}"));
        }
        // The harness's own view too (its jails and cgroups), and the host-wide owner records.
        let mut traces = self.d.host_traces();
        for id in self.ever() {
            traces.extend(registry_traces(&id));
        }
        if !traces.is_empty() {
            self.violation(format!("left on the host: {traces:?}"));
        }
        self.violations.len() - before
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_creates_boots_deletes_and_kills_leave_every_vm_controllable_and_nothing_behind() {
    let seed = seed();
    let steps = env_u64("WARDEN_CHAOS_STEPS").unwrap_or(STEPS);
    eprintln!("chaos: seed={seed} steps={steps} (replay with WARDEN_CHAOS_SEED={seed})");
    let t0 = Instant::now();
    let bridge = format!("wdc{:x}", std::process::id() & 0xffff);
    let ids = Arc::new(Mutex::new(Vec::new()));
    let d = Daemon::start(&[
        ("WARDEN_NETWORK_MODE", "bridge"),
        ("WARDEN_BRIDGE", &bridge),
        ("WARDEN_ADDRESS_POOL", "10.215.9.0/24"),
        // Jailed or nothing: an unjailed VM would escape the audit's process checks.
        ("WARDEN_REQUIRE_JAILER", "true"),
    ]);
    // Declared before `chaos`, so dropped after the daemon it holds: see HostGuard.
    let _guard = HostGuard {
        ids: ids.clone(),
        chroot: d.chroot.clone(),
        parent_cgroup: d.parent_cgroup.clone(),
        bridge,
    };
    let mut chaos = Chaos {
        c: d.client(),
        d,
        rng: Rng::new(seed),
        seed,
        base: unique("chaos"),
        next_vm: 0,
        ids,
        step: 0,
        fc_kills: 0,
        killed: BTreeSet::new(),
        daemon_kills: 0,
        vms_audited: 0,
        request_errors: 0,
        odd_errors: Vec::new(),
        violations: Vec::new(),
    };
    for step in 1..=steps {
        chaos.step = step;
        let Some(vms) = chaos.list().await else {
            break;
        };
        chaos.run_step(&vms).await;
        chaos.audit("after the step").await;
    }
    chaos.step = steps + 1;
    let leaks = chaos.finish().await;
    let summary = format!(
        "chaos: seed={} steps={} fc_kills={} daemon_kills={} vms_audited={} leaks={}",
        seed,
        steps,
        chaos.fc_kills,
        chaos.daemon_kills,
        chaos.vms_audited,
        chaos.violations.len()
    );
    eprintln!(
        "{summary}\nchaos: {} VMs, {} request errors ({} with nothing racing them), {:.1?}",
        chaos.next_vm,
        chaos.request_errors,
        chaos.odd_errors.len(),
        t0.elapsed()
    );
    for e in &chaos.odd_errors {
        eprintln!("chaos: unraced error: {e}");
    }
    let log = format!("/tmp/warden-chaos-{seed}.log");
    if !chaos.violations.is_empty() || std::env::var_os("WARDEN_CHAOS_KEEP_LOG").is_some() {
        let _ = std::fs::write(&log, chaos.d.logs());
        eprintln!("chaos: daemon log copied to {log}");
    }
    if !chaos.violations.is_empty() {
        panic!(
            "{summary}\n{} invariant violations ({leaks} at the end), daemon log copied to {log}:\n{}",
            chaos.violations.len(),
            chaos.violations.join("\n")
        );
    }
}
