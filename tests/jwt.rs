//! JWT access tokens from a JWKS-publishing issuer, as a specification: keys generated in the
//! test (RS256, ES256, EdDSA), JWKS served over a real socket, rotation, outage, and every
//! rejection answering 401 with the route's challenge.

mod common;

use common::gateway::standard_config;
use common::http::get;
use common::jwks::JwksServer;
use common::keys::{jwks, now, TestKey};
use common::{TestGateway, Upstream};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.test";
const RESOURCE: &str = "http://127.0.0.1/mcp";

fn issuer_toml(jwks_uri: &str, extra: &str) -> String {
    format!(
        r#"
[[issuers]]
id = "idp"
issuer = "{ISSUER}"
jwks_uri = "{jwks_uri}"
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_refetch_min_interval = "1s"
{extra}
"#
    )
}

async fn gateway_with_issuer(upstream: &Upstream, issuer: &str) -> TestGateway {
    let config = standard_config(&upstream.url("/mcp"), "", issuer).replace(
        "verifiers = [\"api_keys\"]",
        "verifiers = [\"api_keys\", \"idp\"]",
    );
    TestGateway::start(&config).await
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": sub, "aud": RESOURCE,
        "exp": now() + 600, "iat": now(), "nbf": now() - 5,
        "scope": "mcp:tools profile", "email": format!("{sub}@example.com"),
        "groups": ["dev", "ops"], "client_id": "client-1", "jti": format!("jti-{sub}"),
    })
}

