//! The compiled `[redis]` section: the store several replicas share.

use std::path::PathBuf;
use std::time::Duration;

use super::secret::Secret;

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://…` (TLS); no credentials inside (they come from
    /// `username` and the password source).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Extra trusted CA (PEM) for `rediss://`, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Every key starts with this, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Bound on connecting and on each command: a Redis that does not answer makes what
    /// needs it fail fast (503) instead of hanging requests.
    pub timeout: Duration,
}
