//! `warden doctor`: host preflight checks, as text or JSON.

use std::path::PathBuf;

use clap::Args;
use warden::daemon::config;
use warden::doctor::{DoctorInput, Report};

use crate::settings::{OldFlags, Settings};

/// Check that this host can run jailed Firecracker VMs, as the daemon with the same
/// configuration (`--config`, the environment, the setting flags) would run them.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON (`{"checks":[{"name","status","detail","fix"}]}`).
    #[arg(long)]
    pub json: bool,
    /// The daemon's TOML configuration file (`warden serve --config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Name of the jail user: checked to exist with --jailer-uid/--jailer-gid.
    #[arg(long)]
    pub user: Option<String>,
    /// The settings, one flag each, as `warden serve` takes them.
    #[command(flatten)]
    pub settings: Settings<DoctorOldFlags>,
}

/// The flags `warden doctor` had before it took the daemon's settings.
#[derive(Debug, Clone, Copy)]
pub struct DoctorOldFlags;

impl OldFlags for DoctorOldFlags {
    const FLAGS: &'static [(&'static str, &'static str)] = &[
        ("jailer", "jailer_binary"),
        ("firecracker", "firecracker_binary"),
        ("asset-dir", "asset_dirs"),
        ("uid", "jailer_uid"),
        ("gid", "jailer_gid"),
    ];
}

impl DoctorArgs {
    /// The checks' input: the daemon's configuration from these flags, the environment and
    /// the file, with the configuration's warnings.
    pub fn input(self) -> anyhow::Result<(DoctorInput, Vec<String>)> {
        let effective = config::load(&self.settings.sources(self.config))?;
        Ok((
            DoctorInput {
                user_name: self.user,
                ..DoctorInput::from_config(&effective.config)
            },
            effective.warnings,
        ))
    }
}

/// Runs the checks and prints them. Exit status 1 when any check fails, else 0 (warnings
/// included).
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<u8> {
    let json = args.json;
    let (input, warnings) = args.input()?;
    for w in warnings {
        eprintln!("warden doctor: warning: {w}");
    }
    let report: Report = tokio::task::spawn_blocking(move || warden::doctor::run(&input)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_human());
        let (fail, warn) = report
            .checks
            .iter()
            .fold((0, 0), |(f, w), c| match c.status {
                warden::doctor::Status::Fail => (f + 1, w),
                warden::doctor::Status::Warn => (f, w + 1),
                warden::doctor::Status::Pass => (f, w),
            });
        println!(
            "\n{} checks: {} passed, {warn} warning(s), {fail} failed",
            report.checks.len(),
            report.checks.len() - fail - warn
        );
    }
    Ok(u8::from(report.has_failures()))
}
