//! A real `warden serve` process for tests: its own state directory, chroot base and parent
//! cgroup, so daemons in parallel tests never see (or clean) each other's VMs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warden_api::{pb, Client, Endpoint};

pub fn assets() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/assets")
        .canonicalize()
        .expect("run scripts/setup-assets.sh");
    assert!(
        dir.join("testguest").is_file(),
        "run scripts/setup-assets.sh first"
    );
    dir
}

pub fn testguest() -> String {
    assets().join("testguest").display().to_string()
}

pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), n & 0xfffff)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub chroot: PathBuf,
    pub parent_cgroup: String,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// A cgroup (v2) directory the daemon is started in, as systemd starts a service in its own.
    pub cgroup: Option<PathBuf>,
}

impl Daemon {
    /// Starts a daemon with the test's own directories plus `env`, and waits for /healthz.
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_in(env, None)
    }

    /// Starts a daemon as [`Daemon::start`] does, inside cgroup directory `cgroup` when given.
    pub fn start_in(env: &[(&str, &str)], cgroup: Option<PathBuf>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wd")
            .tempdir_in("/tmp")
            .unwrap();
        let chroot = dir.path().join("j");
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        let parent_cgroup = unique("wdt");
        let mut all: Vec<(String, String)> = vec![
            (
                "WARDEN_STATE_DIR".into(),
                dir.path().join("state").display().to_string(),
            ),
            (
                "WARDEN_JAILER_CHROOT_DIR".into(),
                chroot.display().to_string(),
            ),
            ("WARDEN_PARENT_CGROUP".into(), parent_cgroup.clone()),
            (
                "WARDEN_ASSET_DIRS".into(),
                format!(
                    "{},{}",
                    assets().display(),
                    dir.path().join("assets").display()
                ),
            ),
            ("WARDEN_LOG_FORMAT".into(), "json".into()),
            ("WARDEN_STOP_TIMEOUT".into(), "2".into()),
        ];
        for (k, v) in env {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.to_string()));
        }
        let mut d = Self {
            child: None,
            port: free_port(),
            log: dir.path().join("daemon.log"),
            dir,
            chroot,
            parent_cgroup,
            env: all,
            cgroup,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.cgroup {
            // The shell moves itself into the cgroup, then becomes the daemon.
            Some(dir) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    "echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"",
                    "sh",
                ])
                .arg(dir)
                .arg(env!("CARGO_BIN_EXE_warden"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_warden")),
        };
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().map_err(|e| e.to_string())?);
        let t0 = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "daemon exited at start ({status}): {}",
                    self.logs()
                ));
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(format!("daemon not up: {}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Client {
        Client::new(Endpoint::Tcp(self.url()), None)
    }

    /// A file under the daemon's second asset directory.
    pub fn asset_file(&self, name: &str, first_sector: &[u8]) -> String {
        let p = self.dir.path().join("assets").join(name);
        let mut data = first_sector.to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&p, data).unwrap();
        p.display().to_string()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Everything of this daemon's VMs on the host: jails, cgroup directories, namespaces.
    pub fn host_traces(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.chroot.join("firecracker"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(entry.path());
        }
        for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            for entry in std::fs::read_dir(c.path().join(&self.parent_cgroup))
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.path().is_dir() {
                    out.push(entry.path());
                }
            }
        }
        out
    }

    pub fn assert_clean(&self) {
        let t = self.host_traces();
        assert!(t.is_empty(), "left on the host: {t:?}\n{}", self.logs());
    }

    pub fn create_req(&self, id: &str, boot_args: &str) -> pb::CreateVmRequest {
        pb::CreateVmRequest {
            vm_id: id.into(),
            config: Some(
                pb::VmConfig::with_kernel(testguest())
                    .vcpus(1)
                    .memory_mib(128)
                    .kernel_args(boot_args),
            ),
            customer_id: String::new(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Stop every VM this daemon knows, then the daemon; then remove its parent cgroups.
        if self.child.is_some() {
            // Tests drop this inside their runtime: delete from a thread with its own.
            let client = self.client();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(vms) = client.list_all_vms(Vec::new()).await {
                        for vm in vms {
                            let _ = client
                                .delete_vm(pb::DeleteVmRequest {
                                    vm_id: vm.vm_id,
                                    force: false,
                                })
                                .await;
                        }
                    }
                });
            })
            .join();
        }
        self.terminate();
        // VMs outlive a SIGTERMed daemon by design. A test that failed mid-request can leave
        // one: one more start with stop_vms_on_exit re-attaches it, then stops and cleans it.
        if !self.host_traces().is_empty() {
            self.env
                .push(("WARDEN_STOP_VMS_ON_EXIT".into(), "true".into()));
            if self.try_spawn().is_ok() {
                self.terminate();
            }
        }
        for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let _ = std::fs::remove_dir(c.path().join(&self.parent_cgroup));
        }
    }
}

