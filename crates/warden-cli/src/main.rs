//! `warden`: run jailed Firecracker microVMs from the command line.

mod bench;
mod doctor;
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
            Command::Plan { args, json } => run::plan(args, json),
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
