//! What the agent's in-process tests share: a site configuration on loopback with
//! every port 0 and the controller unreachable, and the identity it runs as.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use outpost_agent::config::{
    Config, EdgeConfig, Identity, MetricsConfig, RadiusConfig, SyncConfig,
};

/// A site keeping its state in `dir`, RADIUS and CoA on 127.0.0.1 port 0, enforcement,
/// shaping, WAN checks and the tunnel off, and `metrics` served if given. Nothing
/// listens at the controller URL: the site runs from its store, as when the controller
/// is away.
pub fn loopback_config(dir: &Path, metrics: Option<MetricsConfig>) -> Config {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Config {
        state_dir: dir.to_path_buf(),
        controller_url: "http://127.0.0.1:9".into(),
        radius: RadiusConfig {
            auth_listen: any,
            acct_listen: any,
            ..RadiusConfig::default()
        },
        sync: SyncConfig::default(),
        enforce: None,
        edge: EdgeConfig {
            coa_bind: any,
            ..EdgeConfig::default()
        },
        shaping: None,
        wan: None,
        tunnel: None,
        metrics,
    }
}

/// Agent 1 of site 1, enrolled without a tunnel.
pub fn identity() -> Identity {
    Identity {
        agent_id: 1,
        site_id: 1,
        credential: "test-credential".into(),
        wireguard_private_key: String::new(),
        tunnel: None,
        tunnel_interface: None,
        rotation: None,
        former_tunnel_addresses: vec![],
    }
}
