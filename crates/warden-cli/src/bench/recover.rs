//! `warden bench recover`: with N idle VMs running under the bench's daemon, SIGKILL the daemon,
//! start it again, and time until every VM is re-attached and answering:
//! - `restart -> listening`: exec to the first accepted connection (configuration, host checks,
//!   the store, and recovery, which re-attaches every VM before the API opens);
//! - `restart -> ListVms all running`: ListVms shows all N `running`;
//! - `restart -> every GetVmInfo`: GetVmInfo answered for each VM (8 in flight), `running`, same
//!   Firecracker pid as before the kill, isolation report sandboxed.
//!
//! This repeats `--rounds` times with the same VMs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use warden_api::pb;

use super::daemon::{self, BenchDaemon};
use super::host::{self, pool};
use super::{Report, Row};

/// Arguments of `warden bench recover`.
#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// Running VMs held while the daemon is killed.
    #[arg(long, default_value_t = 100)]
    vms: usize,
    /// Kill-and-restart rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests in flight (starting the VMs, GetVmInfo after the restart).
    #[arg(long, default_value_t = 8)]
    parallel: usize,
}

/// Runs the scenario.
pub async fn run(args: RecoverArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.vms > 0, "--vms must be at least 1");
    let n = args.vms;
    let mut daemon = BenchDaemon::start(true)?;
    let ids: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|i| BenchDaemon::vm_id(&format!("r{i}")))
            .collect(),
    );

    let shared = Arc::new(daemon.client());
    let serials: Arc<Vec<_>> = Arc::new(ids.iter().map(|id| daemon.serial_path(id)).collect());
    let reqs: Arc<Vec<_>> = Arc::new(
        ids.iter()
            .map(|id| daemon.create_req(id, daemon::IDLE))
            .collect(),
    );
    let boots = {
        let (client, ids, serials, reqs) =
            (shared.clone(), ids.clone(), serials.clone(), reqs.clone());
        pool(n, args.parallel, move |i| {
            let (client, ids, serials, reqs) =
                (client.clone(), ids.clone(), serials.clone(), reqs.clone());
            async move {
                let t = Instant::now();
                client.create_vm(reqs[i].clone()).await?;
                client
                    .boot_vm(pb::BootVmRequest {
                        vm_id: ids[i].clone(),
                    })
                    .await
                    .with_context(|| format!("BootVm {}", ids[i]))?;
                let t = t.elapsed();
                daemon::wait_for_file(
                    &serials[i],
                    daemon::MARKER,
                    Duration::from_millis(10),
                    Duration::from_secs(60),
                )
                .await?;
                Ok(t)
            }
        })
        .await?
    };
    let pids: Arc<HashMap<String, u32>> = Arc::new(
        shared
            .list_all_vms(Vec::new())
            .await?
            .into_iter()
            .map(|v| {
                let pid = v.details().pid;
                (v.vm_id, pid)
            })
            .collect(),
    );
    anyhow::ensure!(pids.len() == n, "{} VMs listed, not {n}", pids.len());

    let (mut listening, mut listed, mut answered) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        super::check_interrupted()?;
        daemon.kill();
        let t0 = Instant::now();
        daemon.spawn()?;
        listening.push(t0.elapsed());
        let client = daemon.client();
        loop {
            let vms = client.list_all_vms(Vec::new()).await?;
            let running = vms
                .iter()
                .filter(|v| v.state == pb::VmState::Running as i32)
                .count();
            if running == n {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "after the restart only {running} of {n} VMs are running: {}",
                daemon.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        listed.push(t0.elapsed());
        let (c, ids2, pids2) = (Arc::new(client), ids.clone(), pids.clone());
        pool(n, args.parallel, move |i| {
            let (c, ids, pids) = (c.clone(), ids2.clone(), pids2.clone());
            async move {
                let vm = c
                    .get_vm_info(pb::GetVmInfoRequest {
                        vm_id: ids[i].clone(),
                    })
                    .await?
                    .details();
                anyhow::ensure!(
                    vm.state == pb::VmState::Running as i32,
                    "{} is {} after the restart",
                    ids[i],
                    vm.state
                );
                anyhow::ensure!(
                    Some(&vm.pid) == pids.get(&ids[i]),
                    "{} has pid {}, not {:?}: not re-attached",
                    ids[i],
                    vm.pid,
                    pids.get(&ids[i])
                );
                anyhow::ensure!(
                    vm.isolation.as_ref().is_some_and(|r| r.is_sandboxed),
                    "{} not sandboxed after re-attaching",
                    ids[i]
                );
                Ok(())
            }
        })
        .await?;
        answered.push(t0.elapsed());
    }

    let per_vm: Vec<Duration> = answered.iter().map(|d| *d / n as u32).collect();
    let mut report = Report::new(
        "recover",
        format!(
            "{n} idle jailed VMs running; the daemon is SIGKILLed and started again, {} rounds; times from the new daemon's exec",
            args.rounds.max(1)
        ),
    );
    report.rows = vec![
        Row::new(
            &format!("create+boot one VM ({} in flight)", args.parallel),
            &boots,
        ),
        Row::new("restart -> listening (recovery done)", &listening),
        Row::new(&format!("restart -> ListVms all {n} running"), &listed),
        Row::new(&format!("restart -> all {n} answered GetVmInfo"), &answered),
        Row::new("  the same, per VM", &per_vm),
    ];
    report.leftovers = daemon.finish().await?;
    report.leftovers.temp_dirs = host::temp_dirs_left();
    Ok(report)
}