async fn call(gateway: &TestGateway, token: &str) -> common::http::Answer {
    get(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

fn assert_invalid_token(answer: &common::http::Answer, why: &str) {
    assert_eq!(answer.status, 401, "{why}: {}", answer.body);
    let challenge = answer.header("www-authenticate").expect("challenge");
    assert!(
        challenge.starts_with(
            "Bearer resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\", error=\"invalid_token\""
        ),
        "{why}: {challenge}"
    );
    assert_eq!(answer.json()["error"], "invalid_token", "{why}");
}

#[tokio::test]
async fn rs256_es256_eddsa_tokens_are_accepted_with_identity() {
    let (rsa, ec, ed) = (
        TestKey::rsa("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    );
    let server = JwksServer::start(jwks(&[&rsa, &ec, &ed])).await;
    let upstream = Upstream::start().await;
    let gateway = gateway_with_issuer(&upstream, &issuer_toml(&server.uri(), "")).await;

    for (key, sub) in [(&rsa, "rsa-user"), (&ec, "ec-user"), (&ed, "ed-user")] {
        let answer = call(&gateway, &key.sign(&claims(sub))).await;
        assert_eq!(answer.status, 200, "{sub}: {}", answer.body);
        let seen = upstream.last();
        assert_eq!(seen.header("x-user-id"), Some(sub));
        assert_eq!(
            seen.header("x-user-email"),
            Some(format!("{sub}@example.com").as_str())
        );
        assert_eq!(seen.header("x-user-groups"), Some("dev,ops"));
        assert_eq!(seen.header("x-auth-scopes"), Some("mcp:tools profile"));
        assert_eq!(seen.header("x-auth-client-id"), Some("client-1"));
        assert_eq!(seen.header("x-auth-method"), Some("jwt"));
        assert_eq!(
            seen.header("x-auth-token-id"),
            Some(format!("jti-{sub}").as_str())
        );
        assert_eq!(seen.header("authorization"), None);
    }
}

#[tokio::test]
async fn scp_array_and_typ_jwt_are_accepted() {
    let ec = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let upstream = Upstream::start().await;
    let gateway = gateway_with_issuer(&upstream, &issuer_toml(&server.uri(), "")).await;
    let mut body = claims("scp-user");
    body.as_object_mut().unwrap().remove("scope");
    body["scp"] = json!(["mcp:tools"]);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    header.typ = Some("JWT".into());
    let answer = call(&gateway, &ec.sign_with(header, &body)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(upstream.last().header("x-auth-scopes"), Some("mcp:tools"));
}

#[tokio::test]
async fn every_bad_token_is_401_invalid_token() {
    let ec = TestKey::ec("ec-1");
    let stranger = TestKey::ec("ec-1"); // same kid, different key: forged signature
    let server = JwksServer::start(jwks(&[&ec])).await;
    let upstream = Upstream::start().await;
    let gateway = gateway_with_issuer(&upstream, &issuer_toml(&server.uri(), "")).await;

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("u");
        f(&mut c);
        ec.sign(&c)
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 3600))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 3600))),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        (
            "no issuer",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("http://127.0.0.1/other")),
        ),
        (
            "sibling audience",
            with(&|c| c["aud"] = json!("http://127.0.0.1/mcpx")),
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "no subject",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("forged signature", stranger.sign(&claims("u"))),
    ];
    // Unknown kid (even after the refetch it triggers).
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("nobody".into());
    header.typ = Some("at+jwt".into());
    cases.push(("unknown kid", ec.sign_with(header, &claims("u"))));
    // Wrong token type (an ID token or a DPoP proof is not an access token).
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    header.typ = Some("dpop+jwt".into());
    cases.push(("typ dpop+jwt", ec.sign_with(header, &claims("u"))));
    // Tampered payload.
    let good = ec.sign(&claims("u"));
    let parts: Vec<&str> = good.split('.').collect();
    let evil_payload = base64_url(&serde_json::to_vec(&claims("admin")).unwrap());
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], evil_payload, parts[2]),
    ));
    // alg none and HS256 (with the public key as the HMAC secret) cannot verify.
    let none_header = base64_url(br#"{"alg":"none","typ":"at+jwt","kid":"ec-1"}"#);
    cases.push(("alg none", format!("{none_header}.{}.", parts[1])));
    let hs_header = base64_url(br#"{"alg":"HS256","typ":"at+jwt","kid":"ec-1"}"#);
    cases.push((
        "alg HS256",
        format!("{hs_header}.{}.{}", parts[1], parts[2]),
    ));
    cases.push(("garbage", "abc.def.ghi".into()));

    for (why, token) in &cases {
        assert_invalid_token(&call(&gateway, token).await, why);
    }
    assert!(
        upstream.requests().is_empty(),
        "no rejected request reached the upstream"
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn algorithm_allowlist_is_per_issuer() {
    let (rsa, ec) = (TestKey::rsa("rsa-1"), TestKey::ec("ec-1"));
    let server = JwksServer::start(jwks(&[&rsa, &ec])).await;
    let upstream = Upstream::start().await;
    let issuer = issuer_toml(&server.uri(), "").replace(
        r#"algorithms = ["RS256", "ES256", "EdDSA"]"#,
        r#"algorithms = ["ES256"]"#,
    );
    let gateway = gateway_with_issuer(&upstream, &issuer).await;
    assert_eq!(call(&gateway, &ec.sign(&claims("u"))).await.status, 200);
    assert_invalid_token(
        &call(&gateway, &rsa.sign(&claims("u"))).await,
        "RS256 not allowed",
    );
}

#[tokio::test]
async fn audience_rules_canonical_exact_and_issuer_extras() {
    let ec = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let upstream = Upstream::start().await;
    let gateway = gateway_with_issuer(
        &upstream,
        &issuer_toml(&server.uri(), r#"audiences = ["api://corp-mcp"]"#),
    )
    .await;
    for (aud, want) in [
        (json!("HTTP://127.0.0.1:80/mcp/"), 200),
        // A parent resource does not cover the route: tokens are for exactly this server.
        (json!("http://127.0.0.1"), 401),
        (
            json!(["https://other.example", "http://127.0.0.1/mcp"]),
            200,
        ),
        (json!("api://corp-mcp"), 200),
        (json!("api://corp"), 401),
        (json!("http://127.0.0.1/mc"), 401),
        (json!("https://127.0.0.1/mcp"), 401),
    ] {
        let mut c = claims("u");
        c["aud"] = aud.clone();
        assert_eq!(call(&gateway, &ec.sign(&c)).await.status, want, "aud {aud}");
    }
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_outage_keeps_last_good_keys() {
    let (old, new) = (TestKey::ec("old"), TestKey::ed("new"));
    let mut server = JwksServer::start(jwks(&[&old])).await;
    let upstream = Upstream::start().await;
    let gateway = gateway_with_issuer(&upstream, &issuer_toml(&server.uri(), "")).await;

    assert_eq!(
        call(&gateway, &old.sign(&claims("before"))).await.status,
        200
    );

    // The IdP rotates: the new kid is unknown, triggers a refetch, and works without restart
    // (once past the 1 s refetch debounce, which the first use may have started).
    server.set(jwks(&[&new]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        call(&gateway, &new.sign(&claims("after"))).await.status,
        200
    );

    // The IdP goes down: tokens signed with the cached key keep working (fresh tokens, so
    // the verified-token cache is not what answers).
    server.stop().await;
    assert_eq!(
        call(&gateway, &new.sign(&claims("during-outage-1")))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&gateway, &new.sign(&claims("during-outage-2")))
            .await
            .status,
        200
    );
    assert_eq!(upstream.last().header("x-user-id"), Some("during-outage-2"));
    // An unknown kid during the outage is still just an invalid token.
    let stranger = TestKey::ec("stranger");
    assert_invalid_token(
        &call(&gateway, &stranger.sign(&claims("x"))).await,
        "unknown kid, IdP down",
    );
}

#[tokio::test]
async fn unknown_kid_refetch_is_debounced() {
    let ec = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let upstream = Upstream::start().await;
    let issuer = issuer_toml(&server.uri(), "").replace(
        r#"jwks_refetch_min_interval = "1s""#,
        r#"jwks_refetch_min_interval = "1h""#,
    );
    let gateway = gateway_with_issuer(&upstream, &issuer).await;
    assert_eq!(call(&gateway, &ec.sign(&claims("u"))).await.status, 200);
    let hits_before = server.hits();
    for i in 0..20 {
        let stranger = TestKey::ec(&format!("unknown-{i}"));
        assert_eq!(
            call(&gateway, &stranger.sign(&claims("x"))).await.status,
            401
        );
    }
    assert!(
        server.hits() - hits_before <= 1,
        "20 unknown kids caused {} JWKS fetches",
        server.hits() - hits_before
    );
}

#[tokio::test]
async fn jwks_unreachable_from_the_start_is_unavailable_not_a_crash() {
    let ec = TestKey::ec("ec-1");
    let dead = common::dead_port();
    let port = dead.port;
    let upstream = Upstream::start().await;
    let gateway = gateway_with_issuer(
        &upstream,
        &issuer_toml(&format!("http://127.0.0.1:{port}/jwks"), ""),
    )
    .await;
    let answer = call(&gateway, &ec.sign(&claims("u"))).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    // API keys on the same route are unaffected.
    let key = get(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {}", common::API_KEY))],
    )
    .await;
    assert_eq!(key.status, 200);
}

#[tokio::test]
async fn local_jwks_file_and_pem_public_key() {
    let ec = TestKey::ec("file-key");
    let dir = common::TempDir::new("jwt");
    std::fs::write(dir.join("jwks.json"), jwks(&[&ec]).to_string()).unwrap();
    std::fs::write(dir.join("key.pem"), ec.public_pem()).unwrap();
    let upstream = Upstream::start().await;

    for source in ["jwks_file = \"jwks.json\"", "public_key_file = \"key.pem\""] {
        let issuer = issuer_toml("unused", "").replace("jwks_uri = \"unused\"", source);
        let config = standard_config(&upstream.url("/mcp"), "", &issuer)
            .replace("verifiers = [\"api_keys\"]", "verifiers = [\"idp\"]");
        let gateway = TestGateway::start_in(&config, &dir).await;
        assert_eq!(
            call(&gateway, &ec.sign(&claims("u"))).await.status,
            200,
            "{source}"
        );
        gateway.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn keys_whose_key_ops_exclude_verify_are_not_used() {
    let (encrypt_only, verify_ok) = (TestKey::ec("enc-1"), TestKey::ec("ver-1"));
    let mut document = jwks(&[&encrypt_only, &verify_ok]);
    document["keys"][0]["key_ops"] = json!(["encrypt"]);
    document["keys"][1]["key_ops"] = json!(["verify"]);
    let server = JwksServer::start(document).await;
    let upstream = Upstream::start().await;
    let gateway = gateway_with_issuer(&upstream, &issuer_toml(&server.uri(), "")).await;
    assert_invalid_token(
        &call(&gateway, &encrypt_only.sign(&claims("u"))).await,
        "key_ops without verify",
    );
    assert_eq!(
        call(&gateway, &verify_ok.sign(&claims("u"))).await.status,
        200
    );
}
