//! `warden serve`: the VmService daemon.
//!
//! Start-up: configuration (flags > env > file > defaults), logs, the host checks of `warden
//! doctor` (a failure stops a production-mode daemon), the store and recovery, then one router
//! (Connect + gRPC + health + metrics) on TCP and optionally a Unix socket. SIGTERM or SIGINT
//! ends it; VMs keep running for the next start unless `stop_vms_on_exit` is set.

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use clap::Args;
use warden::daemon::config::{self, DaemonConfig, LogFormat};
use warden::daemon::Manager;
use warden_api::backend::ManagerService;
use warden_api::{Listen, ServerOptions};

use crate::settings::Settings;

/// `warden serve` arguments. Every setting is also a flag (see docs/configuration.md), e.g.
/// `--listen 127.0.0.1:9000 --jail-id-range off --stop-vms-on-exit`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Print the effective configuration and where each value came from, then exit.
    #[arg(long)]
    print_config: bool,
    /// With --print-config: JSON.
    #[arg(long)]
    json: bool,
    /// The settings, one flag each.
    #[command(flatten)]
    settings: Settings,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let effective = config::load(&args.settings.sources(args.config))?;
    if args.print_config {
        println!(
            "{}",
            if args.json {
                effective.render_json()
            } else {
                effective.render()
            }
        );
        return Ok(0);
    }
    let mut cfg = effective.config.clone();
    init_logs(cfg.log_format);
    for w in &effective.warnings {
        tracing::warn!("{w}");
    }
    // First of all, before any cgroup or child process exists: a daemon in a delegated v2
    // subtree moves into its supervisor leaf and puts its VMs beside it.
    // Without any cgroup mount (unjailed development) there is nothing to settle into.
    let hierarchy =
        jail::cgroup::Hierarchy::host().unwrap_or_else(|_| jail::cgroup::Hierarchy::empty());
    match warden::daemon::delegation::settle(&mut cfg, &hierarchy, std::path::Path::new("/proc"))? {
        warden::daemon::delegation::Placement::Delegated(d) => tracing::info!(
            subtree = %d.subtree,
            supervisor = %d.supervisor_dir().display(),
            vm_parent = %cfg.parent_cgroup,
            "moved into the supervisor leaf of the delegated cgroup; VMs go beside it"
        ),
        warden::daemon::delegation::Placement::Unchanged(why) => {
            tracing::debug!(why, "cgroup placement unchanged")
        }
    }
    if cfg.jailer_enabled && !warden::vm::jailer::is_executable(&cfg.jailer_binary) {
        anyhow::bail!(
            "jailer_enabled is true but the jailer {} is not an executable file; install \
             Firecracker's jailer there (copy `jailer` from a Firecracker release to \
             /usr/local/bin, or run scripts/setup-assets.sh on a development machine), point \
             jailer_binary / WARDEN_JAILER_BINARY at it, or set jailer_enabled=false for \
             unjailed development VMs",
            cfg.jailer_binary.display()
        );
    }
    {
        // The checks run child processes and probe the host: off the async workers.
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || preflight(&cfg)).await??;
    }
    let manager = Manager::open(cfg.clone())
        .await
        .context("cannot open the daemon's state")?;
    let router = router(manager.clone(), &cfg);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let addr: std::net::SocketAddr = tokio::net::lookup_host(&cfg.listen)
        .await
        .with_context(|| format!("cannot resolve listen address {:?}", cfg.listen))?
        .next()
        .with_context(|| format!("listen address {:?} resolves to nothing", cfg.listen))?;
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(warden_api::serve_with_shutdown(
        router.clone(),
        Listen::Tcp(addr),
        shutdown(),
    ));
    if let Some(path) = &cfg.unix_socket {
        servers.spawn(warden_api::serve_with_shutdown(
            router,
            Listen::Unix(path.clone()),
            shutdown(),
        ));
    }
    tracing::info!(listen = %addr, unix_socket = ?cfg.unix_socket, state_dir = %cfg.state_dir.display(), "warden serve ready");

    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    let failed = tokio::select! {
        _ = int.recv() => None,
        _ = term.recv() => None,
        r = servers.join_next() => r,
    };
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    tracing::info!(stop_vms = cfg.stop_vms_on_exit, "shutting down");
    manager.shutdown_all(cfg.stop_vms_on_exit).await;
    if let Some(Ok(Err(e))) = failed {
        return Err(anyhow::Error::new(e).context(format!("cannot listen on {addr}")));
    }
    Ok(0)
}

