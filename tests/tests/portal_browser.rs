//! The subscriber portal in a real browser, with the real edge behind it: Debian's
//! headless Chromium driven through `chromedriver` against the real `outpost-controller
//! serve`, a real `outpost-agent` enrolled and syncing on loopback, and FreeRADIUS's
//! `radclient` as the NAS.
//!
//! A subscriber logs in on its reseller's domain with its PPPoE password, sees its
//! brand, plan, a notice and its payment, changes its password, and the new password is
//! what the agent's RADIUS accepts (the old one is refused). A subscriber of another
//! reseller is refused on that domain.
//!
//! Needs the Debian packages `chromium`, `chromium-driver` and `freeradius-utils`;
//! without them the test fails saying so. Screenshots go to a temp directory it prints.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use outpost_testkit::api::Api;
use outpost_testkit::peer;
use outpost_testkit::port::{free_tcp_port, free_udp_port};
use outpost_testkit::process::{start, start_listening, until};
use outpost_testkit::radclient::Radclient;
use outpost_tests::system::{binaries, create_operator, enroll, rfc3339};
use serde_json::{Value, json};

const OPERATOR: (&str, &str) = ("noc@isp.test", "operator-password-1");
const DOMAIN: &str = "my.skylink.example";
const SECRET: &str = "nas-shared-secret";

fn pap(port: u16, user: &str, password: &str) -> String {
    Radclient::new(format!("127.0.0.1:{port}"), SECRET)
        .tries(1, 2)
        .send(
            "auth",
            &format!(
                "User-Name = \"{user}\"\nUser-Password = \"{password}\"\nNAS-IP-Address = 127.0.0.1\nMessage-Authenticator = 0x00\n"
            ),
        )
        .text()
}

async fn browser(driver_port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": peer::require("chromium", "chromium"),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1280,1500",
                format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1"),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("chromedriver starts a Chromium session")
}

