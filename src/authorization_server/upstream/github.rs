//! GitHub and GitHub Enterprise Server: OAuth web flow (with PKCE), then the REST API for
//! who this is (`/user`, `/user/emails`) and where they belong (`/user/orgs`, `/user/teams`).
//! The subject is GitHub's numeric user id: logins can be renamed and re-registered.

use serde_json::Value;

use super::{
    get_json, token_request, ClientAuth, ClientCredentials, LoginError, ProviderIdentity,
    ProviderTokens,
};
use crate::authorization_server::store::LoginState;
use crate::config::identity_providers::IdentityProvider;
use crate::outbound::HttpClient;

/// Organisations and teams read per person (one page; more is unusual for a login check).
const PAGE: &str = "per_page=100";
const API_HEADERS: [(&str, &str); 2] = [
    ("accept", "application/vnd.github+json"),
    ("x-github-api-version", "2022-11-28"),
];

pub(super) fn authorization_endpoint(web_url: &str) -> String {
    format!("{web_url}/login/oauth/authorize")
}

pub(super) async fn identify(
    client: &HttpClient,
    provider: &IdentityProvider,
    web_url: &str,
    api_url: &str,
    login: &LoginState,
    code: &str,
    redirect_uri: &str,
) -> Result<ProviderIdentity, LoginError> {
    let answer = token_request(
        client,
        &format!("{web_url}/login/oauth/access_token"),
        ClientCredentials::of(provider),
        ClientAuth::Post,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &login.code_verifier),
        ],
    )
    .await?;
    let tokens = ProviderTokens::from_answer(&answer)?;
    let token = tokens.access_token.as_str();
    let user = get_json(client, &format!("{api_url}/user"), token, &API_HEADERS).await?;
    let UserProfile {
        id,
        login: login_name,
        name,
        mut email,
    } = user_profile(&user)?;
    if email.is_none() {
        // A private email is only in /user/emails (scope user:email); absent is fine.
        if let Ok(Value::Array(emails)) = get_json(
            client,
            &format!("{api_url}/user/emails"),
            token,
            &API_HEADERS,
        )
        .await
        {
            email = primary_verified_email(&emails);
        }
    }
    let allow = &provider.allow;
    let needs_orgs = !allow.all
        && !allow.users.contains(&login_name.to_ascii_lowercase())
        && !allow.organizations.is_empty();
    let needs_teams = !allow.all
        && !allow.users.contains(&login_name.to_ascii_lowercase())
        && !allow.teams.is_empty();
    let organizations = match get_json(
        client,
        &format!("{api_url}/user/orgs?{PAGE}"),
        token,
        &API_HEADERS,
    )
    .await
    {
        Ok(list) => organization_logins(&list),
        Err(error) if needs_orgs => return Err(error),
        Err(_) => Vec::new(),
    };
    let teams = match get_json(
        client,
        &format!("{api_url}/user/teams?{PAGE}"),
        token,
        &API_HEADERS,
    )
    .await
    {
        Ok(list) => team_names(&list),
        Err(error) if needs_teams => return Err(error),
        Err(_) => Vec::new(),
    };
    let identity = ProviderIdentity {
        id,
        name,
        username: Some(login_name),
        email,
        // Organisations and `org/team` pairs become groups, for route rules.
        groups: organizations
            .iter()
            .cloned()
            .chain(teams.iter().map(|(org, team)| format!("{org}/{team}")))
            .collect(),
        tokens: tokens.clone(),
    };
    if !allowed(provider, identity.username.as_deref(), &identity.groups) {
        return Err(LoginError::NotAllowed(format!(
            "The GitHub account {} is not a member of an organisation or team allowed here.",
            identity.username.as_deref().unwrap_or_default()
        )));
    }
    Ok(identity)
}

/// Who `/user` says this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UserProfile {
    /// GitHub's numeric user id, in decimal.
    pub id: String,
    pub login: String,
    pub name: Option<String>,
    /// The public email, if the person shows one.
    pub email: Option<String>,
}