/// `warden gc`: what the daemon does at start, once, without serving: re-attach (and leave
/// running) live VMs, record and clean VMs that died, remove orphans. Refused while a daemon
/// owns the same state directory (it already did this at its start).
pub async fn gc(args: ServeArgs) -> anyhow::Result<u8> {
    let effective = config::load(&args.settings.sources(args.config))?;
    let manager = Manager::open(effective.config.clone())
        .await
        .context("cannot reconcile the daemon's state")?;
    let vms = manager.list().await?;
    manager.shutdown_all(false).await;
    let running = vms
        .iter()
        .filter(|v| v.record.state == warden::daemon::state::VmState::Running)
        .count();
    println!("warden gc: {} VMs known, {running} running and left running; leftovers of this instance and of dead owners removed, other owners' VMs left alone (see the log above)", vms.len());
    Ok(0)
}

fn router(manager: Arc<Manager>, cfg: &DaemonConfig) -> axum::Router {
    let service = Arc::new(ManagerService::new(manager.clone()));
    let options = ServerOptions {
        bearer_token: cfg.auth_token.clone(),
        ..ServerOptions::default()
    };
    let metrics = {
        let m = manager.clone();
        move || {
            let m = m.clone();
            async move { m.render_metrics().await }
        }
    };
    let ready = {
        let m = manager.clone();
        move || {
            let m = m.clone();
            async move {
                match m.list().await {
                    Ok(_) => (axum::http::StatusCode::OK, "ready\n".to_owned()),
                    Err(e) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("{e}\n"),
                    ),
                }
            }
        }
    };
    let guard = std::sync::Arc::new(warden_api::guard::Guard {
        allowed_origins: cfg.allowed_origins.clone(),
        allowed_hosts: cfg.allowed_hosts.clone(),
        listen_host: cfg
            .listen
            .rsplit_once(':')
            .map_or(cfg.listen.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        bearer_token: cfg.auth_token.clone(),
    });
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(warden_api::router(service, options))
        // Browsers, rebinding names and (with a token) unauthenticated callers stop here.
        .layer(axum::middleware::from_fn_with_state(
            guard,
            warden_api::guard::guard,
        ))
}

/// The host checks of `warden doctor`; in production mode (`require_jailer`) a failing check
/// stops the start.
fn preflight(cfg: &DaemonConfig) -> anyhow::Result<()> {
    let input = warden::doctor::DoctorInput::from_config(cfg);
    let report = warden::doctor::run(&input);
    for c in &report.checks {
        match c.status {
            warden::doctor::Status::Pass => {
                tracing::debug!(check = %c.name, detail = %c.detail, "preflight pass")
            }
            warden::doctor::Status::Warn => {
                tracing::warn!(check = %c.name, detail = %c.detail, fix = ?c.fix, "preflight warning")
            }
            warden::doctor::Status::Fail => {
                tracing::error!(check = %c.name, detail = %c.detail, fix = ?c.fix, "preflight failure")
            }
        }
    }
    if cfg.require_jailer && report.has_failures() {
        eprint!("{}", report.render_human());
        anyhow::bail!("refusing to start in production mode (require_jailer): the host checks above failed; fix them or run `warden doctor`");
    }
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| "info,netlink_packet_route=error".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
