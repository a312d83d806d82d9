//! Redis: the store several replicas share (see the module docs of `store`). The observable
//! behaviour is the SQLite store's ([`super::sqlite`]): same outcomes for the same calls.
//!
//! # Key layout
//!
//! Every key is `{prefix}{kind}:{id}` (`prefix` from `redis.key_prefix`); digests (codes,
//! tokens, session ids, states) appear hex-encoded. Records are JSON, as in SQLite; the
//! fields scripts must read or change live beside the JSON in a hash.
//!
//! | key                               | type   | holds                                      | expires                  |
//! |-----------------------------------|--------|--------------------------------------------|--------------------------|
//! | `secret:{name}`                   | string | a server secret (raw bytes)                | never                    |
//! | `signing_keys`                    | set    | every kid (index)                          | never (trimmed by purge) |
//! | `signing_key:{kid}`               | hash   | `record`, `retired_at`, `publish_until`    | `publish_until`          |
//! | `clients`                         | set    | every registered client_id (index)         | never (trimmed by purge) |
//! | `client:{client_id}`              | hash   | `record`, `fingerprint`, `used`, `expires_at` | `expires_at` (touch pushes it) |
//! | `client_fingerprint:{fingerprint}`| set    | client_ids with this fingerprint (index)   | its last member's expiry |
//! | `pending:{id}`                    | string | a pending authorization request            | `expires_at`             |
//! | `login_state:{state}`             | string | a login in flight at an identity provider  | `expires_at`             |
//! | `code:{code}`                     | hash   | `record`, `client_id`, `used`, `expires_at`| `expires_at` + 600 s (replays) |
//! | `family:{family_id}`              | hash   | `revoked`, `expires_at`, `client_id`       | `expires_at`             |
//! | `client_families:{client_id}`     | set    | the families granted to a client (index)   | its last member's expiry |
//! | `family_refresh:{family_id}`      | set    | the family's refresh tokens                | its last member's expiry |
//! | `family_access:{family_id}`       | zset   | the family's access tokens (jti → expiry)  | its last member's expiry |
//! | `refresh:{token}`                 | hash   | `record`, `family_id`, `expires_at`, `rotated_at`, `successor` | `expires_at` |
//! | `access:{jti}`                    | string | the family an access token belongs to      | its `expires_at`         |
//! | `revoked_access`                  | zset   | revoked access tokens (jti → expiry)       | never (trimmed on read and by purge) |
//! | `consent:{subject}`               | hash   | client_id → consent                        | never (as in SQLite)     |
//! | `session:{id}`                    | string | a browser session                          | `expires_at`             |
//! | `rate:{window_secs}:{window_start}:{key}` | string | a fixed-window counter            | the window's end         |
//!
//! Reads check `expires_at` against the caller's clock as SQLite does, so a record is never
//! honoured past its lifetime even before Redis expires it; TTLs replace SQLite's purge.
//! A refresh token's JSON keeps the grant it was first stored with (a successor copies its
//! predecessor's): its `expires_at` field is the hash's. Likewise a client's `used` and a
//! signing key's `retired_at`/`publish_until`.
//!
//! # Scripts
//!
//! Whatever reads and then writes, or writes several keys that must agree, is one Lua script
//! (`EVALSHA`, loaded on first use and again after a Redis restart): a script runs alone, so
//! two replicas can never both redeem one code, fork a refresh chain, or record a token in a
//! family that is being revoked. The scripts: `put_code`, `redeem_code`, `put_refresh`,
//! `rotate_refresh`, `refresh` (a consistent read of a token and its family),
//! `revoke_family`, `record_access_token`, `put_client`, `delete_client`,
//! `delete_unused_clients`, `touch_client`, `retire_keys_except`, `server_secret`, `hit` and
//! `purge_expired`. Single commands are atomic by themselves: `delete_pending` is `DEL`,
//! `take_login_state` is `GETDEL`; plain writes of a record and its expiry are `MULTI`.
//!
//! Scripts derive their keys from the prefix (passed as `ARGV[1]`), so this is for a single
//! Redis (with replicas or Sentinel failover behind one address), not Redis Cluster.
//!
//! # Failures
//!
//! One [`ConnectionManager`] multiplexes every call and reconnects by itself. Each call is
//! bounded by `redis.timeout` (connecting included): a Redis that is down or silent makes
//! the call fail with a [`StoreError`] (503) instead of hanging the request.

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Script};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    BrowserSession, ClientDeletion, CodeGrant, Consent, Digest, LoginState, PendingAuthorization,
    ProviderToken, Redemption, RefreshGrant, RefreshLookup, RegisteredClient, Rotation, Store,
    StoreError, StoreFuture, StoreResult, StoredKey,
};
use crate::auth::principal::now_unix;
use crate::config::redis::RedisSettings;

/// How long a used code is remembered past its expiry, to recognise a late replay.
const REPLAY_MEMORY_SECS: u64 = 600;

pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
}

