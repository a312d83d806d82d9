//! Users' tokens at their identity providers or at upstreams' authorization servers, for
//! routes that forward them upstream (`[routes.upstream_token]`): kept only when a route
//! needs them, sealed at rest (`sealing`, the key from the configuration), handed to the
//! pipeline through [`UserTokens`], and refreshed where they came from when they expire —
//! once for all the requests that need it at that moment. Each is kept under its source's
//! key: the provider's id, or `route:<route id>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{token_request, ClientAuth, ClientCredentials, LoginError, ProviderTokens, Providers};
use crate::auth::principal::now_unix;
use crate::auth::user_tokens::{UserTokenFuture, UserTokenUnavailable, UserTokens};
use crate::authorization_server::sealing::Sealer;
use crate::authorization_server::store::{ProviderToken, Store};
use crate::authorization_server::AuthorizationServer;
use crate::config::authorization_server::AuthorizationServerSettings;
use crate::config::identity_providers::{IdentityProvider, ProviderKind};
use crate::config::Config;
use crate::model::route::{UpstreamOAuth, UserTokenSource};
use crate::outbound::HttpClient;

/// A token is refreshed this long before it expires (a request must not carry a token
/// that dies on its way).
const REFRESH_AHEAD_SECS: u64 = 30;
/// Opened tokens are kept in memory at most this long (a revocation at the provider or a
/// new login is seen within it).
const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_ENTRIES: u64 = 10_000;
/// A replica's claim on refreshing a token lapses after this long (a replica that stopped
/// mid-refresh does not hold it forever): longer than the claimed work can take, the
/// exchange (below) and three store calls of at most 30 s (`redis.timeout`'s ceiling)…
const CLAIM_TTL: Duration = Duration::from_secs(180);
/// …and its refresh gives up after this long (discovery at the source, five fetches of
/// 10 s at most, and the token request), well before the claim lapses.
const CLAIM_HOLD: Duration = Duration::from_secs(75);
/// A token obtained by another replica is used if it lives at least this much longer.
const MIN_LEFT_SECS: u64 = 5;
/// How long a request waits for another replica's refresh of its token before it is
/// answered 503.
const CLAIM_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting replica looks for the refreshed token.
const CLAIM_POLL: Duration = Duration::from_millis(50);

/// In-memory cache of opened tokens: `(subject, provider)` → token and expiry.
pub(in crate::authorization_server) type TokenCache =
    moka::future::Cache<(String, String), Option<(String, Option<u64>)>>;

pub(in crate::authorization_server) fn new_cache() -> TokenCache {
    moka::future::Cache::builder()
        .max_capacity(CACHE_ENTRIES)
        .time_to_live(CACHE_TTL)
        .build()
}

/// What associated data binds a sealed token to: its user, provider and role.
fn seal_context(subject: &str, provider: &str, role: &str) -> String {
    format!("{subject}\u{0}{provider}\u{0}{role}")
}

fn sealer(settings: &AuthorizationServerSettings) -> Option<Sealer> {
    let key = settings.token_encryption_key.as_ref()?;
    let bytes = crate::config::secret::parse_key_32(key.expose()).ok()?;
    Sealer::new(&bytes).ok()
}

/// Whether any route forwards this provider's tokens (otherwise they are not kept at all).
pub(super) fn wanted(config: &Config, provider: &str) -> bool {
    config
        .routes
        .iter()
        .any(|route| route.user_token.as_ref().is_some_and(|t| t.key == provider))
}

/// Who issued kept tokens, to whom: a refresh goes to the same server as the same client.
/// Both `None` for identity providers (their configuration says).
#[derive(Debug, Clone, Default)]
pub(super) struct Issuance {
    pub client_id: Option<String>,
    pub issuer: Option<String>,
}

