//! Edge enforcement on the wire, in the netns lab ([`outpost_tests::lab`]): the real
//! `outpost-controller` (in its own namespace) and `outpost-agent` (on the BNG), real
//! nftables, and real ping, curl, dig and TCP from subscriber namespaces.
//!
//! Times are printed for the issue's note, never asserted: deadlines only bound a
//! broken run.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use outpost_agent::config::Config;
use outpost_testkit::api::Api;
use outpost_testkit::netns::Netns;
use outpost_testkit::process::{Proc, start, until, until_within};
use outpost_testkit::radclient::Radclient;
use outpost_tests::lab::{EdgeLab, TcpSession, addr};
use outpost_tests::system::{binaries, create_operator, enroll, rfc3339};
use serde_json::{Value, json};

const PASSWORD: &str = "lab-operator-password";

fn the_lab_routes_and_serves(lab: &EdgeLab) {
    for sub in [&lab.sub1, &lab.sub2] {
        assert!(
            sub.ping(addr::WEB),
            "{} cannot reach the web server",
            sub.name
        );
        assert_eq!(EdgeLab::resolve(sub), addr::WEB);
        let (code, body) = EdgeLab::http(sub, "http://www.example.test/");
        assert_eq!((code, body.as_str()), (200, "upstream page\n"));
    }
}

#[test]
#[ignore = "lab: needs root and netns"]
fn the_lab_routes_and_serves_before_any_enforcement() {
    let (_dir, lab) = EdgeLab::start();
    the_lab_routes_and_serves(&lab);
    let tcp = TcpSession::open(&lab.sub1);
    assert!(tcp.alive());
    assert!(tcp.wait_cut(Duration::from_millis(300)).is_none());
}

/// A controller in `ctl` and an agent on the BNG with enforcement on, serving two
/// subscribers with static addresses owned by a rebranded reseller.
struct Site<'a> {
    lab: &'a EdgeLab,
    /// Made inside `ctl` (the controller listens only there), so its connections are.
    api: Api,
    controller_bin: std::path::PathBuf,
    agent_bin: std::path::PathBuf,
    data: std::path::PathBuf,
    agent_config: std::path::PathBuf,
    controller: Option<Proc>,
    agent: Option<Proc>,
    site: i64,
    sub1: i64,
    sub2: i64,
    sub3: i64,
    /// Home 8M (amina's), Home 4M (bruno's), Pro 16M.
    plans: Vec<i64>,
}

const BASE: &str = "http://198.51.100.1:8080";

/// An expiry well past any test.
fn far() -> SystemTime {
    SystemTime::now() + Duration::from_secs(30 * 86_400)
}