impl RedisStore {
    /// Connects (bounded by `settings.timeout`) and checks that Redis answers.
    pub async fn connect(settings: &RedisSettings) -> StoreResult<RedisStore> {
        let connection = crate::redis_connection::connect(settings)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(RedisStore {
            connection,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            scripts: Scripts::new(),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// An index key (one per store): `{prefix}{name}`.
    fn key_index(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Bounds one Redis exchange by the timeout and turns its failure into a [`StoreError`].
    async fn bounded<T>(
        &self,
        what: &str,
        work: impl Future<Output = RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError(format!("redis {what}: {error}"))),
            Err(_) => Err(StoreError(format!(
                "redis {what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> StoreResult<T> {
        let mut connection = self.connection.clone();
        self.bounded(what, cmd.query_async(&mut connection)).await
    }

    async fn pipeline<T: FromRedisValue>(&self, what: &str, pipe: &Pipeline) -> StoreResult<T> {
        let mut connection = self.connection.clone();
        self.bounded(what, pipe.query_async(&mut connection)).await
    }

    /// Runs `script` with the key prefix as `ARGV[1]` followed by `args`.
    async fn eval<T: FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        args: Vec<Vec<u8>>,
    ) -> StoreResult<T> {
        let mut call = script.prepare_invoke();
        call.arg(&self.prefix);
        for arg in args {
            call.arg(arg);
        }
        let mut connection = self.connection.clone();
        self.bounded(what, call.invoke_async(&mut connection)).await
    }

    /// Stores a JSON record that Redis deletes at `expires_at`.
    async fn put_until<T: Serialize>(
        &self,
        what: &str,
        key: String,
        record: &T,
        expires_at: u64,
    ) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(to_json(record)?)
            .ignore()
            .cmd("EXPIREAT")
            .arg(&key)
            .arg(expires_at)
            .ignore();
        self.pipeline(what, &pipe).await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        what: &str,
        key: String,
    ) -> StoreResult<Option<T>> {
        let record: Option<String> = self.query(what, redis::cmd("GET").arg(key)).await?;
        record.map(|r| from_json(&r)).transpose()
    }

    /// `HMGET key fields…` for every key, in one round trip.
    async fn hmget_each(
        &self,
        what: &str,
        keys: &[String],
        fields: &[&str],
    ) -> StoreResult<Vec<Vec<Option<String>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET").arg(key).arg(fields);
        }
        self.pipeline(what, &pipe).await
    }
}

fn fail(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(fail)
}

fn from_json<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

/// Whose provider token a key holds: a digest of subject and provider (subjects are not
/// key-safe text, and need not be readable in Redis).
fn provider_token_id(subject: &str, provider: &str) -> String {
    hex(&crate::auth::api_key::sha256(
        format!("{subject}\u{0}{provider}").as_bytes(),
    ))
}

fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A number as Redis returns it (a sorted-set score may come back as `"5000"` or `"5e3"`).
fn number(text: &str) -> StoreResult<u64> {
    text.parse::<u64>()
        .or_else(|_| text.parse::<f64>().map(|f| f as u64))
        .map_err(|_| StoreError(format!("corrupt number in Redis: {text:?}")))
}

/// `[jti, expires_at, jti, expires_at, …]` → pairs.
fn token_pairs(flat: &[String]) -> StoreResult<Vec<(String, u64)>> {
    flat.chunks(2)
        .map(|pair| match pair {
            [jti, expires_at] => Ok((jti.clone(), number(expires_at)?)),
            _ => Err(StoreError("malformed token list from Redis".into())),
        })
        .collect()
}

/// Script arguments (after the prefix), each one `ARGV` entry.
fn args<const N: usize>(values: [&dyn ArgText; N]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.bytes()).collect()
}

/// What a script argument can be made of.
trait ArgText: Sync {
    fn bytes(&self) -> Vec<u8>;
}

impl<T: ArgText + ?Sized> ArgText for &T {
    fn bytes(&self) -> Vec<u8> {
        (**self).bytes()
    }
}

impl ArgText for str {
    fn bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl ArgText for String {
    fn bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl ArgText for u64 {
    fn bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl ArgText for Vec<u8> {
    fn bytes(&self) -> Vec<u8> {
        self.clone()
    }
}

fn rotation(reply: Vec<String>) -> StoreResult<Rotation> {
    match reply.split_first() {
        Some((tag, [record, expires_at])) if tag == "rotated" => {
            let mut grant: RefreshGrant = from_json(record)?;
            grant.expires_at = number(expires_at)?;
            Ok(Rotation::Rotated(Box::new(grant)))
        }
        Some((tag, access)) if tag == "reused" => Ok(Rotation::Reused {
            revoked_access: token_pairs(access)?,
        }),
        Some((tag, [])) if tag == "invalid" => Ok(Rotation::Invalid),
        _ => Err(StoreError(format!(
            "unexpected rotate_refresh reply from Redis: {reply:?}"
        ))),
    }
}

fn redemption(reply: Vec<String>) -> StoreResult<Redemption> {
    match reply.split_first() {
        Some((tag, [record])) if tag == "fresh" => Ok(Redemption::Fresh(from_json(record)?)),
        Some((tag, [record])) if tag == "replayed" => Ok(Redemption::Replayed(from_json(record)?)),
        Some((tag, [])) if tag == "unknown" => Ok(Redemption::Unknown),
        _ => Err(StoreError("unexpected redeem_code reply from Redis".into())),
    }
}

/// A signing key from its hash fields: the JSON record with the retirement fields over it.
fn signing_key(fields: &[Option<String>]) -> StoreResult<Option<StoredKey>> {
    let [Some(record), retired_at, publish_until] = fields else {
        return Ok(None);
    };
    let mut key: StoredKey = from_json(record)?;
    key.retired_at = retired_at.as_deref().map(number).transpose()?;
    key.publish_until = publish_until.as_deref().map(number).transpose()?;
    Ok(Some(key))
}

/// A registered client from its hash fields (`record`, `used`).
fn registered_client(fields: &[Option<String>]) -> StoreResult<Option<RegisteredClient>> {
    let [Some(record), used, ..] = fields else {
        return Ok(None);
    };
    let mut client: RegisteredClient = from_json(record)?;
    client.used = used.as_deref() == Some("1");
    Ok(Some(client))
}

fn flag(value: bool) -> &'static str {
    if value {
        "1"
    } else {
        "0"
    }
}

impl Store for RedisStore {
    fn signing_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            let kids: Vec<String> = self
                .query(
                    "signing_keys",
                    redis::cmd("SMEMBERS").arg(self.key_index("signing_keys")),
                )
                .await?;
            let keys: Vec<String> = kids.iter().map(|k| self.key("signing_key", k)).collect();
            let rows = self
                .hmget_each(
                    "signing_keys",
                    &keys,
                    &["record", "retired_at", "publish_until"],
                )
                .await?;
            let mut found = Vec::new();
            for row in &rows {
                found.extend(signing_key(row)?);
            }
            found.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
            Ok(found)
        })
    }