/// Reads the `/user` answer: a numeric `id` and a non-empty `login` are required.
pub(super) fn user_profile(user: &Value) -> Result<UserProfile, LoginError> {
    let id = match user.get("id") {
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        _ => return Err(LoginError::BadAnswer("/user has no numeric id".into())),
    };
    let text = |name: &str| {
        user.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let login = text("login").ok_or_else(|| LoginError::BadAnswer("/user has no login".into()))?;
    Ok(UserProfile {
        id,
        login,
        name: text("name"),
        email: text("email"),
    })
}

pub(super) fn primary_verified_email(emails: &[Value]) -> Option<String> {
    emails
        .iter()
        .find(|e| {
            e.get("primary") == Some(&Value::Bool(true))
                && e.get("verified") == Some(&Value::Bool(true))
        })
        .and_then(|e| e.get("email"))
        .and_then(Value::as_str)
        // Like the email in `/user`: an empty one is none.
        .filter(|e| !e.is_empty())
        .map(str::to_string)
}

/// Lowercase organisation logins from `/user/orgs`.
pub(super) fn organization_logins(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|org| org.get("login").and_then(Value::as_str))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Lowercase `(organisation, team slug)` from `/user/teams`.
pub(super) fn team_names(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|team| {
            let slug = team.get("slug")?.as_str()?;
            let org = team.get("organization")?.get("login")?.as_str()?;
            Some((org.to_ascii_lowercase(), slug.to_ascii_lowercase()))
        })
        .collect()
}

