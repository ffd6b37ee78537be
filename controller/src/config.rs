//! The controller's TOML config. Every section has defaults, so no file is needed
//! to start; `configs/controller.example.toml` shows them all and is parsed by a test.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
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
    /// The WireGuard management plane; absent: none (see [`TunnelConfig`]).
    pub tunnel: Option<TunnelConfig>,
    pub retention: RetentionConfig,
    pub messaging: MessagingConfig,
}

/// The message outbox (see `messaging::egress`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// Let resellers' providers be on loopback, private or link-local addresses (a
    /// gateway on the operator's own network). Off: a reseller could otherwise make the
    /// controller reach the operator's internal services and read their answers in its
    /// delivery log.
    pub allow_private_destinations: bool,
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

/// The management tunnel: the controller's WireGuard hub, every agent one spoke. With
/// it, the agent API answers only on the controller's tunnel address; without it (a lab
/// or a trusted network) the agent API is served on the public listener. See
/// `configs/controller-tunnel.example.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// `kernel` (the wireguard module) or `userspace` (wireguard-go): always explicit.
    pub backend: outpost_wg::Backend,
    /// The interface name (at most 15 characters).
    #[serde(default = "TunnelConfig::default_interface")]
    pub interface: String,
    /// The overlay: each enrolled agent gets one address of it.
    #[serde(default = "TunnelConfig::default_network")]
    pub network: Ipv4Net,
    /// The controller's own address in the overlay (default: its first host address).
    pub address: Option<Ipv4Addr>,
    /// UDP port WireGuard listens on.
    #[serde(default = "TunnelConfig::default_listen_port")]
    pub listen_port: u16,
    /// `host:port` agents dial, in the order they try them (at least one).
    pub endpoints: Vec<String>,
    /// PersistentKeepalive handed to agents: keeps a site's NAT mapping open.
    #[serde(default = "TunnelConfig::default_keepalive")]
    pub persistent_keepalive_secs: u16,
    /// TCP port of the agent API on the tunnel address.
    #[serde(default = "TunnelConfig::default_api_port")]
    pub api_port: u16,
    /// Allow an overlay inside 100.64.0.0/10. Refused by default: operators number
    /// CGNAT subscribers from it, and a clash cuts sites off from their controller.
    #[serde(default)]
    pub allow_cgnat_range: bool,
}

impl TunnelConfig {
    fn default_interface() -> String {
        "outpost0".into()
    }
    fn default_network() -> Ipv4Net {
        "10.66.0.0/16".parse().expect("static network")
    }
    fn default_listen_port() -> u16 {
        51820
    }
    fn default_keepalive() -> u16 {
        25
    }
    fn default_api_port() -> u16 {
        8443
    }

    /// The controller's address in the overlay.
    pub fn controller_address(&self) -> Ipv4Addr {
        self.address
            .or_else(|| self.network.hosts().next())
            .unwrap_or(self.network.addr())
    }

    /// The shared carrier-grade NAT range (RFC 6598).
    pub const CGNAT: &str = "100.64.0.0/10";

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("tunnel.{m}")));
        let i = &self.interface;
        if i.is_empty() || i.len() > 15 || i.contains(['/', ' ']) {
            return bad(format!(
                "interface must be 1 to 15 characters without '/' or spaces (got '{i}')"
            ));
        }
        if self.network.prefix_len() > 30 {
            return bad(format!(
                "network {} is too small: at least a /30",
                self.network
            ));
        }
        let a = self.controller_address();
        if !self.network.hosts().any(|h| h == a) {
            return bad(format!(
                "address {a} must be a host address of tunnel.network {}",
                self.network
            ));
        }
        let cgnat: Ipv4Net = Self::CGNAT.parse().expect("static network");
        if !self.allow_cgnat_range && overlaps(&self.network, &cgnat) {
            return bad(format!(
                "network {} overlaps {cgnat}, which operators use for CGNAT subscribers; choose another \
                 range or set tunnel.allow_cgnat_range = true",
                self.network
            ));
        }
        if self.endpoints.is_empty() {
            return bad("endpoints must list at least one host:port agents dial".into());
        }
        for e in &self.endpoints {
            let port = e.rsplit_once(':').and_then(|(h, p)| {
                (!h.is_empty()).then_some(())?;
                p.parse::<u16>().ok().filter(|p| *p != 0)
            });
            if port.is_none() {
                return bad(format!("endpoints: '{e}' is not host:port"));
            }
        }
        if self.listen_port == 0 || self.api_port == 0 {
            return bad("listen_port and api_port must be set (agents are told them)".into());
        }
        Ok(())
    }
}

/// Whether two IPv4 networks share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Reverse proxies whose `X-Forwarded-For` is believed. Requests from any other
    /// address are attributed to the socket's peer address.
    pub trusted_proxies: Vec<IpNet>,
    /// Who may read `/metrics` (by the socket's peer address, never a forwarded one);
    /// anyone else gets 404. Loopback by default.
    pub metrics_allow: Vec<IpNet>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            trusted_proxies: Vec::new(),
            metrics_allow: vec![
                "127.0.0.0/8".parse().expect("static block"),
                "::1/128".parse().expect("static block"),
            ],
        }
    }
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
            tunnel: None,
            retention: RetentionConfig::default(),
            messaging: MessagingConfig::default(),
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
        if let Some(t) = &self.tunnel {
            t.validate()?;
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
