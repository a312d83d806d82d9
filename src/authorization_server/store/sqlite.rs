//! The embedded store: one SQLite file in WAL mode, schema migrations numbered by
//! `PRAGMA user_version`. Calls run on Tokio's blocking pool behind one connection mutex:
//! the authorization server's traffic is logins and token requests, never the proxy's hot
//! path, and one writer is what SQLite allows anyway.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    BrowserSession, ClientDeletion, CodeGrant, Consent, Digest, LoginState, PendingAuthorization,
    ProviderToken, Redemption, RefreshGrant, RefreshLookup, RegisteredClient, Rotation, Store,
    StoreError, StoreFuture, StoreResult, StoredKey,
};

/// Schema versions, applied in order; a database is at version = number applied.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, record TEXT NOT NULL,
        created_at INTEGER NOT NULL, publish_until INTEGER);
     CREATE TABLE clients (client_id TEXT PRIMARY KEY, record TEXT NOT NULL,
        fingerprint TEXT NOT NULL, used INTEGER NOT NULL, expires_at INTEGER NOT NULL);
     CREATE INDEX clients_fingerprint ON clients (fingerprint);
     CREATE TABLE pending (id BLOB PRIMARY KEY, record TEXT NOT NULL,
        expires_at INTEGER NOT NULL);
     CREATE TABLE codes (code BLOB PRIMARY KEY, record TEXT NOT NULL, used INTEGER NOT NULL,
        expires_at INTEGER NOT NULL);
     CREATE TABLE families (family_id TEXT PRIMARY KEY, revoked INTEGER NOT NULL,
        expires_at INTEGER NOT NULL);
     CREATE TABLE refresh_tokens (token BLOB PRIMARY KEY, family_id TEXT NOT NULL,
        record TEXT NOT NULL, rotated_at INTEGER, successor BLOB,
        expires_at INTEGER NOT NULL);
     CREATE INDEX refresh_family ON refresh_tokens (family_id);
     CREATE TABLE access_tokens (jti TEXT PRIMARY KEY, family_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL);
     CREATE INDEX access_family ON access_tokens (family_id);
     CREATE TABLE revoked_access (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
     CREATE TABLE consents (subject TEXT NOT NULL, client_id TEXT NOT NULL,
        record TEXT NOT NULL, PRIMARY KEY (subject, client_id));
     CREATE TABLE sessions (id BLOB PRIMARY KEY, record TEXT NOT NULL,
        expires_at INTEGER NOT NULL);
     CREATE TABLE rate_counters (key TEXT PRIMARY KEY, window_start INTEGER NOT NULL,
        count INTEGER NOT NULL);",
    // 2: logins in flight at upstream identity providers.
    "CREATE TABLE login_states (state BLOB PRIMARY KEY, record TEXT NOT NULL,
        expires_at INTEGER NOT NULL);",
    // 3: users' tokens at identity providers (sealed).
    "CREATE TABLE provider_tokens (subject TEXT NOT NULL, provider TEXT NOT NULL,
        record TEXT NOT NULL, keep_until INTEGER NOT NULL, PRIMARY KEY (subject, provider));",
    // 4: the client each family was granted to, so that deleting a client revokes its grants
    // (RFC 7592 §2.3); families from before are attributed from their tokens' or code's record.
    "ALTER TABLE families ADD COLUMN client_id TEXT;
     UPDATE families SET client_id = COALESCE(
        (SELECT json_extract(r.record, '$.client_id') FROM refresh_tokens r
          WHERE r.family_id = families.family_id LIMIT 1),
        (SELECT json_extract(c.record, '$.client_id') FROM codes c
          WHERE json_extract(c.record, '$.family_id') = families.family_id LIMIT 1));
     CREATE INDEX families_client ON families (client_id);",
];

/// A refresh token row joined with its family: record, rotated_at, successor, expires_at,
/// family revoked.
type RefreshRow = (String, Option<u64>, Option<Vec<u8>>, u64, bool);

#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    /// Refresh claims: one process uses the file, so they live in memory. (A refresh whose
    /// requests all went away still runs; a new request must not start a second one.)
    claims: Arc<Mutex<Claims>>,
}

/// (subject, provider) → the claim held and until when.
type Claims = HashMap<(String, String), (String, Instant)>;

fn fail(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(fail)
}

