//! Identity calls through an outbound HTTP proxy (`[outbound] proxy`, or the environment's
//! `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY`), as corporate networks require: the JWKS is
//! fetched through a `CONNECT` tunnel of a real proxy on loopback (a small one written here:
//! it records each `CONNECT` and its `Proxy-Authorization`, then splices bytes), while the
//! upstream MCP server is always reached directly. `no_proxy` bypasses it; an unsupported
//! proxy scheme is a configuration error at its key; the real binary honours the
//! environment.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use common::gateway::standard_config;
use common::http::{get, Answer};
use common::jwks::JwksServer;
use common::keys::{jwks, now, TestKey};
use common::process::GatewayProcess;
use common::{free_port, TestGateway, Upstream};
use mcp_auth_gateway::config;

const ISSUER: &str = "https://idp.test";
const RESOURCE: &str = "http://127.0.0.1/mcp";

/// What the proxy saw of one tunnel.
#[derive(Debug, Clone)]
struct Tunnelled {
    target: String,
    authorization: Option<String>,
}

/// An HTTP proxy that only tunnels (`CONNECT host:port`), as corporate proxies do for TLS.
struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Tunnelled>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let _ = tunnel(client, record).await;
                });
            }
        });
        ConnectProxy { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Tunnelled> {
        self.seen.lock().expect("lock").clone()
    }
}

/// Reads the `CONNECT` head, connects to the target, answers 200 and splices.
async fn tunnel(client: TcpStream, seen: Arc<Mutex<Vec<Tunnelled>>>) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut request_line = String::new();
    client.read_line(&mut request_line).await?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        client.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("proxy-authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        client
            .get_mut()
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    seen.lock().expect("lock").push(Tunnelled {
        target: target.to_string(),
        authorization,
    });
    let mut upstream = TcpStream::connect(target).await?;
    client
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(client.get_mut(), &mut upstream).await?;
    Ok(())
}

fn issuer_toml(jwks_uri: &str) -> String {
    format!(
        r#"
[[issuers]]
id = "idp"
issuer = "{ISSUER}"
jwks_uri = "{jwks_uri}"
algorithms = ["ES256"]
"#
    )
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": sub, "aud": RESOURCE,
        "exp": now() + 600, "iat": now(), "scope": "mcp:tools",
    })
}

fn gateway_toml(upstream: &Upstream, jwks: &JwksServer, outbound: &str) -> String {
    standard_config(
        &upstream.url("/mcp"),
        "",
        &format!("{}\n{outbound}", issuer_toml(&jwks.uri())),
    )
    .replace(
        "verifiers = [\"api_keys\"]",
        "verifiers = [\"api_keys\", \"idp\"]",
    )
}

async fn call(addr: SocketAddr, token: &str) -> Answer {
    get(
        addr,
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// The JWKS server's `host:port`, as a `CONNECT` names it.
fn authority(jwks: &JwksServer) -> String {
    jwks.uri()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("authority")
        .to_string()
}

#[tokio::test]
async fn identity_calls_go_through_the_configured_proxy_and_upstream_calls_do_not() {
    let key = TestKey::ec("ec-1");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start().await;
    let proxy_url = proxy.url().replace("http://", "http://gw:s3cret@");
    let gateway = TestGateway::start(&gateway_toml(
        &upstream,
        &jwks_server,
        &format!("[outbound]\nproxy = \"{proxy_url}\""),
    ))
    .await;
    let answer = call(gateway.addr, &key.sign(&claims("alice"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(upstream.last().header("x-user-id"), Some("alice"));
    let seen = proxy.seen();
    // Only the JWKS went through the proxy (the start-up fetch and the request's may both
    // open a tunnel), with the proxy's credentials; the upstream never.
    assert!(!seen.is_empty(), "nothing went through the proxy");
    for tunnel in &seen {
        assert_eq!(tunnel.target, authority(&jwks_server), "{seen:?}");
        assert_eq!(
            tunnel.authorization.as_deref(),
            Some("Basic Z3c6czNjcmV0"),
            "gw:s3cret"
        );
    }
    assert!(jwks_server.hits() >= 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn no_proxy_destinations_go_direct() {
    let key = TestKey::ec("ec-1");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start().await;
    let gateway = TestGateway::start(&gateway_toml(
        &upstream,
        &jwks_server,
        &format!(
            "[outbound]\nproxy = \"{}\"\nno_proxy = [\"127.0.0.1\"]",
            proxy.url()
        ),
    ))
    .await;
    let answer = call(gateway.addr, &key.sign(&claims("bob"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    assert!(jwks_server.hits() >= 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_proxy_that_cannot_be_reached_is_a_503_for_the_keys_not_a_pass() {
    let key = TestKey::ec("ec-1");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = Upstream::start().await;
    let dead = common::dead_port();
    let gone = format!("http://127.0.0.1:{}", dead.port);
    let gateway = TestGateway::start(&gateway_toml(
        &upstream,
        &jwks_server,
        &format!("[outbound]\nproxy = \"{gone}\""),
    ))
    .await;
    let answer = call(gateway.addr, &key.sign(&claims("carol"))).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(jwks_server.hits(), 0);
    assert!(upstream.requests().is_empty());
    gateway.shutdown().await;
}

#[test]
fn only_http_proxies_are_accepted_at_their_key() {
    let upstream_url = "http://127.0.0.1:9/mcp";
    for (proxy, says) in [
        (
            "https://proxy.example:3128",
            "https:// proxies are not supported",
        ),
        (
            "socks5://proxy.example:1080",
            "socks5:// proxies are not supported",
        ),
        ("not a url", "is not a URL"),
    ] {
        let toml = standard_config(
            upstream_url,
            "",
            &format!("[outbound]\nproxy = \"{proxy}\""),
        );
        let error = match config::from_toml_str(&toml, std::path::Path::new(".")) {
            Ok(_) => panic!("{proxy} accepted"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("outbound.proxy") && error.contains(says),
            "{proxy}: {error}"
        );
    }
}

/// The real binary takes the proxy from `http_proxy` (the JWKS here is plain http on
/// loopback), and `check` says which proxy identity calls use, without its credentials.
#[tokio::test]
async fn the_binary_honours_the_environment() {
    let key = TestKey::ec("ec-1");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start().await;
    let dir = common::oauth::temp_dir("outbound-proxy-env");
    let port = free_port();
    let toml = gateway_toml(&upstream, &jwks_server, "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config_file = dir.join("gateway.toml");
    std::fs::write(&config_file, toml).expect("config");
    let with_credentials = proxy.url().replace("http://", "http://gw:s3cret@");
    let environment = [
        ("http_proxy", with_credentials.as_str()),
        ("NO_PROXY", "upstream.invalid"),
    ];
    let check = std::process::Command::new(common::process::BIN)
        .args(["check", "--config"])
        .arg(&config_file)
        .envs(environment)
        .output()
        .expect("check");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        printed.contains(&format!(
            "outbound proxy for identity calls: http_proxy={}",
            proxy.url()
        )),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    let gateway =
        GatewayProcess::start(&config_file, port, &dir.join("gateway.log"), &environment).await;
    let answer = call(gateway.addr, &key.sign(&claims("dave"))).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, gateway.log());
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "nothing went through the proxy");
    assert!(
        seen.iter().all(|t| t.target == authority(&jwks_server)),
        "{seen:?}"
    );
    assert!(!gateway.log().contains("s3cret"));
}
