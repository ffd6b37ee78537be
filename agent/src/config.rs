//! The agent's TOML config (written by `outpost-agent enroll`, read by `run`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Holds `agent.db` (the local store) and `identity.json` (credential, keys).
    pub state_dir: PathBuf,
    /// Base URL of the controller's agent API: `http://10.66.0.1:8443` inside the
    /// tunnel, or the URL enrolled at when the controller runs without one.
    pub controller_url: String,
    /// The management tunnel to the controller, when enrolment handed one out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<crate::wg::TunnelConfig>,
    #[serde(default)]
    pub radius: RadiusConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    /// nftables enforcement on this box (the agent runs on the BNG or the router that
    /// forwards subscribers' traffic). Absent: the agent only answers RADIUS and asks
    /// the NAS to cut sessions (CoA/Disconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<crate::enforce::EnforceConfig>,
    #[serde(default)]
    pub edge: EdgeConfig,
    /// Per-subscriber HTB shaping on this box (IPoE: the agent runs on the BNG). It
    /// shapes only while the site's `shaping_enabled` setting is on; with it off the
    /// NAS shapes from the RADIUS rate attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaping: Option<ShapingConfig>,
    /// WAN checks of the subscribers' CPEs from this box (needs CAP_NET_RAW). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan: Option<crate::wan::WanConfig>,
    /// The `/healthz`, `/readyz` and `/metrics` listener. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
}

/// Where `/healthz`, `/readyz` and `/metrics` are served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A loopback address, or the agent's tunnel address (anything else is refused at
    /// start): `127.0.0.1:9108`.
    pub listen: SocketAddr,
}

/// Where and how much to shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingConfig {
    /// The interface facing the subscribers: download is shaped on its egress.
    pub subscriber_interface: String,
    /// The IFB device upload is shaped on (created when absent).
    #[serde(default = "default_ifb")]
    pub ifb: String,
    /// The access link's capacity, kbit/s: unclassified traffic gets it.
    pub link_kbps: u64,
}

fn default_ifb() -> String {
    "ifb-outpost".into()
}

impl ShapingConfig {
    /// The shaper's view of it.
    pub fn shape_config(&self) -> crate::shape::ShapeConfig {
        crate::shape::ShapeConfig {
            subscriber_interface: self.subscriber_interface.clone(),
            ifb: self.ifb.clone(),
            link_kbps: self.link_kbps,
            netns: None,
        }
    }
}

/// The enforcement loop, the suspended page and CoA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Address the suspended page listens on, at `enforce.portal_port`.
    pub portal_bind: std::net::IpAddr,
    /// How often the kernel is checked when nothing changed, seconds.
    pub verify_interval_secs: u64,
    /// Where Disconnect/CoA requests leave from (port 0: any).
    pub coa_bind: SocketAddr,
    /// Sends per Disconnect/CoA request, the first included.
    pub coa_attempts: u32,
    /// Wait for the first answer, milliseconds; doubles per retransmission.
    pub coa_first_timeout_ms: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            portal_bind: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            verify_interval_secs: 30,
            coa_bind: "0.0.0.0:0".parse().expect("static address"),
            coa_attempts: 3,
            coa_first_timeout_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiusConfig {
    /// Where Access-Requests arrive (1812 by convention).
    pub auth_listen: SocketAddr,
    /// Where Accounting-Requests arrive (1813 by convention).
    pub acct_listen: SocketAddr,
    /// SO_RCVBUF of each RADIUS socket: a NAS burst (a whole BRAS reconnecting after a
    /// reboot) waits here instead of being dropped. The kernel caps it at
    /// `net.core.rmem_max`; raise that sysctl on a busy BNG.
    pub recv_buffer_bytes: usize,
}