/// Seals and stores what a provider or an upstream's authorization server issued.
pub(super) async fn keep(
    store: &dyn Store,
    settings: &AuthorizationServerSettings,
    subject: &str,
    provider: &str,
    tokens: &ProviderTokens,
    issuance: Issuance,
) -> Result<(), String> {
    let sealer = sealer(settings).ok_or("no token_encryption_key")?;
    let record = seal(&sealer, settings, subject, provider, tokens, issuance)?;
    store
        .put_provider_token(subject, provider, record)
        .await
        .map_err(|e| e.to_string())
}

fn seal(
    sealer: &Sealer,
    settings: &AuthorizationServerSettings,
    subject: &str,
    provider: &str,
    tokens: &ProviderTokens,
    issuance: Issuance,
) -> Result<ProviderToken, String> {
    let now = now_unix();
    let access = sealer
        .seal(
            &tokens.access_token,
            &seal_context(subject, provider, "access"),
        )
        .ok_or("sealing failed")?;
    let refresh = match &tokens.refresh_token {
        Some(token) => Some(
            sealer
                .seal(token, &seal_context(subject, provider, "refresh"))
                .ok_or("sealing failed")?,
        ),
        None => None,
    };
    Ok(ProviderToken {
        access,
        refresh,
        client_id: issuance.client_id,
        issuer: issuance.issuer,
        expires_at: tokens.expires_in.map(|secs| now + secs),
        // As long as a login through it can last (its refresh family's horizon).
        keep_until: now + 3 * settings.refresh_token_ttl.as_secs(),
    })
}

impl UserTokens for Arc<AuthorizationServer> {
    fn token<'a>(&'a self, subject: &'a str, provider: &'a str) -> UserTokenFuture<'a> {
        Box::pin(async move {
            let key = (subject.to_string(), provider.to_string());
            if let Some(Some((token, expires_at))) = self.provider_tokens.get(&key).await {
                if !about_to_expire(expires_at) {
                    return Ok(Some(token));
                }
                self.provider_tokens.invalidate(&key).await;
            }
            // One load (and refresh) for every request waiting on this user right now.
            self.provider_tokens
                .try_get_with(key, AuthorizationServer::load(self, subject, provider))
                .await
                .map(|entry| entry.map(|(token, _)| token))
                .map_err(|e| UserTokenUnavailable(e.to_string()))
        })
    }
}

fn about_to_expire(expires_at: Option<u64>) -> bool {
    expires_at.is_some_and(|at| at <= now_unix() + REFRESH_AHEAD_SECS)
}

/// Whether `record` holds a token another replica obtained after this one read the token
/// `seen`, that can go with a request now (even within the refresh margin: a token that
/// lives less than the margin would otherwise be refreshed by every replica in turn).
fn newer(record: &ProviderToken, seen: &str) -> bool {
    record.access != seen
        && record
            .expires_at
            .is_none_or(|at| at > now_unix() + MIN_LEFT_SECS)
}

