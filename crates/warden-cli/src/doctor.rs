//! `warden doctor`: host preflight checks, as text or JSON.

use std::path::PathBuf;

use clap::Args;
use jail::CgroupVersion;
use warden::doctor::{DoctorInput, Report};

/// Check that this host can run jailed Firecracker VMs.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON (`{"checks":[{"name","status","detail","fix"}]}`).
    #[arg(long)]
    pub json: bool,
    /// The jailer binary (default: found like `warden run` finds it).
    #[arg(long, env = "WARDEN_JAILER_BINARY")]
    pub jailer: Option<PathBuf>,
    /// The Firecracker binary (default: found like `warden run` finds it).
    #[arg(long, env = "WARDEN_FIRECRACKER_BINARY")]
    pub firecracker: Option<PathBuf>,
    /// Base directory of the jails.
    #[arg(long, default_value = "/srv/jailer")]
    pub chroot_base: PathBuf,
    /// A directory holding kernels and images (repeatable; default: the asset folder in use).
    #[arg(long = "asset-dir", value_name = "DIR")]
    pub asset_dirs: Vec<PathBuf>,
    /// User id Firecracker runs as.
    #[arg(long, default_value_t = warden::vm::jailer::DEFAULT_JAIL_UID)]
    pub uid: u32,
    /// Group id Firecracker runs as.
    #[arg(long, default_value_t = warden::vm::jailer::DEFAULT_JAIL_UID)]
    pub gid: u32,
    /// The range per-VM uids/gids come from (the daemon's `jail_id_range`), `FIRST-LAST` or
    /// `off` (every VM runs as --uid/--gid).
    #[arg(
        long,
        value_name = "FIRST-LAST|off",
        default_value = "1900000000-1900065535"
    )]
    pub jail_id_range: String,
    /// Name of the jail user: checked to exist with --uid/--gid.
    #[arg(long)]
    pub user: Option<String>,
    /// The daemon's state directory: checked to be writable.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// cgroup version to check (1 or 2; default: the one warden detects).
    #[arg(long, value_name = "1|2")]
    pub cgroup_version: Option<CgroupVersion>,
}

impl DoctorArgs {
    /// The checks' input: these arguments over the library's defaults.
    pub fn input(self) -> anyhow::Result<DoctorInput> {
        let defaults = DoctorInput::default();
        let id_range = match self.jail_id_range.as_str() {
            "off" => None,
            r => Some(
                r.split_once('-')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .filter(|(a, b): &(u32, u32)| a <= b)
                    .ok_or_else(|| {
                        anyhow::anyhow!("invalid --jail-id-range {r:?}: use FIRST-LAST or off")
                    })?,
            ),
        };
        Ok(DoctorInput {
            id_range,
            jailer_binary: self.jailer.unwrap_or(defaults.jailer_binary),
            firecracker_binary: self.firecracker.unwrap_or(defaults.firecracker_binary),
            chroot_base_dir: self.chroot_base,
            asset_dirs: if self.asset_dirs.is_empty() {
                defaults.asset_dirs
            } else {
                self.asset_dirs
            },
            uid: self.uid,
            gid: self.gid,
            user_name: self.user,
            state_dir: self.state_dir,
            cgroup_version: self.cgroup_version,
            ..defaults
        })
    }
}

/// Runs the checks and prints them. Exit status 1 when any check fails, else 0 (warnings
/// included).
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<u8> {
    let json = args.json;
    let input = args.input()?;
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