/// The text of the element `css` finds, waiting for it (found again if the page was
/// replaced under it).
async fn text(c: &Client, css: &str) -> String {
    for _ in 0..5 {
        let found = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
        if let Ok(t) = found.text().await {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{css} stayed stale")
}

async fn shot(c: &Client, dir: &Path, name: &str) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    let p = dir.join(format!("{name}.png"));
    std::fs::write(&p, &png).unwrap();
    assert!(png.len() > 1000, "empty screenshot");
    println!("screenshot: {}", p.display());
    p
}

async fn log_in(c: &Client, url: &str, user: &str, password: &str) {
    c.goto(url).await.unwrap();
    let f = c.form(Locator::Css("#login")).await.unwrap();
    f.set_by_name("username", user).await.unwrap();
    f.set_by_name("password", password).await.unwrap();
    f.submit().await.unwrap();
}

#[test]
#[ignore = "browser: needs chromium"]
fn a_subscriber_changes_its_password_in_the_portal_and_the_agents_radius_takes_it() {
    peer::require("chromium", "chromium");
    let chromedriver = peer::require("chromedriver", "chromium-driver");
    outpost_testkit::radclient::program();
    let (controller_bin, agent_bin) = binaries();
    let dir = tempfile::tempdir().unwrap();
    let (data, state) = (dir.path().join("controller"), dir.path().join("agent"));
    let (_controller, addr) = start_listening(
        Command::new(&controller_bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data),
    );
    create_operator(&controller_bin, &data, OPERATOR.0, OPERATOR.1);
    let base = format!("http://{addr}");
    let api = Api::login(&base, OPERATOR.0, OPERATOR.1, "portal browser test");
    let id = |v: Value| v["id"].as_i64().unwrap();

    // The operator's tower carries two resellers' customers.
    let site = api.create("/api/v1/sites", json!({ "name": "Tower 1" }));
    api.post("/api/v1/nas", json!({ "name": "mikrotik-1", "site_id": site, "ip": "127.0.0.1", "secret": SECRET, "kind": "mikrotik" }));
    let basic = id(api.post(
        "/api/v1/plans",
        json!({ "name": "Basic 20M", "download_kbps": 20000, "upload_kbps": 5000, "validity_days": 30, "price": "25.00" }),
    ));
    let sky = id(api.post(
        "/api/v1/resellers",
        json!({ "name": "Skylink", "rebrand_enabled": true, "custom_domain": DOMAIN }),
    ));
    api.put(
        &format!("/api/v1/resellers/{sky}/brand"),
        json!({ "name": "Skylink Wireless", "color": "#0a7d32", "contact": "support@skylink.example · +1 555 0100",
                "tagline": "Wireless for the valley" }),
    );
    api.post(
        &format!("/api/v1/resellers/{sky}/rate-card"),
        json!({ "plan_id": basic, "wholesale_price": "10.00" }),
    );
    api.post(
        &format!("/api/v1/resellers/{sky}/balance"),
        json!({ "amount": "100.00", "note": "opening balance" }),
    );
    let home = id(api.post(
        "/api/v1/plans",
        json!({ "name": "Sky Home 20M", "tenant_id": sky, "parent_plan_id": basic, "download_kbps": 20000, "upload_kbps": 5000, "price": "22.00" }),
    ));
    let future = rfc3339(std::time::SystemTime::now() + Duration::from_secs(20 * 86_400));
    let alice = id(api.post(
        "/api/v1/subscribers",
        json!({ "username": "alice", "password": "ppp-secret-1", "tenant_id": sky, "plan_id": home,
                "site_id": site, "expires_at": future, "name": "Alice Moreno" }),
    ));
    let bravo = id(api.post(
        "/api/v1/resellers",
        json!({ "name": "Bravo Net", "rebrand_enabled": true }),
    ));
    api.post(
        "/api/v1/subscribers",
        json!({ "username": "bob", "password": "ppp-secret-3", "tenant_id": bravo, "site_id": site, "expires_at": future }),
    );
    api.post(
        &format!("/api/v1/subscribers/{alice}/payments"),
        json!({ "amount": "22.00", "method": "cash", "reference": "receipt 1041" }),
    );
    let now = std::time::SystemTime::now();
    api.post(
        "/api/v1/notices",
        json!({ "tenant_id": sky, "title": "Tower work on Tuesday",
                "body": "Service may drop for ten minutes between 02:00 and 03:00.",
                "starts_at": rfc3339(now - Duration::from_secs(3600)),
                "ends_at": rfc3339(now + Duration::from_secs(7 * 86_400)) }),
    );

    // The agent, enrolled and syncing; alice's PPPoE password works at its RADIUS.
    let token = api.enrollment_token(site);
    let (auth, acct) = (free_udp_port(), free_udp_port());
    let config = enroll(
        Command::new(&agent_bin),
        &base,
        &token,
        &state,
        (&format!("127.0.0.1:{auth}"), &format!("127.0.0.1:{acct}")),
        &[],
    );
    let _agent = start(
        Command::new(&agent_bin)
            .arg("run")
            .arg("--config")
            .arg(&config),
        "RADIUS auth on",
    );
    until("alice accepted with her first password", || {
        pap(auth, "alice", "ppp-secret-1").contains("Received Access-Accept")
    });

    let driver_port = free_tcp_port();
    let _driver = start(
        Command::new(chromedriver).arg(format!("--port={driver_port}")),
        "ChromeDriver was started successfully",
    );
    let shots = std::env::temp_dir().join(format!("outpost-portal-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    println!("screenshots: {}", shots.display());
    let url = |path: &str| format!("http://{DOMAIN}:{}{path}", addr.port());

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let c = browser(driver_port).await;
            // Another reseller's subscriber, right password, on Skylink's domain.
            log_in(&c, &url("/portal/login"), "bob", "ppp-secret-3").await;
            let err = text(&c, "#login-error").await;
            assert!(err.contains("does not log in at this address"), "{err}");
            assert_eq!(text(&c, "#brand-name").await, "Skylink Wireless");
            shot(&c, &shots, "1-foreign-subscriber-refused").await;

            log_in(&c, &url("/portal/login"), "alice", "ppp-secret-1").await;
            assert_eq!(text(&c, "#username").await, "alice");
            assert_eq!(text(&c, "#brand-name").await, "Skylink Wireless");
            assert_eq!(text(&c, "#plan-name").await, "Sky Home 20M");
            assert_eq!(text(&c, "#speeds").await, "20 Mbit/s down / 5 Mbit/s up");
            let notices = text(&c, "#notices").await;
            assert!(notices.contains("Tower work on Tuesday"), "{notices}");
            let payments = text(&c, "#payments").await;
            assert!(
                payments.contains("22.00") && payments.contains("receipt 1041"),
                "{payments}"
            );
            let page = c.source().await.unwrap();
            assert!(
                !page.contains("bob"),
                "another subscriber shows on alice's page"
            );
            shot(&c, &shots, "2-home").await;

            let f = c.form(Locator::Css("#password-form")).await.unwrap();
            f.set_by_name("current_password", "ppp-secret-1")
                .await
                .unwrap();
            f.set_by_name("new_password", "new-secret-2").await.unwrap();
            f.set_by_name("confirm_password", "new-secret-2")
                .await
                .unwrap();
            f.submit().await.unwrap();
            let notice = text(&c, "#notice").await;
            assert!(notice.contains("Your password is changed"), "{notice}");
            shot(&c, &shots, "3-password-changed").await;
            c.close().await.unwrap();
        });

    // The new password reaches the agent through the feed; the old one stops working.
    let t = until("alice accepted with the new password", || {
        pap(auth, "alice", "new-secret-2").contains("Received Access-Accept")
    });
    println!("portal password change → accepted at the agent: {t:?}");
    assert!(pap(auth, "alice", "ppp-secret-1").contains("Received Access-Reject"));
    assert!(pap(auth, "bob", "ppp-secret-3").contains("Received Access-Accept"));
}
