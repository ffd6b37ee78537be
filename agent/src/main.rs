//! `outpost-agent`: enroll with a controller, run the site, report status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost_agent::config::{Config, Identity, RadiusConfig, SyncConfig};
use outpost_agent::site::Site;
use outpost_agent::store::Store;
use outpost_agent::sync::Client;
use outpost_protocol as proto;

#[derive(Parser)]
#[command(name = "outpost-agent", version, about = "Outpost site agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll with the controller: generates the WireGuard key pair, trades the token
    /// for an identity, and writes `agent.toml` and `identity.json` in the state dir.
    Enroll {
        /// The controller's base URL, e.g. http://controller.example:8080
        #[arg(long)]
        controller: String,
        /// A site enrollment token (single use).
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "/var/lib/outpost-agent")]
        state_dir: PathBuf,
        /// RADIUS addresses to write into the config.
        #[arg(long, default_value = "0.0.0.0:1812")]
        auth_listen: std::net::SocketAddr,
        #[arg(long, default_value = "0.0.0.0:1813")]
        acct_listen: std::net::SocketAddr,
        /// The WireGuard interface of the tunnel to the controller (when it hands one
        /// out): at most 15 characters, unique on this host.
        #[arg(long, default_value = "outpost0")]
        tunnel_interface: String,
        /// How that interface runs: `kernel` (the wireguard module) or `userspace`
        /// (wireguard-go). Written into agent.toml.
        #[arg(long, default_value = "userspace", value_parser = parse_backend)]
        tunnel_backend: outpost_wg::Backend,
    },
    /// Run: RADIUS from the local store, sync and event delivery in the background.
    Run {
        #[arg(long, default_value = "/var/lib/outpost-agent/agent.toml")]
        config: PathBuf,
    },
    /// Report revision, controller reachability, online sessions and outbox backlog.
    Status {
        #[arg(long, default_value = "/var/lib/outpost-agent/agent.toml")]
        config: PathBuf,
    },
    /// Rotate the tunnel's WireGuard key, make before break: generates the new key
    /// pair and records the request in identity.json; the running agent (`run`)
    /// carries it out within seconds (the controller gives the new key a second
    /// address, the agent moves its calls to it once it has a handshake, and only then
    /// is the old key removed). `status` shows its progress.
    RotateKey {
        #[arg(long, default_value = "/var/lib/outpost-agent/agent.toml")]
        config: PathBuf,
    },
    /// Enforcement on this box.
    Enforcement {
        #[command(subcommand)]
        action: EnforcementAction,
    },
}

#[derive(Subcommand)]
enum EnforcementAction {
    /// Remove the agent's nftables table on purpose: every subscriber it blocked is let
    /// through until the agent runs again. Stopping the agent never does this.
    Clear {
        #[arg(long, default_value = "/var/lib/outpost-agent/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // No colour codes in a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(Cli::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn open_store(cfg: &Config) -> anyhow::Result<Arc<Store>> {
    let path = cfg.state_dir.join("agent.db");
    Ok(Arc::new(
        Store::open(&path, cfg.sync.max_outbox)
            .with_context(|| format!("opening {}", path.display()))?,
    ))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll {
            controller,
            token,
            state_dir,
            auth_listen,
            acct_listen,
            tunnel_interface,
            tunnel_backend,
        } => {
            enroll(
                &controller,
                &token,
                &state_dir,
                RadiusConfig {
                    auth_listen,
                    acct_listen,
                    ..RadiusConfig::default()
                },
                outpost_agent::wg::TunnelConfig {
                    interface: tunnel_interface,
                    backend: tunnel_backend,
                },
            )
            .await
        }
        Command::RotateKey { config } => {
            let cfg = Config::load(&config)?;
            let mut id = Identity::load(&cfg.state_dir)?;
            let Some(t) = &cfg.tunnel else {
                anyhow::bail!("agent.toml has no [tunnel]: there is no tunnel key to rotate");
            };
            if id.tunnel.is_none() {
                anyhow::bail!("identity.json has no tunnel: there is no tunnel key to rotate");
            }
            if let Some(r) = &id.rotation {
                anyhow::bail!(
                    "a rotation to key {} is already under way; `outpost-agent status` shows it",
                    r.public_key()
                );
            }
            let r = outpost_agent::wg::Rotation::new(t, &id);
            println!(
                "new public key {} (interface {}); the running agent rotates to it within seconds",
                r.public_key(),
                r.interface
            );
            id.rotation = Some(r);
            id.save(&cfg.state_dir)?;
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            let id = Identity::load(&cfg.state_dir)?;
            let mut site = Site::start(&cfg, &id).await?;
            if let Some(addr) = site.portal_addr {
                println!("suspended page on {addr}");
            }
            println!(
                "RADIUS auth on {}, accounting on {}",
                site.auth_addr, site.acct_addr
            );
            if let Some(addr) = site.metrics_addr {
                println!("metrics on http://{addr}/metrics");
            }
            tokio::spawn(notify_systemd(site.health().clone()));
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            // SIGTERM too (systemd, a test): the tunnel's interface is taken down rather
            // than left to an orphaned wireguard-go.
            tokio::select! {
                e = site.failed() => return Err(e.into()),
                _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
                _ = term.recv() => tracing::info!("stopping (SIGTERM)"),
            }
            site.shutdown().await?;
            Ok(())
        }
        Command::Enforcement {
            action: EnforcementAction::Clear { config },
        } => {
            let cfg = Config::load(&config)?;
            let table = cfg
                .enforce
                .as_ref()
                .map(|e| e.table.clone())
                .context("this agent's config has no [enforce] section")?;
            outpost_agent::enforce::Enforcer::clear(&table)
                .with_context(|| format!("removing table inet {table}"))?;
            println!(
                "removed nftables table inet {table}; nothing is blocked until the agent runs again"
            );
            Ok(())
        }
        Command::Status { config } => {
            let cfg = Config::load(&config)?;
            let store = open_store(&cfg)?;
            let (subs, nas) = store.counts();
            let last = store
                .meta("last_contact_at")?
                .and_then(|v| v.parse::<i64>().ok());
            let age = last.map(|t| outpost_agent::clock::now() - t);
            // Reachability is asked now, not remembered: one short poll.
            let id = Identity::load(&cfg.state_dir)?;
            let reachable = Client::new(&cfg.controller_url, &id.credential)
                .state(store.revision(), 0)
                .await
                .is_ok();
            println!("site:              {} (agent {})", id.site_id, id.agent_id);
            println!("revision:          {}", store.revision());
            println!(
                "controller:        {} ({})",
                cfg.controller_url,
                if reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                }
            );
            println!(
                "last contact:      {}",
                age.map(|a| format!("{a} s ago"))
                    .unwrap_or_else(|| "never".into())
            );
            match &cfg.tunnel {
                None => println!("tunnel:            none (the controller runs without one)"),
                Some(t) => match outpost_agent::wg::status(t, &id) {
                    Ok(st) => {
                        println!(
                            "tunnel:            up on {} ({})",
                            outpost_agent::wg::interface_name(t, &id),
                            id.tunnel.as_ref().map(|p| p.address.as_str()).unwrap_or("")
                        );
                        println!(
                            "last handshake:    {}",
                            st.handshake_age_secs()
                                .map(|a| format!("{a} s ago"))
                                .unwrap_or_else(|| "never".into())
                        );
                        println!(
                            "tunnel bytes:      rx {} / tx {}",
                            st.peer.rx_bytes, st.peer.tx_bytes
                        );
                    }
                    Err(e) => println!("tunnel:            DOWN: {e}"),
                },
            }
            if let Some(r) = &id.rotation {
                println!(
                    "key rotation:      to {} on {}: {}",
                    r.public_key(),
                    r.interface,
                    match (&r.tunnel, r.switched) {
                        (None, _) => "waiting for the controller to accept the key".to_string(),
                        (Some(p), false) => format!(
                            "accepted ({}); waiting for the new key's handshake",
                            p.address
                        ),
                        (Some(_), true) =>
                            "calls moved; waiting for the controller to drop the old key".into(),
                    }
                );
            }
            println!("subscribers / NAS: {subs} / {nas}");
            println!("online sessions:   {}", store.online_total());
            println!("outbox backlog:    {} event(s)", store.backlog());
            Ok(())
        }
    }
}