    fn put_signing_key(&self, key: StoredKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let name = self.key("signing_key", &key.kid);
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("DEL").arg(&name).ignore();
            pipe.cmd("HSET")
                .arg(&name)
                .arg("record")
                .arg(to_json(&key)?);
            if let Some(retired_at) = key.retired_at {
                pipe.arg("retired_at").arg(retired_at);
            }
            if let Some(publish_until) = key.publish_until {
                pipe.arg("publish_until").arg(publish_until);
            }
            pipe.ignore();
            if let Some(publish_until) = key.publish_until {
                pipe.cmd("EXPIREAT").arg(&name).arg(publish_until).ignore();
            }
            pipe.cmd("SADD")
                .arg(self.key_index("signing_keys"))
                .arg(&key.kid)
                .ignore();
            self.pipeline("put_signing_key", &pipe).await
        })
    }

    fn retire_keys_except(
        &self,
        active_kid: &str,
        now: u64,
        publish_until: u64,
    ) -> StoreFuture<'_, ()> {
        let active_kid = active_kid.to_string();
        Box::pin(async move {
            let _: i64 = self
                .eval(
                    "retire_keys_except",
                    &self.scripts.retire_keys_except,
                    args([&active_kid, &now, &publish_until]),
                )
                .await?;
            Ok(())
        })
    }

    fn server_secret(&self, name: &str) -> StoreFuture<'_, Vec<u8>> {
        let name = name.to_string();
        Box::pin(async move {
            let mut fresh = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut fresh).map_err(|_| StoreError("no randomness".into()))?;
            self.eval(
                "server_secret",
                &self.scripts.server_secret,
                args([&name, &fresh]),
            )
            .await
        })
    }

    fn put_client(&self, client: RegisteredClient) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = to_json(&client)?;
            let used = flag(client.used);
            let _: i64 = self
                .eval(
                    "put_client",
                    &self.scripts.put_client,
                    args([
                        &client.client_id,
                        &record,
                        &client.fingerprint,
                        &used,
                        &client.expires_at,
                    ]),
                )
                .await?;
            Ok(())
        })
    }

    fn client(&self, client_id: &str) -> StoreFuture<'_, Option<RegisteredClient>> {
        let name = self.key("client", client_id);
        Box::pin(async move {
            let row: Vec<Option<String>> = self
                .query(
                    "client",
                    redis::cmd("HMGET")
                        .arg(&name)
                        .arg(&["record", "used", "expires_at"]),
                )
                .await?;
            let live = match row.get(2) {
                Some(Some(expires_at)) => number(expires_at)? > now_unix(),
                _ => false,
            };
            if !live {
                return Ok(None);
            }
            registered_client(&row)
        })
    }

    fn delete_client(&self, client_id: &str, now: u64) -> StoreFuture<'_, ClientDeletion> {
        let client_id = client_id.to_string();
        Box::pin(async move {
            let reply: Vec<String> = self
                .eval(
                    "delete_client",
                    &self.scripts.delete_client,
                    args([&client_id, &now]),
                )
                .await?;
            let Some((existed, tokens)) = reply.split_first() else {
                return Err(StoreError("empty reply from Redis".into()));
            };
            Ok(ClientDeletion {
                existed: existed != "0",
                revoked_access: token_pairs(tokens)?,
            })
        })
    }

    fn delete_unused_clients(&self, fingerprint: &str) -> StoreFuture<'_, u64> {
        let fingerprint = fingerprint.to_string();
        Box::pin(async move {
            self.eval(
                "delete_unused_clients",
                &self.scripts.delete_unused_clients,
                args([&fingerprint]),
            )
            .await
        })
    }

    fn touch_client(&self, client_id: &str, expires_at: u64) -> StoreFuture<'_, ()> {
        let client_id = client_id.to_string();
        Box::pin(async move {
            let _: i64 = self
                .eval(
                    "touch_client",
                    &self.scripts.touch_client,
                    args([&client_id, &expires_at]),
                )
                .await?;
            Ok(())
        })
    }

    fn list_clients(&self) -> StoreFuture<'_, Vec<RegisteredClient>> {
        Box::pin(async move {
            let ids: Vec<String> = self
                .query(
                    "list_clients",
                    redis::cmd("SMEMBERS").arg(self.key_index("clients")),
                )
                .await?;
            let keys: Vec<String> = ids.iter().map(|id| self.key("client", id)).collect();
            let rows = self
                .hmget_each("list_clients", &keys, &["record", "used"])
                .await?;
            // Ids whose record expired are skipped here and dropped by `purge_expired`.
            let mut clients = Vec::new();
            for row in &rows {
                clients.extend(registered_client(row)?);
            }
            clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
            Ok(clients)
        })
    }

    fn put_pending(&self, id: Digest, pending: PendingAuthorization) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let key = self.key("pending", &hex(&id));
            self.put_until("put_pending", key, &pending, pending.expires_at)
                .await
        })
    }

    fn pending(&self, id: Digest) -> StoreFuture<'_, Option<PendingAuthorization>> {
        Box::pin(async move {
            let pending: Option<PendingAuthorization> = self
                .get_json("pending", self.key("pending", &hex(&id)))
                .await?;
            Ok(pending.filter(|p| p.expires_at > now_unix()))
        })
    }

    fn delete_pending(&self, id: Digest) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let deleted: i64 = self
                .query(
                    "delete_pending",
                    redis::cmd("DEL").arg(self.key("pending", &hex(&id))),
                )
                .await?;
            Ok(deleted > 0)
        })
    }

    fn put_code(&self, code: Digest, grant: CodeGrant) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = to_json(&grant)?;
            let keep_until = grant.expires_at.saturating_add(REPLAY_MEMORY_SECS);
            let _: i64 = self
                .eval(
                    "put_code",
                    &self.scripts.put_code,
                    args([
                        &hex(&code),
                        &record,
                        &grant.client_id,
                        &grant.expires_at,
                        &keep_until,
                        &grant.family_id,
                    ]),
                )
                .await?;
            Ok(())
        })
    }

    fn put_login_state(&self, state: Digest, login: LoginState) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let key = self.key("login_state", &hex(&state));
            self.put_until("put_login_state", key, &login, login.expires_at)
                .await
        })
    }

    fn take_login_state(&self, state: Digest, now: u64) -> StoreFuture<'_, Option<LoginState>> {
        Box::pin(async move {
            let record: Option<String> = self
                .query(
                    "take_login_state",
                    redis::cmd("GETDEL").arg(self.key("login_state", &hex(&state))),
                )
                .await?;
            let login: Option<LoginState> = record.map(|r| from_json(&r)).transpose()?;
            Ok(login.filter(|l| l.expires_at > now))
        })
    }

    fn put_provider_token(
        &self,
        subject: &str,
        provider: &str,
        token: ProviderToken,
    ) -> StoreFuture<'_, ()> {
        let key = self.key("provider_token", &provider_token_id(subject, provider));
        Box::pin(async move {
            self.put_until("put_provider_token", key, &token, token.keep_until)
                .await
        })
    }

    fn provider_token(
        &self,
        subject: &str,
        provider: &str,
        now: u64,
    ) -> StoreFuture<'_, Option<ProviderToken>> {
        let key = self.key("provider_token", &provider_token_id(subject, provider));
        Box::pin(async move {
            let token: Option<ProviderToken> = self.get_json("provider_token", key).await?;
            Ok(token.filter(|t| t.keep_until > now))
        })
    }

    fn claim_provider_refresh(
        &self,
        subject: &str,
        provider: &str,
        claim: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let key = self.key("provider_refresh", &provider_token_id(subject, provider));
        let claim = claim.to_string();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        Box::pin(async move {
            let set: Option<String> = self
                .query(
                    "claim_provider_refresh",
                    redis::cmd("SET")
                        .arg(key)
                        .arg(claim)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms),
                )
                .await?;
            Ok(set.is_some())
        })
    }

    fn release_provider_refresh(
        &self,
        subject: &str,
        provider: &str,
        claim: &str,
    ) -> StoreFuture<'_, ()> {
        let id = provider_token_id(subject, provider);
        let claim = claim.to_string();
        Box::pin(async move {
            let _: i64 = self
                .eval(
                    "release_provider_refresh",
                    &self.scripts.release_claim,
                    args([&id, &claim]),
                )
                .await?;
            Ok(())
        })
    }

    fn redeem_code(&self, code: Digest, client_id: &str, now: u64) -> StoreFuture<'_, Redemption> {
        let client_id = client_id.to_string();
        Box::pin(async move {
            let reply: Vec<String> = self
                .eval(
                    "redeem_code",
                    &self.scripts.redeem_code,
                    args([&hex(&code), &client_id, &now]),
                )
                .await?;
            redemption(reply)
        })
    }

    fn record_access_token(
        &self,
        family_id: &str,
        jti: &str,
        expires_at: u64,
    ) -> StoreFuture<'_, bool> {
        let (family_id, jti) = (family_id.to_string(), jti.to_string());
        Box::pin(async move {
            let recorded: i64 = self
                .eval(
                    "record_access_token",
                    &self.scripts.record_access_token,
                    args([&family_id, &jti, &expires_at]),
                )
                .await?;
            Ok(recorded == 1)
        })
    }

    fn put_refresh(&self, token: Digest, grant: RefreshGrant) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = to_json(&grant)?;
            let _: i64 = self
                .eval(
                    "put_refresh",
                    &self.scripts.put_refresh,
                    args([
                        &hex(&token),
                        &grant.family_id,
                        &record,
                        &grant.expires_at,
                        &grant.client_id,
                    ]),
                )
                .await?;
            Ok(())
        })
    }

    fn rotate_refresh(
        &self,
        token: Digest,
        successor: Digest,
        successor_expires_at: u64,
        now: u64,
        grace_secs: u64,
    ) -> StoreFuture<'_, Rotation> {
        Box::pin(async move {
            let reply: Vec<String> = self
                .eval(
                    "rotate_refresh",
                    &self.scripts.rotate_refresh,
                    args([
                        &hex(&token),
                        &hex(&successor),
                        &successor_expires_at,
                        &now,
                        &grace_secs,
                    ]),
                )
                .await?;
            rotation(reply)
        })
    }

    fn refresh(&self, token: Digest, now: u64) -> StoreFuture<'_, Option<RefreshLookup>> {
        Box::pin(async move {
            let reply: Option<Vec<String>> = self
                .eval("refresh", &self.scripts.refresh, args([&hex(&token), &now]))
                .await?;
            let Some([record, expires_at, rotated]) = reply.as_deref() else {
                return Ok(None);
            };
            let mut grant: RefreshGrant = from_json(record)?;
            grant.expires_at = number(expires_at)?;
            Ok(Some(RefreshLookup {
                grant,
                rotated: rotated == "1",
            }))
        })
    }

    fn revoke_family(&self, family_id: &str, now: u64) -> StoreFuture<'_, Vec<(String, u64)>> {
        let family_id = family_id.to_string();
        Box::pin(async move {
            let flat: Vec<String> = self
                .eval(
                    "revoke_family",
                    &self.scripts.revoke_family,
                    args([&family_id, &now]),
                )
                .await?;
            token_pairs(&flat)
        })
    }

    fn revoke_access_token(&self, jti: &str, expires_at: u64) -> StoreFuture<'_, ()> {
        let jti = jti.to_string();
        Box::pin(async move {
            let _: i64 = self
                .query(
                    "revoke_access_token",
                    redis::cmd("ZADD")
                        .arg(self.key_index("revoked_access"))
                        .arg(expires_at)
                        .arg(&jti),
                )
                .await?;
            Ok(())
        })
    }

    fn access_token_family(&self, jti: &str) -> StoreFuture<'_, Option<String>> {
        let key = self.key("access", jti);
        Box::pin(async move {
            self.query("access_token_family", redis::cmd("GET").arg(&key))
                .await
        })
    }

    fn revoked_access_tokens(&self, now: u64) -> StoreFuture<'_, Vec<(String, u64)>> {
        Box::pin(async move {
            let key = self.key_index("revoked_access");
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now)
                .ignore()
                .cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(format!("({now}"))
                .arg("+inf")
                .arg("WITHSCORES");
            let (flat,): (Vec<String>,) = self.pipeline("revoked_access_tokens", &pipe).await?;
            token_pairs(&flat)
        })
    }

    fn consent(&self, subject: &str, client_id: &str) -> StoreFuture<'_, Option<Consent>> {
        let (key, client_id) = (self.key("consent", subject), client_id.to_string());
        Box::pin(async move {
            let record: Option<String> = self
                .query("consent", redis::cmd("HGET").arg(&key).arg(&client_id))
                .await?;
            record.map(|r| from_json(&r)).transpose()
        })
    }

    fn put_consent(&self, subject: &str, client_id: &str, consent: Consent) -> StoreFuture<'_, ()> {
        let (key, client_id) = (self.key("consent", subject), client_id.to_string());
        Box::pin(async move {
            let _: i64 = self
                .query(
                    "put_consent",
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg(&client_id)
                        .arg(to_json(&consent)?),
                )
                .await?;
            Ok(())
        })
    }

    fn put_session(&self, id: Digest, session: BrowserSession) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let key = self.key("session", &hex(&id));
            self.put_until("put_session", key, &session, session.expires_at)
                .await
        })
    }

    fn session(&self, id: Digest, now: u64) -> StoreFuture<'_, Option<BrowserSession>> {
        Box::pin(async move {
            let session: Option<BrowserSession> = self
                .get_json("session", self.key("session", &hex(&id)))
                .await?;
            Ok(session.filter(|s| s.expires_at > now))
        })
    }

    fn hit(&self, key: &str, now: u64, window_secs: u64) -> StoreFuture<'_, u64> {
        let window = window_secs.max(1);
        let window_start = now - now % window;
        // Relative to the caller's clock: the counter lives until its window ends.
        let ttl = window_start + window - now;
        let counter = format!("rate:{window}:{window_start}:{key}");
        Box::pin(async move {
            self.eval("hit", &self.scripts.hit, args([&counter, &ttl]))
                .await
        })
    }

    fn purge_expired(&self, now: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            self.eval("purge_expired", &self.scripts.purge_expired, args([&now]))
                .await
        })
    }
}

