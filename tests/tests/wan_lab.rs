//! WAN checks end to end, with real processes in namespaces: `outpost-controller serve`
//! and `outpost-agent run` (with a `[wan]` section) in `bng`, two subscribers' CPEs in
//! namespaces of their own behind veth links (IPoE style, static addresses).
//!
//! - an nft drop rule inside CPE 1's namespace → its ICMP check goes down, and the
//!   controller holds that transition once; the rule removed → up, the outage ended;
//! - CPE 2 answers echo but nothing listens on the checked TCP port → that probe is
//!   down while its ICMP check never is;
//! - the controller stopped during an outage → the agent journals down and up, and both
//!   arrive (once) when the controller is back.
//!
//! Times are printed, never asserted; deadlines only bound a broken run.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use outpost_testkit::api::Api;
use outpost_testkit::netns::{Netns, veth};
use outpost_testkit::process::{Proc, start, start_listening, until};
use outpost_tests::system::{binaries, create_operator, enroll};
use serde_json::{Value, json};

const PORT: u16 = 8291;

fn controller(bin: &Path, bng: &Netns, data: &Path, listen: &str) -> (Proc, std::net::SocketAddr) {
    start_listening(
        bng.cmd(bin.to_str().unwrap())
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data),
    )
}

fn block(cpe: &Netns) {
    cpe.run(&["nft", "add", "table", "inet", "wanblock"]);
    cpe.run(&[
        "nft",
        "add",
        "chain",
        "inet",
        "wanblock",
        "input",
        "{ type filter hook input priority 0 ; policy accept ; }",
    ]);
    cpe.run(&["nft", "add", "rule", "inet", "wanblock", "input", "drop"]);
}

fn unblock(cpe: &Netns) {
    cpe.run(&["nft", "delete", "table", "inet", "wanblock"]);
}

