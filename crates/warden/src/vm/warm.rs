//! Warm jails: the part of a jailed start that does not depend on the VM, done ahead.
//!
//! [`warm_jail`] makes a jail for no VM yet: the id reserved, the chroot, cgroups and (when
//! asked) the namespace made, the jailer run and Firecracker's API socket up, nothing staged. A
//! VM then takes it over with [`WarmJail::start`]: its plan, made with the jail's id and uid by
//! [`WarmJail::plan_for`], must differ only in staged files and cgroup values
//! ([`jail::warm::fits`]); its files are staged into the chroot, its limits written over the
//! jail's, and it is configured (or its snapshot loaded) and started as in [`super::start_vm`].
//! The VM keeps the jail's id on the host (`plan.id`, the chroot and cgroup names); its own id is
//! [`VmHandle::vm_id`].

use std::time::Instant;

use firecracker_api::Client;

use super::config::{JailerMode, VmConfig, VmOptions, MIN_MEMORY_MB};
use super::{plan_inner, process, Phases, Planned, VmHandle};
use crate::Error;

/// A jail with Firecracker's API up and nothing configured, waiting for a VM.
#[derive(Debug)]
pub struct WarmJail {
    process: process::Process,
    client: Client,
    made: Instant,
}

/// Makes warm jail `id` in the shape `options` give (the jailer, uid and gid as set in
/// `options.jailer`, cgroups, `own_netns`; never networking, never unjailed), for VMs of up to
/// `memory_mb` of guest memory: its file-size cap is that of such a VM (see
/// [`jail::warm`]), and a VM needing a larger one does not fit. `uid_range` is not used: a
/// caller that leases uids passes the leased one.
pub async fn warm_jail(id: &str, memory_mb: u32, options: &VmOptions) -> Result<WarmJail, Error> {
    if options.jailer_mode == JailerMode::Disabled {
        return Err(jail::SpecError::new(
            "jailer_mode",
            "a warm jail is always jailed; enable the jailer",
        )
        .into());
    }
    let mut options = options.clone();
    options.restore = None;
    options.jailer_mode = JailerMode::Required;
    let config = placeholder(id, memory_mb.max(MIN_MEMORY_MB));
    let planned = plan_inner(&config, &options, false)?;
    let mut phases = Phases::start();
    let (process, client) =
        super::launch(&planned.spec, planned.plan, &options, false, &mut phases).await?;
    Ok(WarmJail {
        process,
        client,
        made: Instant::now(),
    })
}

/// The VM a warm jail is planned for: the largest it serves, with nothing to stage.
fn placeholder(id: &str, memory_mb: u32) -> VmConfig {
    VmConfig {
        vm_id: id.to_owned(),
        vcpu_count: 1,
        memory_mb,
        kernel_path: "(staged at the take)".to_owned(),
        rootfs_path: String::new(),
        enable_networking: false,
    }
}

impl WarmJail {
    /// The jail's id on the host (its chroot, cgroups and owner record are named by it).
    pub fn id(&self) -> &str {
        &self.process.plan.id
    }

    /// Its uid (and gid).
    pub fn uid(&self) -> u32 {
        self.process.plan.uid
    }

    /// Firecracker's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// The jail's plan (no staged files).
    pub fn plan(&self) -> &jail::JailPlan {
        &self.process.plan
    }

    /// How long it has been ready.
    pub fn age(&self) -> std::time::Duration {
        self.made.elapsed()
    }

    /// Whether its Firecracker still runs (one that died has removed its jail already).
    pub fn is_alive(&self) -> bool {
        self.process.exited().is_none()
            && jail::proc::is_alive(std::path::Path::new(jail::proc::PROC), self.process.pid)
    }

    /// Plans the VM `config` with `options` as it would run in this jail: with its id and uid.
    pub fn plan_for(&self, config: &VmConfig, options: &VmOptions) -> Result<Planned, Error> {
        let (config, options) = self.in_jail(config, options);
        super::plan_vm(&config, &options)
    }

    /// Whether a VM planned by [`Self::plan_for`] can take this jail over.
    pub fn fits(&self, planned: &Planned) -> Result<(), jail::warm::Misfit> {
        jail::warm::fits(&self.process.plan, &planned.plan)
    }

    fn in_jail(&self, config: &VmConfig, options: &VmOptions) -> (VmConfig, VmOptions) {
        let (mut config, mut options) = (config.clone(), options.clone());
        config.vm_id = self.id().to_owned();
        options.jailer.uid = self.process.plan.uid;
        options.jailer.gid = self.process.plan.gid;
        options.uid_range = None;
        options.jailer_mode = JailerMode::Required;
        (config, options)
    }

    /// Starts VM `config.vm_id` in this jail, from the plan [`Self::plan_for`] made (it must
    /// [`Self::fits`]). The VM keeps the jail's host names; `VmHandle::vm_id` is its own. On a
    /// failure the jail is ended and removed.
    pub async fn start(
        self,
        config: &VmConfig,
        options: &VmOptions,
        planned: Planned,
    ) -> Result<VmHandle, Error> {
        let mut phases = Phases::start();
        let Self {
            mut process,
            client,
            ..
        } = self;
        super::verify_restore(options, &planned.plan).await?;
        let plan = planned.plan;
        let taken = {
            let (plan, jail, pid) = (plan.clone(), process.jail(), process.pid);
            tokio::task::spawn_blocking(move || -> Result<(), Error> {
                jail.take_over(&plan)?;
                jail::cgroup::write_by_warden(&plan.cgroups, pid)?;
                Ok(())
            })
            .await
            .map_err(|e| Error::Os {
                what: "taking over the warm jail".into(),
                source: std::io::Error::other(e),
            })
            .and_then(|r| r)
        };
        if let Err(e) = taken {
            process.note_stop_requested();
            process.kill();
            let _ = process.wait().await;
            return Err(e);
        }
        process.plan = plan.clone();
        phases.mark("take warm jail");
        super::finish(
            &config.vm_id,
            config,
            options,
            process,
            client,
            plan,
            None,
            phases,
        )
        .await
    }

    /// Ends the jail's Firecracker and removes the jail.
    pub async fn discard(self) {
        self.process.note_stop_requested();
        self.process.kill();
        let _ = self.process.wait().await;
    }
}
