//! `warden`: run jailed Firecracker microVMs from the command line.

mod bench;
mod doctor;
mod limits;
mod report;
mod run;
mod serve;
mod settings;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Run Firecracker microVMs under the jailer, proven isolated, leaving nothing behind"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot one VM in the foreground, stream its serial console, clean up on exit.
    ///
    /// Exit status: 0 the guest powered off; 130 stopped by Ctrl-C/SIGTERM; 3 OOM-killed;
    /// 4 killed by a signal from outside; 5 Firecracker failed; 1 any other error; 2 bad input.
    Run(run::RunArgs),
    /// Print everything a VM would get (argv, paths, staged files, cgroups, rlimits) without
    /// doing anything.
    Plan {
        #[command(flatten)]
        args: run::RunArgs,
        /// Plan a restore of the snapshot in this store directory (one with a manifest.json,
        /// such as `<state_dir>/snapshots/<name>`) instead of a boot: its files staged into a
        /// new jail, with the jail settings of the other flags.
        #[arg(long, value_name = "STORE_DIR")]
        restore: Option<std::path::PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Boot the test guest under the jailer and print its isolation report.
    Demo(run::DemoArgs),
    /// Run the VmService daemon (Connect + gRPC on one port; see docs/configuration.md).
    Serve(serve::ServeArgs),
    /// Reconcile the daemon's state with the host once (re-attach, record dead VMs, remove the
    /// host state of this instance's leftovers and of VMs whose owner is provably dead, leave
    /// every other owner's alone) without serving. Takes serve's settings.
    Gc(serve::ServeArgs),
    /// Talk to the daemon: create, boot, ls, get, pause, resume, reboot, stop, rm.
    Vm(vm::VmArgs),
    /// Check that this host can run jailed VMs (KVM, cgroups, binaries, chroot base, jail
    /// user, socket path length, networking, state directory). Exit status 1 if any check fails.
    Doctor(doctor::DoctorArgs),
    /// Measure warden against bare Firecracker and the bare jailer, in one interleaved run.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `serve` sets up its own logs (JSON by default) once its configuration is read.
    if !matches!(cli.command, Command::Serve(_)) {
        init_cli_logs();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Plan {
                args,
                restore,
                json,
            } => run::plan(args, restore, json),
            Command::Demo(args) => run::demo(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Doctor(args) => doctor::doctor(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Gc(args) => serve::gc(args).await,
            Command::Vm(args) => vm::vm(args).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            report::print_error(&e);
            // Bad input, and an id another instance holds (choose another), are the caller's.
            let invalid = e.downcast_ref::<warden::Error>().is_some_and(|w| {
                matches!(
                    w,
                    warden::Error::Invalid(_)
                        | warden::Error::Apply(jail::ApplyError::Reserve(
                            jail::owner::RegistryError::Taken { .. }
                        ))
                )
            });
            std::process::ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

fn init_cli_logs() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| "warn,netlink_packet_route=error".into()),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use warden::daemon::config::{key_def, KEYS};

    use super::Cli;

    /// `run` and `plan` flags with a setting's name but another meaning: `--netns PATH` joins
    /// an existing namespace, while the daemon's `netns` is a switch (a namespace per VM).
    const SAME_NAME_OTHER_MEANING: &[(&str, &str)] = &[("run", "netns"), ("plan", "netns")];

    #[test]
    fn every_flag_for_a_setting_is_spelled_as_in_the_settings_table() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if SAME_NAME_OTHER_MEANING.contains(&(sub.get_name(), id)) {
                    continue;
                }
                let Some(def) = key_def(id).filter(|d| d.key == id) else {
                    // Nor may a flag of no setting take a setting's spelling.
                    let long = arg.get_long().map(|l| format!("--{l}"));
                    assert!(
                        !KEYS
                            .iter()
                            .any(|d| d.flag.is_some() && d.flag == long.as_deref()),
                        "warden {} has {long:?} for {id}, which is a setting's flag",
                        sub.get_name()
                    );
                    continue;
                };
                assert_eq!(
                    arg.get_long().map(|l| format!("--{l}")).as_deref(),
                    def.flag,
                    "warden {} spells setting {id} differently",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn run_plan_and_demo_take_the_shared_settings_under_their_table_names() {
        let cli = Cli::command();
        let has = |sub: &str, key: &str| {
            cli.find_subcommand(sub)
                .unwrap()
                .get_arguments()
                .any(|a| a.get_id() == key)
        };
        for sub in ["run", "plan"] {
            for key in [
                "jailer_binary",
                "firecracker_binary",
                "jailer_uid",
                "jailer_gid",
                "chroot_base",
                "cgroup_version",
                "parent_cgroup",
                "cpu_quota_percent",
                "fd_limit",
                "network_mode",
                "bridge",
                "require_jailer",
                "jail_id_range",
            ] {
                assert!(has(sub, key), "warden {sub} lacks {key}");
            }
        }
        assert!(has("demo", "chroot_base"));
    }

    #[test]
    fn serve_gc_and_doctor_take_every_setting_that_has_a_flag() {
        let cli = Cli::command();
        for sub in ["serve", "gc", "doctor"] {
            let cmd = cli.find_subcommand(sub).unwrap();
            for def in KEYS.iter().filter(|d| d.flag.is_some()) {
                assert!(
                    cmd.get_arguments().any(|a| a.get_id() == def.key),
                    "warden {sub} lacks {}",
                    def.key
                );
            }
        }
    }

    #[test]
    fn old_flag_spellings_still_parse() {
        use clap::Parser;
        for argv in [
            &[
                "warden", "run", "--kernel", "k", "--uid", "5", "--gid", "5", "--net", "none",
            ][..],
            &[
                "warden",
                "run",
                "--kernel",
                "k",
                "--jailer",
                "/j",
                "--no-file",
                "9",
                "--cpu-quota",
                "5",
            ],
            &[
                "warden",
                "doctor",
                "--jailer",
                "/j",
                "--firecracker",
                "/f",
                "--asset-dir",
                "/a",
            ],
            &[
                "warden",
                "doctor",
                "--uid",
                "5",
                "--gid",
                "5",
                "--chroot-dir",
                "/c",
            ],
            &["warden", "serve", "--chroot-dir", "/c"],
        ] {
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{argv:?}: {e}");
            }
        }
    }
}
