//! Driving the built-in authorization server as a browser and an OAuth client would, over
//! real sockets: a cookie jar, the hidden fields of the login and consent forms, PKCE.

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;

use super::http::{exchange, request, Answer};

/// The test user's password; its hash goes into the configuration.
pub const PASSWORD: &str = "correct horse battery staple";

/// `[authorization_server]` with one local user (alice) and a database in `dir`.
pub fn as_toml(dir: &std::path::Path, extra: &str) -> String {
    let hash = mcp_auth_gateway::authorization_server::cli::hash_password(PASSWORD)
        .expect("hash password");
    format!(
        r#"
[authorization_server]
database = "{db}"
{extra}

[[authorization_server.users]]
username = "alice"
password_hash = "{hash}"
name = "Alice Example"
email = "alice@example.com"
groups = ["staff"]
"#,
        db = dir.join("as.db").display(),
    )
}

/// A fresh directory for a test's database, removed when dropped.
pub fn temp_dir(name: &str) -> super::TempDir {
    super::TempDir::new(name)
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge =
        URL_SAFE_NO_PAD.encode(mcp_auth_gateway::auth::api_key::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// The claims of a JWT, not verified (the gateway's routes do that).
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// The value of `<input name="…" value="…">` in a page.
pub fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    Some(
        page[start..end]
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

/// Query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// A browser: keeps cookies between requests to the gateway.
#[derive(Default)]
pub struct Browser {
    cookies: HashMap<String, String>,
}

impl Browser {
    /// The values of the cookies the gateway set (its login session).
    pub fn cookie_values(&self) -> Vec<String> {
        self.cookies.values().cloned().collect()
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn remember(&mut self, answer: &Answer) {
        for value in answer.headers.get_all("set-cookie") {
            let text = value.to_str().unwrap_or("");
            if let Some((name, rest)) = text.split_once('=') {
                let value = rest.split(';').next().unwrap_or("");
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    pub async fn get(&mut self, addr: SocketAddr, path: &str) -> Answer {
        let answer = exchange(
            addr,
            request("GET", addr, path)
                .header("cookie", self.cookie_header())
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
        self.remember(&answer);
        answer
    }

    /// `GET /authorize?{query}`: the page (or redirect) the gateway answers.
    pub async fn authorize(&mut self, addr: SocketAddr, query: &str) -> Answer {
        self.get(addr, &format!("/authorize?{query}")).await
    }

    pub async fn post_form(&mut self, addr: SocketAddr, path: &str, body: &str) -> Answer {
        let answer = exchange(
            addr,
            request("POST", addr, path)
                .header("cookie", self.cookie_header())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("request"),
        )
        .await;
        self.remember(&answer);
        answer
    }
}

/// POSTs a form to the token (or revoke, introspect) endpoint.
pub async fn post_form(
    addr: SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut builder =
        request("POST", addr, path).header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    exchange(
        addr,
        builder
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request"),
    )
    .await
}

/// Registers a public client with one redirect URI; returns its client_id.
pub async fn register_public(addr: SocketAddr, redirect_uri: &str) -> String {
    let answer = super::http::post_json(
        addr,
        "/register",
        &[],
        &serde_json::json!({
            "client_name": "Test Client",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        })
        .to_string(),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.json()["client_id"]
        .as_str()
        .expect("client_id")
        .to_string()
}

/// The whole browser part of a login: authorize → login form → consent (if shown) →
/// the redirect back. Returns the final `Location` (with `code`, `state`, `iss`).
pub async fn browser_login(
    browser: &mut Browser,
    addr: SocketAddr,
    authorize_query: &str,
) -> String {
    let page = browser
        .get(addr, &format!("/authorize?{authorize_query}"))
        .await;
    let mut answer = page;
    if answer.status == 200 && answer.body.contains("id=\"login\"") {
        let body = form(&[
            (
                "request",
                &hidden(&answer.body, "request").expect("request field"),
            ),
            ("csrf", &hidden(&answer.body, "csrf").expect("csrf field")),
            ("username", "alice"),
            ("password", PASSWORD),
        ]);
        answer = browser.post_form(addr, "/login", &body).await;
    }
    if answer.status == 200 && answer.body.contains("id=\"consent\"") {
        let body = form(&[
            (
                "request",
                &hidden(&answer.body, "request").expect("request field"),
            ),
            ("csrf", &hidden(&answer.body, "csrf").expect("csrf field")),
            ("decision", "approve"),
        ]);
        answer = browser.post_form(addr, "/consent", &body).await;
    }
    assert_eq!(
        answer.status, 302,
        "expected the redirect back: {}",
        answer.body
    );
    answer.header("location").expect("location").to_string()
}
