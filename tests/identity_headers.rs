//! The upstream reads exactly the identity that was verified, or the request is refused:
//! a claim that cannot be a header value exactly (control characters; whitespace that RFC
//! 9110 parsing trims) → 401 `invalid_token`, never a request with the header left out;
//! groups travel percent-encoded for `,` and `%` so that a group named `a,b` is one group;
//! scopes are RFC 6749 scope-tokens. Inline and through `/verify`.

mod common;

use common::gateway::standard_config;
use common::http::get;
use common::jwks::JwksServer;
use common::keys::{jwks, now, TestKey};
use common::{TestGateway, Upstream};
use mcp_auth_gateway::pipeline::identity::decode_list;
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.test";

async fn stack(key: &TestKey) -> (JwksServer, Upstream, TestGateway) {
    let server = JwksServer::start(jwks(&[key])).await;
    let upstream = Upstream::start().await;
    let issuer = format!(
        "[[issuers]]\nid = \"idp\"\nissuer = \"{ISSUER}\"\njwks_uri = \"{}\"\nalgorithms = [\"ES256\"]\n",
        server.uri()
    );
    let config = standard_config(&upstream.url("/mcp"), "", &issuer)
        .replace("verifiers = [\"api_keys\"]", "verifiers = [\"idp\"]");
    let gateway = TestGateway::start(&config).await;
    (server, upstream, gateway)
}

fn claims(change: impl FnOnce(&mut Value)) -> Value {
    let mut claims = json!({
        "iss": ISSUER, "sub": "alice", "aud": "http://127.0.0.1/mcp",
        "exp": now() + 600, "iat": now(), "scope": "mcp:tools",
        "name": "Alice", "groups": ["dev"],
    });
    change(&mut claims);
    claims
}

#[tokio::test]
async fn identities_that_cannot_be_sent_exactly_are_refused() {
    let key = TestKey::ec("ec-1");
    let (_jwks, upstream, gateway) = stack(&key).await;
    let cases: Vec<(&str, Value)> = vec![
        (
            "control character in sub",
            claims(|c| c["sub"] = json!("ad\u{7}min")),
        ),
        (
            "CRLF in name",
            claims(|c| c["name"] = json!("Alice\r\nX-Admin: 1")),
        ),
        (
            "leading space in sub",
            claims(|c| c["sub"] = json!(" admin")),
        ),
        (
            "trailing tab in email",
            claims(|c| c["email"] = json!("a@example.com\t")),
        ),
        ("empty sub", claims(|c| c["sub"] = json!(""))),
        (
            "scope element with a space",
            claims(|c| {
                c.as_object_mut().unwrap().remove("scope");
                c["scp"] = json!(["mcp:tools", "two words"]);
            }),
        ),
    ];
    for (why, claims) in cases {
        let token = key.sign(&claims);
        let bearer = format!("Bearer {token}");
        let inline = get(gateway.addr, "/mcp", &[("authorization", &bearer)]).await;
        assert_eq!(inline.status, 401, "{why}: {}", inline.body);
        assert_eq!(inline.json()["error"], "invalid_token", "{why}");
        let verify = get(
            gateway.addr,
            "/verify",
            &[
                ("authorization", &bearer),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/mcp"),
            ],
        )
        .await;
        assert_eq!(verify.status, 401, "/verify {why}: {}", verify.body);
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

#[tokio::test]
async fn groups_and_names_arrive_exactly() {
    let key = TestKey::ec("ec-1");
    let (_jwks, upstream, gateway) = stack(&key).await;
    let groups = ["a,b", "100%", "Domain Users", "é"];
    let token = key.sign(&claims(|c| {
        c["groups"] = json!(groups);
        c["name"] = json!("José Núñez");
    }));
    let bearer = format!("Bearer {token}");
    let answer = get(gateway.addr, "/mcp", &[("authorization", &bearer)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.last();
    let header = seen.headers.get("x-user-groups").expect("groups header");
    let decoded = decode_list(std::str::from_utf8(header.as_bytes()).unwrap());
    assert_eq!(decoded, groups);
    assert_eq!(
        seen.headers.get("x-user-name").unwrap().as_bytes(),
        "José Núñez".as_bytes()
    );

    // /verify hands the front proxy the same bytes.
    let verify = get(
        gateway.addr,
        "/verify",
        &[
            ("authorization", &bearer),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/mcp"),
        ],
    )
    .await;
    assert_eq!(verify.status, 200, "{}", verify.body);
    assert_eq!(verify.headers.get("x-user-groups"), Some(header));
}
