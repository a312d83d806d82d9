//! Opaque tokens verified by RFC 7662 introspection against a real (test) authorization
//! server endpoint: client authentication, active/inactive, audience, caching, outage.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::gateway::standard_config;
use common::http::get;
use common::keys::now;
use common::{TestGateway, Upstream};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

/// `Basic base64("gateway:s3cret/+=")` — the form-encoded credentials the gateway must send.
const EXPECTED_AUTH: &str = "Basic Z2F0ZXdheTpzM2NyZXQlMkYlMkIlM0Q=";

struct Introspection {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// The most calls that were in flight at once.
    peak: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Introspection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v == EXPECTED_AUTH);
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let form = String::from_utf8_lossy(&body).into_owned();
    if !authorized {
        return Response::builder()
            .status(401)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let token = form
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .unwrap_or("");
    if token == "opaque-slow" || token.starts_with("junk-slow-") {
        // Slow enough that concurrent first uses overlap.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let reply = match token {
        "opaque-slow" => json!({
            "active": true, "sub": "slow-user", "scope": "mcp:tools",
            "aud": "http://127.0.0.1/mcp", "iss": "https://as.test", "exp": now() + 600,
        }),
        "opaque-good" => json!({
            "active": true, "sub": "opaque-user", "scope": "mcp:tools", "client_id": "cli",
            "aud": "http://127.0.0.1/mcp", "iss": "https://as.test", "exp": now() + 600,
        }),
        "opaque-other-aud" => json!({
            "active": true, "sub": "u", "scope": "mcp:tools", "aud": "https://elsewhere/mcp",
            "iss": "https://as.test", "exp": now() + 600,
        }),
        "opaque-refresh" => json!({
            "active": true, "sub": "u", "scope": "mcp:tools", "aud": "http://127.0.0.1/mcp",
            "iss": "https://as.test", "exp": now() + 600, "token_type": "refresh_token",
        }),
        "opaque-no-aud" => json!({
            "active": true, "sub": "u", "scope": "mcp:tools", "iss": "https://as.test",
            "exp": now() + 600,
        }),
        "opaque-wrong-iss" => json!({
            "active": true, "sub": "u", "scope": "mcp:tools", "aud": "http://127.0.0.1/mcp",
            "iss": "https://evil.test", "exp": now() + 600,
        }),
        _ => json!({"active": false}),
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap()
}

impl Introspection {
    async fn start() -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let count = hits.clone();
        let peak = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let gauges = (peak.clone(), in_flight);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                let (peak, in_flight) = gauges.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        let in_flight = in_flight.clone();
                        async move {
                            let response = answer(request).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Introspection {
            addr,
            hits,
            peak,
            task,
        }
    }
}

fn config(upstream: &Upstream, endpoint: &str) -> String {
    std::env::set_var("INTROSPECTION_TEST_SECRET", "s3cret/+=");
    let extra = format!(
        r#"
[[introspection]]
id = "as"
endpoint = "{endpoint}"
client_id = "gateway"
client_secret_env = "INTROSPECTION_TEST_SECRET"
issuer = "https://as.test"
cache_ttl = "60s"
"#
    );
    standard_config(&upstream.url("/mcp"), "", &extra)
        .replace("verifiers = [\"api_keys\"]", "verifiers = [\"as\"]")
}

async fn call(gateway: &TestGateway, token: &str) -> common::http::Answer {
    get(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn active_token_is_accepted_and_cached() {
    let server = Introspection::start().await;
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(
        &upstream,
        &format!("http://{}/introspect", server.addr),
    ))
    .await;

    let answer = call(&gateway, "opaque-good").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("opaque-user"));
    assert_eq!(seen.header("x-auth-method"), Some("introspection"));
    assert_eq!(seen.header("x-auth-client-id"), Some("cli"));
    assert_eq!(seen.header("authorization"), None);

    let hits = server.hits.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(call(&gateway, "opaque-good").await.status, 200);
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        hits,
        "answers come from the cache"
    );
}