impl<'a> Site<'a> {
    fn new(lab: &'a EdgeLab, dir: &Path, sub1_expires: SystemTime) -> Site<'a> {
        let (controller_bin, agent_bin) = binaries();
        let data = dir.join("controller");
        let controller = start_controller(lab, &controller_bin, &data);
        create_operator(&controller_bin, &data, "noc@isp.test", PASSWORD);
        let api = lab
            .ctl
            .within(|| Api::login(BASE, "noc@isp.test", PASSWORD, "lab"));
        let reseller = api.create(
            "/api/v1/resellers",
            json!({ "name": "Skylink", "rebrand_enabled": true }),
        );
        api.put(
            &format!("/api/v1/resellers/{reseller}/brand"),
            json!({ "name": "Skylink Wireless", "color": "#0a7d32", "contact": "+1 555 0100" }),
        );
        let site = api.create(
            "/api/v1/sites",
            json!({ "name": "Tower 1", "tenant_id": reseller }),
        );
        api.post("/api/v1/nas", json!({ "name": "bng-1", "site_id": site, "ip": "127.0.0.1", "secret": "nas-shared-secret", "kind": "generic", "tenant_id": reseller }));
        let mut plans = Vec::new();
        for (name, down, up) in [
            ("Home 8M", 8_000, 4_000),
            ("Home 4M", 4_000, 2_000),
            ("Pro 16M", 16_000, 8_000),
        ] {
            let plan = api.create("/api/v1/plans", json!({ "name": name, "download_kbps": down, "upload_kbps": up, "validity_days": 30, "price": "20.00" }));
            api.post(
                &format!("/api/v1/resellers/{reseller}/rate-card"),
                json!({ "plan_id": plan, "wholesale_price": "10.00" }),
            );
            plans.push(plan);
        }
        let far = rfc3339(far());
        let new_sub = |name: &str, ip: &str, expires: &str, plan: i64| {
            api.create("/api/v1/subscribers", json!({ "username": name, "password": "pw-123", "site_id": site, "tenant_id": reseller,
                             "static_ipv4": ip, "expires_at": expires, "plan_id": plan }))
        };
        let sub1 = new_sub("amina", addr::SUB1, &rfc3339(sub1_expires), plans[0]);
        let sub2 = new_sub("bruno", addr::SUB2, &far, plans[1]);
        // Chen has no static address: the NAS hands one out and reports it in accounting.
        let sub3 = api.create("/api/v1/subscribers", json!({ "username": "chen", "password": "pw-123", "site_id": site, "tenant_id": reseller,
                         "expires_at": far, "plan_id": plans[1] }));
        let token = api.enrollment_token(site);
        let state = dir.join("agent");
        let agent = lab.bng.cmd(agent_bin.to_str().unwrap());
        let agent_config = enroll(
            agent,
            BASE,
            &token,
            &state,
            ("127.0.0.1:1812", "127.0.0.1:1813"),
            &[],
        );
        let mut cfg = Config::load(&agent_config).unwrap();
        cfg.enforce = Some(outpost_agent::enforce::EnforceConfig {
            resolvers: vec![addr::DNS.parse().unwrap()],
            subscriber_interfaces: vec!["br0".into()],
            ..Default::default()
        });
        cfg.edge.verify_interval_secs = 5;
        cfg.shaping = Some(outpost_agent::config::ShapingConfig {
            subscriber_interface: "br0".into(),
            ifb: "ifb-outpost".into(),
            link_kbps: 1_000_000,
        });
        cfg.edge.coa_first_timeout_ms = 200;
        cfg.save(&agent_config).unwrap();
        let mut s = Site {
            lab,
            api,
            controller_bin,
            agent_bin,
            data,
            agent_config,
            controller: Some(controller),
            agent: None,
            site,
            sub1,
            sub2,
            sub3,
            plans,
        };
        s.start_agent();
        s
    }

    fn start_agent(&mut self) {
        self.agent = Some(start(
            self.lab.bng.cmd(self.agent_bin.to_str().unwrap()).args([
                "run",
                "--config",
                self.agent_config.to_str().unwrap(),
            ]),
            "RADIUS auth on",
        ));
    }

    fn restart_controller(&mut self) {
        self.controller = Some(start_controller(self.lab, &self.controller_bin, &self.data));
    }

    fn set_status(&self, sub: i64, status: &str) {
        self.api.patch(
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "status": status }),
        );
    }

    fn wait_in_sync(&self) {
        until("agent in sync", || self.agent_view()["in_sync"] == true);
    }

    fn agent_view(&self) -> Value {
        self.api.get(&format!("/api/v1/sites/{}/agent", self.site))
    }

    /// The blocked IPv4 set as nftables holds it on the BNG.
    fn blocked4(&self) -> Vec<String> {
        let out = self
            .lab
            .bng
            .stdout(&["nft", "-j", "list", "set", "inet", "outpost", "blocked4"]);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let mut ips: Vec<String> = v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["set"]["elem"].as_array())
            .flatten()
            .filter_map(|e| e.as_str().map(String::from))
            .collect();
        ips.sort();
        ips
    }
}

fn start_controller(lab: &EdgeLab, bin: &Path, data: &Path) -> Proc {
    start(
        lab.ctl
            .cmd(bin.to_str().unwrap())
            .args(["serve", "--listen", "198.51.100.1:8080", "--data-dir"])
            .arg(data),
        "listening on",
    )
}