impl AuthorizationServer {
    /// The stored token, opened, refreshed at the provider first when it is about to
    /// expire — by one replica at a time: the others wait for its result in the store.
    async fn load(
        self: &Arc<Self>,
        subject: &str,
        provider_id: &str,
    ) -> Result<Loaded, UserTokenUnavailable> {
        let live = self.live.load_full();
        if source_of(&live, provider_id).is_none() {
            return Ok(None);
        }
        let Some(sealer) = sealer(&live.settings) else {
            return Ok(None);
        };
        let seen = match self.open_kept(subject, provider_id, &sealer).await? {
            Kept::Fresh(token) => return Ok(Some(token)),
            Kept::Gone => return Ok(None),
            Kept::Unusable => return self.forget_unusable(subject, provider_id).await,
            Kept::Stale { record, .. } => record.access,
        };
        let claim = crate::authorization_server::random_token();
        let give_up = Instant::now() + CLAIM_WAIT;
        loop {
            let granted = self
                .store
                .claim_provider_refresh(subject, provider_id, &claim, CLAIM_TTL)
                .await;
            match granted {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    // The claim may have been taken all the same (an answer that came late).
                    self.release(subject, provider_id, &claim).await;
                    return Err(UserTokenUnavailable(error.to_string()));
                }
            }
            // Another replica (or an earlier request here) is refreshing it: its result,
            // once stored, serves here too.
            if Instant::now() >= give_up {
                return Err(UserTokenUnavailable(format!(
                    "another refresh of this token did not end within {CLAIM_WAIT:?}"
                )));
            }
            tokio::time::sleep(CLAIM_POLL).await;
            if let Some(found) = self
                .refreshed_since(subject, provider_id, &sealer, &seen)
                .await?
            {
                return Ok(found);
            }
        }
        // Holding the claim, the refresh runs as a task of its own, to its end even if the
        // requests waiting on it go away (cut off midway, a rotated refresh token could go
        // unstored); shutdown waits for it.
        let server = Arc::clone(self);
        let (owner, source, held) = (subject.to_string(), provider_id.to_string(), claim.clone());
        let refreshing = self
            .refreshes
            .spawn(async move { server.refresh_holding(&owner, &source, &seen, &held).await });
        match refreshing.await {
            Ok(refreshed) => refreshed,
            Err(error) => {
                self.release(subject, provider_id, &claim).await;
                Err(UserTokenUnavailable(format!("the refresh failed: {error}")))
            }
        }
    }

    /// The claimed part of a refresh: the exchange at the token's source, the new token
    /// stored, the claim released — kept instead when the new token could not be stored,
    /// so that no replica spends the refresh token it replaced before the claim lapses.
    async fn refresh_holding(
        &self,
        subject: &str,
        provider_id: &str,
        seen: &str,
        claim: &str,
    ) -> Result<Loaded, UserTokenUnavailable> {
        let live = self.live.load_full();
        let (Some(source), Some(sealer)) = (source_of(&live, provider_id), sealer(&live.settings))
        else {
            self.release(subject, provider_id, claim).await;
            return Ok(None);
        };
        let (refreshed, stored) = self
            .refresh_claimed(subject, provider_id, &live, source, &sealer, seen)
            .await;
        if stored {
            self.release(subject, provider_id, claim).await;
        }
        refreshed
    }

    /// At shutdown, once requests have drained: waits up to `within` for the users' token
    /// refreshes still running, so that none is cut off with its new refresh token
    /// unstored. Every worker calls it: a refresh runs on the worker that started it, which
    /// must keep running until it ends.
    pub async fn finish_refreshes(&self, within: Duration) {
        self.refreshes.close();
        if tokio::time::timeout(within, self.refreshes.wait())
            .await
            .is_err()
        {
            tracing::warn!("a user token refresh was still running when the shutdown grace ended");
        }
    }

    async fn release(&self, subject: &str, provider_id: &str, claim: &str) {
        if let Err(error) = self
            .store
            .release_provider_refresh(subject, provider_id, claim)
            .await
        {
            // Not fatal: the claim lapses after CLAIM_TTL.
            tracing::warn!(source = provider_id, %error, "could not release a token refresh claim");
        }
    }

    /// What another replica's refresh left, once there is something other than the token
    /// `seen` first: the token it stored if usable (even within the refresh margin: this
    /// request goes at once), or none if it forgot the token. `None` while nothing changed.
    async fn refreshed_since(
        &self,
        subject: &str,
        provider_id: &str,
        sealer: &Sealer,
        seen: &str,
    ) -> Result<Option<Loaded>, UserTokenUnavailable> {
        Ok(match self.open_kept(subject, provider_id, sealer).await? {
            Kept::Fresh(token) => Some(Some(token)),
            Kept::Gone => Some(None),
            Kept::Stale { record, access, .. } if newer(&record, seen) => {
                Some(Some((access, record.expires_at)))
            }
            Kept::Stale { .. } | Kept::Unusable => None,
        })
    }

    /// The kept token, opened, and whether it can be used as it is.
    async fn open_kept(
        &self,
        subject: &str,
        provider_id: &str,
        sealer: &Sealer,
    ) -> Result<Kept, UserTokenUnavailable> {
        let Some(record) = self
            .store
            .provider_token(subject, provider_id, now_unix())
            .await
            .map_err(|e| UserTokenUnavailable(e.to_string()))?
        else {
            return Ok(Kept::Gone);
        };
        let access = sealer.open(
            &record.access,
            &seal_context(subject, provider_id, "access"),
        );
        let refresh = record
            .refresh
            .as_deref()
            .and_then(|r| sealer.open(r, &seal_context(subject, provider_id, "refresh")));
        Ok(match (access, refresh) {
            (Some(access), _) if !about_to_expire(record.expires_at) => {
                Kept::Fresh((access, record.expires_at))
            }
            (Some(access), Some(refresh)) => Kept::Stale {
                record,
                access,
                refresh,
            },
            // A key that changed (or a record tampered with), or an expired token with no
            // way to renew it: nothing usable is left.
            _ => Kept::Unusable,
        })
    }

    /// Refreshes the kept token at its source, holding the claim to do so. Also says
    /// whether the store holds what the source now knows (false: a new refresh token was
    /// issued and could not be stored).
    async fn refresh_claimed(
        &self,
        subject: &str,
        provider_id: &str,
        live: &Live,
        source: Source<'_>,
        sealer: &Sealer,
        seen: &str,
    ) -> (Result<Loaded, UserTokenUnavailable>, bool) {
        let unavailable = |e: String| UserTokenUnavailable(e);
        // Read again: another replica may have refreshed it before the claim was ours.
        let kept = match self.open_kept(subject, provider_id, sealer).await {
            Ok(kept) => kept,
            Err(error) => return (Err(error), true),
        };
        let (record, refresh) = match kept {
            Kept::Fresh(token) => return (Ok(Some(token)), true),
            Kept::Gone => return (Ok(None), true),
            Kept::Unusable => return (self.forget_unusable(subject, provider_id).await, true),
            Kept::Stale { record, access, .. } if newer(&record, seen) => {
                return (Ok(Some((access, record.expires_at))), true)
            }
            Kept::Stale {
                record, refresh, ..
            } => (record, refresh),
        };
        let exchange = async {
            match source {
                Source::Provider(provider) => {
                    refresh_at(&self.providers, &live.client, provider, &refresh).await
                }
                Source::Upstream(oauth) => {
                    super::connect::refresh(
                        &self.connections,
                        &live.client,
                        oauth,
                        &record,
                        &refresh,
                    )
                    .await
                }
            }
        };
        // Bounded well within the claim's lifetime: past it, another replica could spend
        // the same refresh token.
        let refreshed = tokio::time::timeout(CLAIM_HOLD, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(LoginError::Unreachable(format!(
                    "no answer within {CLAIM_HOLD:?}"
                )))
            });
        let tokens = match refreshed {
            Ok(mut tokens) => {
                // Servers that do not rotate refresh tokens send none back.
                tokens.refresh_token.get_or_insert(refresh);
                tokens
            }
            Err(LoginError::Refused(why)) => {
                let forgotten = self.forget(subject, provider_id, &why).await;
                return (forgotten.map(|()| None), true);
            }
            // An outage or an odd answer says nothing about the grant: try again later.
            Err(error) => return (Err(unavailable(error.to_string())), true),
        };
        let record = match seal(
            sealer,
            &live.settings,
            subject,
            provider_id,
            &tokens,
            Issuance {
                client_id: record.client_id,
                issuer: record.issuer,
            },
        ) {
            Ok(record) => record,
            Err(error) => return (Err(unavailable(error)), false),
        };
        let expires_at = record.expires_at;
        if let Err(error) = self
            .store
            .put_provider_token(subject, provider_id, record)
            .await
        {
            tracing::warn!(
                source = provider_id,
                %error,
                "a refreshed user token could not be stored; this replica uses it, and its refresh claim is kept until it lapses"
            );
        } else {
            return (Ok(Some((tokens.access_token, expires_at))), true);
        }
        (Ok(Some((tokens.access_token, expires_at))), false)
    }

    async fn forget_unusable(
        &self,
        subject: &str,
        provider_id: &str,
    ) -> Result<Loaded, UserTokenUnavailable> {
        self.forget(subject, provider_id, "it expired and cannot be refreshed")
            .await?;
        Ok(None)
    }

    /// Forgets a user's token that can no longer be used, so that the gateway's own refresh
    /// is refused too and the user signs in (and connects) again instead of meeting 401s.
    async fn forget(
        &self,
        subject: &str,
        key: &str,
        why: &str,
    ) -> Result<(), UserTokenUnavailable> {
        tracing::info!(source = key, why, "a user's upstream token is forgotten");
        self.store
            .put_provider_token(subject, key, tombstone())
            .await
            .map_err(|e| UserTokenUnavailable(e.to_string()))
    }
}

