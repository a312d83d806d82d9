//! Two in-process gateways configured with the same `[redis]` — two replicas behind a load
//! balancer — share a real `redis-server`:
//! - a session bound at one replica is refused to anyone else at the other, and two
//!   replicas binding the same new session at once agree on one owner;
//! - rate limits count the requests of both replicas, and a refused request costs no
//!   bucket anything;
//! - Redis stopped: rate limits admit (fail open), a session known to a replica keeps
//!   working there, a session it never saw is refused with a 503 JSON-RPC error (never let
//!   through); once Redis is back the session works there too and the counts resume.
//!
//! Without `[redis]` nothing changes: `rate_limits.rs` and `mcp_sessions.rs` cover that.
//! Needs redis-server: fails under `CI=true` when it is missing, skips loudly otherwise.

#[allow(unused_imports)]
mod common;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http::{exchange, request, Answer};
use common::TestGateway;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_auth_gateway::auth::api_key::{format_hash, sha256};
use mcp_auth_gateway::{config, Gateway, StartError};

use local_redis::LocalRedis;

/// A `redis-server` of this test's own (on a free port, data in the test's temporary
/// directory, appended to disk on every write so a restart keeps it).
mod local_redis {
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::common::external::{self, ChildGuard};

    pub struct LocalRedis {
        program: PathBuf,
        port: u16,
        dir: PathBuf,
        child: Option<ChildGuard>,
    }