fn from_json<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date. A database
    /// from a newer version of the gateway is refused rather than misread.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut connection = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        restrict_permissions(path);
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .map_err(fail)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        migrate(&mut connection)?;
        Ok(SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            claims: Arc::default(),
        })
    }

    /// Runs `work` on the blocking pool with the connection.
    fn run<T, F>(&self, work: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let connection = self.connection.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = connection
                    .lock()
                    .map_err(|_| StoreError("connection lock poisoned".into()))?;
                work(&mut guard)
            })
            .await
            .map_err(fail)?
        })
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Signing keys live here.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

fn migrate(connection: &mut Connection) -> StoreResult<()> {
    let version: u32 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(fail)?;
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "the database schema is version {version}, newer than this gateway knows ({}): use the newer gateway or another database file",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = connection.transaction().map_err(fail)?;
        tx.execute_batch(migration).map_err(fail)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

fn revoke_family_in(
    tx: &rusqlite::Transaction<'_>,
    family_id: &str,
    now: u64,
) -> StoreResult<Vec<(String, u64)>> {
    tx.execute(
        "UPDATE families SET revoked = 1 WHERE family_id = ?1",
        params![family_id],
    )
    .map_err(fail)?;
    tx.execute(
        "DELETE FROM refresh_tokens WHERE family_id = ?1",
        params![family_id],
    )
    .map_err(fail)?;
    let mut statement = tx
        .prepare(
            "SELECT jti, expires_at FROM access_tokens WHERE family_id = ?1 AND expires_at > ?2",
        )
        .map_err(fail)?;
    let access: Vec<(String, u64)> = statement
        .query_map(params![family_id, now], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(fail)?
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    for (jti, expires_at) in &access {
        tx.execute(
            "INSERT OR REPLACE INTO revoked_access (jti, expires_at) VALUES (?1, ?2)",
            params![jti, expires_at],
        )
        .map_err(fail)?;
    }
    Ok(access)
}

impl Store for SqliteStore {
    fn signing_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        self.run(|c| {
            let mut statement = c
                .prepare("SELECT record FROM signing_keys ORDER BY created_at")
                .map_err(fail)?;
            let rows: Vec<String> = statement
                .query_map([], |row| row.get(0))
                .map_err(fail)?
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            rows.iter().map(|r| from_json(r)).collect()
        })
    }

    fn put_signing_key(&self, key: StoredKey) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO signing_keys (kid, record, created_at, publish_until) VALUES (?1, ?2, ?3, ?4)",
                params![key.kid, to_json(&key)?, key.created_at, key.publish_until],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn retire_keys_except(
        &self,
        active_kid: &str,
        now: u64,
        publish_until: u64,
    ) -> StoreFuture<'_, ()> {
        let active_kid = active_kid.to_string();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let records: Vec<String> = {
                let mut statement = tx
                    .prepare("SELECT record FROM signing_keys WHERE kid != ?1")
                    .map_err(fail)?;
                let rows = statement
                    .query_map(params![active_kid], |row| row.get(0))
                    .map_err(fail)?
                    .collect::<Result<_, _>>()
                    .map_err(fail)?;
                rows
            };
            for record in records {
                let mut key: StoredKey = from_json(&record)?;
                if key.retired_at.is_none() {
                    key.retired_at = Some(now);
                    key.publish_until = Some(publish_until);
                    tx.execute(
                        "UPDATE signing_keys SET record = ?2, publish_until = ?3 WHERE kid = ?1",
                        params![key.kid, to_json(&key)?, publish_until],
                    )
                    .map_err(fail)?;
                }
            }
            tx.commit().map_err(fail)
        })
    }

    fn server_secret(&self, name: &str) -> StoreFuture<'_, Vec<u8>> {
        let name = name.to_string();
        self.run(move |c| {
            let mut fresh = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut fresh).map_err(|_| StoreError("no randomness".into()))?;
            c.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES (?1, ?2)",
                params![name, fresh],
            )
            .map_err(fail)?;
            c.query_row(
                "SELECT value FROM meta WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .map_err(fail)
        })
    }

    fn put_client(&self, client: RegisteredClient) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO clients (client_id, record, fingerprint, used, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![client.client_id, to_json(&client)?, client.fingerprint, client.used, client.expires_at],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn client(&self, client_id: &str) -> StoreFuture<'_, Option<RegisteredClient>> {
        let client_id = client_id.to_string();
        self.run(move |c| {
            let record: Option<(String, bool)> = c
                .query_row(
                    "SELECT record, used FROM clients WHERE client_id = ?1 AND expires_at > ?2",
                    params![client_id, crate::auth::principal::now_unix()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(fail)?;
            record
                .map(|(r, used)| {
                    let mut client: RegisteredClient = from_json(&r)?;
                    client.used = used;
                    Ok(client)
                })
                .transpose()
        })
    }

    fn delete_client(&self, client_id: &str, now: u64) -> StoreFuture<'_, ClientDeletion> {
        let client_id = client_id.to_string();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let n = tx
                .execute(
                    "DELETE FROM clients WHERE client_id = ?1",
                    params![client_id],
                )
                .map_err(fail)?;
            // Only a registration's own grants: an id of a client from the configuration
            // file (which is not stored) must not end its users' grants.
            if n == 0 {
                return Ok(ClientDeletion::default());
            }
            let families: Vec<String> = tx
                .prepare("SELECT family_id FROM families WHERE client_id = ?1 AND revoked = 0")
                .map_err(fail)?
                .query_map(params![client_id], |row| row.get(0))
                .map_err(fail)?
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            let mut revoked_access = Vec::new();
            for family in &families {
                revoked_access.extend(revoke_family_in(&tx, family, now)?);
            }
            tx.commit().map_err(fail)?;
            Ok(ClientDeletion {
                existed: n > 0,
                revoked_access,
            })
        })
    }

    fn delete_unused_clients(&self, fingerprint: &str) -> StoreFuture<'_, u64> {
        let fingerprint = fingerprint.to_string();
        self.run(move |c| {
            let n = c
                .execute(
                    "DELETE FROM clients WHERE fingerprint = ?1 AND used = 0",
                    params![fingerprint],
                )
                .map_err(fail)?;
            Ok(n as u64)
        })
    }

    fn touch_client(&self, client_id: &str, expires_at: u64) -> StoreFuture<'_, ()> {
        let client_id = client_id.to_string();
        self.run(move |c| {
            c.execute(
                "UPDATE clients SET used = 1, expires_at = MAX(expires_at, ?2) WHERE client_id = ?1",
                params![client_id, expires_at],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn list_clients(&self) -> StoreFuture<'_, Vec<RegisteredClient>> {
        self.run(|c| {
            let mut statement = c
                .prepare("SELECT record, used FROM clients ORDER BY client_id")
                .map_err(fail)?;
            let rows: Vec<(String, bool)> = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(fail)?
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            rows.iter()
                .map(|(r, used)| {
                    let mut client: RegisteredClient = from_json(r)?;
                    client.used = *used;
                    Ok(client)
                })
                .collect()
        })
    }

    fn put_pending(&self, id: Digest, pending: PendingAuthorization) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO pending (id, record, expires_at) VALUES (?1, ?2, ?3)",
                params![id.as_slice(), to_json(&pending)?, pending.expires_at],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn pending(&self, id: Digest) -> StoreFuture<'_, Option<PendingAuthorization>> {
        self.run(move |c| {
            let record: Option<String> = c
                .query_row(
                    "SELECT record FROM pending WHERE id = ?1 AND expires_at > ?2",
                    params![id.as_slice(), crate::auth::principal::now_unix()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?;
            record.map(|r| from_json(&r)).transpose()
        })
    }

    fn delete_pending(&self, id: Digest) -> StoreFuture<'_, bool> {
        self.run(move |c| {
            let deleted = c
                .execute("DELETE FROM pending WHERE id = ?1", params![id.as_slice()])
                .map_err(fail)?;
            Ok(deleted > 0)
        })
    }

    fn put_login_state(&self, state: Digest, login: LoginState) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO login_states (state, record, expires_at) VALUES (?1, ?2, ?3)",
                params![state.as_slice(), to_json(&login)?, login.expires_at],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn take_login_state(&self, state: Digest, now: u64) -> StoreFuture<'_, Option<LoginState>> {
        self.run(move |c| {
            let record: Option<String> = c
                .query_row(
                    "DELETE FROM login_states WHERE state = ?1 RETURNING record, expires_at",
                    params![state.as_slice()],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?)),
                )
                .optional()
                .map_err(fail)?
                .filter(|(_, expires_at)| *expires_at > now)
                .map(|(record, _)| record);
            record.map(|r| from_json(&r)).transpose()
        })
    }

    fn put_provider_token(
        &self,
        subject: &str,
        provider: &str,
        token: ProviderToken,
    ) -> StoreFuture<'_, ()> {
        let (subject, provider) = (subject.to_string(), provider.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO provider_tokens (subject, provider, record, keep_until) VALUES (?1, ?2, ?3, ?4)",
                params![subject, provider, to_json(&token)?, token.keep_until],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn provider_token(
        &self,
        subject: &str,
        provider: &str,
        now: u64,
    ) -> StoreFuture<'_, Option<ProviderToken>> {
        let (subject, provider) = (subject.to_string(), provider.to_string());
        self.run(move |c| {
            let record: Option<String> = c
                .query_row(
                    "SELECT record FROM provider_tokens WHERE subject = ?1 AND provider = ?2 AND keep_until > ?3",
                    params![subject, provider, now],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?;
            record.map(|r| from_json(&r)).transpose()
        })
    }

    fn claim_provider_refresh(
        &self,
        subject: &str,
        provider: &str,
        claim: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let now = Instant::now();
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        claims.retain(|_, (_, until)| *until > now);
        let key = (subject.to_string(), provider.to_string());
        let granted = !claims.contains_key(&key);
        if granted {
            claims.insert(key, (claim.to_string(), now + ttl));
        }
        Box::pin(async move { Ok(granted) })
    }

    fn release_provider_refresh(
        &self,
        subject: &str,
        provider: &str,
        claim: &str,
    ) -> StoreFuture<'_, ()> {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (subject.to_string(), provider.to_string());
        if claims.get(&key).is_some_and(|(held, _)| held == claim) {
            claims.remove(&key);
        }
        Box::pin(async { Ok(()) })
    }

    fn put_code(&self, code: Digest, grant: CodeGrant) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            let tx = c.transaction().map_err(fail)?;
            tx.execute(
                "INSERT INTO codes (code, record, used, expires_at) VALUES (?1, ?2, 0, ?3)",
                params![code.as_slice(), to_json(&grant)?, grant.expires_at],
            )
            .map_err(fail)?;
            tx.execute(
                "INSERT OR IGNORE INTO families (family_id, revoked, expires_at, client_id)
                 VALUES (?1, 0, ?2, ?3)",
                params![grant.family_id, grant.expires_at, grant.client_id],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)
        })
    }

    fn redeem_code(&self, code: Digest, client_id: &str, now: u64) -> StoreFuture<'_, Redemption> {
        let client_id = client_id.to_string();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let row: Option<(String, bool, u64)> = tx
                .query_row(
                    "SELECT record, used, expires_at FROM codes WHERE code = ?1",
                    params![code.as_slice()],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(fail)?;
            let grant: Option<CodeGrant> = row
                .as_ref()
                .map(|(record, _, _)| from_json(record))
                .transpose()?;
            if grant.as_ref().is_some_and(|g| g.client_id != client_id) {
                return Ok(Redemption::Unknown);
            }
            let outcome = match row {
                None => Redemption::Unknown,
                Some((record, true, _)) => Redemption::Replayed(from_json(&record)?),
                // Expired codes stay until purged so a late replay is still recognised.
                Some((_, false, expires_at)) if expires_at <= now => Redemption::Unknown,
                Some((record, false, _)) => {
                    tx.execute(
                        "UPDATE codes SET used = 1 WHERE code = ?1",
                        params![code.as_slice()],
                    )
                    .map_err(fail)?;
                    Redemption::Fresh(from_json(&record)?)
                }
            };
            tx.commit().map_err(fail)?;
            Ok(outcome)
        })
    }

    fn record_access_token(
        &self,
        family_id: &str,
        jti: &str,
        expires_at: u64,
    ) -> StoreFuture<'_, bool> {
        let (family_id, jti) = (family_id.to_string(), jti.to_string());
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            // A family revoked between the grant check and now (a replay racing a
            // redemption) must not gain a token nobody will ever revoke.
            let revoked: bool = tx
                .query_row(
                    "SELECT revoked FROM families WHERE family_id = ?1",
                    params![family_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?
                .unwrap_or(false);
            if revoked {
                return Ok(false);
            }
            // The family lives as long as its tokens: a grant without refresh tokens would
            // otherwise be purged first, out of reach of its client's deletion.
            tx.execute(
                "UPDATE families SET expires_at = MAX(expires_at, ?2) WHERE family_id = ?1",
                params![family_id, expires_at],
            )
            .map_err(fail)?;
            tx.execute(
                "INSERT OR REPLACE INTO access_tokens (jti, family_id, expires_at) VALUES (?1, ?2, ?3)",
                params![jti, family_id, expires_at],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            Ok(true)
        })
    }

    fn put_refresh(&self, token: Digest, grant: RefreshGrant) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            let tx = c.transaction().map_err(fail)?;
            tx.execute(
                "INSERT INTO families (family_id, revoked, expires_at, client_id)
                 VALUES (?1, 0, ?2, ?3)
                 ON CONFLICT (family_id) DO UPDATE SET expires_at = MAX(expires_at, ?2)",
                params![grant.family_id, grant.expires_at, grant.client_id],
            )
            .map_err(fail)?;
            tx.execute(
                "INSERT INTO refresh_tokens (token, family_id, record, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token.as_slice(), grant.family_id, to_json(&grant)?, grant.expires_at],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)
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
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let row: Option<RefreshRow> = tx
                .query_row(
                    "SELECT r.record, r.rotated_at, r.successor, r.expires_at, f.revoked
                     FROM refresh_tokens r JOIN families f ON f.family_id = r.family_id
                     WHERE r.token = ?1",
                    params![token.as_slice()],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
                )
                .optional()
                .map_err(fail)?;
            let Some((record, rotated_at, previous_successor, expires_at, revoked)) = row else {
                return Ok(Rotation::Invalid);
            };
            if revoked || expires_at <= now {
                return Ok(Rotation::Invalid);
            }
            let grant: RefreshGrant = from_json(&record)?;
            if let Some(rotated_at) = rotated_at {
                // Rotated before. Within the grace window, and while the token that replaced
                // it has not been used yet, this is a parallel refresh by the same client
                // (two requests raced with one token): it gets the same successor.
                let successor_unused = match &previous_successor {
                    Some(next) => tx
                        .query_row(
                            "SELECT rotated_at IS NULL FROM refresh_tokens WHERE token = ?1",
                            params![next],
                            |row| row.get::<_, bool>(0),
                        )
                        .optional()
                        .map_err(fail)?
                        .unwrap_or(false),
                    None => false,
                };
                let in_grace = now.saturating_sub(rotated_at) <= grace_secs && grace_secs > 0;
                if !(in_grace && successor_unused) {
                    let revoked_access = revoke_family_in(&tx, &grant.family_id, now)?;
                    tx.commit().map_err(fail)?;
                    return Ok(Rotation::Reused { revoked_access });
                }
            }
            // A rotated-out token keeps its first rotation time and successor: the grace
            // window does not slide with every parallel use.
            tx.execute(
                "UPDATE refresh_tokens SET rotated_at = COALESCE(rotated_at, ?2), successor = COALESCE(successor, ?3) WHERE token = ?1",
                params![token.as_slice(), now, successor.as_slice()],
            )
            .map_err(fail)?;
            let next = RefreshGrant {
                expires_at: successor_expires_at,
                ..grant.clone()
            };
            // Within the grace window the successor already exists (it is derived from the
            // presented token): the racing request gets the same one.
            tx.execute(
                "INSERT OR IGNORE INTO refresh_tokens (token, family_id, record, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![successor.as_slice(), next.family_id, to_json(&next)?, successor_expires_at],
            )
            .map_err(fail)?;
            tx.execute(
                "UPDATE families SET expires_at = MAX(expires_at, ?2) WHERE family_id = ?1",
                params![next.family_id, successor_expires_at],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            Ok(Rotation::Rotated(Box::new(grant)))
        })
    }

    fn refresh(&self, token: Digest, now: u64) -> StoreFuture<'_, Option<RefreshLookup>> {
        self.run(move |c| {
            let row: Option<(String, bool)> = c
                .query_row(
                    "SELECT r.record, r.rotated_at IS NOT NULL FROM refresh_tokens r
                     JOIN families f ON f.family_id = r.family_id
                     WHERE r.token = ?1 AND f.revoked = 0 AND r.expires_at > ?2",
                    params![token.as_slice(), now],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(fail)?;
            row.map(|(record, rotated)| {
                Ok(RefreshLookup {
                    grant: from_json(&record)?,
                    rotated,
                })
            })
            .transpose()
        })
    }

    fn revoke_family(&self, family_id: &str, now: u64) -> StoreFuture<'_, Vec<(String, u64)>> {
        let family_id = family_id.to_string();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let revoked = revoke_family_in(&tx, &family_id, now)?;
            tx.commit().map_err(fail)?;
            Ok(revoked)
        })
    }

    fn revoke_access_token(&self, jti: &str, expires_at: u64) -> StoreFuture<'_, ()> {
        let jti = jti.to_string();
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO revoked_access (jti, expires_at) VALUES (?1, ?2)",
                params![jti, expires_at],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn access_token_family(&self, jti: &str) -> StoreFuture<'_, Option<String>> {
        let jti = jti.to_string();
        self.run(move |c| {
            c.query_row(
                "SELECT family_id FROM access_tokens WHERE jti = ?1",
                params![jti],
                |row| row.get(0),
            )
            .optional()
            .map_err(fail)
        })
    }

    fn revoked_access_tokens(&self, now: u64) -> StoreFuture<'_, Vec<(String, u64)>> {
        self.run(move |c| {
            let mut statement = c
                .prepare("SELECT jti, expires_at FROM revoked_access WHERE expires_at > ?1")
                .map_err(fail)?;
            let rows = statement
                .query_map(params![now], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(fail)?
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            Ok(rows)
        })
    }

    fn consent(&self, subject: &str, client_id: &str) -> StoreFuture<'_, Option<Consent>> {
        let (subject, client_id) = (subject.to_string(), client_id.to_string());
        self.run(move |c| {
            let record: Option<String> = c
                .query_row(
                    "SELECT record FROM consents WHERE subject = ?1 AND client_id = ?2",
                    params![subject, client_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?;
            record.map(|r| from_json(&r)).transpose()
        })
    }

    fn put_consent(&self, subject: &str, client_id: &str, consent: Consent) -> StoreFuture<'_, ()> {
        let (subject, client_id) = (subject.to_string(), client_id.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO consents (subject, client_id, record) VALUES (?1, ?2, ?3)",
                params![subject, client_id, to_json(&consent)?],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn put_session(&self, id: Digest, session: BrowserSession) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO sessions (id, record, expires_at) VALUES (?1, ?2, ?3)",
                params![id.as_slice(), to_json(&session)?, session.expires_at],
            )
            .map_err(fail)?;
            Ok(())
        })
    }

    fn session(&self, id: Digest, now: u64) -> StoreFuture<'_, Option<BrowserSession>> {
        self.run(move |c| {
            let record: Option<String> = c
                .query_row(
                    "SELECT record FROM sessions WHERE id = ?1 AND expires_at > ?2",
                    params![id.as_slice(), now],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?;
            record.map(|r| from_json(&r)).transpose()
        })
    }

    fn hit(&self, key: &str, now: u64, window_secs: u64) -> StoreFuture<'_, u64> {
        let key = key.to_string();
        self.run(move |c| {
            let window_start = now - now % window_secs.max(1);
            c.query_row(
                "INSERT INTO rate_counters (key, window_start, count) VALUES (?1, ?2, 1)
                 ON CONFLICT (key) DO UPDATE SET
                   count = CASE WHEN window_start = ?2 THEN count + 1 ELSE 1 END,
                   window_start = ?2
                 RETURNING count",
                params![key, window_start],
                |row| row.get(0),
            )
            .map_err(fail)
        })
    }

    fn purge_expired(&self, now: u64) -> StoreFuture<'_, u64> {
        self.run(move |c| {
            let tx = c.transaction().map_err(fail)?;
            let mut removed = 0;
            for statement in [
                "DELETE FROM pending WHERE expires_at <= ?1",
                "DELETE FROM login_states WHERE expires_at <= ?1",
                "DELETE FROM provider_tokens WHERE keep_until <= ?1",
                // Used codes are kept a little past expiry to recognise replays.
                "DELETE FROM codes WHERE expires_at + 600 <= ?1",
                "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
                "DELETE FROM families WHERE expires_at <= ?1",
                "DELETE FROM access_tokens WHERE expires_at <= ?1",
                "DELETE FROM revoked_access WHERE expires_at <= ?1",
                "DELETE FROM sessions WHERE expires_at <= ?1",
                "DELETE FROM clients WHERE expires_at <= ?1",
                "DELETE FROM signing_keys WHERE publish_until IS NOT NULL AND publish_until <= ?1",
                "DELETE FROM rate_counters WHERE window_start + 86400 <= ?1",
            ] {
                removed += tx.execute(statement, params![now]).map_err(fail)? as u64;
            }
            tx.commit().map_err(fail)?;
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorization_server::store::UserIdentity;

    /// A store in a directory of its own, removed once the store is closed.
    struct TestStore {
        store: Option<SqliteStore>,
        dir: std::path::PathBuf,
    }

    impl std::ops::Deref for TestStore {
        type Target = SqliteStore;
        fn deref(&self) -> &SqliteStore {
            self.store.as_ref().expect("open until dropped")
        }
    }

    impl Drop for TestStore {
        fn drop(&mut self) {
            drop(self.store.take());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn store() -> TestStore {
        let dir = std::env::temp_dir().join(format!(
            "mcp-gw-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TestStore {
            store: Some(SqliteStore::open(&dir.join("as.db")).expect("open")),
            dir,
        }
    }

    fn user() -> UserIdentity {
        UserIdentity {
            subject: "local:alice".into(),
            provider: None,
            username: None,
            name: None,
            email: None,
            groups: vec![],
        }
    }

    fn grant(family: &str, expires_at: u64) -> RefreshGrant {
        RefreshGrant {
            family_id: family.into(),
            client_id: "c".into(),
            resource: "https://r".into(),
            scopes: vec!["s".into()],
            user: user(),
            expires_at,
            family_expires_at: 0,
        }
    }

    #[tokio::test]
    async fn codes_are_single_use_and_only_their_client_can_spend_them() {
        let store = store();
        let code = [1u8; 32];
        store
            .put_code(
                code,
                CodeGrant {
                    client_id: "c".into(),
                    redirect_uri: "https://a/cb".into(),
                    redirect_uri_given: true,
                    code_challenge: "x".into(),
                    resource: "https://r".into(),
                    scopes: vec![],
                    user: user(),
                    family_id: "f".into(),
                    expires_at: 2_000,
                },
            )
            .await
            .unwrap();
        assert!(matches!(
            store.redeem_code(code, "other", 1_000).await.unwrap(),
            Redemption::Unknown
        ));
        assert!(matches!(
            store.redeem_code(code, "c", 1_000).await.unwrap(),
            Redemption::Fresh(_)
        ));
        assert!(matches!(
            store.redeem_code(code, "c", 1_001).await.unwrap(),
            Redemption::Replayed(_)
        ));
        assert!(matches!(
            store.redeem_code([2u8; 32], "c", 1_000).await.unwrap(),
            Redemption::Unknown
        ));
    }

    #[tokio::test]
    async fn rotation_grace_and_reuse() {
        let store = store();
        let (t0, t1, t2) = ([10u8; 32], [11u8; 32], [12u8; 32]);
        store.put_refresh(t0, grant("f", 10_000)).await.unwrap();
        assert!(store
            .record_access_token("f", "jti-1", 5_000)
            .await
            .unwrap());
        // First use rotates; a racing second use within the grace window gets the same
        // successor and nothing new.
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, 10_000, 1_000, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, 10_000, 1_010, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(store.refresh(t0, 1_010).await.unwrap().unwrap().rotated);
        assert!(!store.refresh(t1, 1_010).await.unwrap().unwrap().rotated);
        // The successor is used: from now on the old token is a reuse.
        assert!(matches!(
            store
                .rotate_refresh(t1, t2, 10_000, 1_020, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        match store
            .rotate_refresh(t0, [13u8; 32], 10_000, 1_021, 30)
            .await
            .unwrap()
        {
            Rotation::Reused { revoked_access } => {
                assert_eq!(revoked_access, vec![("jti-1".to_string(), 5_000)])
            }
            other => panic!("{other:?}"),
        }
        // The family is dead: every member is invalid, no more access tokens are recorded.
        assert!(matches!(
            store
                .rotate_refresh(t2, [14u8; 32], 10_000, 1_022, 30)
                .await
                .unwrap(),
            Rotation::Invalid
        ));
        assert!(store.refresh(t2, 1_022).await.unwrap().is_none());
        assert!(!store
            .record_access_token("f", "jti-2", 5_000)
            .await
            .unwrap());
        assert_eq!(
            store.revoked_access_tokens(1_022).await.unwrap(),
            vec![("jti-1".to_string(), 5_000)]
        );
    }

    #[tokio::test]
    async fn outside_the_grace_window_any_reuse_revokes() {
        let store = store();
        let (t0, t1) = ([20u8; 32], [21u8; 32]);
        store.put_refresh(t0, grant("g", 10_000)).await.unwrap();
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, 10_000, 1_000, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, 10_000, 1_031, 30)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
        assert!(store.refresh(t1, 1_031).await.unwrap().is_none());
        // Strict mode: the very next reuse revokes.
        let (u0, u1) = ([30u8; 32], [31u8; 32]);
        store.put_refresh(u0, grant("h", 10_000)).await.unwrap();
        assert!(matches!(
            store
                .rotate_refresh(u0, u1, 10_000, 1_000, 0)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(u0, u1, 10_000, 1_000, 0)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
    }

    #[tokio::test]
    async fn expired_rows_are_purged_and_rate_windows_reset() {
        let store = store();
        store
            .put_refresh([40u8; 32], grant("old", 100))
            .await
            .unwrap();
        store
            .put_refresh([41u8; 32], grant("new", 10_000))
            .await
            .unwrap();
        store
            .put_session(
                [42u8; 32],
                BrowserSession {
                    user: None,
                    expires_at: 100,
                },
            )
            .await
            .unwrap();
        let removed = store.purge_expired(1_000).await.unwrap();
        assert!(removed >= 3, "{removed}"); // refresh token, family, session
        assert!(store.refresh([41u8; 32], 1_000).await.unwrap().is_some());
        assert!(store.session([42u8; 32], 50).await.unwrap().is_none());

        assert_eq!(store.hit("k", 120, 60).await.unwrap(), 1);
        assert_eq!(store.hit("k", 150, 60).await.unwrap(), 2);
        assert_eq!(store.hit("k", 180, 60).await.unwrap(), 1, "a new window");
    }

    /// Families written before they named their client (schema 3) are attributed to it from
    /// their refresh tokens or their code, so deleting the client still ends them.
    #[tokio::test]
    async fn families_from_before_the_client_column_are_revoked_with_their_client() {
        let dir = std::env::temp_dir().join(format!("mcp-gw-store-v3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("as.db");
        {
            let mut c = Connection::open(&path).unwrap();
            for (i, migration) in MIGRATIONS[..3].iter().enumerate() {
                let tx = c.transaction().unwrap();
                tx.execute_batch(migration).unwrap();
                tx.pragma_update(None, "user_version", (i + 1) as u32)
                    .unwrap();
                tx.commit().unwrap();
            }
            let refresh = RefreshGrant {
                client_id: "old-client".into(),
                ..grant("by-refresh", 5_000)
            };
            let code = CodeGrant {
                client_id: "old-client".into(),
                redirect_uri: "https://app.example/cb".into(),
                redirect_uri_given: true,
                code_challenge: "x".into(),
                resource: "https://r.example/mcp".into(),
                scopes: vec![],
                user: user(),
                family_id: "by-code".into(),
                expires_at: 5_000,
            };
            c.execute_batch(
                "INSERT INTO clients VALUES ('old-client', '{}', 'fp', 1, 5000);
                 INSERT INTO families VALUES ('by-refresh', 0, 5000), ('by-code', 0, 5000),
                    ('other', 0, 5000);
                 INSERT INTO access_tokens VALUES ('a1', 'by-refresh', 4000),
                    ('a2', 'by-code', 4000), ('a3', 'other', 4000);",
            )
            .unwrap();
            c.execute(
                "INSERT INTO refresh_tokens (token, family_id, record, expires_at)
                 VALUES (x'01', 'by-refresh', ?1, 5000)",
                params![to_json(&refresh).unwrap()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO codes (code, record, used, expires_at) VALUES (x'02', ?1, 1, 5000)",
                params![to_json(&code).unwrap()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let deletion = store.delete_client("old-client", 1_000).await.unwrap();
        let mut revoked = deletion.revoked_access;
        revoked.sort();
        assert_eq!(
            revoked,
            vec![("a1".to_string(), 4_000), ("a2".to_string(), 4_000)]
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_from_a_newer_gateway_is_refused() {
        let dir = std::env::temp_dir().join(format!("mcp-gw-store-newer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("as.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99u32).unwrap();
        }
        let error = SqliteStore::open(&path).err().expect("refused");
        assert!(
            error.to_string().contains("newer than this gateway"),
            "{error}"
        );
        // And a current one opens twice (migrations are idempotent).
        let fresh = dir.join("fresh.db");
        drop(SqliteStore::open(&fresh).unwrap());
        drop(SqliteStore::open(&fresh).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
