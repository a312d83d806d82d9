//! The one way the gateway connects to Redis (`[redis]`): the authorization server's store
//! and the request pipeline's shared state (session bindings, rate limits) both use it.
//!
//! A `ConnectionManager` multiplexes every caller over one connection and reconnects by
//! itself; each command and each connection attempt is bounded by `timeout`, so a Redis
//! that stops answering makes callers fail fast instead of piling up.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo, ScriptInvocation};
use tokio::time::Instant;

use crate::config::redis::RedisSettings;
use crate::observability::Throttle;

/// Why connecting failed; never carries the password.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {reason}")]
pub struct ConnectError {
    /// The configured URL (any password in it masked).
    pub url: String,
    pub reason: String,
}

/// Connects (and checks the server answers) with the configured credentials and bounds.
pub async fn connect(settings: &RedisSettings) -> Result<ConnectionManager, ConnectError> {
    let fail = |reason: String| ConnectError {
        url: redacted(&settings.url),
        reason,
    };
    let client = client(settings).map_err(fail)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout))
        // Reconnect attempts are quick and few: a call waits for at most one, and a failed
        // one is retried by the next call.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(settings.timeout);
    let manager = tokio::time::timeout(
        settings.timeout,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| fail(format!("no answer within {:?}", settings.timeout)))?
    .map_err(|e| fail(e.to_string()))?;
    let mut probe = manager.clone();
    let _: String =
        tokio::time::timeout(settings.timeout, redis::cmd("PING").query_async(&mut probe))
            .await
            .map_err(|_| fail(format!("no answer within {:?}", settings.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
    Ok(manager)
}

fn client(settings: &RedisSettings) -> Result<redis::Client, String> {
    let info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let mut credentials = info.redis_settings().clone();
    if let Some(username) = &settings.username {
        credentials = credentials.set_username(username);
    }
    if let Some(password) = &settings.password {
        credentials = credentials.set_password(password.expose());
    }
    let info = info.set_redis_settings(credentials);
    match &settings.ca_file {
        Some(ca_file) if settings.url.starts_with("rediss://") => {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(trusted_roots(ca_file)?),
            };
            redis::Client::build_with_tls(info, certificates).map_err(|e| e.to_string())
        }
        _ => redis::Client::open(info).map_err(|e| e.to_string()),
    }
}

/// The PEM bundle a `rediss://` connection with `ca_file` trusts: the CA file and the system's
/// roots (a root certificate given to the redis crate replaces its default roots).
fn trusted_roots(ca_file: &Path) -> Result<Vec<u8>, String> {
    let mut bundle = std::fs::read(ca_file)
        .map_err(|e| format!("cannot read redis.ca_file {}: {e}", ca_file.display()))?;
    bundle.push(b'\n');
    let mut usable = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        // The redis crate refuses a bundle with a certificate rustls cannot use.
        if usable.add(certificate.clone()).is_ok() {
            bundle.extend_from_slice(pem_certificate(certificate.as_ref()).as_bytes());
        }
    }
    Ok(bundle)
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The URL for messages: never a password, should one be there despite the configuration.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// The shared store (Redis) did not answer, so an unknown session cannot be bound.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the shared session store (Redis) is unavailable")]
pub struct SharedStateUnavailable;

/// Lowercase hex of SHA-256: key material that must not be stored as is (session ids,
/// subjects), at a fixed length.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// How long calls are paused after Redis failed (then one caller probes).
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Redis failures are logged at most this often (with the count of those not logged).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The Redis connection the request pipeline's shared state goes through — the session
/// bindings here and the rate limits (`pipeline::limits`) — with the bounds that keep a
/// Redis outage from stalling requests:
/// - every call is bounded by `[redis] timeout`, including the wait for a reconnection
///   (the connection manager's own bound covers one command on a live connection);
/// - after a failure, calls are not even tried for [`PAUSE_AFTER_FAILURE`]; then a single
///   caller probes while the others keep failing fast, so an outage costs one caller a
///   timeout per pause instead of every request a timeout;
/// - failures are logged at most every [`WARN_INTERVAL`], with how many there were.
pub struct SharedRedis {
    connection: ConnectionManager,
    key_prefix: String,
    timeout: Duration,
    pause: Pause,
    warnings: Throttle,
}

impl SharedRedis {
    /// Wraps a connection made by `redis_connection::connect` with the same settings.
    pub fn new(connection: ConnectionManager, settings: &RedisSettings) -> Self {
        Self {
            connection,
            key_prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            pause: Pause::new(),
            warnings: Throttle::new(WARN_INTERVAL),
        }
    }

    /// A key in this deployment's namespace (`[redis] key_prefix`).
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }

    /// Runs one script call, bounded; `what` names it in the warning if it fails.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        what: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, SharedStateUnavailable> {
        if !self.pause.may_try() {
            self.report(what, "paused after a failure");
            return Err(SharedStateUnavailable);
        }
        let mut connection = self.connection.clone();
        let outcome =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await;
        match outcome {
            Ok(Ok(value)) => {
                if self.pause.succeeded() {
                    tracing::info!(
                        "Redis answers again: session bindings and rate limits are shared again"
                    );
                }
                Ok(value)
            }
            Ok(Err(error)) => {
                self.pause.failed();
                self.report(what, &error.to_string());
                Err(SharedStateUnavailable)
            }
            Err(_) => {
                self.pause.failed();
                self.report(what, &format!("no answer within {:?}", self.timeout));
                Err(SharedStateUnavailable)
            }
        }
    }

    /// Logs a failure (rate-limited).
    pub fn report(&self, what: &'static str, error: &str) {
        if let Some(suppressed) = self.warnings.allow() {
            tracing::warn!(
                operation = what,
                %error,
                failures_since_last_warning = suppressed + 1,
                "Redis unavailable for shared state: session ids this replica has not seen are \
                 refused (503) and rate limits admit requests (fail open) until it answers \
                 (logged at most every 10 s)"
            );
        }
    }
}

/// After a failure, no call for a while; then one probe at a time.
struct Pause {
    started: Instant,
    /// Milliseconds since `started` until which calls are paused; 0: not paused.
    until_ms: AtomicU64,
}

impl Pause {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn pause_ms() -> u64 {
        u64::try_from(PAUSE_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether to call Redis now: always when not paused (one atomic load); once the pause
    /// is over, only the one caller that claims the probe (the pause is extended for the
    /// others while it runs).
    fn may_try(&self) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .until_ms
                .compare_exchange(
                    until,
                    now.saturating_add(Self::pause_ms()).max(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Whether it was paused (Redis is back).
    fn succeeded(&self) -> bool {
        self.until_ms.load(Ordering::Relaxed) != 0 && self.until_ms.swap(0, Ordering::AcqRel) != 0
    }

    fn failed(&self) {
        let until = self.now_ms().saturating_add(Self::pause_ms()).max(1);
        self.until_ms.store(until, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_pauses_calls_then_one_caller_probes() {
        let pause = Pause::new();
        assert!(
            pause.may_try() && pause.may_try(),
            "not paused: everyone calls"
        );
        pause.failed();
        assert!(!pause.may_try(), "paused");
        tokio::time::advance(PAUSE_AFTER_FAILURE).await;
        assert!(pause.may_try(), "the pause is over: one probe");
        assert!(!pause.may_try(), "while it runs, the others do not call");
        assert!(pause.succeeded(), "the probe answered: no longer paused");
        assert!(!pause.succeeded(), "reported once");
        assert!(pause.may_try() && pause.may_try());
    }
}