    impl LocalRedis {
        /// `None` (after a loud skip) when redis-server is missing on a local run.
        pub async fn start(name: &str) -> Option<LocalRedis> {
            let program = external::require("redis-server")?;
            let port = crate::common::free_port();
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("redis-{name}-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("redis directory");
            let mut redis = LocalRedis {
                program,
                port,
                dir,
                child: None,
            };
            redis.run().await;
            Some(redis)
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }

        /// Kills it (what it acknowledged is on disk already).
        pub async fn stop(&mut self) {
            drop(self.child.take());
        }

        /// Starts it again on the same port with the same data.
        pub async fn restart(&mut self) {
            self.stop().await;
            self.run().await;
        }

        async fn run(&mut self) {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("redis.log"))
                .expect("redis log");
            let child = Command::new(&self.program)
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .args(["--daemonize", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn redis-server");
            self.child = Some(ChildGuard(child));
            self.wait_until_it_answers().await;
        }

        /// Until `PING` is answered `PONG` (listening is not enough: it may still load).
        async fn wait_until_it_answers(&self) {
            for _ in 0..200 {
                if let Ok(mut stream) =
                    tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await
                {
                    let mut answer = [0u8; 7];
                    if stream.write_all(b"PING\r\n").await.is_ok()
                        && stream.read_exact(&mut answer).await.is_ok()
                        && &answer == b"+PONG\r\n"
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "redis-server did not answer on port {} within 10 s:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
            );
        }
    }
}

fn key(id: &str) -> String {
    format!(
        "[[api_keys]]\nid = \"{id}\"\nhash = \"{}\"\nsubject = \"{id}\"\n",
        format_hash(&sha256(format!("{id}-key-0123456789").as_bytes()))
    )
}

/// An upstream that opens a new session for any request without one.
async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let opened = opened.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let opened = opened.clone();
                    async move {
                        let mut response =
                            http::Response::builder().header("content-type", "application/json");
                        if !request.headers().contains_key("mcp-session-id") {
                            let n = opened.fetch_add(1, Ordering::SeqCst);
                            let id = format!("session-{}-{n}", std::process::id());
                            response = response.header("mcp-session-id", id);
                        }
                        Ok::<_, Infallible>(
                            response
                                .body(Full::new(Bytes::from_static(
                                    br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                                )))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The configuration both replicas share: users x, y and z; `/mcp` (sessions) and
/// `/limited` with `limits`.
fn shared_config(redis: &LocalRedis, prefix: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
{x}
{y}
{z}
[redis]
url = "{url}"
key_prefix = "{prefix}"
timeout = "500ms"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://{upstream}/mcp"
verifiers = ["api_keys"]

[[routes]]
id = "limited"
path = "/limited"
upstream = "http://{upstream}/mcp"
verifiers = ["api_keys"]
[routes.rate_limits]
per_principal = "5/minute"

[[routes]]
id = "both"
path = "/both"
upstream = "http://{upstream}/mcp"
verifiers = ["api_keys"]
[routes.rate_limits]
route = "4/hour"
per_principal = "2/hour"
"#,
        x = key("x"),
        y = key("y"),
        z = key("z"),
        url = redis.url(),
    )
}

/// Redis and two replicas sharing it.
async fn replicas(name: &str) -> Option<(LocalRedis, TestGateway, TestGateway)> {
    let redis = LocalRedis::start(name).await?;
    let toml = shared_config(&redis, &format!("test-{name}:"), upstream().await);
    let a = TestGateway::start(&toml).await;
    let b = TestGateway::start(&toml).await;
    Some((redis, a, b))
}

/// A JSON-RPC POST to `path` as `who`, with a session id or none.
async fn call(gateway: &TestGateway, path: &str, who: &str, session: Option<&str>) -> Answer {
    let mut builder = request("POST", gateway.addr, path)
        .header("authorization", format!("Bearer {who}-key-0123456789"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(session) = session {
        builder = builder.header("mcp-session-id", session);
    }
    let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    exchange(gateway.addr, builder.body(Full::new(body)).unwrap()).await
}

/// `who` opens a session (a request without one; the upstream's answer names it).
async fn open_session(gateway: &TestGateway, who: &str) -> String {
    let opened = call(gateway, "/mcp", who, None).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    opened
        .header("mcp-session-id")
        .expect("the upstream opened a session")
        .to_string()
}

/// Repeats `attempt` (every 100 ms, for at most 20 s) until it returns `Some`; panics with
/// the last answer otherwise.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(last) if Instant::now() >= deadline => panic!("{what}: still {last} after 20 s"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_bound_at_one_replica_is_refused_to_others_at_the_other() {
    let Some((_redis, a, b)) = replicas("sessions").await else {
        return;
    };
    // Opened at A (initialize: the upstream's answer carries the id).
    let opened = open_session(&a, "x").await;
    let refused = call(&b, "/mcp", "y", Some(&opened)).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(refused.json()["error"]["message"], "Session not found");
    assert_eq!(call(&b, "/mcp", "x", Some(&opened)).await.status, 200);
    assert_eq!(call(&a, "/mcp", "y", Some(&opened)).await.status, 404);

    // Presented first at A (an id neither replica saw: the first presenter owns it).
    let presented = format!("presented-{}", std::process::id());
    assert_eq!(call(&a, "/mcp", "x", Some(&presented)).await.status, 200);
    assert_eq!(call(&b, "/mcp", "y", Some(&presented)).await.status, 404);
    assert_eq!(call(&b, "/mcp", "x", Some(&presented)).await.status, 200);

    // Two replicas binding the same new id at once agree on one owner.
    for round in 0..10 {
        let contested = format!("contested-{}-{round}", std::process::id());
        let (at_a, at_b) = tokio::join!(
            call(&a, "/mcp", "x", Some(&contested)),
            call(&b, "/mcp", "y", Some(&contested)),
        );
        let statuses = [at_a.status.as_u16(), at_b.status.as_u16()];
        assert!(
            statuses == [200, 404] || statuses == [404, 200],
            "round {round}: one owner, got {statuses:?}"
        );
        let winner = if statuses[0] == 200 { "x" } else { "y" };
        for replica in [&a, &b] {
            assert_eq!(
                call(replica, "/mcp", winner, Some(&contested)).await.status,
                200
            );
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_the_requests_of_both_replicas() {
    let Some((_redis, a, b)) = replicas("limits").await else {
        return;
    };
    // 5/minute per principal: 3 at A and 2 at B use it up, the 6th is refused.
    for gateway in [&a, &a, &a, &b, &b] {
        let answer = call(gateway, "/limited", "x", None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let over = call(&b, "/limited", "x", None).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.json()["error"]["code"], -32002);
    let wait: u64 = over
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    // As without Redis: a token every 12 s.
    assert!((1..=12).contains(&wait), "Retry-After {wait}");
    assert_eq!(call(&a, "/limited", "x", None).await.status, 429);
    // Another principal has a bucket of its own.
    assert_eq!(call(&a, "/limited", "y", None).await.status, 200);

    // A refused request costs no bucket anything: x is refused by its own 2/hour, which
    // leaves the route's 4/hour to y (2) and z (up to 2).
    for gateway in [&a, &b] {
        assert_eq!(call(gateway, "/both", "x", None).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(call(&b, "/both", "x", None).await.status, 429);
    }
    for gateway in [&b, &a] {
        assert_eq!(call(gateway, "/both", "y", None).await.status, 200);
    }
    let route_full = call(&a, "/both", "z", None).await;
    assert_eq!(route_full.status, 429, "the route's 4/hour is used up");
    let wait: u64 = route_full.header("retry-after").unwrap().parse().unwrap();
    assert!(wait > 60 && wait <= 900, "a token every 15 min: {wait}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_limits_admit_known_sessions_work_and_unknown_ones_wait() {
    let Some((mut redis, a, b)) = replicas("outage").await else {
        return;
    };
    let known_at_a = open_session(&a, "x").await;
    let never_seen_at_b = open_session(&a, "x").await;
    for _ in 0..5 {
        assert_eq!(call(&a, "/limited", "x", None).await.status, 200);
    }
    assert_eq!(call(&b, "/limited", "x", None).await.status, 429);

    redis.stop().await;
    // Rate limits fail open, at both replicas.
    for gateway in [&a, &b, &a, &b] {
        let admitted = call(gateway, "/limited", "x", None).await;
        assert_eq!(admitted.status, 200, "fail open: {}", admitted.body);
    }
    // A session known to A keeps working there (and stays refused to others).
    assert_eq!(call(&a, "/mcp", "x", Some(&known_at_a)).await.status, 200);
    assert_eq!(call(&a, "/mcp", "y", Some(&known_at_a)).await.status, 404);
    // One B never saw cannot be checked: refused with a 503 and a JSON-RPC error, whoever
    // presents it — never let through.
    for who in ["x", "y"] {
        let refused = call(&b, "/mcp", who, Some(&never_seen_at_b)).await;
        assert_eq!(refused.status, 503, "{who}: {}", refused.body);
        let body = refused.json();
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["error"]["code"], -32000);
        assert!(refused.header("retry-after").is_some());
    }

    redis.restart().await;
    // B learns the binding from Redis once it answers again.
    eventually("the session at B after the restart", || async {
        let answer = call(&b, "/mcp", "x", Some(&never_seen_at_b)).await;
        match answer.status.as_u16() {
            200 => Ok(()),
            503 => Err(format!("503: {}", answer.body)),
            other => panic!(
                "only 503 until Redis answers, then 200; got {other}: {}",
                answer.body
            ),
        }
    })
    .await;
    assert_eq!(
        call(&b, "/mcp", "y", Some(&never_seen_at_b)).await.status,
        404
    );
    // The counts survived the restart: x is limited again.
    eventually("x limited again after the restart", || async {
        match call(&b, "/limited", "x", None).await.status.as_u16() {
            429 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_redis_that_does_not_answer_at_start_is_a_start_error() {
    let port = common::free_port();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npublic_url = \"http://127.0.0.1\"\n{}\n[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\ntimeout = \"200ms\"\n[[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/\"\nverifiers = [\"api_keys\"]\n",
        key("x")
    );
    let config = config::from_toml_str(&toml, std::path::Path::new(".")).expect("compiles");
    match Gateway::start(config).await {
        Err(error @ StartError::Redis(_)) => {
            let message = error.to_string();
            assert!(
                message.contains(&format!("127.0.0.1:{port}")) && message.contains("[redis]"),
                "{message}"
            );
        }
        Err(other) => panic!("expected a Redis start error, got {other}"),
        Ok(_) => panic!("started without Redis"),
    }
}
