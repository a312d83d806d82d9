//! Two gateway processes (the real binary) behind one public URL share a real
//! `redis-server`, as two replicas behind a load balancer would:
//! - a code issued by one is redeemed at the other, once;
//! - a refresh token rotated at one and replayed at the other revokes the family, and the
//!   family's access token is then refused by both;
//! - a token revoked at one is refused by the other within seconds;
//! - the authorization server's per-address limits count requests at both;
//! - a key rotation (`keys rotate`) reaches both;
//! - Redis stopped during traffic: access tokens keep verifying at both, what needs the
//!   store answers 503, and logins work again once Redis is back.
//!
//! Needs redis-server: fails under `CI=true` when it is missing, skips loudly otherwise.

#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http::{get, post_json, Answer};
use common::oauth::{self, browser_login, form, pkce, post_form, query, Browser};
use common::process::{GatewayProcess, BIN};
use common::redis::RedisServer;
use common::{free_port, Upstream};
use serde_json::Value;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// How long a replica may take to see what another did.
const PROPAGATION: Duration = Duration::from_secs(15);

/// Redis, an upstream and two replicas; both replicas claim the first one's public URL.
struct Cluster {
    redis: RedisServer,
    upstream: Upstream,
    a: GatewayProcess,
    b: GatewayProcess,
    dir: common::TempDir,
    config: PathBuf,
    issuer: String,
}

impl Cluster {
    async fn start(name: &str, extra: &str) -> Option<Cluster> {
        let redis = RedisServer::start(name).await?;
        let upstream = Upstream::start().await;
        let dir = oauth::temp_dir(&format!("replicas-{name}"));
        let (port_a, port_b) = (free_port(), free_port());
        let issuer = format!("http://127.0.0.1:{port_a}");
        // One configuration for both: the port comes from the environment.
        let toml = format!(
            r#"
[server]
listen = ["127.0.0.1:${{REPLICA_PORT}}"]
public_url = "{issuer}"

[log]
level = "info"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
scopes_supported = ["mcp:tools"]

[redis]
url = "{redis}"
timeout = "500ms"

{as_section}
"#,
            upstream = upstream.url("/mcp"),
            redis = redis.url(),
            as_section = oauth::as_toml(&dir, extra),
        );
        let config = dir.join("gateway.toml");
        std::fs::write(&config, toml).expect("write config");
        let replica = |port: u16, log: &str| {
            let port_text = port.to_string();
            let log = dir.join(log);
            let config = config.clone();
            async move {
                GatewayProcess::start(&config, port, &log, &[("REPLICA_PORT", &port_text)]).await
            }
        };
        let a = replica(port_a, "a.log").await;
        let b = replica(port_b, "b.log").await;
        Some(Cluster {
            redis,
            upstream,
            a,
            b,
            dir,
            config,
            issuer,
        })
    }

    fn logs(&self) -> String {
        format!(
            "replica a:\n{}\nreplica b:\n{}",
            std::fs::read_to_string(self.dir.join("a.log")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.join("b.log")).unwrap_or_default()
        )
    }

    fn resource(&self) -> String {
        format!("{}/mcp", self.issuer)
    }

    /// Registers at `first`, logs alice in there, and redeems the code at `second`.
    async fn log_in(&self, first: SocketAddr, second: SocketAddr) -> (String, Value) {
        let (client_id, answer, _) = self.log_in_keeping_code(first, second).await;
        (client_id, answer)
    }

