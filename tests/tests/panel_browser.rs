//! The panel in a real browser: Debian's headless Chromium driven through `chromedriver`
//! (WebDriver, with fantoccini), against the real `outpost-controller serve` on port 0
//! over a fresh data directory seeded through the JSON API.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; without them these tests
//! fail saying so. Screenshots go to a temp directory each test prints.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use outpost_testkit::api::Api;
use outpost_testkit::peer;
use outpost_testkit::port::free_tcp_port;
use outpost_testkit::process::{Proc, start, start_listening};
use outpost_tests::system::{binaries, create_operator};
use serde_json::{Value, json};

const OPERATOR: (&str, &str) = ("noc@isp.test", "operator-password-1");
const OWNER: (&str, &str) = ("owner@skylink.test", "reseller-password-1");
const DESK: (&str, &str) = ("desk@skylink.test", "manager-password-1");
const DOMAIN: &str = "brand.example";

/// A controller with a seeded tree, a chromedriver and where screenshots go.
struct Lab {
    _controller: Proc,
    _driver: Proc,
    _dir: tempfile::TempDir,
    port: u16,
    driver_port: u16,
    shots: PathBuf,
    /// Reseller Skylink (custom domain `brand.example`), its subscriber, and reseller
    /// Bravo's subscriber (foreign to Skylink).
    sky_sub: i64,
    bravo_sub: i64,
}

fn lab(name: &str) -> Lab {
    // Both fail the test, naming the package, when missing.
    peer::require("chromium", "chromium");
    let chromedriver = peer::require("chromedriver", "chromium-driver");
    let (controller_bin, _) = binaries();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    // The sweep loop (and the day's subscribers-by-status snapshot after it) every
    // second, so the reports' history holds today's counts within the test.
    let config = dir.path().join("controller.toml");
    std::fs::write(&config, "[billing]\nsweep_interval_secs = 1\n").unwrap();
    let (controller, addr) = start_listening(
        Command::new(&controller_bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data),
    );
    create_operator(&controller_bin, &data, OPERATOR.0, OPERATOR.1);
    let base = format!("http://{addr}");
    let api = Api::login(&base, OPERATOR.0, OPERATOR.1, "browser test");
    let id = |v: Value| v["id"].as_i64().unwrap();
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
        json!({ "name": "Skylink Wireless", "color": "#0a7d32", "contact": "support@brand.example · +1 555 0100",
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
        json!({ "name": "Sky Home", "tenant_id": sky, "parent_plan_id": basic, "download_kbps": 20000, "upload_kbps": 5000, "price": "22.00" }),
    ));
    api.post(
        "/api/v1/users",
        json!({ "email": OWNER.0, "name": "Sky Owner", "password": OWNER.1, "kind": "reseller", "tenant_id": sky }),
    );
    api.post(
        "/api/v1/users",
        json!({ "email": DESK.0, "name": "Front Desk", "password": DESK.1, "kind": "manager", "tenant_id": sky,
                "permissions": ["view_customers"] }),
    );
    let sky_sub = id(api.post(
        "/api/v1/subscribers",
        json!({ "username": "alice", "password": "ppp-secret-1", "tenant_id": sky, "plan_id": home,
                "name": "Alice Moreno", "phone": "+1 555 0142", "mac": "02:00:5e:10:00:01" }),
    ));
    api.post(
        "/api/v1/subscribers",
        json!({ "username": "arturo", "password": "ppp-secret-2", "tenant_id": sky, "name": "Arturo Diaz" }),
    );
    let bravo = id(api.post(
        "/api/v1/resellers",
        json!({ "name": "Bravo Net", "rebrand_enabled": true }),
    ));
    let bravo_sub = id(api.post(
        "/api/v1/subscribers",
        json!({ "username": "bob", "password": "ppp-secret-3", "tenant_id": bravo }),
    ));

    let driver_port = free_tcp_port();
    let driver = start(
        Command::new(chromedriver).arg(format!("--port={driver_port}")),
        "ChromeDriver was started successfully",
    );
    let shots = std::env::temp_dir().join(format!("outpost-panel-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    println!("screenshots: {}", shots.display());
    Lab {
        _controller: controller,
        _driver: driver,
        _dir: dir,
        port: addr.port(),
        driver_port,
        shots,
        sky_sub,
        bravo_sub,
    }
}

impl Lab {
    /// A new headless Chromium session; `brand.example` resolves to the controller.
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": peer::require("chromium", "chromium"),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1"),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.driver_port))
            .await
            .expect("chromedriver starts a Chromium session")
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    /// Opens `path` on `host`.
    async fn go(&self, c: &Client, host: &str, path: &str) {
        c.goto(&self.url(host, path)).await.unwrap();
    }

    async fn shot(&self, c: &Client, name: &str) -> PathBuf {
        let png = c.screenshot().await.unwrap();
        let p = self.shots.join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        println!("screenshot: {}", p.display());
        p
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The text of the element `css` finds, waiting for it. A page that is still being
/// replaced (a redirect landing, a swap) can make the element found a moment ago stale:
/// it is found again, a few times, before that counts as a failure.
async fn text(c: &Client, css: &str) -> String {
    let mut tries = 0;
    loop {
        let found = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
        match found.text().await {
            Ok(t) => return t,
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("{css} went stale ({e}); finding it again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{css} stayed stale: {e}"),
        }
    }
}

/// Clicks the element `css` finds (it must be there).
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} to click: {e}"))
        .click()
        .await
        .unwrap();
}

