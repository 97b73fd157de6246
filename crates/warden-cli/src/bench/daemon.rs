//! A `warden serve` started by the bench: its own temp state dir, chroot dir under /tmp, parent
//! cgroup and port, so it never sees (or cleans) anyone else's VMs. Dropping it deletes every
//! VM it holds, stops it with SIGTERM and removes whatever is left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use warden_api::{pb, Client, Endpoint};

use super::host::{self, id_prefix};
use super::Leftovers;

/// Boot arguments of a guest that prints the marker and powers off.
pub(crate) const POWEROFF: &str = "mode=poweroff marker=bench";
/// Boot arguments of a guest that prints the marker and idles until Ctrl-Alt-Del.
pub(crate) const IDLE: &str = "mode=idle marker=bench";
/// What the guest prints once booted.
pub(crate) const MARKER: &str = "WARDEN_MARKER bench";

static DAEMONS: AtomicUsize = AtomicUsize::new(0);

pub(crate) struct BenchDaemon {
    child: Option<Child>,
    port: u16,
    dir: Option<tempfile::TempDir>,
    chroot: PathBuf,
    state_dir: PathBuf,
    parent_cgroup: String,
    log: PathBuf,
    env: Vec<(String, String)>,
    kernel: String,
}

impl BenchDaemon {
    /// Starts a daemon (Firecracker's own PID namespace per VM when `pidns`) and waits until
    /// it answers.
    pub(crate) fn start(pidns: bool) -> anyhow::Result<Self> {
        Self::start_with(pidns, &[])
    }

    /// [`Self::start`] with more settings (`WARDEN_*` variables).
    pub(crate) fn start_with(pidns: bool, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let kernel = super::start::need(warden::assets::testguest())?;
        let jailer = super::start::need(warden::assets::jailer())?;
        let firecracker = super::start::need(warden::assets::firecracker())?;
        let dir = tempfile::Builder::new()
            .prefix(&host::tmp_prefix())
            .tempdir_in("/tmp")?;
        let chroot = dir.path().join("j");
        let state_dir = dir.path().join("state");
        let parent_cgroup = format!(
            "{}-d{}",
            host::cgroup_prefix(),
            DAEMONS.fetch_add(1, Ordering::Relaxed)
        );
        let assets = kernel.parent().context("kernel path")?.to_owned();
        let env: Vec<(String, String)> = vec![
            ("WARDEN_STATE_DIR".into(), state_dir.display().to_string()),
            (
                "WARDEN_JAILER_CHROOT_DIR".into(),
                chroot.display().to_string(),
            ),
            ("WARDEN_PARENT_CGROUP".into(), parent_cgroup.clone()),
            ("WARDEN_ASSET_DIRS".into(), assets.display().to_string()),
            ("WARDEN_JAILER_BINARY".into(), jailer.display().to_string()),
            (
                "WARDEN_FIRECRACKER_BINARY".into(),
                firecracker.display().to_string(),
            ),
            ("WARDEN_JAILER_PIDNS".into(), pidns.to_string()),
            ("WARDEN_LOG_FORMAT".into(), "json".into()),
        ];
        let mut env = env;
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut d = Self {
            child: None,
            port,
            log: dir.path().join("daemon.log"),
            dir: Some(dir),
            chroot,
            state_dir,
            parent_cgroup,
            env,
            kernel: kernel.display().to_string(),
        };
        d.spawn()?;
        Ok(d)
    }

    /// Starts the process and waits until it accepts connections (its recovery is done by then).
    pub(crate) fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)]);
        // Settings of the caller's environment do not apply to the bench's own daemon.
        for (k, _) in std::env::vars() {
            if k.starts_with("WARDEN_") || k.starts_with("UNKEY_METALD_") {
                cmd.env_remove(k);
            }
        }
        use std::os::unix::process::CommandExt;
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches the bench, which then
            // deletes the VMs and stops the daemon in order.
            .process_group(0);
        let mut child = cmd.spawn().context("starting warden serve")?;
        let t0 = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("warden serve exited at start ({status}): {}", self.logs());
            }
            if t0.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("warden serve not up after 120 s: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Warm jails of its pool whose Firecracker API is up (`pool-*` jails with a socket and no
    /// kernel staged yet).
    pub(crate) fn warm_jails_ready(&self) -> usize {
        std::fs::read_dir(self.chroot.join("firecracker"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pool-"))
            .filter(|e| {
                let root = e.path().join("root");
                root.join("run/firecracker.socket").exists() && !root.join("kernel").exists()
            })
            .count()
    }

    /// The daemon's `/metrics` text.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// The last lines of the daemon's log.
    pub(crate) fn logs(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(
            Endpoint::Tcp(format!("http://127.0.0.1:{}", self.port)),
            None,
        )
        .with_timeout(Duration::from_secs(60))
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn chroot(&self) -> &Path {
        &self.chroot
    }

    pub(crate) fn parent_cgroup(&self) -> &str {
        &self.parent_cgroup
    }

    /// The file the VM's serial console goes to.
    pub(crate) fn serial_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("vms").join(id).join("serial.log")
    }

    /// Where the daemon keeps snapshot `name`.
    pub(crate) fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("snapshots").join(name)
    }

    /// SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for it to exit (VMs keep running unless deleted before).
    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A CreateVm request for the test guest with `boot_args`.
    pub(crate) fn create_req(&self, id: &str, boot_args: &str) -> pb::CreateVmRequest {
        pb::CreateVmRequest {
            vm_id: id.into(),
            config: Some(
                pb::VmConfig::with_kernel(self.kernel.clone())
                    .vcpus(1)
                    .memory_mib(128)
                    .kernel_args(boot_args),
            ),
            customer_id: String::new(),
        }
    }

    /// A fresh VM id with the bench's prefix.
    pub(crate) fn vm_id(tag: &str) -> String {
        format!("{}{tag}", id_prefix())
    }

    /// Deletes every VM of the daemon, `parallel` at a time.
    pub(crate) async fn delete_all(&self, parallel: usize) -> anyhow::Result<()> {
        delete_all(self.client(), parallel).await
    }

    /// Deletes every VM, stops the daemon with SIGTERM, removes its parent cgroups and temp
    /// dir, and says what was left on the host before the forced sweep (all zero when clean).
    pub(crate) async fn finish(mut self) -> anyhow::Result<Leftovers> {
        let deleted = self.delete_all(8).await;
        self.terminate();
        let mut left = host::leftovers(&self.chroot, &id_prefix(), &self.parent_cgroup);
        // The parent directories are the bench's own: they count only if they cannot go.
        left.parent_cgroups = 0;
        host::sweep(&self.chroot, &id_prefix(), &self.parent_cgroup);
        let after = host::leftovers(&self.chroot, &id_prefix(), &self.parent_cgroup);
        left.parent_cgroups = after.parent_cgroups;
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            let _ = dir.close();
            left.temp_dirs = usize::from(path.exists());
        }
        deleted.map(|()| left)
    }
}