/// A record that is already past keeping: stores drop it (Redis expires it at once, SQLite
/// never returns it and purges it later).
fn tombstone() -> ProviderToken {
    ProviderToken {
        access: String::new(),
        refresh: None,
        client_id: None,
        issuer: None,
        expires_at: Some(0),
        keep_until: 1,
    }
}

/// A user's token and its expiry, or none kept.
type Loaded = Option<(String, Option<u64>)>;

/// A kept token as [`AuthorizationServer::open_kept`] found it.
enum Kept {
    /// Usable as it is: the token and its expiry.
    Fresh((String, Option<u64>)),
    /// About to expire (its access token opened), with the refresh token that renews it.
    Stale {
        record: ProviderToken,
        access: String,
        refresh: String,
    },
    /// Expired with no way to renew it, or sealed under another key.
    Unusable,
    /// None kept.
    Gone,
}

/// Where the token kept under `key` comes from, in the configuration in force.
fn source_of<'a>(live: &'a Live, key: &str) -> Option<Source<'a>> {
    match live.settings.identity_provider(key) {
        Some(provider) => Some(Source::Provider(provider)),
        None => live
            .connections
            .get(key)
            .map(|oauth| Source::Upstream(oauth)),
    }
}

/// Where a kept token came from, and so where it is refreshed.
enum Source<'a> {
    Provider(&'a IdentityProvider),
    Upstream(&'a UpstreamOAuth),
}

/// A refresh-token grant at the provider's token endpoint.
async fn refresh_at(
    providers: &Providers,
    client: &HttpClient,
    provider: &IdentityProvider,
    refresh_token: &str,
) -> Result<ProviderTokens, LoginError> {
    let (endpoint, auth) = match &provider.kind {
        ProviderKind::Oidc { .. } => {
            let discovered = providers.discover(client, provider).await?;
            (discovered.token_endpoint.clone(), discovered.client_auth)
        }
        ProviderKind::GitHub { web_url, .. } => (
            format!("{web_url}/login/oauth/access_token"),
            ClientAuth::Post,
        ),
    };
    let answer = token_request(
        client,
        &endpoint,
        ClientCredentials::of(provider),
        auth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await?;
    ProviderTokens::from_answer(&answer)
}

/// What the token service needs from the configuration in force.
pub(in crate::authorization_server) struct Live {
    pub settings: AuthorizationServerSettings,
    pub client: HttpClient,
    /// Routes connecting to their upstream's authorization server, by token key.
    pub connections: HashMap<String, Arc<UpstreamOAuth>>,
}

impl Live {
    pub fn of(config: &Config) -> Option<Arc<Live>> {
        let connections = config
            .routes
            .iter()
            .filter_map(|route| {
                let forwarding = route.user_token.as_ref()?;
                match &forwarding.source {
                    UserTokenSource::UpstreamOAuth(oauth) => {
                        Some((forwarding.key.clone(), oauth.clone()))
                    }
                    UserTokenSource::Provider(_) => None,
                }
            })
            .collect();
        Some(Arc::new(Live {
            settings: config.authorization_server.clone()?,
            client: config.client.clone(),
            connections,
        }))
    }
}