/// Tells systemd (`Type=notify`) the agent is ready once it is (store open, enforcement
/// reconciled once, RADIUS served), and, when the unit has `WatchdogSec`, pings the
/// watchdog for as long as the site is alive (the store answers, RADIUS threads run):
/// an agent wedged on its disk stops pinging and systemd restarts it.
async fn notify_systemd(health: outpost_agent::health::Health) {
    health.wait_ready().await;
    tracing::info!("ready");
    outpost_daemon::ready_then_watch("agent", |_| {
        let health = health.clone();
        async move {
            if health.alive().await {
                Ok(())
            } else {
                Err("the store does not answer or RADIUS is not served".to_string())
            }
        }
    })
    .await
}

fn parse_backend(s: &str) -> Result<outpost_wg::Backend, String> {
    match s {
        "kernel" => Ok(outpost_wg::Backend::Kernel),
        "userspace" => Ok(outpost_wg::Backend::Userspace),
        _ => Err(format!("'{s}': kernel or userspace")),
    }
}

async fn enroll(
    controller: &str,
    token: &str,
    state_dir: &Path,
    radius: RadiusConfig,
    tunnel: outpost_agent::wg::TunnelConfig,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let private = wireguard_control::Key::generate_private();
    let public = private.get_public();
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "outpost-agent".into());
    let resp = Client::enroll(
        controller,
        &proto::EnrollRequest {
            token: token.to_string(),
            wireguard_public_key: public.to_base64(),
            hostname,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: proto::PROTOCOL_VERSION,
        },
    )
    .await
    .context("enrollment")?;
    // From now on the agent reaches the controller only inside the tunnel, when it has one.
    let (controller_url, tunnel) = match &resp.tunnel {
        Some(t) => (t.api_url(), Some(tunnel)),
        None => (controller.to_string(), None),
    };
    Identity {
        agent_id: resp.agent_id,
        site_id: resp.site_id,
        credential: resp.credential,
        wireguard_private_key: private.to_base64(),
        tunnel: resp.tunnel.clone(),
        tunnel_interface: None,
        rotation: None,
        former_tunnel_addresses: vec![],
    }
    .save(state_dir)?;
    let cfg = Config {
        state_dir: state_dir.to_path_buf(),
        controller_url,
        tunnel,
        radius,
        sync: SyncConfig::default(),
        enforce: None,
        edge: Default::default(),
        shaping: None,
        wan: None,
        metrics: None,
    };
    let path = state_dir.join("agent.toml");
    cfg.save(&path)?;
    println!(
        "enrolled as agent {} for site {}; config written to {}",
        resp.agent_id,
        resp.site_id,
        path.display()
    );
    if let Some(t) = &resp.tunnel {
        println!(
            "tunnel: {} to the controller at {} (agent API {}); `run` brings it up",
            t.address,
            t.controller_endpoints.join(", "),
            t.api_url()
        );
    }
    Ok(())
}