/// The Lua scripts, each prefixed with [`PRELUDE`].
struct Scripts {
    put_code: Script,
    redeem_code: Script,
    put_refresh: Script,
    rotate_refresh: Script,
    refresh: Script,
    revoke_family: Script,
    record_access_token: Script,
    put_client: Script,
    delete_client: Script,
    delete_unused_clients: Script,
    touch_client: Script,
    retire_keys_except: Script,
    server_secret: Script,
    hit: Script,
    release_claim: Script,
    purge_expired: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            put_code: script(PUT_CODE),
            redeem_code: script(REDEEM_CODE),
            put_refresh: script(PUT_REFRESH),
            rotate_refresh: script(ROTATE_REFRESH),
            refresh: script(REFRESH),
            revoke_family: script(REVOKE_FAMILY),
            record_access_token: script(RECORD_ACCESS_TOKEN),
            put_client: script(PUT_CLIENT),
            delete_client: script(DELETE_CLIENT),
            delete_unused_clients: script(DELETE_UNUSED_CLIENTS),
            touch_client: script(TOUCH_CLIENT),
            retire_keys_except: script(RETIRE_KEYS_EXCEPT),
            server_secret: script(SERVER_SECRET),
            hit: script(HIT),
            release_claim: script(RELEASE_CLAIM),
            purge_expired: script(PURGE_EXPIRED),
        }
    }
}

