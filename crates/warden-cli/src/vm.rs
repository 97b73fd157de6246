//! `warden vm ...`: the daemon's API from the command line (Connect JSON over TCP or a Unix
//! socket). A human table by default, `--json` for scripts.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use warden_api::{pb, Client, Endpoint};

/// `warden vm` arguments.
#[derive(Args, Debug)]
pub struct VmArgs {
    /// The daemon: `http://HOST:PORT` or `unix:/path/to/socket`.
    #[arg(
        long,
        global = true,
        env = "WARDEN_ENDPOINT",
        default_value = "http://127.0.0.1:8080"
    )]
    endpoint: String,
    /// Bearer token, if the daemon requires one.
    #[arg(long, global = true, env = "WARDEN_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON (the API's messages) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: VmCommand,
}

#[derive(Subcommand, Debug)]
enum VmCommand {
    /// Create a VM (and boot it with --boot).
    Create(Box<CreateArgs>),
    /// Boot a created or stopped VM.
    Boot { id: String },
    /// List VMs (every page).
    Ls {
        /// Only VMs in this state (created, running, paused, shutdown, booting, stopping,
        /// failed); repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
    },
    /// Show one VM: state, pid, jail paths, cgroups, isolation report, exit reason.
    Get { id: String },
    /// Pause a running VM.
    Pause { id: String },
    /// Resume a paused VM.
    Resume { id: String },
    /// Stop and boot again.
    Reboot {
        id: String,
        /// Kill instead of stopping gracefully.
        #[arg(long)]
        force: bool,
    },
    /// Stop a VM (Ctrl-Alt-Del, then SIGKILL after the timeout).
    Stop {
        id: String,
        /// Kill at once.
        #[arg(long)]
        force: bool,
        /// Graceful stop deadline in seconds.
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Print every state change (WatchVms): first each VM's current state, then each change as
    /// it happens, until interrupted. With --json, one event per line.
    Events {
        /// Only this VM's events.
        id: Option<String>,
    },
    /// Delete a VM (stopping it gracefully first).
    Rm {
        id: String,
        /// Kill a running VM at once instead.
        #[arg(long)]
        force: bool,
    },
    /// Take a snapshot of a running VM into the daemon's store (SnapshotVm): full, or with
    /// --diff only the pages dirtied since its last snapshot, merged onto that one's memory.
    Snapshot {
        id: String,
        /// The snapshot's name (letters, digits and '-').
        name: String,
        /// Leave the VM paused afterwards.
        #[arg(long)]
        keep_paused: bool,
        /// A diff snapshot on top of --parent (the VM must be created with
        /// --track-dirty-pages).
        #[arg(long, requires = "parent")]
        diff: bool,
        /// With --diff: the VM's last snapshot, which the diff goes on top of.
        #[arg(long, requires = "diff", value_name = "SNAPSHOT")]
        parent: Option<String>,
    },
    /// Start a new VM from a snapshot (RestoreVm): a clone with its own jail and uid; with
    /// --count, N clones started concurrently, one line per clone (its id and state, or why it
    /// failed). Exit status 1 if any failed.
    Restore {
        /// The snapshot's name.
        snapshot: String,
        /// The new VM's id (generated when omitted); with --count, the prefix of the clones'
        /// ids `<ID>-1` ... `<ID>-<N>` (default: `<snapshot>-<random>`).
        #[arg(long)]
        id: Option<String>,
        /// How many clones to start, all at once.
        #[arg(long, value_name = "N")]
        count: Option<u32>,
    },
    /// List the snapshots of the daemon's store.
    Snapshots,
    /// Delete a snapshot.
    RmSnapshot { name: String },
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// VM id (generated when omitted).
    #[arg(long)]
    id: Option<String>,
    /// Kernel image (under one of the daemon's asset directories).
    #[arg(long)]
    kernel: PathBuf,
    /// Root filesystem image.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Extra drive, `PATH` or `PATH:ro`; repeatable.
    #[arg(long = "drive", value_name = "PATH[:ro]")]
    drives: Vec<String>,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// Kernel command line.
    #[arg(long)]
    boot_args: Option<String>,
    /// Memory cgroup cap in MiB.
    #[arg(long)]
    memory_limit: Option<u32>,
    /// CPU cap in percent of one core.
    #[arg(long)]
    cpu_quota: Option<u32>,
    #[command(flatten)]
    limits: crate::limits::PinAndIo,
    /// Give the VM a network device (the daemon's network_mode decides how it reaches the host).
    #[arg(long)]
    net: bool,
    /// Boot with Firecracker's dirty-page tracking, so that `warden vm snapshot --diff` can
    /// take diff snapshots of it.
    #[arg(long)]
    track_dirty_pages: bool,
    /// The customer the VM belongs to (kept and shown).
    #[arg(long)]
    customer_id: Option<String>,
    /// Boot it right after creating it.
    #[arg(long)]
    boot: bool,
}

/// Runs a `warden vm` command.
pub async fn vm(args: VmArgs) -> anyhow::Result<u8> {
    let client = Client::new(Endpoint::parse(&args.endpoint)?, args.token.clone());
    let json = args.json;
    match args.command {
        VmCommand::Create(c) => {
            let mut storage = Vec::new();
            if let Some(rootfs) = &c.rootfs {
                storage.push(pb::StorageDevice {
                    path: rootfs.display().to_string(),
                    is_root_device: true,
                    ..Default::default()
                });
            }
            for d in &c.drives {
                let (path, read_only) = crate::run::parse_drive(d);
                storage.push(pb::StorageDevice {
                    path: path.into(),
                    read_only,
                    ..Default::default()
                });
            }
            let config = pb::VmConfig {
                cpu: Some(pb::CpuConfig {
                    vcpu_count: i32::try_from(c.vcpus).unwrap_or(i32::MAX),
                    ..Default::default()
                }),
                memory: Some(pb::MemoryConfig {
                    size_bytes: i64::from(c.memory) << 20,
                    ..Default::default()
                }),
                boot: Some(pb::BootConfig {
                    kernel_path: c.kernel.display().to_string(),
                    kernel_args: c.boot_args.unwrap_or_default(),
                    ..Default::default()
                }),
                storage,
                network: if c.net {
                    vec![pb::NetworkInterface::default()]
                } else {
                    Vec::new()
                },
                memory_limit_mib: c.memory_limit,
                cpu_quota_percent: c.cpu_quota,
                cpuset: c.limits.cpuset,
                io_read_bps: c.limits.io_read_bps,
                io_write_bps: c.limits.io_write_bps,
                io_read_iops: c.limits.io_read_iops,
                io_write_iops: c.limits.io_write_iops,
                track_dirty_pages: c.track_dirty_pages,
                ..Default::default()
            };
            let created = client
                .create_vm(pb::CreateVmRequest {
                    vm_id: c.id.unwrap_or_default(),
                    config: Some(config),
                    customer_id: c.customer_id.unwrap_or_default(),
                })
                .await?;
            if c.boot {
                let booted = client
                    .boot_vm(pb::BootVmRequest {
                        vm_id: created.vm_id.clone(),
                    })
                    .await?;
                print(json, &booted, || {
                    format!("{} {}", created.vm_id, state_name(booted.warden_state))
                });
            } else {
                print(json, &created, || {
                    format!("{} {}", created.vm_id, state_name(created.warden_state))
                });
            }
        }
        VmCommand::Boot { id } => {
            let r = client
                .boot_vm(pb::BootVmRequest { vm_id: id.clone() })
                .await?;
            print(json, &r, || format!("{id} {}", state_name(r.warden_state)));
        }
        VmCommand::Pause { id } => {
            let r = client
                .pause_vm(pb::PauseVmRequest { vm_id: id.clone() })
                .await?;
            print(json, &r, || format!("{id} {}", state_name(r.warden_state)));
        }
        VmCommand::Resume { id } => {
            let r = client
                .resume_vm(pb::ResumeVmRequest { vm_id: id.clone() })
                .await?;
            print(json, &r, || format!("{id} {}", state_name(r.warden_state)));
        }
        VmCommand::Reboot { id, force } => {
            let r = client
                .reboot_vm(pb::RebootVmRequest {
                    vm_id: id.clone(),
                    force,
                })
                .await?;
            print(json, &r, || format!("{id} {}", state_name(r.warden_state)));
        }
        VmCommand::Stop { id, force, timeout } => {
            let r = client
                .shutdown_vm(pb::ShutdownVmRequest {
                    vm_id: id.clone(),
                    force,
                    timeout_seconds: i32::try_from(timeout.unwrap_or(0)).unwrap_or(i32::MAX),
                })
                .await?;
            print(json, &r, || format!("{id} {}", state_name(r.warden_state)));
        }
        VmCommand::Snapshot {
            id,
            name,
            keep_paused,
            diff,
            parent,
        } => {
            let r = client
                .snapshot_vm(pb::SnapshotVmRequest {
                    vm_id: id.clone(),
                    name: name.clone(),
                    keep_paused,
                    diff,
                    parent: parent.clone().unwrap_or_default(),
                })
                .await?;
            print(json, &r, || match (&parent, &r.snapshot) {
                (Some(p), Some(s)) => format!(
                    "{id} snapshotted as {name} (a diff on top of {p}: {} KiB of memory dirtied)",
                    s.diff_bytes >> 10
                ),
                _ => format!("{id} snapshotted as {name}"),
            });
        }
        VmCommand::Restore {
            snapshot,
            id,
            count: Some(n),
        } => return restore_many(&client, json, &snapshot, id, n).await,
        VmCommand::Restore {
            snapshot,
            id,
            count: None,
        } => {
            let r = client
                .restore_vm(pb::RestoreVmRequest {
                    vm_id: id.unwrap_or_default(),
                    snapshot: snapshot.clone(),
                })
                .await?;
            print(json, &r, || format!("{} restored from {snapshot}", r.vm_id));
        }
        VmCommand::Snapshots => {
            let r = client.list_snapshots(pb::ListSnapshotsRequest {}).await?;
            print(json, &r, || {
                r.snapshots
                    .iter()
                    .map(|s| {
                        format!(
                            "{:<24} from {:<28} {} vCPU {} MiB, {} MiB on disk, Firecracker {}{}",
                            s.name,
                            s.source_vm_id,
                            s.vcpu_count,
                            s.memory_bytes >> 20,
                            s.size_bytes >> 20,
                            s.firecracker_version,
                            if s.kind == "diff" {
                                format!(", diff on top of {}", s.parent)
                            } else {
                                String::new()
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        VmCommand::RmSnapshot { name } => {
            let r = client
                .delete_snapshot(pb::DeleteSnapshotRequest { name: name.clone() })
                .await?;
            print(json, &r, || format!("snapshot {name} deleted"));
        }
        VmCommand::Rm { id, force } => {
            let r = client
                .delete_vm(pb::DeleteVmRequest {
                    vm_id: id.clone(),
                    force,
                })
                .await?;
            print(json, &r, || format!("{id} deleted"));
        }
        VmCommand::Ls { states } => {
            let state_filter = states
                .iter()
                .map(|s| parse_state(s))
                .collect::<anyhow::Result<Vec<i32>>>()?;
            let mut all = pb::ListVmsResponse::default();
            loop {
                let page = client
                    .list_vms(pb::ListVmsRequest {
                        state_filter: state_filter.clone(),
                        page_size: 0,
                        page_token: all.next_page_token.clone(),
                    })
                    .await?;
                all.vms.extend(page.vms);
                all.total_count = page.total_count;
                all.next_page_token = page.next_page_token;
                if all.next_page_token.is_empty() {
                    break;
                }
            }
            print(json, &all, || table(&all.vms));
        }
        VmCommand::Events { id } => {
            let mut events = client
                .watch_vms(pb::WatchVmsRequest {
                    vm_id: id.unwrap_or_default(),
                })
                .await?;
            while let Some(ev) = events.next().await {
                let ev = ev?;
                if json {
                    println!("{}", serde_json::to_string(&ev).expect("proto JSON"));
                } else {
                    let mut extra = String::new();
                    if !ev.snapshot.is_empty() {
                        extra.push_str(&format!(" snapshot {}", ev.snapshot));
                    }
                    if !ev.restored_from.is_empty() {
                        extra.push_str(&format!(" (clone of {})", ev.restored_from));
                    }
                    println!(
                        "{} {} {} -> {} ({}){extra}",
                        format_ms(ev.at_unix_ms),
                        ev.vm_id,
                        state_name(ev.old_state),
                        state_name(ev.new_state),
                        ev.reason
                    );
                }
            }
        }
        VmCommand::Get { id } => {
            let r = client
                .get_vm_info(pb::GetVmInfoRequest { vm_id: id })
                .await?;
            print(json, &r, || details(&r));
        }
    }
    Ok(0)
}

/// `warden vm restore SNAPSHOT --count N`: N RestoreVm requests at once, under ids chosen
/// here (so a clone that fails is named too). Each clone's line is printed as it finishes; a
/// failure is one line among the others, and makes the exit status 1.
async fn restore_many(
    client: &Client,
    json: bool,
    snapshot: &str,
    prefix: Option<String>,
    n: u32,
) -> anyhow::Result<u8> {
    anyhow::ensure!(
        n >= 1,
        "invalid --count 0: give the number of clones to start, 1 or more"
    );
    let prefix = prefix.unwrap_or_else(|| default_prefix(snapshot));
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=n {
        let (client, vm_id, snapshot) =
            (client.clone(), format!("{prefix}-{i}"), snapshot.to_owned());
        set.spawn(async move {
            let r = client
                .restore_vm(pb::RestoreVmRequest {
                    vm_id: vm_id.clone(),
                    snapshot,
                })
                .await;
            (i, vm_id, r)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = set.join_next().await {
        let (i, vm_id, r) = done?;
        if !json {
            match &r {
                Ok(r) => println!("{} {}", r.vm_id, state_name(r.state)),
                Err(e) => println!("{vm_id} failed: {e}"),
            }
        }
        results.push((i, vm_id, r));
    }
    let failed = results.iter().filter(|(_, _, r)| r.is_err()).count();
    if json {
        results.sort_by_key(|(i, _, _)| *i);
        let out: Vec<serde_json::Value> = results
            .iter()
            .map(|(_, vm_id, r)| match r {
                Ok(r) => serde_json::to_value(r).expect("proto JSON"),
                Err(e) => serde_json::json!({
                    "vmId": vm_id,
                    "error": { "code": e.code.to_string(), "message": e.message },
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if failed > 0 {
        eprintln!("warden: {failed} of {n} clones of {snapshot} failed");
        return Ok(1);
    }
    Ok(0)
}

/// `<snapshot>-<8 hex digits>`, short enough that `-<N>` still fits a 64-character id.
fn default_prefix(snapshot: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let head: String = snapshot.chars().take(40).collect();
    format!("{head}-{:08x}", h.finish() as u32)
}

fn print<T: serde::Serialize>(json: bool, msg: &T, human: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(msg).expect("proto JSON"));
    } else {
        println!("{}", human());
    }
}

fn state_name(s: i32) -> String {
    if s == pb::VmState::Unspecified as i32 {
        return "-".into();
    }
    pb::VmState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("VM_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {s}"))
}

/// Milliseconds since the epoch as UTC `HH:MM:SS.mmm`.
fn format_ms(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s.div_euclid(3600).rem_euclid(24),
        s.div_euclid(60).rem_euclid(60),
        s.rem_euclid(60),
        ms.rem_euclid(1000)
    )
}

/// `running` or `VM_STATE_RUNNING` as the enum's number.
fn parse_state(s: &str) -> anyhow::Result<i32> {
    let name = s.trim().to_ascii_uppercase();
    let name = if name.starts_with("VM_STATE_") {
        name
    } else {
        format!("VM_STATE_{name}")
    };
    pb::VmState::from_str_name(&name)
        .filter(|s| *s != pb::VmState::Unspecified)
        .map(|s| s as i32)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown state {s:?}: use created, running, paused, shutdown, booting, stopping or failed"
            )
        })
}

fn table(vms: &[pb::VmInfo]) -> String {
    let mut s = format!(
        "{:<28} {:<9} {:>8} {:<9} {:>10} {}\n",
        "ID", "STATE", "PID", "SANDBOXED", "MEMORY", "EXIT"
    );
    for vm in vms {
        let fallback = pb::VmDetails::default();
        let v = vm.warden.as_ref().unwrap_or(&fallback);
        let mem = v
            .cgroup
            .as_ref()
            .and_then(|c| c.memory_bytes)
            .map_or("-".into(), |m| format!("{} MiB", m >> 20));
        s.push_str(&format!(
            "{:<28} {:<9} {:>8} {:<9} {:>10} {}\n",
            vm.vm_id,
            state_name(if vm.warden.is_some() {
                v.state
            } else {
                vm.state
            }),
            if v.pid == 0 {
                "-".into()
            } else {
                v.pid.to_string()
            },
            v.isolation
                .as_ref()
                .map_or("-", |i| if i.is_sandboxed { "yes" } else { "NO" }),
            mem,
            v.exit.as_ref().map_or(String::new(), |e| e.reason.clone()),
        ));
    }
    s.trim_end().to_owned()
}

fn details(r: &pb::GetVmInfoResponse) -> String {
    let fallback = pb::VmDetails::default();
    let v = r.warden.as_ref().unwrap_or(&fallback);
    let mut s = format!(
        "id:          {}\nstate:       {}\n",
        r.vm_id,
        state_name(if r.warden.is_some() { v.state } else { r.state })
    );
    if let Some(customer) = r.backend_info.get("customer_id") {
        s.push_str(&format!("customer:    {customer}\n"));
    }
    if v.pid != 0 {
        s.push_str(&format!("pid:         {}\n", v.pid));
    }
    s.push_str(&format!(
        "jailer id:   {}\nchroot:      {}\nsocket:      {}\n",
        v.jailer_id, v.chroot_path, v.socket_path
    ));
    if let Some(c) = &v.cgroup {
        let shown = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or("unavailable".into(), f);
        s.push_str(&format!(
            "cgroups:     {}\nmemory:      {} (limit {})\ncpu:         {}\ntasks:       {}\noom kills:   {}\n",
            c.paths.join(", "),
            shown(c.memory_bytes, &|m| format!("{m} bytes")),
            shown(c.memory_limit_bytes, &|m| format!("{m} bytes")),
            shown(c.cpu_usage_ns, &|n| format!("{:.3} s", n as f64 / 1e9)),
            shown(c.pids_current, &|n| n.to_string()),
            shown(c.oom_kills, &|n| n.to_string()),
        ));
        for off in &c.limits_off {
            s.push_str(&format!("limit off:   {off}\n"));
        }
        // Pinning and I/O throttles, as the files say them.
        for x in c.settings.iter().filter(|x| {
            x.file.starts_with("cpuset.") || x.file.starts_with("blkio.") || x.file == "io.max"
        }) {
            s.push_str(&format!("cgroup:      {} = {}\n", x.file, x.value));
        }
    }
    if !v.netns.is_empty() {
        s.push_str(&format!("netns:       {}\n", v.netns));
    }
    if !v.mac.is_empty() {
        s.push_str(&format!(
            "network:     TAP {} MAC {} {}{}\n",
            v.tap_device,
            v.mac,
            v.guest_ip,
            if v.host_veth.is_empty() {
                String::new()
            } else {
                format!(" via {} on {}", v.host_veth, v.bridge)
            }
        ));
    }
    for a in &v.staged_assets {
        s.push_str(&format!(
            "staged:      {} -> {} ({}, {})\n",
            a.source,
            a.path_in_jail,
            a.method,
            if a.writable { "rw" } else { "ro" }
        ));
    }
    if let Some(i) = &v.isolation {
        s.push_str(&format!("Sandboxed: {}\n", i.is_sandboxed));
        for (name, l) in [
            ("jailer", &i.jailer),
            ("uid/gid", &i.uid_gid),
            ("chroot", &i.chroot),
            ("cgroups", &i.cgroups),
            ("seccomp", &i.seccomp),
            ("pid ns", &i.pid_ns),
            ("net ns", &i.net_ns),
        ] {
            if let Some(l) = l {
                s.push_str(&format!(
                    "  {name:<8} {:<4} {}\n",
                    if l.active { "on" } else { "off" },
                    l.detail
                ));
            }
        }
    }
    if let Some(e) = &v.exit {
        s.push_str(&format!("exit:        {} ({})\n", e.reason, e.detail));
    }
    s.trim_end().to_owned()
}