#[tokio::test]
async fn inactive_wrong_audience_wrong_issuer_are_invalid_tokens() {
    let server = Introspection::start().await;
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(
        &upstream,
        &format!("http://{}/introspect", server.addr),
    ))
    .await;
    for token in [
        "revoked",
        "opaque-other-aud",
        "opaque-no-aud",
        "opaque-wrong-iss",
    ] {
        let answer = call(&gateway, token).await;
        assert_eq!(answer.status, 401, "{token}: {}", answer.body);
        assert!(answer
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\""));
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn introspection_outage_is_503_not_a_401() {
    let dead = common::dead_port();
    let port = dead.port;
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(
        &upstream,
        &format!("http://127.0.0.1:{port}/introspect"),
    ))
    .await;
    let answer = call(&gateway, "opaque-good").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("www-authenticate"), None);

    // /verify may only say 200/401/403: an outage there is a 401 with the challenge.
    let verify = get(
        gateway.addr,
        "/verify",
        &[
            ("authorization", "Bearer opaque-good"),
            ("x-forwarded-uri", "/mcp"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-host", "127.0.0.1"),
        ],
    )
    .await;
    assert_eq!(verify.status, 401);
    assert!(verify
        .header("www-authenticate")
        .unwrap()
        .contains("resource_metadata="));
}

#[tokio::test]
async fn concurrent_first_uses_share_one_introspection() {
    let server = Introspection::start().await;
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(
        &upstream,
        &format!("http://{}/introspect", server.addr),
    ))
    .await;
    let addr = gateway.addr;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                get(addr, "/mcp", &[("authorization", "Bearer opaque-slow")]).await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, 200);
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "one introspection for ten requests"
    );
}

#[tokio::test]
async fn junk_tokens_are_remembered_as_inactive() {
    let server = Introspection::start().await;
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(
        &upstream,
        &format!("http://{}/introspect", server.addr),
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(call(&gateway, "junk-1").await.status, 401);
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "a token called inactive is not introspected again within negative_cache_ttl"
    );
}

#[tokio::test]
async fn introspection_calls_in_flight_are_capped() {
    let server = Introspection::start().await;
    let upstream = Upstream::start().await;
    let config = config(&upstream, &format!("http://{}/introspect", server.addr)).replace(
        "cache_ttl = \"60s\"",
        "cache_ttl = \"60s\"\nmax_concurrent = 2",
    );
    let gateway = TestGateway::start(&config).await;
    let addr = gateway.addr;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let bearer = format!("Bearer junk-slow-{i}");
                get(addr, "/mcp", &[("authorization", &bearer)]).await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, 401);
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 8);
    assert!(
        server.peak.load(Ordering::SeqCst) <= 2,
        "{} introspection calls were in flight at once",
        server.peak.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn jwts_of_a_configured_issuer_never_reach_introspection() {
    let key = common::keys::TestKey::ec("ec-1");
    let jwks = common::jwks::JwksServer::start(common::keys::jwks(&[&key])).await;
    let server = Introspection::start().await;
    let upstream = Upstream::start().await;
    let issuer = format!(
        "[[issuers]]\nid = \"idp\"\nissuer = \"https://idp.test\"\njwks_uri = \"{}\"\nalgorithms = [\"ES256\"]\n",
        jwks.uri()
    );
    let config = config(&upstream, &format!("http://{}/introspect", server.addr))
        .replace("verifiers = [\"as\"]", "verifiers = [\"idp\", \"as\"]")
        + &issuer;
    let gateway = TestGateway::start(&config).await;
    let claims = |iss: &str| json!({"iss": iss, "sub": "u", "aud": "http://127.0.0.1/mcp", "exp": now() + 600});
    let stranger = common::keys::TestKey::ec("ec-1");
    for token in [
        // Forged signature, configured issuer: the JWT verifier's verdict stands.
        stranger.sign(&claims("https://idp.test")),
        // Another issuer than the introspector's `issuer`: it cannot vouch for it.
        key.sign(&claims("https://elsewhere.test")),
    ] {
        assert_eq!(call(&gateway, &token).await.status, 401);
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    // Control: an opaque token still goes to introspection.
    assert_eq!(call(&gateway, "opaque-good").await.status, 200);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}