/// Shared by every script: `ARGV[1]` is the key prefix. Numbers arrive as decimal strings
/// and are stored as given.
const PRELUDE: &str = r#"
local prefix = ARGV[1]

local function key_of(kind, id)
  return prefix .. kind .. ':' .. id
end

-- Pushes the expiry of an existing key to unix second `at`, keeping a later one.
local function extend_expiry(name, at)
  local pttl = redis.call('PTTL', name)
  if pttl == -2 then return end
  if pttl >= 0 then
    local time = redis.call('TIME')
    local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    if now_ms + pttl >= tonumber(at) * 1000 then return end
  end
  redis.call('EXPIREAT', name, at)
end

-- Lists the family among its client's, for as long as the family lives.
local function index_family(client, family, at)
  if not client or client == '' then return end
  local index = key_of('client_families', client)
  redis.call('SADD', index, family)
  extend_expiry(index, at)
end

-- A new live family of `client` (nothing when it exists).
local function create_family(family, at, client)
  local name = key_of('family', family)
  if redis.call('EXISTS', name) == 0 then
    redis.call('HSET', name, 'revoked', '0', 'expires_at', at, 'client_id', client or '')
    redis.call('EXPIREAT', name, at)
    index_family(client, family, at)
  end
end

-- Creates the family or pushes its expiry to `at` (never shortens it; keeps `revoked`), and
-- keeps it listed among its client's for as long as it lives. A family stored before
-- families named their client learns it from `client` (when given).
local function extend_family(family, at, client)
  local name = key_of('family', family)
  local current = redis.call('HGET', name, 'expires_at')
  if not current then
    create_family(family, at, client)
    return
  end
  local known = redis.call('HGET', name, 'client_id')
  if (not known or known == '') and client and client ~= '' then
    redis.call('HSET', name, 'client_id', client)
    known = client
  end
  if tonumber(at) > tonumber(current) then
    redis.call('HSET', name, 'expires_at', at)
    redis.call('EXPIREAT', name, at)
  else
    at = current
  end
  index_family(known, family, at)
