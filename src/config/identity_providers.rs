//! The compiled `[[authorization_server.identity_providers]]`: upstream identity providers
//! people log in through. The gateway stays the authorization server MCP clients talk to;
//! for the provider it is an ordinary confidential OAuth client.

use jsonwebtoken::Algorithm;

use super::secret::Secret;

/// One provider on the login page.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    /// Path segment and subject prefix: a user's subject is `<id>:<provider's id for them>`.
    pub id: String,
    pub display_name: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    pub kind: ProviderKind,
    pub allow: Allowlist,
}

#[derive(Debug, Clone)]
pub enum ProviderKind {
    /// Any OpenID Connect provider, by issuer (discovery, ID token, userinfo).
    Oidc {
        issuer: String,
        groups_claim: String,
        algorithms: Vec<Algorithm>,
    },
    /// github.com or GitHub Enterprise Server (OAuth apps and GitHub apps alike).
    GitHub { web_url: String, api_url: String },
}

/// Who may log in. GitHub: a listed user, or a member of a listed organisation or team.
/// OIDC: every configured condition holds (a verified email in a listed domain, and a
/// listed group). `all` only when the configuration says so explicitly.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    pub all: bool,
    /// Lowercase GitHub logins.
    pub users: Vec<String>,
    /// Lowercase GitHub organisation logins.
    pub organizations: Vec<String>,
    /// Lowercase `(organisation, team slug)`.
    pub teams: Vec<(String, String)>,
    /// Lowercase email domains.
    pub email_domains: Vec<String>,
    pub groups: Vec<String>,
}

impl IdentityProvider {
    pub fn is_github(&self) -> bool {
        matches!(self.kind, ProviderKind::GitHub { .. })
    }
}

/// Whether `id` can name a provider: it becomes a path segment and a subject prefix.
pub fn valid_provider_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        // Reserved: local users' default subjects and client_credentials grants.
        && !matches!(id, "local" | "client_credentials")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids() {
        for good in ["github", "corp-sso", "okta_2", "a"] {
            assert!(valid_provider_id(good), "{good}");
        }
        for bad in [
            "",
            "GitHub",
            "a/b",
            "a:b",
            "local",
            "client_credentials",
            "é",
            &"x".repeat(33),
        ] {
            assert!(!valid_provider_id(bad), "{bad}");
        }
    }
}
