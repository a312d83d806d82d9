//! `/verify` answers questions about tokens, so it can live on a listener of its own that only
//! the front proxy reaches (`[forward_auth] listen`): then the public listener does not
//! answer it, and the internal one serves nothing but `/verify`, health and discovery.

mod common;

use common::gateway::standard_config;
use common::http::get;
use common::{TestGateway, Upstream, API_KEY};

fn verify_headers(bearer: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", bearer.to_string()),
        ("x-forwarded-method", "GET".into()),
        ("x-forwarded-uri", "/mcp".into()),
    ]
}

#[tokio::test]
async fn verify_on_its_own_listener_only() {
    let upstream = Upstream::start().await;
    let config = standard_config(
        &upstream.url("/mcp"),
        "",
        "[forward_auth]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let gateway = TestGateway::start(&config).await;
    let internal = gateway.forward_auth_addrs[0];
    let bearer = format!("Bearer {API_KEY}");
    let headers = verify_headers(&bearer);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();

    let on_internal = get(internal, "/verify", &headers).await;
    assert_eq!(on_internal.status, 200, "{}", on_internal.body);
    assert_eq!(on_internal.header("x-user-id"), Some("alice"));
    let no_token = get(internal, "/verify", &headers[1..]).await;
    assert_eq!(no_token.status, 401);

    // The public listener does not know /verify (no route serves it).
    let on_public = get(gateway.addr, "/verify", &headers).await;
    assert_eq!(on_public.status, 404, "{}", on_public.body);
    assert_eq!(on_public.header("x-user-id"), None);

    // The internal listener proxies nothing.
    let proxied = get(internal, "/mcp", &[("authorization", &bearer)]).await;
    assert_eq!(proxied.status, 404);
    assert!(upstream.requests().is_empty());
    assert_eq!(get(internal, "/healthz", &[]).await.status, 200);
    // The public listener still proxies.
    assert_eq!(
        get(gateway.addr, "/mcp", &[("authorization", &bearer)])
            .await
            .status,
        200
    );
}