end

local function store_refresh(token, family, record, at)
  local name = key_of('refresh', token)
  redis.call('HSET', name, 'record', record, 'family_id', family, 'expires_at', at)
  redis.call('EXPIREAT', name, at)
  local members = key_of('family_refresh', family)
  redis.call('SADD', members, token)
  extend_expiry(members, at)
end

-- Flags the family revoked (if it still exists), deletes its refresh tokens, and remembers
-- and returns its unexpired access tokens as {jti, expires_at, jti, expires_at, ...}.
local function revoke_family(family, now)
  local name = key_of('family', family)
  if redis.call('EXISTS', name) == 1 then
    redis.call('HSET', name, 'revoked', '1')
  end
  local members = key_of('family_refresh', family)
  for _, token in ipairs(redis.call('SMEMBERS', members)) do
    redis.call('DEL', key_of('refresh', token))
  end
  redis.call('DEL', members)
  local access = redis.call('ZRANGEBYSCORE', key_of('family_access', family),
    '(' .. now, '+inf', 'WITHSCORES')
  for i = 1, #access, 2 do
    redis.call('ZADD', prefix .. 'revoked_access', access[i + 1], access[i])
  end
  return access
end
"#;

/// ARGV: code, record, client_id, expires_at, keep_until, family_id. A code is stored once
/// (like SQLite's primary key); its family is created live unless it exists.
const PUT_CODE: &str = r#"
local name = key_of('code', ARGV[2])
if redis.call('EXISTS', name) == 1 then
  return redis.error_reply('this code is already stored')
