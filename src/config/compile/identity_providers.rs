//! `[[authorization_server.identity_providers]]` → [`IdentityProvider`].

use std::collections::BTreeSet;
use std::path::Path;

use jsonwebtoken::Algorithm;

use super::verifiers::{parse_algorithm, parse_identity_url};
use super::Collector;
use crate::config::identity_providers::{
    valid_provider_id, Allowlist, IdentityProvider, ProviderKind,
};
use crate::config::raw::RawIdentityProvider;
use crate::config::secret;

const OIDC_SCOPES: [&str; 3] = ["openid", "email", "profile"];
/// `read:user` for the profile, `user:email` for a private primary email, `read:org` for
/// organisation and team membership.
const GITHUB_SCOPES: [&str; 3] = ["read:user", "user:email", "read:org"];

pub(super) fn compile_identity_providers(
    raw: &[RawIdentityProvider],
    allow_http: bool,
    base_dir: &Path,
    c: &mut Collector,
) -> Vec<IdentityProvider> {
    let mut seen = BTreeSet::new();
    raw.iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let path = format!("authorization_server.identity_providers[{i}]");
            compile_provider(raw, &path, allow_http, base_dir, &mut seen, c)
        })
        .collect()
}

fn compile_provider(
    raw: &RawIdentityProvider,
    path: &str,
    allow_http: bool,
    base_dir: &Path,
    seen: &mut BTreeSet<String>,
    c: &mut Collector,
) -> Option<IdentityProvider> {
    let key = |name: &str| format!("{path}.{name}");
    if !valid_provider_id(&raw.id) {
        c.push(
            key("id"),
            format!(
                "{:?} cannot name a provider: use 1 to 32 of a-z, 0-9, - and _ (not \"local\"), e.g. \"github\" or \"corp-sso\"",
                raw.id
            ),
        );
    } else if !seen.insert(raw.id.clone()) {
        c.push(key("id"), format!("{:?} is configured twice", raw.id));
    }
    if raw.client_id.is_empty() {
        c.push(
            key("client_id"),
            "is empty: the client id of the OAuth app registered at the provider",
        );
    }
    let client_secret = c
        .ok(
            &key("client_secret"),
            secret::resolve_optional(
                raw.client_secret_env.as_deref(),
                raw.client_secret_file.as_deref(),
                base_dir,
                "client_secret_env / client_secret_file",
            ),
        )
        .flatten();
    let lower = |list: &[String]| -> Vec<String> {
        list.iter().map(|v| v.trim().to_ascii_lowercase()).collect()
    };
    let mut allow = Allowlist {
        all: raw.allow_all_users,
        users: lower(&raw.allowed_users),
        organizations: lower(&raw.allowed_organizations),
        teams: Vec::new(),
        email_domains: lower(&raw.allowed_email_domains)
            .into_iter()
            .map(|d| d.trim_start_matches('@').to_string())
            .collect(),
        groups: raw.allowed_groups.clone(),
    };
    let (kind, default_name, default_scopes) = match raw.kind.as_str() {
        "oidc" => {
            for (field, set) in [
                ("allowed_users", !raw.allowed_users.is_empty()),
                (
                    "allowed_organizations",
                    !raw.allowed_organizations.is_empty(),
                ),
                ("allowed_teams", !raw.allowed_teams.is_empty()),
            ] {
                if set {
                    c.push(
                        key(field),
                        "is a GitHub allowlist: for an OIDC provider use allowed_email_domains or allowed_groups",
                    );
                }
            }
            let issuer = match raw.issuer.as_deref() {
                None => {
                    c.push(
                        key("issuer"),
                        "is missing: the provider's issuer URL, e.g. \"https://login.example.com/realms/mcp\"",
                    );
                    String::new()
                }
                Some(issuer) => {
                    match parse_identity_url(issuer, allow_http) {
                        Ok(_) => {}
                        Err(e) => c.push(key("issuer"), e),
                    }
                    issuer.trim_end_matches('/').to_string()
                }
            };
            let algorithms = match &raw.algorithms {
                None => vec![Algorithm::RS256, Algorithm::ES256],
                Some(names) => names
                    .iter()
                    .enumerate()
                    .filter_map(|(j, name)| {
                        c.ok(
                            &format!("{}[{j}]", key("algorithms")),
                            parse_algorithm(name),
                        )
                    })
                    .collect(),
            };
            let kind = ProviderKind::Oidc {
                issuer,
                groups_claim: raw.groups_claim.clone().unwrap_or_else(|| "groups".into()),
                algorithms,
            };
            (kind, "Single sign-on", &OIDC_SCOPES[..])
        }
        "github" => {
            for (field, set) in [
                ("issuer", raw.issuer.is_some()),
                ("groups_claim", raw.groups_claim.is_some()),
                (
                    "allowed_email_domains",
                    !raw.allowed_email_domains.is_empty(),
                ),
                ("allowed_groups", !raw.allowed_groups.is_empty()),
            ] {
                if set {
                    c.push(
                        key(field),
                        "does not apply to GitHub: use allowed_users, allowed_organizations or allowed_teams (\"org/team-slug\")",
                    );
                }
            }
            for (j, team) in raw.allowed_teams.iter().enumerate() {
                match team.trim().to_ascii_lowercase().split_once('/') {
                    Some((org, slug)) if !org.is_empty() && !slug.is_empty() => {
                        allow.teams.push((org.to_string(), slug.to_string()))
                    }
                    _ => c.push(
                        format!("{}[{j}]", key("allowed_teams")),
                        format!("{team:?} is not \"organisation/team-slug\""),
                    ),
                }
            }
            if client_secret.is_none() {
                c.push(
                    key("client_secret_env"),
                    "GitHub needs the OAuth app's client secret: set client_secret_env or client_secret_file",
                );
            }
            let web_url = raw
                .github_url
                .as_deref()
                .unwrap_or("https://github.com")
                .trim_end_matches('/')
                .to_string();
            let api_url = match (&raw.github_api_url, &raw.github_url) {
                (Some(api), _) => api.trim_end_matches('/').to_string(),
                (None, None) => "https://api.github.com".to_string(),
                // GitHub Enterprise Server serves its REST API under /api/v3.
                (None, Some(_)) => format!("{web_url}/api/v3"),
            };
            for (field, url) in [("github_url", &web_url), ("github_api_url", &api_url)] {
                if let Err(e) = parse_identity_url(url, allow_http) {
                    c.push(key(field), e);
                }
            }
            (
                ProviderKind::GitHub { web_url, api_url },
                "GitHub",
                &GITHUB_SCOPES[..],
            )
        }
        other => {
            c.push(
                key("type"),
                format!("{other:?} is not a provider type: use \"oidc\" or \"github\""),
            );
            return None;
        }
    };
    let restricted = !allow.users.is_empty()
        || !allow.organizations.is_empty()
        || !allow.teams.is_empty()
        || !allow.email_domains.is_empty()
        || !allow.groups.is_empty();
    if !restricted && !allow.all {
        c.push(
            path.to_string(),
            "says nobody may log in: list who may (allowed_users / allowed_organizations / allowed_teams for GitHub, allowed_email_domains / allowed_groups for OIDC), or set allow_all_users = true to let in everyone the provider authenticates",
        );
    }
    if restricted && allow.all {
        c.push(
            key("allow_all_users"),
            "contradicts the allowlists: remove one of them",
        );
    }
    if let ProviderKind::Oidc { .. } = kind {
        if !allow.email_domains.is_empty()
            && !raw
                .scopes
                .as_ref()
                .is_none_or(|s| s.iter().any(|s| s == "email"))
        {
            c.push(
                key("scopes"),
                "allowed_email_domains needs the \"email\" scope",
            );
        }
    }
    let scopes = raw
        .scopes
        .clone()
        .unwrap_or_else(|| default_scopes.iter().map(|s| s.to_string()).collect());
    if let ProviderKind::Oidc { .. } = kind {
        if !scopes.iter().any(|s| s == "openid") {
            c.push(key("scopes"), "must include \"openid\"");
        }
    }
    Some(IdentityProvider {
        id: raw.id.clone(),
        display_name: raw
            .display_name
            .clone()
            .unwrap_or_else(|| default_name.to_string()),
        client_id: raw.client_id.clone(),
        client_secret,
        scopes,
        kind,
        allow,
    })
}
