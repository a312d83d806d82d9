//! `[redis]` → [`RedisSettings`].

use std::path::Path;
use std::time::Duration;

use super::Collector;
use crate::config::raw::RawRedis;
use crate::config::redis::RedisSettings;
use crate::config::secret;

pub(super) fn compile_redis(
    raw: &RawRedis,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<RedisSettings> {
    match url::Url::parse(&raw.url) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                c.push(
                    "redis.url",
                    "carries credentials: put the user in redis.username and the password in password_env or password_file (a URL ends up in logs)",
                );
            }
        }
        _ => c.push(
            "redis.url",
            format!(
                "{:?} is not a Redis URL: use \"redis://host:6379/0\", or \"rediss://…\" for TLS",
                raw.url
            ),
        ),
    }
    let password = if raw.password_env.is_none() && raw.password_file.is_none() {
        None
    } else {
        c.ok(
            "redis.password",
            secret::resolve(
                raw.password_env.as_deref(),
                raw.password_file.as_deref(),
                base_dir,
                "password_env / password_file",
            ),
        )
    };
    let ca_file = raw.ca_file.as_ref().map(|file| base_dir.join(file));
    if ca_file.is_some() && !raw.url.starts_with("rediss://") {
        c.push(
            "redis.ca_file",
            "applies to TLS only: use a rediss:// URL, or remove ca_file",
        );
    }
    let timeout = raw.timeout.map_or(Duration::from_secs(2), |t| t.0);
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(30) {
        c.push(
            "redis.timeout",
            format!("{timeout:?} is out of range: use 100ms to 30s (default 2s)"),
        );
    }
    if raw.key_prefix.is_empty() {
        c.warn(
            "redis.key_prefix",
            "is empty: the gateway's keys mix with whatever else this Redis database holds",
        );
    }
    Some(RedisSettings {
        url: raw.url.clone(),
        username: raw.username.clone(),
        password,
        ca_file,
        key_prefix: raw.key_prefix.clone(),
        timeout,
    })
}