fn items(v: Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The state of `probe` of `sub` at the controller, if it has one.
fn state_of(api: &Api, sub: i64, probe: &str) -> Option<String> {
    items(api.get(&format!("/api/v1/wan/targets?subscriber_id={sub}")))
        .into_iter()
        .find(|t| t["probe"] == probe)
        .map(|t| t["state"].as_str().unwrap().to_string())
}

/// (subscriber, state) of every WAN-check event the controller stored for the site.
fn wan_events(api: &Api, site: i64) -> Vec<(i64, String, String)> {
    api.get(&format!(
        "/api/v1/sites/{site}/events?type=wan_check&limit=500"
    ))
    .as_array()
    .unwrap()
    .iter()
    .map(|e| {
        let b = &e["body"];
        (
            b["subscriber_id"].as_i64().unwrap(),
            b["probe"]["kind"].as_str().unwrap().to_string(),
            b["state"].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

#[test]
#[ignore = "lab: needs root and netns"]
fn cpe_outages_reach_the_controller_once_even_when_it_was_away() {
    let (controller_bin, agent_bin) = binaries();
    let dir = tempfile::tempdir().unwrap();
    let (data, state) = (dir.path().join("controller"), dir.path().join("agent"));
    std::fs::create_dir_all(&state).unwrap();

    let bng = Netns::new("wan-bng");
    let cpe1 = Netns::new("wan-cpe1");
    let cpe2 = Netns::new("wan-cpe2");
    veth(
        &bng,
        "sub1",
        Some("10.31.1.1/24"),
        &cpe1,
        "wan",
        Some("10.31.1.2/24"),
    );
    veth(
        &bng,
        "sub2",
        Some("10.31.2.1/24"),
        &cpe2,
        "wan",
        Some("10.31.2.2/24"),
    );
    for c in [&cpe1, &cpe2] {
        c.run(&["ip", "route", "add", "default", "dev", "wan"]);
    }
    // CPE 1 runs a management service on PORT; CPE 2 does not (its port is closed).
    let listener = cpe1.within(|| TcpListener::bind(("10.31.1.2", PORT)).unwrap());
    std::thread::spawn(move || for _ in listener.incoming() {});

    let (mut ctl, addr) = controller(&controller_bin, &bng, &data, "127.0.0.1:0");
    let base = format!("http://{addr}");
    create_operator(&controller_bin, &data, "noc@isp.test", "wan-lab-password");
    // The client's connections are made by a thread it starts here, inside `bng`.
    let api = {
        let base = base.clone();
        bng.within(move || Api::login(&base, "noc@isp.test", "wan-lab-password", "wan lab"))
    };
    let site = api.create("/api/v1/sites", json!({ "name": "Tower 1" }));
    let new_sub = |name: &str, ip: &str| {
        api.create(
            "/api/v1/subscribers",
            json!({ "username": name, "password": "pw-123", "site_id": site, "static_ipv4": ip }),
        )
    };
    let (s1, s2) = (
        new_sub("cpe-one", "10.31.1.2"),
        new_sub("cpe-two", "10.31.2.2"),
    );
    // Outside the site's subscriber networks: refused, never probed (were it probed, it
    // would go down: nothing routes there).
    let outside = new_sub("elsewhere", "192.0.2.77");
    let token = api.enrollment_token(site);
    let agent = bng.cmd(agent_bin.to_str().unwrap());
    let config = enroll(
        agent,
        &base,
        &token,
        &state,
        ("127.0.0.1:0", "127.0.0.1:0"),
        &[],
    );
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[wan]\nsubscriber_networks = [\"10.31.0.0/16\"]\ninterval_ms = 300\ntimeout_ms = 200\n\
         down_after = 3\ntcp_ports = [{PORT}]\n"
    ));
    std::fs::write(&config, toml).unwrap();
    let _agent = start(
        bng.cmd(agent_bin.to_str().unwrap())
            .args(["run", "--config"])
            .arg(&config),
        "RADIUS auth on",
    );

    // The closed port: that probe goes down, ICMP of the same CPE never does.
    let t = until("CPE 2's TCP check down", || {
        state_of(&api, s2, "tcp:8291").as_deref() == Some("down")
    });
    println!("closed port → down at the controller: {t:?}");
    assert_eq!(state_of(&api, s2, "icmp"), None, "CPE 2 answers echo");
    assert_eq!(state_of(&api, s1, "tcp:8291"), None, "CPE 1's port is open");

    // Blocked inside its namespace → down, once; unblocked → up.
    block(&cpe1);
    let t = until("CPE 1 down", || {
        state_of(&api, s1, "icmp").as_deref() == Some("down")
    });
    println!("blocked → down at the controller: {t:?}");
    unblock(&cpe1);
    let t = until("CPE 1 up", || {
        state_of(&api, s1, "icmp").as_deref() == Some("up")
    });
    println!("unblocked → up at the controller: {t:?}");
    let icmp_events = |api: &Api| {
        wan_events(api, site)
            .into_iter()
            .filter(|e| e.0 == s1 && e.1 == "icmp")
            .map(|e| e.2)
            .collect::<Vec<_>>()
    };
    // Newest first; the TCP probe went down with ICMP while blocked, and back up.
    assert_eq!(
        icmp_events(&api),
        vec!["up", "down"],
        "each transition stored once"
    );
    let outages = items(api.get(&format!(
        "/api/v1/wan/outages?subscriber_id={s1}&open=false"
    )));
    assert_eq!(outages.iter().filter(|o| o["probe"] == "icmp").count(), 1);

    // The controller away during an outage: the agent journals it, delivers it later.
    ctl.stop(Duration::from_secs(5));
    block(&cpe1);
    let journaled = |want: usize| {
        let db = rusqlite::Connection::open(state.join("agent.db")).unwrap();
        let shipped: i64 = db
            .query_row(
                "SELECT CAST(coalesce((SELECT value FROM meta WHERE key = 'shipped_through'), 0) AS INTEGER)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM outbox WHERE seq > ?1 AND body LIKE '%\"wan_check\"%' AND body LIKE '%\"icmp\"%'",
                [shipped],
                |r| r.get(0),
            )
            .unwrap();
        n as usize >= want
    };
    until("down journaled while the controller is away", || {
        journaled(1)
    });
    unblock(&cpe1);
    until("up journaled while the controller is away", || journaled(2));
    let (_ctl, _) = controller(&controller_bin, &bng, &data, &addr.to_string());
    let t = until("both delivered", || icmp_events(&api).len() == 4);
    println!("controller back → transitions delivered: {t:?}");
    assert_eq!(icmp_events(&api), vec!["up", "down", "up", "down"]);
    assert_eq!(state_of(&api, s1, "icmp").as_deref(), Some("up"));
    let outages = items(api.get(&format!(
        "/api/v1/wan/outages?subscriber_id={s1}&open=false"
    )));
    assert_eq!(outages.iter().filter(|o| o["probe"] == "icmp").count(), 2);
    assert_eq!(state_of(&api, outside, "icmp"), None, "never probed");
    let report = api.get("/api/v1/wan/report");
    assert_eq!(report["per_site"][0]["id"], site, "{report}");
    assert!(
        report["per_site"][0]["outages"].as_i64().unwrap() >= 3,
        "{report}"
    );
}