/// Waits until `f` holds, up to `timeout`.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

pub fn state(s: pb::VmState) -> i32 {
    s as i32
}

/// GetVmInfo's warden details of a VM (`state` is warden's finer state).
pub async fn vm_info(c: &Client, id: impl Into<String>) -> pb::VmDetails {
    get_info(c, id).await.details()
}

/// GetVmInfo's whole answer.
pub async fn get_info(c: &Client, id: impl Into<String>) -> pb::GetVmInfoResponse {
    c.get_vm_info(pb::GetVmInfoRequest { vm_id: id.into() })
        .await
        .unwrap()
}

/// Waits on the VM's WatchVms stream (it starts with the current state) until it is `want`;
/// the event that says so, or `None` after `timeout`.
pub async fn wait_state(
    c: &Client,
    id: impl Into<String>,
    want: pb::VmState,
    timeout: Duration,
) -> Option<pb::WatchVmsResponse> {
    let mut events = c
        .watch_vms(pb::WatchVmsRequest { vm_id: id.into() })
        .await
        .unwrap();
    tokio::time::timeout(timeout, async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if ev.new_state() == want {
                return Some(ev);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// BootVm, which must succeed.
pub async fn boot(c: &Client, id: impl Into<String>) {
    c.boot_vm(pb::BootVmRequest { vm_id: id.into() })
        .await
        .unwrap();
}

/// Host state of a VM `id` as warden makes it (a jail directory with a file, a memory cgroup
/// directory, a network namespace) under daemon `d`'s layout. With `owner`, it is recorded in
/// the host-wide registry as that owner's; without, it has no record (as the plain jailer or
/// another tool would leave it).
pub fn plant_vm_state(d: &Daemon, id: &str, owner: Option<jail::Owner>) -> jail::JailPlan {
    let layout = jail::Layout::new(
        &d.chroot,
        Path::new("firecracker"),
        &d.parent_cgroup,
        jail::CgroupVersion::V1,
        jail::cgroup::Hierarchy::host().unwrap(),
    );
    let root = layout.root_dir(id);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("kernel"), b"x").unwrap();
    let cgroup = Path::new("/sys/fs/cgroup/memory")
        .join(&d.parent_cgroup)
        .join(id);
    std::fs::create_dir_all(&cgroup).unwrap();
    let netns = layout.netns_path(id);
    jail::net::netns::create(&layout.netns_dir, &jail::net::netns::name_for(id)).unwrap();
    let plan = jail::JailPlan {
        id: id.into(),
        jailed: true,
        argv: vec!["jailer".into()],
        jail_dir: layout.jail_dir(id),
        root_dir: root,
        socket_path: layout.socket_path(id),
        pid_file: layout.pid_file(id),
        log_file: layout.log_file(id),
        owner_file: layout.owner_file(id),
        uid: 10000,
        gid: 10000,
        cgroup_version: jail::CgroupVersion::V1,
        cgroups: vec![],
        cgroup_dirs: vec![cgroup],
        cgroup_accounting_dir: None,
        cgroup_leaf: None,
        cgroups_off: vec![],
        rlimits: vec![],
        new_pid_ns: false,
        netns: Some(netns),
        netns_owned: true,
        net: None,
        staged: vec![],
    };
    if let Some(owner) = owner {
        let rec = jail::OwnerRecord {
            id: id.into(),
            owner,
            plan: plan.clone(),
            firecracker: None,
            reserved_at_unix_ms: 0,
            uid_leased: false,
        };
        jail::Registry::default().reserve(&rec).unwrap();
        std::fs::write(&plan.owner_file, serde_json::to_vec(&rec).unwrap()).unwrap();
    }
    plan
}

/// Whether anything of a planted VM is still on the host.
pub fn planted_traces(plan: &jail::JailPlan) -> Vec<PathBuf> {
    std::iter::once(&plan.jail_dir)
        .chain(&plan.cgroup_dirs)
        .chain(&plan.netns)
        .chain(std::iter::once(&jail::Registry::default().path(&plan.id)))
        .filter(|p| p.exists())
        .cloned()
        .collect()
}

/// Removes a planted VM's state by hand (the test's own clean-up).
pub fn unplant(plan: &jail::JailPlan) {
    let _ = std::fs::remove_dir_all(&plan.jail_dir);
    for d in &plan.cgroup_dirs {
        let _ = std::fs::remove_dir(d);
    }
    if let Some(ns) = &plan.netns {
        let _ = jail::net::netns::remove(ns);
    }
    let _ = jail::Registry::default().release(&plan.id);
}

/// An owner that provably no longer runs (a process from another boot).
pub fn dead_owner() -> jail::Owner {
    jail::Owner::Process {
        pid: std::process::id(),
        start_time: 1,
        boot_id: "a-boot-long-ago".into(),
    }
}
