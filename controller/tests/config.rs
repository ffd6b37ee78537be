//! The shipped example config parses, matches the defaults, and bad configs are refused.

use outpost_controller::config::{Config, ConfigError};

#[test]
fn example_config_parses_and_matches_defaults() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/controller.example.toml"
    );
    let cfg = Config::load(std::path::Path::new(path)).expect("example config parses");
    let d = Config::default();
    assert_eq!(cfg.listen, d.listen);
    assert_eq!(cfg.data_dir, d.data_dir);
    assert_eq!(cfg.tree.max_depth, d.tree.max_depth);
    assert_eq!(cfg.auth.argon2_memory_kib, d.auth.argon2_memory_kib);
    assert_eq!(
        cfg.auth.max_failures_per_email_and_ip,
        d.auth.max_failures_per_email_and_ip
    );
    assert!(cfg.http.trusted_proxies.is_empty());
}

#[test]
fn unknown_keys_and_nonsense_values_are_refused() {
    let e = Config::parse("listen = \"127.0.0.1:1\"\nlisten_port = 9\n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    let e = Config::parse("[tree]\nmax_depth = 0\n").unwrap_err();
    assert!(e.to_string().contains("max_depth"), "{e}");
    let e = Config::parse("[http]\ntrusted_proxies = [\"not-a-cidr\"]\n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    let ok = Config::parse("[tree]\nmax_depth = 4\n[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n")
        .unwrap();
    assert_eq!(ok.tree.max_depth, 4);
}