impl Default for RadiusConfig {
    fn default() -> Self {
        RadiusConfig {
            auth_listen: "0.0.0.0:1812".parse().expect("static address"),
            acct_listen: "0.0.0.0:1813".parse().expect("static address"),
            recv_buffer_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Long-poll wait asked of the controller, seconds (1..=60).
    pub wait_secs: u32,
    /// The outbox bound. Past it accounting is refused (the NAS keeps and retries it)
    /// and other events (rejects) are dropped and counted.
    pub max_outbox: u64,
    /// Events per delivery.
    pub batch: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            wait_secs: 30,
            max_outbox: 2_000_000,
            batch: 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("agent config {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("agent config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// The values make no sense.
    #[error("agent config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        if cfg.edge.coa_attempts == 0
            || cfg.edge.coa_first_timeout_ms == 0
            || cfg.edge.verify_interval_secs == 0
        {
            return Err(ConfigError::Invalid(
                "edge.coa_attempts, edge.coa_first_timeout_ms and edge.verify_interval_secs must be at least 1".into(),
            ));
        }
        if let Some(sh) = &cfg.shaping
            && (sh.link_kbps == 0
                || sh.subscriber_interface.is_empty()
                || sh.subscriber_interface.len() > 15
                || sh.ifb.is_empty()
                || sh.ifb.len() > 15)
        {
            return Err(ConfigError::Invalid(
                "shaping: link_kbps must be at least 1 and interface names 1 to 15 characters"
                    .into(),
            ));
        }
        if let Some(e) = &cfg.enforce {
            crate::enforce::Ruleset::new(e)
                .map_err(|err| ConfigError::Invalid(format!("enforce: {err}")))?;
        }
        if let Some(w) = &cfg.wan {
            w.check().map_err(ConfigError::Invalid)?;
        }
        if let Some(t) = &cfg.tunnel
            && (t.interface.is_empty()
                || t.interface.len() > 15
                || t.interface.contains(['/', ' ']))
        {
            return Err(ConfigError::Invalid(format!(
                "tunnel.interface must be 1 to 15 characters without '/' or spaces (got '{}')",
                t.interface
            )));
        }
        if !(1..=60).contains(&cfg.sync.wait_secs)
            || cfg.sync.batch == 0
            || cfg.sync.batch > outpost_protocol::MAX_BATCH
        {
            return Err(ConfigError::Invalid(format!(
                "sync.wait_secs must be 1..=60 and sync.batch 1..={}",
                outpost_protocol::MAX_BATCH
            )));
        }
        Ok(cfg)
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string_pretty(self).expect("config serializes");
        std::fs::write(path, text).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })
    }
}

/// What enrollment gave the agent; kept in `state_dir/identity.json`, mode 0600.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub agent_id: i64,
    pub site_id: i64,
    pub credential: String,
    /// The agent's WireGuard private key (base64).
    pub wireguard_private_key: String,
    /// The tunnel enrolment set up; `None` when the controller runs without one.
    #[serde(default)]
    pub tunnel: Option<outpost_protocol::TunnelParams>,
    /// The interface the tunnel runs on when a key rotation moved it off `[tunnel]`'s
    /// name (rotations alternate between it and [`crate::wg::alternate_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_interface: Option<String>,
    /// A key rotation under way ([`crate::wg::run_rotation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<crate::wg::Rotation>,
    /// Tunnel addresses this agent held before its key rotations, oldest first (at most
    /// [`crate::wg::FORMER_ADDRESSES_KEPT`]): a `[metrics] listen` written with one of
    /// them follows the agent to its address now, instead of keeping it from starting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_tunnel_addresses: Vec<String>,
}

impl Identity {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("identity.json")
    }

    pub fn load(state_dir: &Path) -> Result<Identity, ConfigError> {
        let path = Self::path(state_dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), ConfigError> {
        use std::io::Write;
        let path = Self::path(state_dir);
        let err = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        // Written aside and renamed over: a key rotation saves it while `status` or
        // `rotate-key` may read it, and a crash must leave the old one or the new one.
        let tmp = path.with_extension("json.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(err)?;
        f.write_all(
            serde_json::to_string_pretty(self)
                .expect("identity serializes")
                .as_bytes(),
        )
        .map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_checks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.example.toml");
        let cfg = Config::load(&path).unwrap();
        let e = cfg.enforce.expect("the example turns enforcement on");
        assert_eq!((e.table.as_str(), e.portal_port), ("outpost", 8081));
        assert_eq!(cfg.edge.coa_attempts, 3);
        assert_eq!(
            cfg.metrics.expect("the example serves metrics").listen,
            "127.0.0.1:9108".parse().unwrap()
        );
        let w = cfg.wan.expect("the example turns WAN checks on");
        assert_eq!((w.down_after, w.tcp_ports.as_slice()), (3, &[8291][..]));
    }

    #[test]
    fn a_bad_enforce_section_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "state_dir = \"/x\"\ncontroller_url = \"http://c\"\n[enforce]\ntable = \"has space\"\n",
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("enforce"), "{err}");
        std::fs::write(
            &path,
            "state_dir = \"/x\"\ncontroller_url = \"http://c\"\n[edge]\ncoa_attempts = 0\n",
        )
        .unwrap();
        assert!(Config::load(&path).is_err());
    }

    #[test]
    fn a_zero_or_absurd_wan_rate_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        let with = |wan: &str| {
            std::fs::write(
                &path,
                format!("state_dir = \"/x\"\ncontroller_url = \"http://c\"\n[wan]\n{wan}\n"),
            )
            .unwrap();
            Config::load(&path)
        };
        let nets = "subscriber_networks = [\"100.64.0.0/10\"]";
        assert_eq!(
            with(nets).unwrap().wan.unwrap().down_after,
            3,
            "down after 3 failures unless told"
        );
        let err = with(&format!("{nets}\nrate_pps = 0"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wan.rate_pps must be 1..=1000000, not 0"),
            "{err}"
        );
        let err = with(&format!("{nets}\nreseller_rate_pps = 99999999"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("wan.reseller_rate_pps"), "{err}");
        let err = with("subscriber_networks = []").unwrap_err().to_string();
        assert!(err.contains("wan.subscriber_networks"), "{err}");
        let err = with(&format!("{nets}\nrate_pps = -5")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