async fn log_in(c: &Client, url: &str, (email, password): (&str, &str)) {
    c.goto(url).await.unwrap();
    let f = c.form(Locator::Css("#login")).await.unwrap();
    f.set_by_name("email", email).await.unwrap();
    f.set_by_name("password", password).await.unwrap();
    f.submit().await.unwrap();
}

/// The page's error frame status, once it shows.
async fn error_status(c: &Client) -> String {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#error"))
        .await
        .expect("an error page")
        .attr("data-status")
        .await
        .unwrap()
        .unwrap_or_default()
}

fn keep(p: &Path) {
    assert!(
        std::fs::metadata(p).unwrap().len() > 1000,
        "empty screenshot"
    );
}

/// A reseller on its own domain: its brand on the login page and after, a search that
/// swaps the results in place, a renewal through the page that moves its balance, and a
/// foreign subscriber's id that is the 404 page.
#[test]
#[ignore = "browser: needs chromium"]
fn a_reseller_on_its_domain_renews_under_its_brand() {
    let lab = lab("reseller");
    runtime().block_on(async {
        let c = lab.browser().await;
        lab.go(&c, DOMAIN, "/panel/login").await;
        assert_eq!(text(&c, "#brand-name").await, "Skylink Wireless");
        assert_eq!(text(&c, "#brand-tagline").await, "Wireless for the valley");
        keep(&lab.shot(&c, "1-login-on-brand-domain").await);
        log_in(&c, &lab.url(DOMAIN, "/panel/login"), OWNER).await;
        assert_eq!(text(&c, "#balance").await, "100.00 USD");
        assert_eq!(text(&c, "#brand-name").await, "Skylink Wireless");
        keep(&lab.shot(&c, "2-dashboard-on-brand-domain").await);

        lab.go(&c, DOMAIN, "/panel/subscribers").await;
        let f = c.form(Locator::Css("#search")).await.unwrap();
        f.set_by_name("q", "02:00:5e:10").await.unwrap();
        click(&c, "#search button").await;
        wait_for_url(&c, "q=02%3A00%3A5e%3A10").await;
        let rows = text(&c, "#results tbody").await;
        assert!(rows.contains("alice") && !rows.contains("arturo"), "{rows}");
        c.find(Locator::LinkText("alice"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for_url(&c, &format!("/panel/subscribers/{}", lab.sky_sub)).await;
        assert_eq!(text(&c, "#owner-balance").await, "100.00");
        click(&c, "#renew-form button").await;
        assert_eq!(text(&c, "#notice").await, "Renewed.");
        assert_eq!(text(&c, "#owner-balance").await, "90.00");
        assert_eq!(text(&c, "#status").await, "active");
        keep(&lab.shot(&c, "3-renewed").await);

        // The renewal is in today's bar of the reports' chart, under the brand.
        lab.go(&c, DOMAIN, "/panel/reports?period=day").await;
        let bars = c
            .find_all(Locator::Css("#chart-renewals svg rect.bar"))
            .await
            .unwrap();
        assert!(!bars.is_empty(), "a bar per day with renewals");
        let table = text(&c, "#report-periods tbody").await;
        assert!(
            table.contains("10.00"),
            "today's renewal cost 10.00: {table}"
        );
        keep(&lab.shot(&c, "3b-reports").await);

        lab.go(&c, DOMAIN, &format!("/panel/subscribers/{}", lab.bravo_sub))
            .await;
        assert_eq!(error_status(&c).await, "404");
        assert_eq!(text(&c, "#brand-name").await, "Skylink Wireless");
        keep(&lab.shot(&c, "4-foreign-subscriber-404").await);
        c.close().await.unwrap();
    });
}

/// Waits until the address bar holds `part` (the script keeps it in step with a swap).
async fn wait_for_url(c: &Client, part: &str) {
    for _ in 0..100 {
        if c.current_url().await.unwrap().as_str().contains(part) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the address never held {part}: {}",
        c.current_url().await.unwrap()
    );
}

/// A manager sees only the menu entries it was granted, a direct URL to another is the
/// 403 page, and a form whose CSRF token was taken out is refused.
#[test]
#[ignore = "browser: needs chromium"]
fn a_manager_sees_only_what_it_was_granted() {
    let lab = lab("manager");
    runtime().block_on(async {
        let c = lab.browser().await;
        log_in(&c, &lab.url("127.0.0.1", "/panel/login"), DESK).await;
        let menu = text(&c, "#menu").await;
        assert_eq!(
            menu.split_whitespace().collect::<Vec<_>>(),
            ["Dashboard", "Subscribers"],
            "{menu}"
        );
        // Its nearest brand: Skylink's, on the operator's address too.
        assert_eq!(text(&c, "#brand-name").await, "Skylink Wireless");
        keep(&lab.shot(&c, "1-manager-menu").await);
        lab.go(&c, "127.0.0.1", "/panel/users").await;
        assert_eq!(error_status(&c).await, "403");
        keep(&lab.shot(&c, "2-manager-403").await);
        // The logout form without its token.
        lab.go(&c, "127.0.0.1", "/panel").await;
        c.execute(
            "document.querySelector('.who form input[name=csrf]').remove();",
            vec![],
        )
        .await
        .unwrap();
        click(&c, ".who form button").await;
        assert_eq!(error_status(&c).await, "403");
        keep(&lab.shot(&c, "3-csrf-refused").await);
        // Still logged in: the refused form did nothing.
        lab.go(&c, "127.0.0.1", "/panel").await;
        assert!(text(&c, "#menu").await.contains("Subscribers"));
        c.close().await.unwrap();
    });
}

/// Operator staff log in, "log in as" the reseller: the banner names both on every page;
/// one click returns to the operator's own session.
#[test]
#[ignore = "browser: needs chromium"]
fn log_in_as_shows_the_banner_and_returns() {
    let lab = lab("impersonate");
    runtime().block_on(async {
        let c = lab.browser().await;
        log_in(&c, &lab.url("127.0.0.1", "/panel/login"), OPERATOR).await;
        assert!(text(&c, "#menu").await.contains("Logins"));
        lab.go(&c, "127.0.0.1", "/panel/users").await;
        click(&c, &format!("button[data-email='{}']", OWNER.0)).await;
        let banner = text(&c, "#impersonation").await;
        assert!(
            banner.contains(OPERATOR.0) && banner.contains(OWNER.0),
            "{banner}"
        );
        keep(&lab.shot(&c, "1-impersonation-banner").await);
        lab.go(&c, "127.0.0.1", "/panel/subscribers").await;
        assert!(text(&c, "#impersonation").await.contains(OWNER.0));
        assert!(text(&c, "#results").await.contains("alice"));
        click(&c, "#return").await;
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#users"))
            .await
            .expect("back on the logins page");
        assert!(
            c.find(Locator::Css("#impersonation")).await.is_err(),
            "the banner stayed"
        );
        assert!(text(&c, ".who").await.contains(OPERATOR.0));
        keep(&lab.shot(&c, "2-returned").await);
        c.close().await.unwrap();
    });
}

/// A reseller creates a subscriber through the page: a first try with a bad MAC comes
/// back filled in with the error beside the field, the corrected form creates it, and
/// the list shows it.
#[test]
#[ignore = "browser: needs chromium"]
fn a_reseller_creates_a_subscriber_through_the_form() {
    let lab = lab("create");
    runtime().block_on(async {
        let c = lab.browser().await;
        log_in(&c, &lab.url(DOMAIN, "/panel/login"), OWNER).await;
        lab.go(&c, DOMAIN, "/panel/subscribers").await;
        click(&c, "#new-subscriber").await;
        let f = c.form(Locator::Css("#subscriber-form")).await.unwrap();
        for (name, value) in [
            ("username", "carmen"),
            ("password", "ppp-secret-9"),
            ("name", "Carmen Ruiz"),
            ("phone", "+1 555 0177"),
            ("mac", "02:00:5e:zz"),
        ] {
            f.set_by_name(name, value).await.unwrap();
        }
        c.find(Locator::Css("#f-plan_id option:nth-child(2)"))
            .await
            .expect("a plan to choose")
            .click()
            .await
            .unwrap();
        click(&c, "#save").await;
        let err = text(&c, "#e-mac").await;
        assert!(err.contains("is not a MAC address"), "{err}");
        let kept = c
            .find(Locator::Css("#f-name"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap();
        assert_eq!(
            kept.as_deref(),
            Some("Carmen Ruiz"),
            "the form lost what was typed"
        );
        keep(&lab.shot(&c, "1-refused-form-kept-filled").await);
        let mac = c.find(Locator::Css("#f-mac")).await.unwrap();
        mac.clear().await.unwrap();
        mac.send_keys("02:00:5e:10:00:09").await.unwrap();
        click(&c, "#save").await;
        assert_eq!(text(&c, "#notice").await, "Subscriber created.");
        assert_eq!(text(&c, "#username").await, "carmen");
        lab.go(&c, DOMAIN, "/panel/subscribers").await;
        let rows = text(&c, "#results tbody").await;
        assert!(
            rows.contains("carmen") && rows.contains("Carmen Ruiz"),
            "{rows}"
        );
        assert!(rows.contains("02:00:5E:10:00:09"), "{rows}");
        keep(&lab.shot(&c, "2-created-in-list").await);
        c.close().await.unwrap();
    });
}

/// The value of the form field `css` as the browser holds it.
async fn value(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Types `text` into the field `css`, replacing what it held.
async fn retype(c: &Client, css: &str, text: &str) {
    let f = c.find(Locator::Css(css)).await.unwrap();
    f.clear().await.unwrap();
    f.send_keys(text).await.unwrap();
}

/// A reseller runs a site from its pages on its own domain: creates it, adds a NAS,
/// makes an enrollment token and revokes it unused, edits the NAS (a bad address comes
/// back beside its field; the secret field never shows the stored secret), and reads
/// subscribers by status per day on the reports page.
#[test]
#[ignore = "browser: needs chromium"]
fn a_reseller_runs_a_site_and_reads_the_status_history() {
    let lab = lab("sites");
    runtime().block_on(async {
        let c = lab.browser().await;
        log_in(&c, &lab.url(DOMAIN, "/panel/login"), OWNER).await;
        lab.go(&c, DOMAIN, "/panel/sites").await;
        retype(&c, "#site-form #f-name", "Valley tower").await;
        retype(&c, "#site-form #f-location", "Ridge road").await;
        click(&c, "#save-site").await;
        assert_eq!(text(&c, "#notice").await, "Site created.");
        retype(&c, "#nas-form #f-name", "core-1").await;
        retype(&c, "#nas-form #f-ip", "192.0.2.10").await;
        retype(&c, "#nas-form #f-secret", "radius-secret-1").await;
        click(&c, "#save-nas").await;
        assert_eq!(text(&c, "#notice").await, "NAS added.");
        click(&c, "#new-token").await;
        assert!(text(&c, "#token-secret").await.starts_with("ope_"));
        click(&c, "#tokens button").await;
        assert_eq!(
            text(&c, "#notice").await,
            "Enrollment token revoked: it enrols nothing now."
        );
        let tokens = text(&c, "#tokens").await;
        assert!(tokens.contains("revoked"), "{tokens}");
        assert!(
            c.find(Locator::Css("#tokens button")).await.is_err(),
            "a revoked token still offers Revoke"
        );
        keep(&lab.shot(&c, "1-site-token-revoked").await);

        click(&c, "a[id^=edit-nas-]").await;
        assert_eq!(
            value(&c, "#f-secret").await,
            "",
            "the stored secret was shown"
        );
        retype(&c, "#f-ip", "192.0.2.300").await;
        retype(&c, "#f-secret", "new-radius-secret-2").await;
        click(&c, "#save").await;
        assert!(text(&c, "#e-ip").await.contains("is not an IP address"));
        assert_eq!(
            value(&c, "#f-secret").await,
            "",
            "the typed secret came back"
        );
        assert_eq!(value(&c, "#f-name").await, "core-1");
        keep(&lab.shot(&c, "2-nas-edit-refused").await);
        retype(&c, "#f-ip", "192.0.2.11").await;
        retype(&c, "#f-secret", "new-radius-secret-2").await;
        click(&c, "#save").await;
        assert_eq!(text(&c, "#notice").await, "NAS saved.");
        assert!(text(&c, "#nas").await.contains("192.0.2.11"));

        // Today's snapshot, taken by the sweep loop, counts Skylink's two subscribers
        // (and nothing of Bravo's).
        // (A fresh installation: today is the only day with a snapshot.)
        let counted = |h: &str| {
            let words: Vec<&str> = h.split_whitespace().collect();
            words.len() == 5 && words[1..] == ["2", "0", "0", "0"]
        };
        let mut history = String::new();
        for _ in 0..50 {
            lab.go(&c, DOMAIN, "/panel/reports").await;
            history = text(&c, "#report-history tbody").await;
            if counted(&history) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(counted(&history), "{history}");
        let bars = c
            .find_all(Locator::Css("#chart-history svg rect.bar"))
            .await
            .unwrap();
        assert_eq!(bars.len() % 4, 0, "four statuses a day");
        c.execute(
            "document.getElementById('chart-history').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
        keep(&lab.shot(&c, "3-status-history").await);
        c.close().await.unwrap();
    });
}
