//! The controller's JSON API over real HTTP, as a tool or a person's script uses it:
//! log in (`POST /api/v1/session`, a cookie session), mint a bearer token with it, then
//! JSON calls. For a controller started as a process; tests of the controller's own
//! router call `app()` directly instead.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// A logged-in API client with a bearer token.
pub struct Api {
    http: Client,
    base: String,
    token: String,
}

static KEYS: AtomicU64 = AtomicU64::new(0);

impl Api {
    /// Logs in as `email` at `base` (`http://127.0.0.1:8080`) and mints a token named
    /// `token_name` with the session cookie; fails the test if either is refused.
    pub fn login(base: &str, email: &str, password: &str, token_name: &str) -> Api {
        let http = Client::new();
        let resp = http
            .post(format!("{base}/api/v1/session"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .expect("controller answers");
        assert!(resp.status().is_success(), "login: {}", resp.status());
        let cookie = cookie_of(resp.headers());
        let resp = http
            .post(format!("{base}/api/v1/tokens"))
            .header("cookie", cookie)
            .json(&json!({ "name": token_name }))
            .send()
            .expect("controller answers");
        assert_eq!(resp.status().as_u16(), 201, "token");
        let t: Value = resp.json().unwrap();
        Api {
            http,
            base: base.to_string(),
            token: t["secret"].as_str().unwrap().to_string(),
        }
    }

    /// A call with an `Idempotency-Key` of its own (money routes need one; others
    /// ignore it); its status and JSON answer (`Null` when the body is not JSON).
    pub fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let key = format!(
            "kit-{}-{}",
            std::process::id(),
            KEYS.fetch_add(1, Ordering::Relaxed)
        );
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("idempotency-key", key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().expect("controller answers");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// A call that must succeed (2xx); its JSON answer.
    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.send(method.clone(), path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// `GET path`, which must succeed.
    pub fn get(&self, path: &str) -> Value {
        self.call(Method::GET, path, None)
    }

    /// `POST path` with `body`, which must succeed.
    pub fn post(&self, path: &str, body: Value) -> Value {
        self.call(Method::POST, path, Some(body))
    }

    /// `PUT path` with `body`, which must succeed.
    pub fn put(&self, path: &str, body: Value) -> Value {
        self.call(Method::PUT, path, Some(body))
    }

    /// `PATCH path` with `body`, which must succeed.
    pub fn patch(&self, path: &str, body: Value) -> Value {
        self.call(Method::PATCH, path, Some(body))
    }

    /// `POST path` with `body`, which must create a row: the new row's `id`.
    pub fn create(&self, path: &str, body: Value) -> i64 {
        let v = self.post(path, body);
        v["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("POST {path}: no id in {v}"))
    }

    /// A new single-use enrollment token for `site` (its secret, shown once).
    pub fn enrollment_token(&self, site: i64) -> String {
        let path = format!("/api/v1/sites/{site}/enrollment-tokens");
        let v = self.post(&path, serde_json::json!({}));
        v["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {path}: no secret in {v}"))
            .to_string()
    }
}

/// The `name=value` of the cookie a response sets (its first `Set-Cookie`), to send back
/// in a `Cookie` header. Panics when the response sets none.
pub fn cookie_of(headers: &reqwest::header::HeaderMap) -> String {
    let set = headers
        .get(reqwest::header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().to_string()
}