/// Deletes every VM the daemon behind `client` lists.
async fn delete_all(client: Client, parallel: usize) -> anyhow::Result<()> {
    let ids: Vec<String> = client
        .list_all_vms(Vec::new())
        .await?
        .into_iter()
        .map(|v| v.vm_id)
        .collect();
    let ids = std::sync::Arc::new(ids);
    let n = ids.len();
    host::pool(n, parallel, move |i| {
        let (client, ids) = (client.clone(), ids.clone());
        async move {
            client
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
    Ok(())
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if self.dir.is_none() {
            return; // finished
        }
        if self.child.is_some() {
            // Dropped inside the bench's runtime (maybe while it unwinds a Ctrl-C): delete from
            // a thread with its own runtime.
            let client = self.client();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                // Not interrupted here: the deletes are the cleanup.
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(300),
                        delete_all_uninterruptible(client),
                    )
                    .await;
                });
            })
            .join();
            self.terminate();
        }
        host::sweep(&self.chroot, &id_prefix(), &self.parent_cgroup);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// [`delete_all`] without the interruption check (which would stop it after a Ctrl-C).
async fn delete_all_uninterruptible(client: Client) {
    let Ok(vms) = client.list_all_vms(Vec::new()).await else {
        return;
    };
    let mut set = tokio::task::JoinSet::new();
    for chunk in vms.chunks(vms.len().div_ceil(8).max(1)) {
        let ids: Vec<String> = chunk.iter().map(|v| v.vm_id.clone()).collect();
        let client = client.clone();
        set.spawn(async move {
            for vm_id in ids {
                let _ = client
                    .delete_vm(pb::DeleteVmRequest {
                        vm_id,
                        force: false,
                    })
                    .await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Waits until `path` contains `needle`, polling every `every`.
pub(crate) async fn wait_for_file(
    path: &Path,
    needle: &str,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read(path) {
            if s.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return Ok(());
            }
        }
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "{needle:?} not in {} after {timeout:?}",
            path.display()
        );
        tokio::time::sleep(every).await;
    }
}

/// Waits until the VM's state is `want`, on its WatchVms stream (which starts with its current
/// state, so a change before the call is not missed).
/// Reads a WatchVms stream until VM `id` is in `want` (an error if it fails first).
pub(crate) async fn until_state(
    events: &mut warden_api::EventStream,
    id: &str,
    want: pb::VmState,
    timeout: Duration,
) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, async {
        while let Some(ev) = events.next().await {
            let ev = ev?;
            if ev.new_state() == want {
                return Ok(());
            }
            anyhow::ensure!(
                ev.new_state() != pb::VmState::Unspecified,
                "{id}: unexpected event {ev:?}"
            );
        }
        anyhow::bail!("{id}: the WatchVms stream ended before {want:?}")
    })
    .await
    .map_err(|_| anyhow::anyhow!("{id} not {want:?} after {timeout:?}"))?
}

pub(crate) async fn wait_for_state(
    client: &Client,
    id: &str,
    want: pb::VmState,
    timeout: Duration,
) -> anyhow::Result<()> {
    let wait = async {
        let mut events = client
            .watch_vms(pb::WatchVmsRequest { vm_id: id.into() })
            .await?;
        let mut last = pb::VmState::Unspecified as i32;
        while let Some(ev) = events.next().await {
            let ev = ev?;
            last = ev.new_state;
            if ev.new_state == want as i32 {
                return Ok(());
            }
            anyhow::ensure!(
                ev.new_state != pb::VmState::Failed as i32,
                "VM {id} failed: {}",
                ev.reason
            );
        }
        anyhow::bail!("the WatchVms stream of {id} ended in state {last}")
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow::anyhow!("VM {id} not {want:?} after {timeout:?}"))?
}