end
redis.call('HSET', name, 'record', ARGV[3], 'client_id', ARGV[4], 'used', '0',
  'expires_at', ARGV[5])
redis.call('EXPIREAT', name, ARGV[6])
create_family(ARGV[7], ARGV[5], ARGV[4])
return 1
"#;

/// ARGV: code, client_id, now. Another client's attempt reads nothing and changes nothing.
const REDEEM_CODE: &str = r#"
local name = key_of('code', ARGV[2])
local row = redis.call('HMGET', name, 'record', 'client_id', 'used', 'expires_at')
if not row[1] or row[2] ~= ARGV[3] then return {'unknown'} end
if row[3] == '1' then return {'replayed', row[1]} end
if tonumber(row[4]) <= tonumber(ARGV[4]) then return {'unknown'} end
redis.call('HSET', name, 'used', '1')
return {'fresh', row[1]}
"#;

/// ARGV: token, family_id, record, expires_at, client_id.
const PUT_REFRESH: &str = r#"
if redis.call('EXISTS', key_of('refresh', ARGV[2])) == 1 then
  return redis.error_reply('this refresh token is already stored')
end
extend_family(ARGV[3], ARGV[5], ARGV[6])
store_refresh(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
"#;

/// ARGV: token, successor, successor_expires_at, now, grace_secs. SQLite's `rotate_refresh`
/// step by step: a rotated-out token within the grace window, whose successor is still
/// unused, gets the same successor; any other reuse revokes the family.
const ROTATE_REFRESH: &str = r#"
local token, successor, successor_expires = ARGV[2], ARGV[3], ARGV[4]
local now, grace = tonumber(ARGV[5]), tonumber(ARGV[6])
local name = key_of('refresh', token)
local row = redis.call('HMGET', name, 'record', 'family_id', 'expires_at', 'rotated_at',
  'successor')
local record, family, expires_at, rotated_at, previous = row[1], row[2], row[3], row[4], row[5]
if not record then return {'invalid'} end
local revoked = redis.call('HGET', key_of('family', family), 'revoked')
if not revoked or revoked == '1' or tonumber(expires_at) <= now then
  return {'invalid'}
end
if rotated_at then
  local successor_unused = false
  if previous then
    local next_name = key_of('refresh', previous)
    successor_unused = redis.call('EXISTS', next_name) == 1
      and redis.call('HEXISTS', next_name, 'rotated_at') == 0
  end
  local in_grace = grace > 0 and now - tonumber(rotated_at) <= grace
  if not (in_grace and successor_unused) then
    local reply = revoke_family(family, ARGV[5])
    table.insert(reply, 1, 'reused')
    return reply
  end
end
-- The first rotation's time and successor stay: the grace window does not slide.
redis.call('HSETNX', name, 'rotated_at', ARGV[5])
redis.call('HSETNX', name, 'successor', successor)
if redis.call('EXISTS', key_of('refresh', successor)) == 0 then
  store_refresh(successor, family, record, successor_expires)
end
extend_family(family, successor_expires, cjson.decode(record)['client_id'])
return {'rotated', record, expires_at}
"#;

/// ARGV: token, now → {record, expires_at, rotated} of a live token of a live family, or nil.
const REFRESH: &str = r#"
local row = redis.call('HMGET', key_of('refresh', ARGV[2]), 'record', 'family_id',
  'expires_at', 'rotated_at')
if not row[1] then return false end
local revoked = redis.call('HGET', key_of('family', row[2]), 'revoked')
if not revoked or revoked == '1' or tonumber(row[3]) <= tonumber(ARGV[3]) then
  return false
end
return {row[1], row[3], row[4] and '1' or '0'}
"#;

/// ARGV: family_id, now.
const REVOKE_FAMILY: &str = r#"
return revoke_family(ARGV[2], ARGV[3])
"#;

/// ARGV: family_id, jti, expires_at → 0 when the family is revoked.
const RECORD_ACCESS_TOKEN: &str = r#"
local family, jti, at = ARGV[2], ARGV[3], ARGV[4]
local revoked = redis.call('HGET', key_of('family', family), 'revoked')
if revoked == '1' then return 0 end
-- The family (and its place in its client's index) lives as long as its tokens: a grant
-- without refresh tokens would otherwise outlive its family, out of reach of a deletion.
if revoked then extend_family(family, at, false) end
local name = key_of('access', jti)
redis.call('SET', name, family)
redis.call('EXPIREAT', name, at)
local members = key_of('family_access', family)
redis.call('ZADD', members, at, jti)
extend_expiry(members, at)
return 1
"#;

/// ARGV: client_id, record, fingerprint, used, expires_at. Replaces the client and keeps
/// both indexes right.
const PUT_CLIENT: &str = r#"
local id, fingerprint, at = ARGV[2], ARGV[4], ARGV[6]
local name = key_of('client', id)
local previous = redis.call('HGET', name, 'fingerprint')
if previous and previous ~= fingerprint then
  redis.call('SREM', key_of('client_fingerprint', previous), id)
end
redis.call('DEL', name)
redis.call('HSET', name, 'record', ARGV[3], 'fingerprint', fingerprint, 'used', ARGV[5],
  'expires_at', at)
redis.call('EXPIREAT', name, at)
redis.call('SADD', prefix .. 'clients', id)
local same = key_of('client_fingerprint', fingerprint)
redis.call('SADD', same, id)
extend_expiry(same, at)
return 1
"#;

/// ARGV: client_id, now → {'1' when it existed else '0', then (when it existed) the
/// unexpired access tokens of its families, now revoked: jti, expires_at, ...}.
const DELETE_CLIENT: &str = r#"
local id = ARGV[2]
local name = key_of('client', id)
local fingerprint = redis.call('HGET', name, 'fingerprint')
if fingerprint then
  redis.call('SREM', key_of('client_fingerprint', fingerprint), id)
end
redis.call('SREM', prefix .. 'clients', id)
local deleted = redis.call('DEL', name)
local reply = {tostring(deleted)}
-- Only a registration's own grants: an id of a client from the configuration file (which
-- is not stored) must not end its users' grants.
if deleted == 0 then return reply end
local index = key_of('client_families', id)
for _, family in ipairs(redis.call('SMEMBERS', index)) do
  for _, item in ipairs(revoke_family(family, ARGV[3])) do
    table.insert(reply, item)
  end
end
redis.call('DEL', index)
return reply
"#;

/// ARGV: fingerprint → how many never-used clients with it were deleted.
const DELETE_UNUSED_CLIENTS: &str = r#"
local fingerprint = ARGV[2]
local same = key_of('client_fingerprint', fingerprint)
local deleted = 0
for _, id in ipairs(redis.call('SMEMBERS', same)) do
  local name = key_of('client', id)
  local row = redis.call('HMGET', name, 'fingerprint', 'used')
  if not row[1] then
    redis.call('SREM', same, id)
    redis.call('SREM', prefix .. 'clients', id)
  elseif row[1] ~= fingerprint then
    redis.call('SREM', same, id)
  elseif row[2] == '0' then
    redis.call('DEL', name)
    redis.call('SREM', same, id)
    redis.call('SREM', prefix .. 'clients', id)
    deleted = deleted + 1
  end
end
return deleted
"#;

/// ARGV: client_id, expires_at: marks it used and never shortens its life.
const TOUCH_CLIENT: &str = r#"
local name, at = key_of('client', ARGV[2]), ARGV[3]
local row = redis.call('HMGET', name, 'fingerprint', 'expires_at')
if not row[1] then return 0 end
redis.call('HSET', name, 'used', '1')
if tonumber(at) > tonumber(row[2]) then
  redis.call('HSET', name, 'expires_at', at)
  redis.call('EXPIREAT', name, at)
  extend_expiry(key_of('client_fingerprint', row[1]), at)
end
return 1
"#;

/// ARGV: active kid, now, publish_until. Keys retired before keep their dates.
const RETIRE_KEYS_EXCEPT: &str = r#"
for _, kid in ipairs(redis.call('SMEMBERS', prefix .. 'signing_keys')) do
  local name = key_of('signing_key', kid)
  if kid ~= ARGV[2] and redis.call('EXISTS', name) == 1
      and redis.call('HEXISTS', name, 'retired_at') == 0 then
    redis.call('HSET', name, 'retired_at', ARGV[3], 'publish_until', ARGV[4])
    redis.call('EXPIREAT', name, ARGV[4])
  end
end
return 1
"#;

/// ARGV: name, fresh random bytes → the secret every replica gets (the first one stored).
const SERVER_SECRET: &str = r#"
local name = key_of('secret', ARGV[2])
redis.call('SET', name, ARGV[3], 'NX')
return redis.call('GET', name)
"#;

/// ARGV: the token's id, the caller's claim → 1. Deletes the claim only if it is still the
/// caller's (one that outlived its time may have passed to another replica).
const RELEASE_CLAIM: &str = r#"
local name = key_of('provider_refresh', ARGV[2])
if redis.call('GET', name) == ARGV[3] then
  redis.call('DEL', name)
end
return 1
"#;

/// ARGV: counter key (after the prefix), seconds left in its window → the count.
const HIT: &str = r#"
local name = prefix .. ARGV[2]
local count = redis.call('INCR', name)
if redis.call('TTL', name) == -1 then
  redis.call('EXPIRE', name, ARGV[3])
end
return count
"#;

/// ARGV: now. TTLs delete the records; this trims the indexes of what is gone and returns
/// how many entries it removed.
const PURGE_EXPIRED: &str = r#"
local removed = redis.call('ZREMRANGEBYSCORE', prefix .. 'revoked_access', '-inf', ARGV[2])
for _, index in ipairs({{'clients', 'client'}, {'signing_keys', 'signing_key'}}) do
  local set = prefix .. index[1]
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('EXISTS', key_of(index[2], id)) == 0 then
      removed = removed + redis.call('SREM', set, id)
    end
  end
end
return removed
"#;
