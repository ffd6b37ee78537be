//! The controller's TOML config. Every section has defaults, so no file is needed
//! to start; `configs/controller.example.toml` shows them all and is parsed by a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API and panel listen on.
    pub listen: SocketAddr,
    /// Directory holding `controller.db` and `controller.key`.
    pub data_dir: PathBuf,
    pub tree: TreeConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub billing: BillingConfig,
    pub agents: AgentsConfig,
    pub retention: RetentionConfig,
}

/// How long bookkeeping that only serves retries and replays is kept. The ledger, the
/// audit log and usage are never pruned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Stored answers to `Idempotency-Key` requests: a retry later than this is a new
    /// request.
    pub idempotency_hours: u64,
    /// Raw agent events (accounting records, rejects, CoA outcomes) after their effects
    /// (sessions, usage) are stored. Agents only redeliver events they have not had
    /// acknowledged, which are minutes old, not days.
    pub agent_events_days: u64,
    /// How often the retention sweep runs.
    pub sweep_interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            idempotency_hours: 72,
            agent_events_days: 90,
            sweep_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Addresses handed to agents for their WireGuard tunnel, one /32 each.
    pub tunnel_network: ipnet::Ipv4Net,
    /// The controller's own address inside the tunnel (where agents reach the API).
    pub controller_tunnel_address: std::net::Ipv4Addr,
    /// The controller's WireGuard public key (base64), given to agents at enrollment.
    pub wireguard_public_key: String,
    /// `host:port` agents dial for the tunnel.
    pub wireguard_endpoint: String,
    pub persistent_keepalive_secs: u16,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            tunnel_network: "10.66.0.0/16".parse().expect("static network"),
            controller_tunnel_address: std::net::Ipv4Addr::new(10, 66, 0, 1),
            wireguard_public_key: String::new(),
            wireguard_endpoint: String::new(),
            persistent_keepalive_secs: 25,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// ISO 4217 code of the installation's one currency.
    pub currency: String,
    /// Digits after the decimal point (2 for USD/EUR, 0 for JPY, 3 for KWD). Pinned in
    /// the database on first start: amounts are stored as integers of this unit.
    pub minor_units: u32,
    /// How often expired subscribers are auto-renewed or marked expired.
    pub sweep_interval_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            currency: "USD".into(),
            minor_units: 2,
            sweep_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TreeConfig {
    /// Deepest tenant allowed below the operator: 1 = resellers only,
    /// 2 = resellers and sub-resellers (the default), more for deeper trees.
    pub max_depth: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of a login session.
    pub session_ttl_hours: u32,
    /// Mark the session cookie `Secure` (set when the panel is served over HTTPS).
    pub cookie_secure: bool,
    /// Failed logins for one account from one client address before that pair is held
    /// back (see `db::throttle`: blocks double with each further failure).
    pub max_failures_per_email_and_ip: u32,
    /// Failed logins from one client address, over all accounts, before logins from it
    /// are held back (except for accounts that have logged in from it before).
    pub max_failures_per_ip: u32,
    /// Failed logins for one account, over all addresses, before logins to it are held
    /// back (except from addresses it has logged in from before).
    pub max_failures_per_account: u32,
    /// A counter is forgiven after this long without failures; no block is longer.
    pub failure_window_secs: u64,
    /// Password checks (argon2, `argon2_memory_kib` each) running at once; this bounds
    /// the memory logins can take whatever arrives.
    pub max_concurrent_password_checks: u32,
    /// Password checks allowed to wait for a free slot; past that, 503 with Retry-After.
    pub max_queued_password_checks: u32,
    /// argon2id cost. The defaults follow OWASP's minimum (19 MiB, 2 passes).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Reverse proxies whose `X-Forwarded-For` is believed. Requests from any other
    /// address are attributed to the socket's peer address.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./data"),
            tree: TreeConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            billing: BillingConfig::default(),
            agents: AgentsConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig { max_depth: 2 }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_hours: 12,
            cookie_secure: false,
            max_failures_per_email_and_ip: 5,
            max_failures_per_ip: 20,
            max_failures_per_account: 50,
            failure_window_secs: 900,
            max_concurrent_password_checks: 4,
            max_queued_password_checks: 32,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// The values parse but make no sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.into(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.retention;
        if r.idempotency_hours == 0 || r.agent_events_days == 0 || r.sweep_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "retention.idempotency_hours, agent_events_days and sweep_interval_secs must be at least 1".into(),
            ));
        }
        if self.tree.max_depth == 0 {
            return Err(ConfigError::Invalid(
                "tree.max_depth must be at least 1 (resellers)".into(),
            ));
        }
        if self.auth.session_ttl_hours == 0 {
            return Err(ConfigError::Invalid(
                "auth.session_ttl_hours must be at least 1".into(),
            ));
        }
        let a = &self.auth;
        if a.max_failures_per_email_and_ip == 0
            || a.max_failures_per_ip == 0
            || a.max_failures_per_account == 0
            || a.failure_window_secs == 0
            || a.max_concurrent_password_checks == 0
        {
            return Err(ConfigError::Invalid(
                "auth.max_failures_*, auth.failure_window_secs and auth.max_concurrent_password_checks must be at least 1".into(),
            ));
        }
        if self.auth.argon2_memory_kib < 8 || self.auth.argon2_iterations == 0 {
            return Err(ConfigError::Invalid(
                "auth.argon2_memory_kib must be >= 8 and auth.argon2_iterations >= 1".into(),
            ));
        }
        let c = &self.billing.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::Invalid(format!(
                "billing.currency must be an ISO 4217 code like USD (got '{c}')"
            )));
        }
        if self.billing.minor_units > 4 {
            return Err(ConfigError::Invalid(
                "billing.minor_units must be 0 to 4".into(),
            ));
        }
        if !self
            .agents
            .tunnel_network
            .contains(&self.agents.controller_tunnel_address)
        {
            return Err(ConfigError::Invalid(
                "agents.controller_tunnel_address must lie inside agents.tunnel_network".into(),
            ));
        }
        if self.billing.sweep_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "billing.sweep_interval_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn currency(&self) -> crate::money::Currency {
        crate::money::Currency {
            code: self.billing.currency.clone(),
            minor_units: self.billing.minor_units,
        }
    }
}