#[test]
#[ignore = "lab: needs root and netns"]
fn suspending_cuts_off_on_the_wire_and_reconnecting_restores() {
    let (dir, lab) = EdgeLab::start();
    let site = Site::new(&lab, dir.path(), far());
    site.wait_in_sync();
    the_lab_routes_and_serves(&lab);
    let tcp = TcpSession::open(&lab.sub1);
    assert!(tcp.alive());

    let t0 = Instant::now();
    site.set_status(site.sub1, "suspended");
    let blocked = until("sub1's ping stops", || !lab.sub1.ping(addr::WEB));
    let cut = tcp.wait_cut(Duration::from_secs(10));
    println!(
        "suspended → ping blocked within {:?} (ping polls with a 1 s timeout); open TCP: {cut:?} after {:?}",
        blocked,
        t0.elapsed()
    );
    assert!(cut.is_some(), "the established TCP connection was not cut");
    assert_eq!(site.blocked4(), vec![addr::SUB1.to_string()]);
    // DNS still answers; HTTP shows the page in the reseller's brand; others untouched.
    assert_eq!(EdgeLab::resolve(&lab.sub1), addr::WEB);
    let (code, page) = EdgeLab::http(&lab.sub1, "http://www.example.test/");
    assert_eq!(code, 511, "{page}");
    assert!(page.contains("Skylink Wireless"), "{page}");
    assert!(
        page.contains("#0a7d32") && page.contains("+1 555 0100"),
        "{page}"
    );
    assert!(page.contains(r#"data-reason="suspended""#), "{page}");
    let (code, _) = EdgeLab::http(&lab.sub1, "http://203.0.113.10:8080/");
    assert_eq!(code, 0, "only port 80 is redirected; the rest is dropped");
    assert!(lab.sub2.ping(addr::WEB));
    assert_eq!(EdgeLab::http(&lab.sub2, "http://www.example.test/").0, 200);
    until("agent acknowledged the suspension", || {
        let v = site.agent_view();
        v["in_sync"] == true && v["digest_matches"] == true
    });

    // Reconnect.
    let t0 = Instant::now();
    site.set_status(site.sub1, "active");
    until("sub1's ping works again", || lab.sub1.ping(addr::WEB));
    println!("reconnected → ping restored within {:?}", t0.elapsed());
    let (code, body) = EdgeLab::http(&lab.sub1, "http://www.example.test/");
    assert_eq!((code, body.as_str()), (200, "upstream page\n"));
    let tcp = TcpSession::open(&lab.sub1);
    assert!(tcp.alive());
    assert!(site.blocked4().is_empty());
    let _ = site.sub2;
}

#[test]
#[ignore = "lab: needs root and netns"]
fn offline_expiry_blocks_on_time_and_a_killed_agent_comes_back_enforcing() {
    let (dir, lab) = EdgeLab::start();
    let mut site = Site::new(&lab, dir.path(), far());
    site.wait_in_sync();
    assert!(lab.sub1.ping(addr::WEB));
    // Amina's plan runs out in a few seconds (set once the lab is up, so a slow build
    // cannot eat the margin); the agent hears of it before the controller goes.
    let expires = SystemTime::now() + Duration::from_secs(8);
    site.api.patch(
        &format!("/api/v1/subscribers/{}", site.sub1),
        json!({ "expires_at": rfc3339(expires) }),
    );
    until("agent in sync with the new expiry", || {
        site.agent_view()["in_sync"] == true
    });

    // The controller goes away; the agent's own clock expires amina on time.
    site.controller.take().unwrap().kill9();
    assert!(
        SystemTime::now() < expires,
        "the controller had to be gone before amina expired; the machine was too slow to set this up in 8 s"
    );
    until_within("sub1 expires offline", Duration::from_secs(40), || {
        !lab.sub1.ping(addr::WEB)
    });
    let late = SystemTime::now()
        .duration_since(expires)
        .unwrap_or_default();
    println!("expired offline: blocked {late:?} after expires_at (ping polls with a 1 s timeout)");
    assert!(lab.sub2.ping(addr::WEB));
    let (code, page) = EdgeLab::http(&lab.sub1, "http://www.example.test/");
    assert_eq!(code, 511);
    assert!(page.contains(r#"data-reason="expired""#), "{page}");
    let before = site.blocked4();
    assert_eq!(before, vec![addr::SUB1.to_string()]);

    // kill -9: the table stays (fail-closed); a restart with the controller still down
    // rebuilds from the local store without letting amina through.
    site.agent.take().unwrap().kill9();
    assert_eq!(
        site.blocked4(),
        before,
        "a dead agent leaves enforcement in place"
    );
    assert!(!lab.sub1.ping(addr::WEB));
    site.start_agent();
    assert_eq!(site.blocked4(), before);
    assert!(!lab.sub1.ping(addr::WEB));
    assert!(lab.sub2.ping(addr::WEB));
    assert_eq!(EdgeLab::http(&lab.sub1, "http://www.example.test/").0, 511);

    // Someone flushes our set by hand: the periodic verify puts it back.
    lab.bng
        .run(&["nft", "flush", "set", "inet", "outpost", "blocked4"]);
    let t = until_within(
        "verify restores the flushed set",
        Duration::from_secs(20),
        || site.blocked4() == before,
    );
    println!("a hand-flushed set was restored after {t:?} (verify interval 5 s)");

    // The controller returns: the agent converges to the same enforced state and says so.
    site.restart_controller();
    until_within("agent in sync again", Duration::from_secs(90), || {
        let v = site.agent_view();
        v["in_sync"] == true && v["digest_matches"] == true
    });
    assert_eq!(site.blocked4(), before);

    // `enforcement clear` removes our table and nothing else.
    lab.bng
        .run(&["nft", "add", "table", "inet", "operator_own"]);
    site.agent.take().unwrap().kill9();
    lab.bng.run(&[
        site.agent_bin.to_str().unwrap(),
        "enforcement",
        "clear",
        "--config",
        site.agent_config.to_str().unwrap(),
    ]);
    assert!(lab.sub1.ping(addr::WEB), "cleared on purpose: amina passes");
    let tables = lab.bng.stdout(&["nft", "list", "tables"]);
    assert!(
        tables.contains("operator_own") && !tables.contains("inet outpost"),
        "{tables}"
    );
    let _ = site.sub2;
}

/// iperf3 from `from` to the upstream server: the receiver's Mbit/s. iperf3's server
/// takes one test at a time and needs a moment between tests, so a "busy" answer is
/// retried; iperf3's own error is reported if it persists.
fn iperf3(from: &Netns, download: bool) -> f64 {
    let mut args = vec![
        "iperf3",
        "-c",
        addr::WEB,
        "-p",
        "5201",
        "-t",
        "4",
        "-O",
        "1",
        "-J",
    ];
    if download {
        args.push("-R");
    }
    let mut last = String::new();
    for _ in 0..5 {
        let json = from.stdout(&args);
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        if let Some(bps) = v
            .pointer("/end/sum_received/bits_per_second")
            .and_then(Value::as_f64)
        {
            return bps / 1e6;
        }
        last = v["error"].as_str().map_or(json.clone(), str::to_owned);
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("iperf3 gave no receiver rate: {last}")
}

fn within_15_percent(what: &str, measured: f64, plan: f64) {
    println!(
        "{what}: {measured:.2} Mbit/s against a plan of {plan} Mbit/s ({:+.1}%)",
        (measured / plan - 1.0) * 100.0
    );
    assert!(
        (measured - plan).abs() <= plan * 0.15,
        "{what}: {measured:.2} Mbit/s is not within 15% of {plan} Mbit/s"
    );
}

/// The HTB classes on the BNG's subscriber side, as (classid, rate) from `tc class
/// show` (this iproute2 prints no JSON for HTB classes).
fn htb_classes(lab: &EdgeLab) -> Vec<(String, String)> {
    let out = lab.bng.stdout(&["tc", "class", "show", "dev", "br0"]);
    let mut classes: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let rate = w.iter().position(|t| *t == "rate")?;
            Some((w.get(2)?.to_string(), w.get(rate + 1)?.to_string()))
        })
        .collect();
    classes.sort();
    classes
}

#[test]
#[ignore = "lab: needs root and netns"]
fn shaping_follows_the_plan_both_ways_and_a_plan_change_re_rates_one_class() {
    let (dir, lab) = EdgeLab::start();
    let site = Site::new(&lab, dir.path(), far());
    let _server = start(
        lab.up.cmd("sh").args([
            "-c",
            "iperf3 -s -B 203.0.113.10 -p 5201 & sleep 0.5; echo listening; wait",
        ]),
        "listening",
    );
    // The site's setting turns shaping on at the edge.
    site.api.patch(
        &format!("/api/v1/sites/{}", site.site),
        json!({ "shaping_enabled": true }),
    );
    until("amina's and bruno's classes in place", || {
        htb_classes(&lab).len() >= 4
    });
    site.wait_in_sync();
    within_15_percent("amina download (Home 8M)", iperf3(&lab.sub1, true), 8.0);
    within_15_percent("amina upload (Home 8M)", iperf3(&lab.sub1, false), 4.0);
    within_15_percent("bruno download (Home 4M)", iperf3(&lab.sub2, true), 4.0);

    // Amina moves to Pro 16M: her class is re-rated; bruno's is left as it was.
    let before = htb_classes(&lab);
    site.api.patch(
        &format!("/api/v1/subscribers/{}", site.sub1),
        json!({ "plan_id": site.plans[2] }),
    );
    until("amina re-rated", || htb_classes(&lab) != before);
    let after = htb_classes(&lab);
    let changed: Vec<_> = after.iter().filter(|c| !before.contains(c)).collect();
    assert_eq!(
        changed.len(),
        1,
        "exactly one class changes: {before:?} → {after:?}"
    );
    assert_eq!(changed[0].1, "16Mbit");
    assert_eq!(before.len(), after.len());
    within_15_percent("amina download (Pro 16M)", iperf3(&lab.sub1, true), 16.0);
    within_15_percent("amina upload (Pro 16M)", iperf3(&lab.sub1, false), 8.0);
    let _ = site.sub2;
}

/// radclient on the BNG playing the NAS: one accounting record for chen's session.
fn accounting(lab: &EdgeLab, status: &str, framed_ip: &str) -> String {
    let attrs = format!(
        "Acct-Status-Type = {status}\nUser-Name = \"chen\"\nAcct-Session-Id = \"chen-1\"\n\
         NAS-IP-Address = 127.0.0.1\nFramed-IP-Address = {framed_ip}\n"
    );
    Radclient::new("127.0.0.1:1813", "nas-shared-secret")
        .inside(&lab.bng.name)
        .send("acct", &attrs)
        .text()
}

#[test]
#[ignore = "lab: needs root and netns"]
fn an_address_learnt_from_accounting_is_blocked_and_released_on_stop() {
    let (dir, lab) = EdgeLab::start();
    let site = Site::new(&lab, dir.path(), far());
    site.wait_in_sync();
    let out = accounting(&lab, "Start", addr::SUB3);
    assert!(out.contains("Accounting-Response"), "{out}");
    assert!(lab.sub3.ping(addr::WEB));

    site.set_status(site.sub3, "suspended");
    until("chen's learnt address is blocked", || {
        !lab.sub3.ping(addr::WEB)
    });
    assert_eq!(site.blocked4(), vec![addr::SUB3.to_string()]);
    assert_eq!(EdgeLab::http(&lab.sub3, "http://www.example.test/").0, 511);
    assert!(lab.sub1.ping(addr::WEB) && lab.sub2.ping(addr::WEB));
    // The agent also asked the NAS to end chen's session. Nothing answers CoA on this
    // BNG, so after its retransmissions the outcome is a timeout, and the controller
    // shows it (belt and braces: the block above did not wait for the NAS).
    let events = format!("/api/v1/sites/{}/events?type=coa", site.site);
    until_within(
        "the Disconnect's timeout reaches the controller",
        Duration::from_secs(30),
        || {
            site.api.get(&events).as_array().is_some_and(|all| {
                all.iter().any(|e| {
                    e["body"]["username"] == "chen"
                        && e["body"]["kind"] == "disconnect"
                        && e["body"]["outcome"] == "timeout"
                        && e["body"]["session_id"] == "chen-1"
                })
            })
        },
    );

    // The session ends: the address goes back to the pool and out of the set, although
    // chen is still suspended (RADIUS refuses chen a new session).
    let out = accounting(&lab, "Stop", addr::SUB3);
    assert!(out.contains("Accounting-Response"), "{out}");
    until("the released address passes again", || {
        lab.sub3.ping(addr::WEB)
    });
    assert!(site.blocked4().is_empty());
}
