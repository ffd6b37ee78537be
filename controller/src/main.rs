//! `outpost-controller`: serve the API, provision operator staff, verify the audit log.

use std::future::IntoFuture;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost_controller::config::Config;
use outpost_controller::db::audit::Verdict;
use outpost_controller::{bootstrap, demo, jobs};

#[derive(Parser)]
#[command(
    name = "outpost-controller",
    version,
    about = "Outpost controller: resellers, subscribers, audit log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// TOML config file (see configs/controller.example.toml). Defaults apply without one.
    #[arg(long, env = "OUTPOST_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for controller.db and controller.key (overrides the config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Common {
    fn load(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (overrides the config; default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Seed a sample installation (resellers, managers, sites, NAS, 200 subscribers)
        /// if it has no resellers yet.
        #[arg(long)]
        demo: bool,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The money ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// One reseller's subtree as a signed, encrypted archive, and back.
    Reseller {
        #[command(subcommand)]
        command: ResellerCommand,
    },
    /// Copy the whole database to FILE while the controller runs (SQLite `VACUUM INTO`:
    /// one consistent snapshot), then check the copy. The key file is not in it: keep
    /// it apart, once (`--key-to`); the fingerprint printed names it.
    Backup {
        #[command(flatten)]
        common: Common,
        /// The backup file to write; never overwritten.
        #[arg(long)]
        to: PathBuf,
        /// Also copy controller.key here (mode 0600; never overwritten).
        #[arg(long)]
        key_to: Option<PathBuf>,
    },
    /// Put a backup in place as the data directory's database, after checking it
    /// (integrity, schema version, and that the key opens its sealed secrets). Refused
    /// while a controller runs on that directory.
    Restore {
        #[command(flatten)]
        common: Common,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The key file kept with the backup; becomes the data directory's
        /// controller.key. Without it, the data directory's own key must open the backup.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Replace an existing database (it is moved aside, not deleted).
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check that every balance equals the sum of its ledger and every balance_after
    /// chain holds; exits 1 listing each problem.
    Verify {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum ResellerCommand {
    /// Write reseller ID's subtree to FILE (age-encrypted to this installation's
    /// archive.age, signed with its archive.sign; both in the data directory). Audited.
    Export {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        id: i64,
        /// The archive to write; never overwritten.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore an archive: into the reseller it names when this installation has it,
    /// else as a new reseller under its parent (or --parent-id). Audited. Prefer the API
    /// (`POST /api/v1/resellers/restore`) while the controller serves: its agents hear
    /// of the change at once.
    Restore {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        from: PathBuf,
        /// Print what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        parent_id: Option<i64>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Give a user a new one-time password, printed once (a lost or forgotten
    /// password); ends the user's sessions and API tokens.
    ResetPassword {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        email: String,
    },
    /// Create operator staff; reads the password from stdin (for provisioning scripts).
    CreateOperator {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "Operator staff")]
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exits 1 and names the first broken entry if tampered.
    Verify {
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        // No colour codes in a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Resolves on SIGINT or SIGTERM (how an operator, systemd or a test stops us), so the
/// tunnel's interface is taken down rather than left to an orphaned wireguard-go.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn serve(state: outpost_controller::AppState, addr: SocketAddr) -> anyhow::Result<()> {
    tokio::spawn(jobs::sweep_loop(state.clone()));
    tokio::spawn(jobs::retention_loop(state.clone()));
    tokio::spawn(
        outpost_controller::messaging::outbox::Outbox::new(
            state.db.clone(),
            state.secrets.clone(),
            outpost_controller::messaging::outbox::WorkerConfig {
                allow_private_destinations: state.config.messaging.allow_private_destinations,
                ..Default::default()
            },
        )
        .run(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    match state.tunnel.clone() {
        Some(t) => {
            // Every live agent's peer from the database, so agents reconnect as they were.
            let peers = {
                let secrets = state.secrets.clone();
                state
                    .db
                    .read(move |c| outpost_controller::db::agent::live_peers(c, &secrets))
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the agents' peers: {e}"))?
            };
            let tt = t.clone();
            let n = tokio::task::spawn_blocking(move || tt.up(&peers)).await??;
            let agent_addr = SocketAddr::new(t.address().into(), t.config.api_port);
            let listener = tokio::net::TcpListener::bind(agent_addr)
                .await
                .with_context(|| format!("cannot listen on {agent_addr} in the tunnel"))?;
            tracing::info!(backend = %t.config.backend, iface = %t.config.interface, peers = n,
                public_key = %t.public_key, agent_api = %agent_addr,
                "management tunnel up; the agent API answers only inside it");
            println!("agent API on http://{agent_addr} (inside the tunnel)");
            let app = outpost_controller::agent_app(state.clone());
            servers.spawn(
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown())
                .into_future(),
            );
        }
        None => tracing::warn!(
            "no [tunnel] configured: the agent API is served on the public listener; \
             use this only on a trusted network"
        ),
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    // With port 0 the kernel picks the port: report the address actually bound, in one
    // line tests and tools parse.
    let bound = listener
        .local_addr()
        .context("cannot read the bound address")?;
    tracing::info!(addr = %bound, "outpost-controller listening (API: /api/v1, OpenAPI: /api/v1/openapi.json)");
    println!("listening on http://{bound}");
    servers.spawn(
        axum::serve(
            listener,
            outpost_controller::app(state.clone())
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown())
        .into_future(),
    );
    // Every listener is bound and the schema was migrated before serving: ready.
    state.health.set_listening();
    notify_ready(&state);
    let failed = tokio::select! {
        _ = stopped() => None,
        Some(done) = servers.join_next() => Some(done),
    };
    let _ = stop_tx.send(true);
    state.db.feed.close();
    // Long polls in flight would hold a graceful shutdown for their whole wait; agents
    // retry, so they get a few seconds and the rest are cut.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!("cut the connections still open after 3 s (long polls)");
        servers.abort_all();
        while servers.join_next().await.is_some() {}
    }
    if let Some(t) = &state.tunnel {
        // The cut connections' closing segments go out through the tunnel: taken down at
        // once, they die with it, and every agent holding a long poll would wait out its
        // request timeout (45 s) before it even tries the restarted controller.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        t.down();
    }
    match failed {
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Tells systemd (`Type=notify`) the controller is ready, and when the unit has a
/// watchdog, pings it for as long as the database answers: a controller whose writer
/// is wedged stops pinging and systemd restarts it.
fn notify_ready(state: &outpost_controller::AppState) {
    let db = state.db.clone();
    tokio::spawn(outpost_daemon::ready_then_watch(
        "controller",
        move |every| {
            let db = db.clone();
            async move {
                let alive = tokio::time::timeout(
                    every,
                    db.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)),
                );
                match alive.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("the database does not answer ({e})")),
                    Err(_) => Err("the database took too long".to_string()),
                }
            }
        },
    ));
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            demo,
        } => {
            let mut cfg = common.load()?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            let addr = cfg.listen;
            let state = bootstrap::open(cfg)?;
            if let Some((email, password)) = bootstrap::first_admin(&state)? {
                println!(
                    "Created the operator admin. This password is shown once; change it after logging in."
                );
                println!("  email:    {email}");
                println!("  password: {password}");
            }
            if demo && let Some(logins) = demo::seed_demo(&state)? {
                println!("Seeded the demo installation. Logins (one shared password, shown once):");
                for l in &logins {
                    println!("  {:<32} {:<34} {}", l.role, l.email, l.password);
                }
                println!(
                    "200 subscribers: {} start one day past their expiry, so the first expiry sweep \
                     renews those that opted in and expires the others; 20 expire within the week.",
                    demo::DEMO_EXPIRED
                );
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(state, addr))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::CreateOperator {
                    common,
                    email,
                    name,
                },
        } => {
            let state = bootstrap::open(common.load()?)?;
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            let id = bootstrap::create_operator(&state, &email, &name, password)?;
            println!("created operator staff {email} (user {id})");
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command: UserCommand::ResetPassword { common, email },
        } => {
            let state = bootstrap::open(common.load()?)?;
            let password = bootstrap::reset_password(&state, &email)?;
            println!("new one-time password for {email}:");
            println!("  password: {password}");
            println!("log in and change it: PUT /api/v1/me/password");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            command: LedgerCommand::Verify { common },
        } => {
            let cfg = common.load()?;
            let (entries, problems) = bootstrap::verify_ledger(&cfg.data_dir)?;
            if problems.is_empty() {
                println!(
                    "ledger consistent: {entries} entries, every balance equals the sum of its ledger"
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("ledger PROBLEM in tenant {}: {}", p.tenant_id, p.message);
                }
                println!("{} problem(s) in {entries} entries", problems.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Reseller {
            command: ResellerCommand::Export { common, id, to },
        } => {
            use outpost_controller::backup::{archive::Keys, reseller};
            if to.exists() {
                anyhow::bail!("{} exists: an export never overwrites a file", to.display());
            }
            let state = bootstrap::open(common.load()?)?;
            let keys = Keys::load_or_create(&state.config.data_dir)?;
            let secrets = state.secrets.clone();
            let who = bootstrap::system();
            let (body, bytes) = state
                .db
                .write_blocking(|tx| {
                    let body = reseller::export(tx, None, id, &secrets, &keys.signer())?;
                    reseller::record_export(tx, &who, id, &body.manifest)?;
                    Ok((body.manifest.clone(), keys.seal(&body.to_bytes())))
                })
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            outpost_controller::backup::instance::write_new_private(&to, &bytes)?;
            println!(
                "exported reseller {} '{}' to {} ({} bytes, schema version {})",
                body.root.id,
                body.root.name,
                to.display(),
                bytes.len(),
                body.schema_version
            );
            for (t, sum) in &body.tables {
                println!("  {t:<24} {:>8} rows  sha256 {}", sum.rows, sum.sha256);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reseller {
            command:
                ResellerCommand::Restore {
                    common,
                    from,
                    dry_run,
                    parent_id,
                },
        } => {
            use outpost_controller::backup::{archive, reseller};
            let state = bootstrap::open(common.load()?)?;
            let keys = archive::Keys::load_or_create(&state.config.data_dir)?;
            let file =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file));
            let body = keys
                .open(&file)
                .and_then(|b| archive::Body::parse(&b))
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let opts = reseller::RestoreOptions {
                dry_run,
                parent_id,
                max_depth: state.config.tree.max_depth,
            };
            let who = bootstrap::system();
            let secrets = state.secrets.clone();
            let report = state
                .db
                .write_blocking(|tx| {
                    reseller::restore(tx, None, &who, &body, &sha, &secrets, &opts)
                })
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.conflicts.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Backup { common, to, key_to } => {
            let cfg = common.load()?;
            let w = outpost_controller::backup::instance::backup(
                &cfg.data_dir,
                &to,
                key_to.as_deref(),
            )?;
            println!(
                "backup written: {} ({} bytes, schema version {}, {} subscribers, integrity ok)",
                to.display(),
                w.bytes,
                w.schema_version,
                w.subscribers
            );
            println!(
                "it needs the key with fingerprint {}{}",
                w.key_fingerprint,
                match &key_to {
                    Some(k) => format!(", copied to {}", k.display()),
                    None => format!(
                        " ({}): keep a copy of it apart from the backup",
                        cfg.data_dir.join("controller.key").display()
                    ),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            common,
            from,
            key,
            overwrite,
        } => {
            let cfg = common.load()?;
            let r = outpost_controller::backup::instance::restore(
                &cfg.data_dir,
                &from,
                key.as_deref(),
                overwrite,
            )?;
            if let Some(p) = &r.replaced {
                println!("the database that was there is now {}", p.display());
            }
            println!(
                "restored {} into {} (schema version {}, {} subscribers, integrity ok, {})",
                from.display(),
                cfg.data_dir.display(),
                r.schema_version,
                r.subscribers,
                if r.key_checked {
                    "the key opens its sealed secrets"
                } else {
                    "it holds no sealed secrets to check the key with"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { common },
        } => {
            let cfg = common.load()?;
            match bootstrap::verify_audit(&cfg.data_dir)? {
                Verdict::Intact { entries } => {
                    println!("audit log intact: {entries} entries verified");
                    let conn = outpost_controller::db::open_read_only(
                        &cfg.data_dir.join("controller.db"),
                    )?;
                    let (n, problems) =
                        outpost_controller::backup::reseller::verify_segments(&conn)?;
                    if n > 0 || !problems.is_empty() {
                        println!("restored audit segments: {n} entries verified");
                    }
                    for p in &problems {
                        println!(
                            "restored audit segment of restore {} BROKEN: {}",
                            p.restore_id, p.message
                        );
                    }
                    Ok(if problems.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
                Verdict::Broken { id, reason } => {
                    println!("audit log BROKEN at entry {id}: {reason}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