/// A listed user, or a member of a listed organisation or team. `groups` holds the
/// organisations and `org/team` pairs (as in the tokens), so a stored identity can be
/// checked again against a changed configuration.
pub(super) fn allowed(provider: &IdentityProvider, login: Option<&str>, groups: &[String]) -> bool {
    let allow = &provider.allow;
    let login = login.unwrap_or_default().to_ascii_lowercase();
    allow.all
        || allow.users.contains(&login)
        || groups.iter().any(|group| {
            let group = group.to_ascii_lowercase();
            match group.split_once('/') {
                Some((org, team)) => allow.teams.iter().any(|(o, t)| o == org && t == team),
                None => allow.organizations.contains(&group),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::json_value;
    use super::*;
    use crate::config::identity_providers::{Allowlist, ProviderKind};
    use proptest::prelude::*;
    use serde_json::json;

    fn provider(allow: Allowlist) -> IdentityProvider {
        IdentityProvider {
            id: "github".into(),
            display_name: "GitHub".into(),
            client_id: "gh".into(),
            client_secret: None,
            scopes: vec![],
            kind: ProviderKind::GitHub {
                web_url: "https://github.com".into(),
                api_url: "https://api.github.com".into(),
            },
            allow,
        }
    }

    #[test]
    fn users_organisations_or_teams() {
        let p = provider(Allowlist {
            users: vec!["octocat".into()],
            organizations: vec!["acme".into()],
            teams: vec![("other".into(), "platform".into())],
            ..Allowlist::default()
        });
        let groups = |list: &[&str]| list.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        assert!(allowed(&p, Some("OctoCat"), &[]));
        assert!(allowed(&p, Some("bob"), &groups(&["Acme"])));
        assert!(allowed(&p, Some("bob"), &groups(&["other/platform"])));
        assert!(!allowed(&p, Some("bob"), &groups(&["other"])));
        assert!(!allowed(&p, Some("bob"), &groups(&["other/sales"])));
        assert!(!allowed(&p, Some("bob"), &groups(&["acme2/platform"])));
        assert!(!allowed(&p, Some("bob"), &groups(&["acme/"])));
        assert!(!allowed(&p, None, &[]));
    }

    #[test]
    fn api_answers() {
        let orgs = json!([{"login": "Acme"}, {"id": 3}, {"login": 5}]);
        assert_eq!(organization_logins(&orgs), vec!["acme".to_string()]);
        assert!(organization_logins(&json!({"message": "x"})).is_empty());
        let teams = json!([{"slug": "Platform", "organization": {"login": "Acme"}}, {"slug": "x"}]);
        assert_eq!(
            team_names(&teams),
            vec![("acme".to_string(), "platform".to_string())]
        );
        let emails = [
            json!({"email": "a@x", "primary": false, "verified": true}),
            json!({"email": "b@x", "primary": true, "verified": false}),
            json!({"email": "c@x", "primary": true, "verified": true}),
        ];
        assert_eq!(primary_verified_email(&emails).as_deref(), Some("c@x"));
        assert_eq!(primary_verified_email(&emails[..2]), None);
    }

    #[test]
    fn user_answers() {
        let profile = user_profile(&json!({
            "login": "octocat", "id": 583231, "name": "The Octocat", "email": null
        }))
        .unwrap();
        assert_eq!(
            profile,
            UserProfile {
                id: "583231".into(),
                login: "octocat".into(),
                name: Some("The Octocat".into()),
                email: None,
            }
        );
        let blank = user_profile(&json!({"login": "a", "id": 1, "name": "", "email": ""})).unwrap();
        assert_eq!((blank.name, blank.email), (None, None));
        for refused in [
            json!({"login": "octocat"}),
            json!({"login": "octocat", "id": "583231"}),
            json!({"login": "octocat", "id": -1}),
            json!({"login": "octocat", "id": 1.5}),
            json!({"login": "octocat", "id": 1e3}),
            json!({"login": "", "id": 1}),
            json!({"login": 7, "id": 1}),
            json!({"id": 1}),
            json!({"message": "Bad credentials"}),
            json!([{"login": "octocat", "id": 1}]),
            json!(null),
        ] {
            assert!(user_profile(&refused).is_err(), "{refused}");
        }
    }

    /// `s` with the ASCII case of each letter flipped where `flips` says so.
    fn recase(s: &str, flips: &[bool]) -> String {
        s.chars()
            .zip(flips.iter().chain(std::iter::repeat(&false)))
            .map(|(c, flip)| {
                if *flip && c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else if *flip {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_any_json(value in json_value()) {
            let _ = organization_logins(&value);
            let _ = team_names(&value);
            let _ = user_profile(&value);
            if let Value::Array(list) = &value {
                let _ = primary_verified_email(list);
            }
        }

        /// Logins, organisations and teams match ignoring ASCII case.
        #[test]
        fn allowlist_ignores_ascii_case(
            login in prop::sample::select(vec!["octocat", "bob", "octocat2"]),
            group in prop::sample::select(vec![
                "acme", "other/platform", "acme/platform", "other", "acme/",
            ]),
            flips in prop::collection::vec(any::<bool>(), 16),
        ) {
            let p = provider(Allowlist {
                users: vec!["octocat".into()],
                organizations: vec!["acme".into()],
                teams: vec![("other".into(), "platform".into())],
                ..Allowlist::default()
            });
            let plain = allowed(&p, Some(login), &[group.to_string()]);
            let cased = allowed(&p, Some(&recase(login, &flips)), &[recase(group, &flips[8..])]);
            prop_assert_eq!(plain, cased);
            prop_assert_eq!(
                plain,
                login == "octocat" || group == "acme" || group == "other/platform"
            );
        }

        /// `org/`, `/team`, `org//team` and such never stand for a listed team or organisation.
        #[test]
        fn no_partial_team_shapes(
            org in prop::sample::select(vec!["other", "Other", "acme", ""]),
            team in prop::sample::select(vec!["platform", "PLATFORM", ""]),
            shape in 0..5usize,
        ) {
            let p = provider(Allowlist {
                organizations: vec!["acme".into()],
                teams: vec![("other".into(), "platform".into())],
                ..Allowlist::default()
            });
            let group = match shape {
                0 => format!("{org}/"),
                1 => format!("/{team}"),
                2 => format!("{org}//{team}"),
                3 => format!("/{org}/{team}"),
                _ => format!("{org}/{team}/"),
            };
            prop_assert!(!allowed(&p, None, &[group]));
        }
    }
}
