//! What an upstream identity provider answers during a login (GitHub or OpenID Connect):
//! `authorization_server::upstream`'s parsers, reached through the hidden entry point
//! `authorization_server::fuzz_provider_answer` (they are crate-internal), and
//! `authorization_server::sealing::Sealer::open` on the same bytes as text.
//!
//! Input: one JSON value, as a provider sends it. Every parser runs on it: the token answer
//! (`ProviderTokens::from_answer`), the OIDC discovery document (`oidc::check_discovery`,
//! for `https://idp.example`, `http://127.0.0.1:8080` and the document's own issuer), ID
//! token claims (`check_id_token` for client `gw`, nonce `n-0S6_WzA2Mj`;
//! `identity_from_claims`; `allowed`), userinfo (`merge_userinfo`, into claims with `sub`
//! `248289761001`, and a `userinfo` member into the rest of the object), and GitHub's
//! `/user`, `/user/orgs`, `/user/teams`, `/user/emails` (`user_profile`,
//! `organization_logins`, `team_names`, `primary_verified_email`, `allowed` with the
//! login, those groups and a `groups` member). And what an upstream MCP server's
//! authorization server answers when the gateway connects to it (`upstream::connect`):
//! protected-resource metadata, authorization server metadata, a registration answer, and
//! the well-known URLs built from any string. When the input is UTF-8 it is also a
//! sealed value to open and a plaintext to seal.
//!
//! Properties: never panics, and each verdict equals an independent reading of the JSON:
//! - a token answer is accepted exactly when `access_token` is a non-empty string;
//! - an accepted discovery document names the configured issuer (up to a trailing slash);
//!   its endpoints are exactly the document's, absolute URLs with a host, https, or http
//!   only when the issuer is; the secret goes in the form only when the provider lists
//!   methods and not `client_secret_basic`;
//! - an ID token is accepted exactly when `aud` is or contains `gw`, `azp` is `gw` when it
//!   is present or `aud` has several values, and `nonce` is the login's;
//! - userinfo merges only as an object about the same `sub`, never overrides a claim, and
//!   a refused one changes nothing;
//! - OIDC `allowed` admits exactly a verified email whose domain (after the last `@`,
//!   ignoring ASCII case) is `example.com` — never `evil-example.com` or
//!   `example.com.evil` — plus the group `mcp` when groups are configured;
//! - GitHub: organisation and team names are lowercase and come from the answer; the email
//!   is the first primary, verified one, non-empty; a profile has a `u64` id written in
//!   decimal and a non-empty login; `allowed` admits exactly `octocat`, `acme` or
//!   `acme/platform` in any ASCII case, never an `org/` or `/team` shape;
//! - upstream connections: protected-resource metadata is accepted only for its own
//!   `resource` (canonically), naming an http(s) authorization server first, with scopes
//!   it lists; server metadata only for its own issuer, with the document's http(s)
//!   endpoints and S256; a registration only with a non-empty `client_id`; well-known URLs
//!   are http(s);
//! - `Sealer::open` opens only `v1:` values; whatever is sealed opens again, in its own
//!   context only.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::authorization_server::fuzz_provider_answer;
use mcp_auth_gateway::authorization_server::sealing::Sealer;

fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| Sealer::new(&[7; 32]).expect("a 32-byte key"))
}

fn check_sealing(text: &str) {
    let sealer = sealer();
    if let Some(plaintext) = sealer.open(text, "github:1") {
        assert!(text.starts_with("v1:"), "opened {text:?} to {plaintext:?}");
    }
    let sealed = sealer.seal(text, "github:1").expect("sealing works");
    assert!(sealed.starts_with("v1:"));
    assert_eq!(sealer.open(&sealed, "github:1").as_deref(), Some(text));
    assert_eq!(sealer.open(&sealed, "github:2"), None);
}

fuzz_target!(|data: &[u8]| {
    fuzz_provider_answer(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_sealing(text);
    }
});