    /// As `log_in`, also returning the (redeemed) code's token request, to replay it.
    async fn log_in_keeping_code(
        &self,
        first: SocketAddr,
        second: SocketAddr,
    ) -> (String, Value, String) {
        let client_id = oauth::register_public(first, REDIRECT).await;
        let (verifier, challenge) = pkce();
        let authorize = form(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "s"),
            ("scope", "mcp:tools"),
            ("resource", &self.resource()),
        ]);
        let location = browser_login(&mut Browser::default(), first, &authorize).await;
        let code = query(&location)["code"].clone();
        let redeem = || {
            form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", &client_id),
                ("resource", &self.resource()),
            ])
        };
        let answer = post_form(second, "/token", &redeem(), &[]).await;
        assert_eq!(answer.status, 200, "{}\n{}", answer.body, self.logs());
        let redemption = redeem();
        (client_id, answer.json(), redemption)
    }

    async fn shutdown(self) {
        drop(self.a);
        drop(self.b);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn call(addr: SocketAddr, token: &str) -> Answer {
    post_json(
        addr,
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await
}

/// Polls `probe` until it returns true, for at most `PROPAGATION`.
async fn eventually<F, Fut>(what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(
            started.elapsed() < PROPAGATION,
            "{what} did not happen within {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

fn token_of(answer: &Value, name: &str) -> String {
    answer[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {answer}"))
        .to_string()
}

#[tokio::test]
async fn a_code_issued_by_one_replica_is_redeemed_at_the_other_and_tokens_work_at_both() {
    let Some(cluster) = Cluster::start("code", "").await else {
        return;
    };
    let (_, answer, redemption) = cluster
        .log_in_keeping_code(cluster.a.addr, cluster.b.addr)
        .await;
    let access = token_of(&answer, "access_token");
    for replica in [cluster.a.addr, cluster.b.addr] {
        let answer = call(replica, &access).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(
        cluster.upstream.last().header("x-user-id"),
        Some("local:alice")
    );
    // Once only, wherever it is presented again; the replay revokes what the code issued,
    // at both replicas.
    let again = post_form(cluster.a.addr, "/token", &redemption, &[]).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.json()["error"], "invalid_grant");
    for replica in [cluster.a.addr, cluster.b.addr] {
        eventually("the replayed code's token refused", || {
            let access = access.clone();
            async move { call(replica, &access).await.status == 401 }
        })
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_refresh_replayed_at_the_other_replica_revokes_the_family_everywhere() {
    let Some(cluster) = Cluster::start("refresh", "refresh_reuse_grace = \"0s\"").await else {
        return;
    };
    let (client_id, answer) = cluster.log_in(cluster.a.addr, cluster.b.addr).await;
    let (access, first_refresh) = (
        token_of(&answer, "access_token"),
        token_of(&answer, "refresh_token"),
    );
    let refresh = |addr: SocketAddr, token: String| {
        let client_id = client_id.clone();
        async move {
            post_form(
                addr,
                "/token",
                &form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &client_id),
                ]),
                &[],
            )
            .await
        }
    };
    let rotated = refresh(cluster.a.addr, first_refresh.clone()).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second_refresh = token_of(&rotated.json(), "refresh_token");

    // The rotated-out token, replayed at the other replica: theft. The family dies.
    let replay = refresh(cluster.b.addr, first_refresh).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert_eq!(replay.json()["error"], "invalid_grant");
    let successor = refresh(cluster.a.addr, second_refresh).await;
    assert_eq!(successor.status, 400, "{}", successor.body);
    // And the family's access token is refused by both replicas.
    for replica in [cluster.a.addr, cluster.b.addr] {
        eventually("the family's access token refused", || {
            let access = access.clone();
            async move { call(replica, &access).await.status == 401 }
        })
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_token_revoked_at_one_replica_is_refused_by_the_other_within_seconds() {
    let Some(cluster) = Cluster::start("revoke", "").await else {
        return;
    };
    let (client_id, answer) = cluster.log_in(cluster.a.addr, cluster.a.addr).await;
    let access = token_of(&answer, "access_token");
    assert_eq!(call(cluster.b.addr, &access).await.status, 200);
    let revoked = post_form(
        cluster.a.addr,
        "/revoke",
        &form(&[("token", &access), ("client_id", &client_id)]),
        &[],
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    // At once where it was revoked; within seconds at the other.
    assert_eq!(call(cluster.a.addr, &access).await.status, 401);
    let took = eventually("the revocation reaching replica b", || {
        let access = access.clone();
        let b = cluster.b.addr;
        async move { call(b, &access).await.status == 401 }
    })
    .await;
    eprintln!("revocation reached the other replica after {took:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_authorization_servers_rate_limits_count_requests_at_both_replicas() {
    let Some(cluster) = Cluster::start("limits", "").await else {
        return;
    };
    // /authorize: 60 a minute per address, wherever they land. (A fixed window: if the
    // minute turns over midway, the count restarts; the test then sees fewer refusals.)
    let mut statuses = Vec::new();
    for i in 0..70 {
        let replica = if i % 2 == 0 {
            cluster.a.addr
        } else {
            cluster.b.addr
        };
        statuses.push(
            get(replica, "/authorize?client_id=nobody", &[])
                .await
                .status
                .as_u16(),
        );
    }
    let refused_a = statuses.iter().step_by(2).filter(|s| **s == 429).count();
    let refused_b = statuses
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|s| **s == 429)
        .count();
    assert!(
        refused_a > 0 && refused_b > 0,
        "each replica saw only 35 requests; only a shared count refuses any: {statuses:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_key_rotation_reaches_both_replicas() {
    let Some(cluster) = Cluster::start("keys", "").await else {
        return;
    };
    let kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = kids(&get(cluster.a.addr, "/jwks.json", &[]).await.json());
    assert_eq!(
        before,
        kids(&get(cluster.b.addr, "/jwks.json", &[]).await.json()),
        "both replicas sign with the one key in Redis"
    );
    let output = tokio::process::Command::new(BIN)
        .args(["keys", "rotate", "--config"])
        .arg(&cluster.config)
        .env("REPLICA_PORT", "1")
        .output()
        .await
        .expect("keys rotate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let kid = stdout
        .trim()
        .rsplit(' ')
        .next()
        .expect("the new kid")
        .to_string();
    for replica in [cluster.a.addr, cluster.b.addr] {
        let kid = kid.clone();
        eventually("the new key published", || {
            let kid = kid.clone();
            async move { kids(&get(replica, "/jwks.json", &[]).await.json()).contains(&kid) }
        })
        .await;
    }
    // Tokens issued now are signed with it, and the old key is still published.
    let (_, answer) = cluster.log_in(cluster.b.addr, cluster.a.addr).await;
    let access = token_of(&answer, "access_token");
    let header = jsonwebtoken::decode_header(&access).expect("header");
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    let after = kids(&get(cluster.a.addr, "/jwks.json", &[]).await.json());
    assert!(
        before.iter().all(|k| after.contains(k)),
        "{before:?} {after:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn redis_down_access_tokens_keep_working_logins_fail_with_503_then_recover() {
    let Some(mut cluster) = Cluster::start("outage", "").await else {
        return;
    };
    let (client_id, answer) = cluster.log_in(cluster.a.addr, cluster.b.addr).await;
    let access = token_of(&answer, "access_token");
    let refresh_token = token_of(&answer, "refresh_token");

    cluster.redis.stop().await;
    // The hot path never asks the store.
    for _ in 0..5 {
        for replica in [cluster.a.addr, cluster.b.addr] {
            let answer = call(replica, &access).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    }
    // What needs the store says so, quickly.
    let started = Instant::now();
    let page = get(
        cluster.a.addr,
        &format!("/authorize?client_id={client_id}"),
        &[],
    )
    .await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    let token = post_form(
        cluster.b.addr,
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(token.status, 503, "{}", token.body);
    assert!(token.json()["error"].is_string(), "{}", token.body);

    cluster.redis.restart().await;
    // Both replicas reconnect by themselves: a whole login works again, across them.
    eventually("the store reachable again", || {
        let a = cluster.a.addr;
        async move { get(a, "/authorize?client_id=nobody", &[]).await.status == 400 }
    })
    .await;
    let (_, answer) = cluster.log_in(cluster.b.addr, cluster.a.addr).await;
    assert_eq!(
        call(cluster.a.addr, &token_of(&answer, "access_token"))
            .await
            .status,
        200
    );
    // The refresh token from before the outage still works (the data survived).
    let token = post_form(
        cluster.a.addr,
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.body);
    cluster.shutdown().await;
}
