//! Verification keys for one JWT issuer: parsed from a JWKS (RFC 7517) or a PEM public key,
//! and — for a remote `jwks_uri` — kept fresh.
//!
//! Remote keys live in an `ArcSwap`, not an expiring cache: the last good set keeps serving
//! when the JWKS endpoint fails (an IdP outage must not become a gateway outage). A background
//! task refreshes on an interval; a token with an unknown `kid` triggers at most one refetch
//! per `min_refetch` (debounced, single-flight), which is how key rotation is picked up early.

use crate::observability::metrics::METRICS;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{header, Request, Uri};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::local::LOCAL_AUTHORITY;
use crate::body;
use crate::outbound::{self, HttpClient};

const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 64;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One usable public key and the algorithms it may verify.
pub struct VerificationKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// The keys of one issuer at one moment.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a JWKS document, keeping only signature keys usable with `allowed` algorithms.
    /// Symmetric (`oct`) keys are always dropped: HMAC with a published key is forgery.
    pub fn from_jwks(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, String> {
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no \"keys\" array")?;
        let keys = entries
            .iter()
            .take(MAX_KEYS)
            .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
            .filter_map(|jwk| VerificationKey::from_jwk(&jwk, allowed))
            .collect();
        Ok(KeySet { keys })
    }

    /// Reads one PEM public key (RSA, EC or Ed25519) usable with `allowed` algorithms.
    pub fn from_pem(pem: &[u8], allowed: &[Algorithm]) -> Result<KeySet, String> {
        let candidates = [
            (DecodingKey::from_rsa_pem(pem), AlgorithmFamily::Rsa),
            (DecodingKey::from_ec_pem(pem), AlgorithmFamily::Ec),
            (DecodingKey::from_ed_pem(pem), AlgorithmFamily::Ed),
        ];
        for (key, family) in candidates {
            if let Ok(key) = key {
                let algorithms: Vec<Algorithm> = allowed
                    .iter()
                    .copied()
                    .filter(|alg| alg.family() == family)
                    .collect();
                if algorithms.is_empty() {
                    return Err(format!(
                        "the PEM holds a {family:?} key but `algorithms` allows none of that family"
                    ));
                }
                return Ok(KeySet {
                    keys: vec![VerificationKey {
                        kid: None,
                        algorithms,
                        key,
                    }],
                });
            }
        }
        Err("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into())
    }

    /// Keys that may verify a token with this `kid` and `alg`. When either side has no `kid`
    /// (a PEM key, a token without one) every key of the right algorithm is a candidate
    /// (bounded by `MAX_KEYS`).
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.algorithms.contains(&alg))
            .filter(move |k| match (kid, k.kid.as_deref()) {
                (Some(wanted), Some(have)) => wanted == have,
                _ => true,
            })
            .map(|k| &k.key)
    }
}

impl VerificationKey {
    fn from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerificationKey> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        // RFC 7517 §4.3: a key whose `key_ops` are listed must allow "verify".
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.contains(&KeyOperations::Verify) {
                return None;
            }
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            _ => return None,
        };
        let declared = match jwk.common.key_algorithm {
            Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok()?),
            None => None,
        };
        let algorithms: Vec<Algorithm> = by_type
            .into_iter()
            .filter(|alg| allowed.contains(alg))
            .filter(|alg| declared.is_none_or(|d| d == *alg))
            .collect();
        if algorithms.is_empty() {
            return None;
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(VerificationKey {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        })
    }
}

/// Where an issuer's keys come from.
pub enum KeySource {
    Static(KeySet),
    Remote(Arc<RemoteJwks>),
    /// The built-in authorization server's keys, published in process.
    Local,
}

impl KeySource {
    /// The current keys (remote: the last good set; empty before the first success).
    pub fn current(&self) -> KeysGuard<'_> {
        match self {
            KeySource::Static(set) => KeysGuard::Static(set),
            KeySource::Remote(remote) => KeysGuard::Remote(remote.current.load_full()),
            KeySource::Local => KeysGuard::Remote(LOCAL_AUTHORITY.keys()),
        }
    }

    /// For an unknown `kid`: refetch unless one happened within `min_refetch`. Returns
    /// whether looking again can help (a fetch may also have completed while we waited).
    pub async fn refresh_for_unknown_key(&self) -> bool {
        match self {
            KeySource::Static(_) | KeySource::Local => false,
            KeySource::Remote(remote) => {
                remote.refetch_debounced().await;
                true
            }
        }
    }

    /// Takes over the keys another source of the same JWKS already loaded (see
    /// `Verifiers::adopt_keys`).
    pub fn adopt(&self, previous: &KeySource) {
        if let (KeySource::Remote(new), KeySource::Remote(old)) = (self, previous) {
            if new.uri == old.uri && old.loaded.load(Ordering::Acquire) {
                new.current.store(old.current.load_full());
                new.loaded.store(true, Ordering::Release);
            }
        }
    }

    pub fn has_loaded(&self) -> bool {
        match self {
            KeySource::Static(_) => true,
            KeySource::Remote(remote) => remote.loaded.load(Ordering::Acquire),
            KeySource::Local => LOCAL_AUTHORITY.has_published(),
        }
    }

    pub fn start_refresher(&self) {
        if let KeySource::Remote(remote) = self {
            RemoteJwks::spawn_refresher(remote);
        }
    }
}

