//! What a user holds elsewhere: the token an identity provider gave the authorization server
//! when they logged in through it, for routes that forward it upstream
//! (`[routes.upstream_token]`). The authorization server implements this; the pipeline
//! asks it, knowing nothing of how tokens are kept or refreshed.

use std::future::Future;
use std::pin::Pin;

/// Why no token could be had right now (the store or the provider is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserTokenUnavailable(pub String);

pub type UserTokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<String>, UserTokenUnavailable>> + Send + 'a>>;

pub trait UserTokens: Send + Sync {
    /// The current access token of `subject` at `provider`, refreshed first when it has
    /// expired; `None` when they hold none (never logged in there, or it was revoked).
    fn token<'a>(&'a self, subject: &'a str, provider: &'a str) -> UserTokenFuture<'a>;
}