pub enum KeysGuard<'a> {
    Static(&'a KeySet),
    Remote(Arc<KeySet>),
}

impl std::ops::Deref for KeysGuard<'_> {
    type Target = KeySet;
    fn deref(&self) -> &KeySet {
        match self {
            KeysGuard::Static(set) => set,
            KeysGuard::Remote(set) => set,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Refetch {
    started: Instant,
    finished: Instant,
}

/// A `jwks_uri` and what we last fetched from it.
pub struct RemoteJwks {
    pub uri: Uri,
    issuer_id: String,
    client: HttpClient,
    allowed: Vec<Algorithm>,
    current: ArcSwap<KeySet>,
    loaded: AtomicBool,
    /// The last unknown-`kid` refetch.
    last_refetch: Mutex<Option<Refetch>>,
    refresh_interval: Duration,
    min_refetch: Duration,
    refresher_started: AtomicBool,
}

impl RemoteJwks {
    pub fn new(
        issuer_id: String,
        uri: Uri,
        client: HttpClient,
        allowed: Vec<Algorithm>,
        refresh_interval: Duration,
        min_refetch: Duration,
    ) -> Self {
        Self {
            uri,
            issuer_id,
            client,
            allowed,
            current: ArcSwap::from_pointee(KeySet::default()),
            loaded: AtomicBool::new(false),
            last_refetch: Mutex::new(None),
            refresh_interval,
            min_refetch,
            refresher_started: AtomicBool::new(false),
        }
    }

    /// Fetches the JWKS; on success replaces the key set, on failure keeps the old one.
    async fn fetch_and_store(&self) -> bool {
        let fetched = self.fetch().await;
        METRICS.jwks_fetch(&self.issuer_id, fetched.is_ok());
        match fetched {
            Ok(set) => {
                tracing::debug!(issuer = %self.issuer_id, keys = set.len(), "JWKS loaded");
                self.current.store(Arc::new(set));
                self.loaded.store(true, Ordering::Release);
                true
            }
            Err(reason) => {
                tracing::warn!(issuer = %self.issuer_id, uri = %self.uri, %reason,
                    "JWKS fetch failed; keeping the last good keys");
                false
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let request = Request::get(self.uri.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        let fetched = outbound::fetch(&self.client, request, MAX_JWKS_BYTES, FETCH_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if !fetched.status.is_success() {
            return Err(format!("HTTP {}", fetched.status));
        }
        let set = KeySet::from_jwks(&fetched.body, &self.allowed)?;
        if set.is_empty() {
            return Err("JWKS holds no usable signature key for the allowed algorithms".into());
        }
        Ok(set)
    }

    /// Single flight and debounced: a caller that waited while another unknown-`kid` fetch
    /// ran uses that fetch's keys instead of starting its own, and at most one fetch starts
    /// per `min_refetch` (background refreshes do not count: a rotation right after one is
    /// still picked up).
    async fn refetch_debounced(&self) -> bool {
        let asked = Instant::now();
        let mut last = self.last_refetch.lock().await;
        if let Some(refetch) = *last {
            // A fetch that ended after we asked (we waited for it on the lock) is ours too.
            if refetch.finished >= asked || refetch.started.elapsed() < self.min_refetch {
                return false;
            }
        }
        let started = Instant::now();
        let loaded = self.fetch_and_store().await;
        *last = Some(Refetch {
            started,
            finished: Instant::now(),
        });
        loaded
    }

    /// Starts the periodic refresh (once). The task holds only a weak reference so a
    /// replaced configuration's refresher ends by itself.
    fn spawn_refresher(this: &Arc<Self>) {
        if this.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(this);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Some(remote) = weak.upgrade() else { return };
                if !first {
                    // Until a first success, retry at the refetch pace rather than waiting a
                    // whole refresh interval with no keys.
                    let interval = if remote.loaded.load(Ordering::Acquire) {
                        remote.refresh_interval
                    } else {
                        remote
                            .min_refetch
                            .max(Duration::from_secs(1))
                            .min(remote.refresh_interval)
                    };
                    drop(remote);
                    tokio::time::sleep(interval).await;
                    let Some(again) = weak.upgrade() else { return };
                    again.refresh_now().await;
                } else {
                    first = false;
                    remote.refresh_now().await;
                }
            }
        });
    }

    async fn refresh_now(&self) {
        self.fetch_and_store().await;
    }
}
