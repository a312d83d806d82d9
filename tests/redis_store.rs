//! The Redis store behaves like the SQLite store: every scenario of `scenarios` runs against
//! both (`on_sqlite::…` and `on_redis::…`, a real redis-server each), then `redis_only`
//! covers what only a shared, networked store has: two replicas racing, TTLs, passwords,
//! and a Redis that is unreachable, silent, killed or paused.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use mcp_auth_gateway::auth::principal::now_unix;
use mcp_auth_gateway::authorization_server::store::redis::RedisStore;
use mcp_auth_gateway::authorization_server::store::sqlite::SqliteStore;
use mcp_auth_gateway::authorization_server::store::{
    BrowserSession, ClientDeletion, CodeGrant, Consent, Digest, LoginState, PendingAuthorization,
    Redemption, RefreshGrant, RegisteredClient, Rotation, Store, StoredKey, UserIdentity,
};
use mcp_auth_gateway::config::redis::RedisSettings;
use mcp_auth_gateway::config::secret::Secret;

const PREFIX: &str = "gw-test:";

/// A SQLite store in a fresh file; the directory goes when the guard drops.
fn sqlite_store(name: &str) -> (SqliteStore, TempDir) {
    let dir = TempDir(
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sqlite-store-{name}-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    let store = SqliteStore::open(&dir.0.join("as.db")).expect("open sqlite");
    (store, dir)
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(url: &str, timeout: Duration) -> RedisSettings {
    RedisSettings {
        url: url.to_string(),
        username: None,
        password: None,
        ca_file: None,
        key_prefix: PREFIX.to_string(),
        timeout,
    }
}

async fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&settings(&server.url(), Duration::from_secs(2)))
        .await
        .expect("connect to redis")
}

/// A plain connection to look at what the store wrote.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

async fn ttl(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL")
        .arg(key)
        .query_async(connection)
        .await
        .expect("TTL")
}

fn digest(n: u8) -> Digest {
    [n; 32]
}

fn hex(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn user() -> UserIdentity {
    UserIdentity {
        subject: "local:alice".into(),
        provider: None,
        username: Some("alice".into()),
        name: None,
        email: Some("alice@example.com".into()),
        groups: vec!["staff".into()],
    }
}

fn code_grant(client_id: &str, family: &str, expires_at: u64) -> CodeGrant {
    CodeGrant {
        client_id: client_id.into(),
        redirect_uri: "https://app.example/cb".into(),
        redirect_uri_given: true,
        code_challenge: "challenge".into(),
        resource: "https://r.example/mcp".into(),
        scopes: vec!["mcp:tools".into()],
        user: user(),
        family_id: family.into(),
        expires_at,
    }
}

fn refresh_grant(family: &str, expires_at: u64) -> RefreshGrant {
    RefreshGrant {
        family_id: family.into(),
        client_id: "c".into(),
        resource: "https://r.example/mcp".into(),
        scopes: vec!["mcp:tools".into()],
        user: user(),
        expires_at,
        family_expires_at: 0,
    }
}

fn registered(client_id: &str, fingerprint: &str, expires_at: u64) -> RegisteredClient {
    RegisteredClient {
        client_id: client_id.into(),
        metadata: serde_json::json!({
            "client_name": format!("App {client_id}"),
            "redirect_uris": ["https://app.example/cb"],
        }),
        secret_sha256: Some([7u8; 32]),
        registration_token_sha256: [8u8; 32],
        fingerprint: fingerprint.into(),
        issued_at: expires_at.saturating_sub(3_600),
        expires_at,
        used: false,
    }
}

fn signing(kid: &str, created_at: u64) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        algorithm: "ES256".into(),
        private_der: vec![1, 2, 3, 250],
        created_at,
        retired_at: None,
        publish_until: None,
    }
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serializes")
}

fn sorted(mut list: Vec<(String, u64)>) -> Vec<(String, u64)> {
    list.sort();
    list
}

/// One scenario per behaviour of the `Store` trait, each run on both backends.
mod scenarios {
    use super::*;

    pub async fn codes_are_single_use_and_bound_to_their_client(store: &dyn Store) {
        let t = now_unix();
        let code = digest(1);
        let grant = code_grant("c", "fam-code", t + 60);
        store.put_code(code, grant.clone()).await.unwrap();
        // Someone else's code: nothing learnt, nothing spent.
        assert!(matches!(
            store.redeem_code(code, "other", t).await.unwrap(),
            Redemption::Unknown
        ));
        match store.redeem_code(code, "c", t).await.unwrap() {
            Redemption::Fresh(found) => assert_eq!(json(&found), json(&grant)),
            other => panic!("{other:?}"),
        }
        match store.redeem_code(code, "c", t + 1).await.unwrap() {
            Redemption::Replayed(found) => assert_eq!(json(&found), json(&grant)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.redeem_code(code, "other", t + 1).await.unwrap(),
            Redemption::Unknown
        ));
        // A used code is remembered past its expiry: a late replay is still a replay.
        assert!(matches!(
            store.redeem_code(code, "c", t + 300).await.unwrap(),
            Redemption::Replayed(_)
        ));
        assert!(matches!(
            store.redeem_code(digest(2), "c", t).await.unwrap(),
            Redemption::Unknown
        ));
        // Expired and unused: unknown, and the attempt spends nothing.
        let late = digest(3);
        store
            .put_code(late, code_grant("c", "fam-late", t + 30))
            .await
            .unwrap();
        assert!(matches!(
            store.redeem_code(late, "c", t + 30).await.unwrap(),
            Redemption::Unknown
        ));
        assert!(matches!(
            store.redeem_code(late, "c", t + 29).await.unwrap(),
            Redemption::Fresh(_)
        ));
        // A code is stored once.
        assert!(store
            .put_code(code, code_grant("c", "fam-code", t + 60))
            .await
            .is_err());
        // The code's family exists and is live: it records tokens until it is revoked.
        assert!(store
            .record_access_token("fam-code", "jti-code", t + 100)
            .await
            .unwrap());
        assert_eq!(
            store.revoke_family("fam-code", t).await.unwrap(),
            vec![("jti-code".to_string(), t + 100)]
        );
        assert!(!store
            .record_access_token("fam-code", "jti-after", t + 100)
            .await
            .unwrap());
    }

    /// sqlite.rs's `rotation_grace_and_reuse`, on the wall clock.
    pub async fn rotation_grace_and_reuse(store: &dyn Store) {
        let t = now_unix();
        let (t0, t1, t2) = (digest(10), digest(11), digest(12));
        store
            .put_refresh(t0, refresh_grant("f", t + 10_000))
            .await
            .unwrap();
        assert!(store
            .record_access_token("f", "jti-1", t + 5_000)
            .await
            .unwrap());
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, t + 10_000, t + 1_000, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, t + 10_000, t + 1_010, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(store.refresh(t0, t + 1_010).await.unwrap().unwrap().rotated);
        assert!(!store.refresh(t1, t + 1_010).await.unwrap().unwrap().rotated);
        assert!(matches!(
            store
                .rotate_refresh(t1, t2, t + 10_000, t + 1_020, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        match store
            .rotate_refresh(t0, digest(13), t + 10_000, t + 1_021, 30)
            .await
            .unwrap()
        {
            Rotation::Reused { revoked_access } => {
                assert_eq!(revoked_access, vec![("jti-1".to_string(), t + 5_000)])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store
                .rotate_refresh(t2, digest(14), t + 10_000, t + 1_022, 30)
                .await
                .unwrap(),
            Rotation::Invalid
        ));
        assert!(store.refresh(t2, t + 1_022).await.unwrap().is_none());
        assert!(!store
            .record_access_token("f", "jti-2", t + 5_000)
            .await
            .unwrap());
        assert_eq!(
            store.revoked_access_tokens(t + 1_022).await.unwrap(),
            vec![("jti-1".to_string(), t + 5_000)]
        );
    }

    /// sqlite.rs's `outside_the_grace_window_any_reuse_revokes`, on the wall clock.
    pub async fn outside_the_grace_window_any_reuse_revokes(store: &dyn Store) {
        let t = now_unix();
        let (t0, t1) = (digest(20), digest(21));
        store
            .put_refresh(t0, refresh_grant("g", t + 10_000))
            .await
            .unwrap();
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, t + 10_000, t + 1_000, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, t + 10_000, t + 1_031, 30)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
        assert!(store.refresh(t1, t + 1_031).await.unwrap().is_none());
        // Strict mode (no grace): the very next reuse revokes.
        let (u0, u1) = (digest(30), digest(31));
        store
            .put_refresh(u0, refresh_grant("h", t + 10_000))
            .await
            .unwrap();
        assert!(matches!(
            store
                .rotate_refresh(u0, u1, t + 10_000, t + 1_000, 0)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(u0, u1, t + 10_000, t + 1_000, 0)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
    }

    pub async fn parallel_refreshes_within_grace_share_one_successor(store: &dyn Store) {
        let t = now_unix();
        let (t0, t1, t2) = (digest(40), digest(41), digest(42));
        store
            .put_refresh(t0, refresh_grant("p", t + 10_000))
            .await
            .unwrap();
        let rotate = || store.rotate_refresh(t0, t1, t + 10_000, t + 100, 30);
        let outcomes = tokio::join!(rotate(), rotate(), rotate(), rotate());
        for outcome in [outcomes.0, outcomes.1, outcomes.2, outcomes.3] {
            match outcome.unwrap() {
                Rotation::Rotated(grant) => assert_eq!(grant.family_id, "p"),
                other => panic!("{other:?}"),
            }
        }
        assert!(store.refresh(t0, t + 100).await.unwrap().unwrap().rotated);
        assert!(!store.refresh(t1, t + 100).await.unwrap().unwrap().rotated);
        // The window counts from the first rotation: a use at +20 does not slide it.
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, t + 10_000, t + 120, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(t0, t1, t + 10_000, t + 131, 30)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
        assert!(store.refresh(t1, t + 131).await.unwrap().is_none());
        // Within the window but after the successor was used: reuse.
        let (u0, u1) = (digest(43), digest(44));
        store
            .put_refresh(u0, refresh_grant("q", t + 10_000))
            .await
            .unwrap();
        assert!(matches!(
            store
                .rotate_refresh(u0, u1, t + 10_000, t + 100, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(u1, t2, t + 10_000, t + 101, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(matches!(
            store
                .rotate_refresh(u0, u1, t + 10_000, t + 102, 30)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
    }

    pub async fn family_revocation_returns_live_access_tokens(store: &dyn Store) {
        let t = now_unix();
        let r1 = digest(50);
        store
            .put_refresh(r1, refresh_grant("fam", t + 1_000))
            .await
            .unwrap();
        assert!(store
            .record_access_token("fam", "live", t + 100)
            .await
            .unwrap());
        assert!(store
            .record_access_token("fam", "expired", t.saturating_sub(10))
            .await
            .unwrap());
        assert_eq!(
            store.access_token_family("live").await.unwrap().as_deref(),
            Some("fam")
        );
        assert_eq!(store.access_token_family("nope").await.unwrap(), None);
        let revoked = store.revoke_family("fam", t).await.unwrap();
        assert_eq!(revoked, vec![("live".to_string(), t + 100)]);
        assert!(store.refresh(r1, t).await.unwrap().is_none());
        assert!(matches!(
            store
                .rotate_refresh(r1, digest(51), t + 1_000, t, 30)
                .await
                .unwrap(),
            Rotation::Invalid
        ));
        assert!(!store
            .record_access_token("fam", "late", t + 100)
            .await
            .unwrap());
        assert_eq!(
            store.revoked_access_tokens(t).await.unwrap(),
            vec![("live".to_string(), t + 100)]
        );
        // Revoking again names the same tokens (they are still live).
        assert_eq!(
            store.revoke_family("fam", t).await.unwrap(),
            vec![("live".to_string(), t + 100)]
        );
        // A family nobody stored is not revoked: its tokens are recorded.
        assert!(store
            .record_access_token("never-stored", "x", t + 100)
            .await
            .unwrap());
        assert!(store.revoke_family("nothing", t).await.unwrap().is_empty());
    }

    pub async fn refresh_expiry_and_family_bounds(store: &dyn Store) {
        let t = now_unix();
        let (r1, r2) = (digest(60), digest(61));
        let mut grant = refresh_grant("bounded", t + 100);
        grant.family_expires_at = t + 500;
        store.put_refresh(r1, grant).await.unwrap();
        assert!(store.refresh(r1, t + 100).await.unwrap().is_none());
        let found = store.refresh(r1, t + 99).await.unwrap().expect("live");
        assert!(!found.rotated);
        assert_eq!(found.grant.expires_at, t + 100);
        assert_eq!(found.grant.family_expires_at, t + 500);
        // Rotation answers with the presented token's grant; the successor lives until
        // its own expiry, which extends the family.
        match store
            .rotate_refresh(r1, r2, t + 400, t + 50, 30)
            .await
            .unwrap()
        {
            Rotation::Rotated(grant) => {
                assert_eq!(grant.expires_at, t + 100);
                assert_eq!(json(&grant.user), json(&user()));
            }
            other => panic!("{other:?}"),
        }
        let next = store
            .refresh(r2, t + 300)
            .await
            .unwrap()
            .expect("successor");
        assert!(!next.rotated);
        assert_eq!(next.grant.expires_at, t + 400);
        assert_eq!(next.grant.family_expires_at, t + 500);
        assert_eq!(next.grant.family_id, "bounded");
        assert_eq!(next.grant.scopes, vec!["mcp:tools".to_string()]);
        // An expired token is invalid, and presenting it revokes nothing.
        assert!(matches!(
            store
                .rotate_refresh(r1, r2, t + 400, t + 100, 30)
                .await
                .unwrap(),
            Rotation::Invalid
        ));
        assert!(store.refresh(r2, t + 300).await.unwrap().is_some());
        assert!(matches!(
            store
                .rotate_refresh(digest(62), digest(63), t + 400, t, 30)
                .await
                .unwrap(),
            Rotation::Invalid
        ));
        assert!(store.refresh(digest(62), t).await.unwrap().is_none());
        // A refresh token is stored once.
        assert!(store
            .put_refresh(r2, refresh_grant("bounded", t + 400))
            .await
            .is_err());
    }

    pub async fn consents_are_remembered(store: &dyn Store) {
        assert!(store.consent("local:alice", "c").await.unwrap().is_none());
        let consent = Consent {
            scopes: vec!["mcp:tools".into()],
            resource: "https://r.example/mcp".into(),
            granted_at: 1_000,
        };
        store
            .put_consent("local:alice", "c", consent.clone())
            .await
            .unwrap();
        let found = store.consent("local:alice", "c").await.unwrap().unwrap();
        assert_eq!(json(&found), json(&consent));
        // Separators in subjects and client ids do not make two consents one.
        assert!(store.consent("local", "alice:c").await.unwrap().is_none());
        assert!(store.consent("local:alice", "d").await.unwrap().is_none());
        let wider = Consent {
            scopes: vec!["mcp:tools".into(), "mcp:admin".into()],
            granted_at: 2_000,
            ..consent
        };
        store
            .put_consent("local:alice", "c", wider.clone())
            .await
            .unwrap();
        let found = store.consent("local:alice", "c").await.unwrap().unwrap();
        assert_eq!(json(&found), json(&wider));
    }

    pub async fn sessions_expire(store: &dyn Store) {
        let t = now_unix();
        let id = digest(70);
        store
            .put_session(
                id,
                BrowserSession {
                    user: Some(user()),
                    expires_at: t + 100,
                },
            )
            .await
            .unwrap();
        let found = store.session(id, t).await.unwrap().expect("live");
        assert_eq!(found.user, Some(user()));
        assert!(store.session(id, t + 100).await.unwrap().is_none());
        store
            .put_session(
                id,
                BrowserSession {
                    user: None,
                    expires_at: t + 200,
                },
            )
            .await
            .unwrap();
        let found = store.session(id, t + 150).await.unwrap().expect("replaced");
        assert_eq!(found.user, None);
        assert!(store.session(digest(71), t).await.unwrap().is_none());
    }

    pub async fn pending_requests_are_deleted_once(store: &dyn Store) {
        let t = now_unix();
        let id = digest(80);
        let pending = PendingAuthorization {
            client_id: "c".into(),
            redirect_uri: "https://app.example/cb".into(),
            redirect_uri_given: true,
            state: Some("xyz".into()),
            code_challenge: "challenge".into(),
            resource: "https://r.example/mcp".into(),
            scopes: vec!["mcp:tools".into()],
            expires_at: t + 600,
        };
        store.put_pending(id, pending.clone()).await.unwrap();
        let found = store.pending(id).await.unwrap().expect("stored");
        assert_eq!(json(&found), json(&pending));
        assert!(store.delete_pending(id).await.unwrap());
        assert!(!store.delete_pending(id).await.unwrap());
        assert!(store.pending(id).await.unwrap().is_none());
        assert!(!store.delete_pending(digest(81)).await.unwrap());
        let expired = PendingAuthorization {
            expires_at: t - 1,
            ..pending
        };
        store.put_pending(digest(82), expired).await.unwrap();
        assert!(store.pending(digest(82)).await.unwrap().is_none());
    }

    pub async fn login_states_are_taken_once(store: &dyn Store) {
        let t = now_unix();
        let login = LoginState {
            provider: "github".into(),
            request_id: "req".into(),
            session: digest(90),
            code_verifier: "verifier".into(),
            nonce: "nonce".into(),
            client_id: None,
            issuer: None,
            expires_at: t + 600,
        };
        store
            .put_login_state(digest(91), login.clone())
            .await
            .unwrap();
        let found = store
            .take_login_state(digest(91), t)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(json(&found), json(&login));
        assert!(store
            .take_login_state(digest(91), t)
            .await
            .unwrap()
            .is_none());
        // Expired: not honoured, and gone.
        let short = LoginState {
            expires_at: t + 100,
            ..login
        };
        store.put_login_state(digest(92), short).await.unwrap();
        assert!(store
            .take_login_state(digest(92), t + 100)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .take_login_state(digest(92), t)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn rate_counters_count_per_fixed_window(store: &dyn Store) {
        let t = now_unix();
        let start = t - t % 60;
        assert_eq!(store.hit("k", start, 60).await.unwrap(), 1);
        assert_eq!(store.hit("k", start + 30, 60).await.unwrap(), 2);
        assert_eq!(store.hit("k", start + 59, 60).await.unwrap(), 3);
        assert_eq!(store.hit("other", start + 59, 60).await.unwrap(), 1);
        assert_eq!(
            store.hit("k", start + 60, 60).await.unwrap(),
            1,
            "a new window"
        );
        assert_eq!(store.hit("k", start + 61, 60).await.unwrap(), 2);
        // A zero window counts per second.
        assert_eq!(store.hit("z", t, 0).await.unwrap(), 1);
        assert_eq!(store.hit("z", t, 0).await.unwrap(), 2);
        assert_eq!(store.hit("z", t + 1, 0).await.unwrap(), 1);
    }

    pub async fn server_secrets_are_created_once(store: &dyn Store) {
        let first = store.server_secret("csrf").await.unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(store.server_secret("csrf").await.unwrap(), first);
        let other = store.server_secret("refresh").await.unwrap();
        assert_eq!(other.len(), 32);
        assert_ne!(other, first);
    }

    pub async fn signing_keys_in_creation_order_and_retired_once(store: &dyn Store) {
        let t = now_unix();
        assert!(store.signing_keys().await.unwrap().is_empty());
        let (new, old) = (signing("k-new", t), signing("k-old", t - 1_000));
        store.put_signing_key(new.clone()).await.unwrap();
        store.put_signing_key(old.clone()).await.unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(json(&keys), json(&vec![old.clone(), new.clone()]));
        store
            .retire_keys_except("k-new", t, t + 3_600)
            .await
            .unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys[0].kid, "k-old");
        assert_eq!(keys[0].retired_at, Some(t));
        assert_eq!(keys[0].publish_until, Some(t + 3_600));
        assert_eq!(keys[0].private_der, old.private_der);
        assert_eq!(json(&keys[1]), json(&new));
        // Retired keys keep their dates.
        store
            .retire_keys_except("k-new", t + 5, t + 7_200)
            .await
            .unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys[0].retired_at, Some(t));
        assert_eq!(keys[0].publish_until, Some(t + 3_600));
        // A key stored retired stays as stored; a replaced key is replaced.
        let mut stale = signing("k-stale", t - 2_000);
        stale.retired_at = Some(t - 10);
        stale.publish_until = Some(t + 100);
        store.put_signing_key(stale.clone()).await.unwrap();
        let newer = StoredKey {
            algorithm: "RS256".into(),
            ..new.clone()
        };
        store.put_signing_key(newer.clone()).await.unwrap();
        store
            .retire_keys_except("k-new", t + 6, t + 9_000)
            .await
            .unwrap();
        let keys = store.signing_keys().await.unwrap();
        let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["k-stale", "k-old", "k-new"]);
        assert_eq!(json(&keys[0]), json(&stale));
        assert_eq!(json(&keys[2]), json(&newer));
        // The active key changes: the previous one retires now.
        store
            .retire_keys_except("k-old", t + 7, t + 9_000)
            .await
            .unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys[2].retired_at, Some(t + 7));
        assert_eq!(keys[2].publish_until, Some(t + 9_000));
    }

    pub async fn registered_clients_dedup_and_touch(store: &dyn Store) {
        let t = now_unix();
        let ids = |clients: Vec<RegisteredClient>| -> Vec<String> {
            clients.into_iter().map(|c| c.client_id).collect()
        };
        let a1 = registered("c-a1", "fp-a", t + 3_600);
        store.put_client(a1.clone()).await.unwrap();
        store
            .put_client(registered("c-a2", "fp-a", t + 3_600))
            .await
            .unwrap();
        store
            .put_client(registered("c-b", "fp-b", t + 3_600))
            .await
            .unwrap();
        let found = store.client("c-a1").await.unwrap().expect("stored");
        assert_eq!(json(&found), json(&a1));
        assert!(store.client("nope").await.unwrap().is_none());
        assert_eq!(
            ids(store.list_clients().await.unwrap()),
            ["c-a1", "c-a2", "c-b"]
        );
        // Use protects a registration from deduplication.
        store.touch_client("c-a2", t + 7_200).await.unwrap();
        assert!(store.client("c-a2").await.unwrap().unwrap().used);
        assert!(!store.client("c-a1").await.unwrap().unwrap().used);
        store.touch_client("nope", t + 7_200).await.unwrap();
        assert_eq!(store.delete_unused_clients("fp-a").await.unwrap(), 1);
        assert!(store.client("c-a1").await.unwrap().is_none());
        assert!(store.client("c-a2").await.unwrap().is_some());
        assert_eq!(store.delete_unused_clients("fp-a").await.unwrap(), 0);
        assert_eq!(store.delete_unused_clients("fp-none").await.unwrap(), 0);
        // Re-registered under another fingerprint: only the new one counts.
        store
            .put_client(registered("c-b", "fp-a", t + 3_600))
            .await
            .unwrap();
        assert_eq!(store.delete_unused_clients("fp-b").await.unwrap(), 0);
        assert_eq!(store.delete_unused_clients("fp-a").await.unwrap(), 1);
        assert!(store.client("c-b").await.unwrap().is_none());
        // Stored as used: never deduplicated.
        let used = RegisteredClient {
            used: true,
            ..registered("c-used", "fp-c", t + 3_600)
        };
        store.put_client(used).await.unwrap();
        assert_eq!(store.delete_unused_clients("fp-c").await.unwrap(), 0);
        assert!(store.client("c-used").await.unwrap().unwrap().used);
        assert!(store.delete_client("c-a2", t).await.unwrap().existed);
        assert!(!store.delete_client("c-a2", t).await.unwrap().existed);
        assert_eq!(ids(store.list_clients().await.unwrap()), ["c-used"]);
        // Expired registrations are not found (nor listed once purged).
        store
            .put_client(registered("c-old", "fp-d", t - 1))
            .await
            .unwrap();
        assert!(store.client("c-old").await.unwrap().is_none());
        store.purge_expired(t).await.unwrap();
        assert_eq!(ids(store.list_clients().await.unwrap()), ["c-used"]);
    }

    /// RFC 7592 §2.3: deleting a client ends every grant made to it — families begun by a
    /// code or by a refresh token, rotated or not — and nobody else's.
    pub async fn deleting_a_client_revokes_its_grants(store: &dyn Store) {
        let t = now_unix();
        store
            .put_client(registered("doomed", "fp-doomed", t + 3_600))
            .await
            .unwrap();
        // A grant begun by a code, its access token recorded, then refreshed and rotated.
        store
            .put_code(digest(120), code_grant("doomed", "by-code", t + 600))
            .await
            .unwrap();
        assert!(store
            .record_access_token("by-code", "a-code", t + 100)
            .await
            .unwrap());
        let grant = RefreshGrant {
            client_id: "doomed".into(),
            ..refresh_grant("by-code", t + 1_000)
        };
        store.put_refresh(digest(121), grant).await.unwrap();
        assert!(matches!(
            store
                .rotate_refresh(digest(121), digest(122), t + 2_000, t, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(store
            .record_access_token("by-code", "a-rotated", t + 200)
            .await
            .unwrap());
        // A family that exists only through a refresh token.
        let grant = RefreshGrant {
            client_id: "doomed".into(),
            ..refresh_grant("by-refresh", t + 1_000)
        };
        store.put_refresh(digest(123), grant).await.unwrap();
        assert!(store
            .record_access_token("by-refresh", "a-refresh", t + 300)
            .await
            .unwrap());
        assert!(store
            .record_access_token("by-refresh", "a-expired", t.saturating_sub(5))
            .await
            .unwrap());
        // Another client's grant.
        store
            .put_refresh(digest(124), refresh_grant("bystander", t + 1_000))
            .await
            .unwrap();
        assert!(store
            .record_access_token("bystander", "a-other", t + 100)
            .await
            .unwrap());

        let deletion = store.delete_client("doomed", t).await.unwrap();
        assert!(deletion.existed);
        let revoked = vec![
            ("a-code".to_string(), t + 100),
            ("a-refresh".to_string(), t + 300),
            ("a-rotated".to_string(), t + 200),
        ];
        assert_eq!(sorted(deletion.revoked_access), revoked);
        assert_eq!(
            sorted(store.revoked_access_tokens(t).await.unwrap()),
            revoked
        );
        for token in [121, 122, 123] {
            assert!(store.refresh(digest(token), t).await.unwrap().is_none());
        }
        assert!(!store
            .record_access_token("by-code", "late", t + 100)
            .await
            .unwrap());
        // The bystander's grant lives on.
        assert!(store.refresh(digest(124), t).await.unwrap().is_some());
        assert!(store
            .record_access_token("bystander", "a-other-2", t + 100)
            .await
            .unwrap());
        // Deleting again finds nothing to revoke.
        assert_eq!(
            store.delete_client("doomed", t).await.unwrap(),
            ClientDeletion::default()
        );
    }

    /// A grant without refresh tokens keeps its family as long as its access tokens live
    /// (the family began with the code's short life), so deleting the client still ends it;
    /// an id that is not a stored registration (a client of the configuration file) ends
    /// nothing.
    pub async fn deletion_reaches_grants_without_refresh_tokens_only_of_registrations(
        store: &dyn Store,
    ) {
        let t = now_unix();
        store
            .put_client(registered("code-only", "fp-code-only", t + 3_600))
            .await
            .unwrap();
        store
            .put_code(digest(130), code_grant("code-only", "short", t + 60))
            .await
            .unwrap();
        assert!(store
            .record_access_token("short", "a-short", t + 3_600)
            .await
            .unwrap());
        store
            .put_code(digest(131), code_grant("configured", "cfg", t + 60))
            .await
            .unwrap();
        assert!(store
            .record_access_token("cfg", "a-cfg", t + 3_600)
            .await
            .unwrap());
        // Past the codes' lives: their families stay for their tokens.
        store.purge_expired(t + 120).await.unwrap();
        assert_eq!(
            store.delete_client("configured", t + 120).await.unwrap(),
            ClientDeletion::default()
        );
        assert!(store
            .record_access_token("cfg", "a-cfg-2", t + 3_600)
            .await
            .unwrap());
        let deletion = store.delete_client("code-only", t + 120).await.unwrap();
        assert!(deletion.existed);
        assert_eq!(
            deletion.revoked_access,
            vec![("a-short".to_string(), t + 3_600)]
        );
        assert_eq!(
            store.revoked_access_tokens(t + 120).await.unwrap(),
            vec![("a-short".to_string(), t + 3_600)]
        );
    }

    pub async fn revoked_access_tokens_until_expiry(store: &dyn Store) {
        let t = now_unix();
        assert!(store.revoked_access_tokens(t).await.unwrap().is_empty());
        store.revoke_access_token("j1", t + 100).await.unwrap();
        store.revoke_access_token("j2", t + 10).await.unwrap();
        store.revoke_access_token("j0", t - 5).await.unwrap();
        assert_eq!(
            sorted(store.revoked_access_tokens(t).await.unwrap()),
            vec![("j1".to_string(), t + 100), ("j2".to_string(), t + 10)]
        );
        assert_eq!(
            store.revoked_access_tokens(t + 50).await.unwrap(),
            vec![("j1".to_string(), t + 100)]
        );
        store.revoke_access_token("j1", t + 200).await.unwrap();
        assert_eq!(
            store.revoked_access_tokens(t + 50).await.unwrap(),
            vec![("j1".to_string(), t + 200)]
        );
    }

    pub async fn purge_keeps_what_lives(store: &dyn Store) {
        let t = now_unix();
        store
            .put_refresh(digest(100), refresh_grant("live", t + 1_000))
            .await
            .unwrap();
        store
            .put_session(
                digest(101),
                BrowserSession {
                    user: None,
                    expires_at: t + 1_000,
                },
            )
            .await
            .unwrap();
        store
            .put_code(digest(102), code_grant("c", "live-code", t + 60))
            .await
            .unwrap();
        store
            .put_client(registered("c-live", "fp", t + 1_000))
            .await
            .unwrap();
        store.put_signing_key(signing("k", t)).await.unwrap();
        store.revoke_access_token("live", t + 100).await.unwrap();
        store.revoke_access_token("dead", t - 1).await.unwrap();
        let removed = store.purge_expired(t).await.unwrap();
        assert!(removed >= 1, "the dead revocation: {removed}");
        assert!(store.refresh(digest(100), t).await.unwrap().is_some());
        assert!(store.session(digest(101), t).await.unwrap().is_some());
        assert!(matches!(
            store.redeem_code(digest(102), "c", t).await.unwrap(),
            Redemption::Fresh(_)
        ));
        assert!(store.client("c-live").await.unwrap().is_some());
        assert_eq!(store.signing_keys().await.unwrap().len(), 1);
        assert_eq!(
            store.revoked_access_tokens(t).await.unwrap(),
            vec![("live".to_string(), t + 100)]
        );
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (store, _dir) = super::sqlite_store(stringify!($scenario));
                    super::scenarios::$scenario(&store).await;
                }
            )*
        }

        mod on_redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some(server) =
                        super::RedisServer::start(stringify!($scenario)).await
                    else {
                        return;
                    };
                    let store = super::redis_store(&server).await;
                    super::scenarios::$scenario(&store).await;
                }
            )*
        }
    };
}

conformance!(
    codes_are_single_use_and_bound_to_their_client,
    rotation_grace_and_reuse,
    outside_the_grace_window_any_reuse_revokes,
    parallel_refreshes_within_grace_share_one_successor,
    family_revocation_returns_live_access_tokens,
    refresh_expiry_and_family_bounds,
    consents_are_remembered,
    sessions_expire,
    pending_requests_are_deleted_once,
    login_states_are_taken_once,
    rate_counters_count_per_fixed_window,
    server_secrets_are_created_once,
    signing_keys_in_creation_order_and_retired_once,
    registered_clients_dedup_and_touch,
    deleting_a_client_revokes_its_grants,
    deletion_reaches_grants_without_refresh_tokens_only_of_registrations,
    revoked_access_tokens_until_expiry,
    purge_keeps_what_lives,
);

/// What only a shared store over the network has.
mod redis_only {
    use std::sync::Arc;

    use super::*;

    /// One replica at a time holds the claim on refreshing a user's upstream token: a second
    /// claim is refused while the first holds, a release by anyone but the holder changes
    /// nothing, the holder's release frees it, and a claim left behind lapses.
    #[tokio::test]
    async fn refresh_claims_are_held_by_one_replica_and_lapse() {
        let Some(server) = RedisServer::start("refresh-claims").await else {
            return;
        };
        let a = redis_store(&server).await;
        let b = redis_store(&server).await;
        let ttl = Duration::from_secs(60);
        async fn claim(store: &RedisStore, who: &str, ttl: Duration) -> bool {
            store
                .claim_provider_refresh("local:alice", "tools", who, ttl)
                .await
                .unwrap()
        }
        assert!(claim(&a, "claim-a", ttl).await);
        assert!(!claim(&b, "claim-b", ttl).await);
        // Other users and other sources are claimed apart.
        assert!(b
            .claim_provider_refresh("local:bob", "tools", "claim-b", ttl)
            .await
            .unwrap());
        assert!(b
            .claim_provider_refresh("local:alice", "github", "claim-b", ttl)
            .await
            .unwrap());
        b.release_provider_refresh("local:alice", "tools", "claim-b")
            .await
            .unwrap();
        assert!(!claim(&b, "claim-b", ttl).await, "released by a non-holder");
        a.release_provider_refresh("local:alice", "tools", "claim-a")
            .await
            .unwrap();
        assert!(claim(&b, "claim-b", Duration::from_millis(200)).await);
        // B stops without releasing: its claim lapses.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !claim(&a, "claim-a2", ttl).await {
            assert!(Instant::now() < deadline, "the claim never lapsed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A family stored before families named their client (no `client_id`, no index) is
    /// attributed to it on its next rotation, and then ends with the client.
    #[tokio::test]
    async fn families_from_before_the_client_index_join_it_when_rotated() {
        let Some(server) = RedisServer::start("old-families").await else {
            return;
        };
        let store = redis_store(&server).await;
        let mut raw = raw(&server).await;
        let t = now_unix();
        store
            .put_client(registered("c", "fp-old", t + 3_600))
            .await
            .unwrap();
        store
            .put_refresh(digest(140), refresh_grant("old", t + 1_000))
            .await
            .unwrap();
        // As an older gateway left it.
        let _: () = redis::cmd("HDEL")
            .arg(format!("{PREFIX}family:old"))
            .arg("client_id")
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(format!("{PREFIX}client_families:c"))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(matches!(
            store
                .rotate_refresh(digest(140), digest(141), t + 2_000, t, 30)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(store
            .record_access_token("old", "a-old", t + 300)
            .await
            .unwrap());
        let deletion = store.delete_client("c", t).await.unwrap();
        assert_eq!(
            deletion.revoked_access,
            vec![("a-old".to_string(), t + 300)]
        );
        assert!(store.refresh(digest(141), t).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn two_replicas_share_secrets_and_spend_a_code_once() {
        let Some(server) = RedisServer::start("two_replicas").await else {
            return;
        };
        let a = Arc::new(redis_store(&server).await);
        let b = Arc::new(redis_store(&server).await);
        assert_eq!(
            a.server_secret("csrf").await.unwrap(),
            b.server_secret("csrf").await.unwrap()
        );
        let t = now_unix();
        for round in 0..5u8 {
            let code = digest(200 + round);
            a.put_code(code, code_grant("c", "fam", t + 60))
                .await
                .unwrap();
            let mut racers = Vec::new();
            for i in 0..16 {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                racers.push(tokio::spawn(async move {
                    store.redeem_code(code, "c", t).await.unwrap()
                }));
            }
            let (mut fresh, mut replayed) = (0, 0);
            for racer in racers {
                match racer.await.unwrap() {
                    Redemption::Fresh(_) => fresh += 1,
                    Redemption::Replayed(_) => replayed += 1,
                    Redemption::Unknown => panic!("unknown"),
                }
            }
            assert_eq!((fresh, replayed), (1, 15), "round {round}");
        }
        // Parallel refreshes on both replicas: one successor, one chain.
        a.put_refresh(digest(10), refresh_grant("chain", t + 10_000))
            .await
            .unwrap();
        let mut racers = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            racers.push(tokio::spawn(async move {
                store
                    .rotate_refresh(digest(10), digest(11), t + 10_000, t, 30)
                    .await
                    .unwrap()
            }));
        }
        for racer in racers {
            assert!(matches!(racer.await.unwrap(), Rotation::Rotated(_)));
        }
        assert!(!b.refresh(digest(11), t).await.unwrap().unwrap().rotated);
        let mut raw = raw(&server).await;
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{PREFIX}family_refresh:chain"))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(members.len(), 2, "{members:?}");
    }

    #[tokio::test]
    async fn records_expire_with_their_lifetime() {
        let Some(server) = RedisServer::start("ttls").await else {
            return;
        };
        let store = redis_store(&server).await;
        let mut raw = raw(&server).await;
        let t = now_unix();
        store
            .put_session(
                digest(1),
                BrowserSession {
                    user: None,
                    expires_at: t + 100,
                },
            )
            .await
            .unwrap();
        store
            .put_pending(
                digest(2),
                PendingAuthorization {
                    client_id: "c".into(),
                    redirect_uri: "https://app.example/cb".into(),
                    redirect_uri_given: false,
                    state: None,
                    code_challenge: "x".into(),
                    resource: "https://r.example/mcp".into(),
                    scopes: vec![],
                    expires_at: t + 600,
                },
            )
            .await
            .unwrap();
        store
            .put_login_state(
                digest(3),
                LoginState {
                    provider: "p".into(),
                    request_id: "r".into(),
                    session: digest(1),
                    code_verifier: "v".into(),
                    nonce: "n".into(),
                    client_id: None,
                    issuer: None,
                    expires_at: t + 300,
                },
            )
            .await
            .unwrap();
        store
            .put_code(digest(4), code_grant("c", "fam", t + 60))
            .await
            .unwrap();
        store
            .put_refresh(digest(5), refresh_grant("fam", t + 1_000))
            .await
            .unwrap();
        store
            .record_access_token("fam", "jti", t + 300)
            .await
            .unwrap();
        store.hit("login:1.2.3.4", t, 60).await.unwrap();
        store
            .put_client(registered("c1", "fp", t + 500))
            .await
            .unwrap();
        let mut key = signing("k-old", t - 10);
        key.retired_at = Some(t);
        key.publish_until = Some(t + 900);
        store.put_signing_key(key).await.unwrap();
        store.put_signing_key(signing("k-new", t)).await.unwrap();
        store.server_secret("csrf").await.unwrap();
        store
            .put_consent(
                "local:alice",
                "c",
                Consent {
                    scopes: vec![],
                    resource: "r".into(),
                    granted_at: t,
                },
            )
            .await
            .unwrap();

        let about = |seconds: i64| (seconds - 5)..=seconds;
        let expectations: Vec<(String, std::ops::RangeInclusive<i64>)> = vec![
            (format!("session:{}", hex(1)), about(100)),
            (format!("pending:{}", hex(2)), about(600)),
            (format!("login_state:{}", hex(3)), about(300)),
            // Used or not, a code is remembered 600 s past its expiry.
            (format!("code:{}", hex(4)), about(660)),
            (format!("refresh:{}", hex(5)), about(1_000)),
            ("family:fam".into(), about(1_000)),
            ("family_refresh:fam".into(), about(1_000)),
            ("client_families:c".into(), about(1_000)),
            ("access:jti".into(), about(300)),
            ("family_access:fam".into(), about(300)),
            ("client:c1".into(), about(500)),
            ("client_fingerprint:fp".into(), about(500)),
            ("signing_key:k-old".into(), about(900)),
            ("signing_key:k-new".into(), -1..=-1),
            ("secret:csrf".into(), -1..=-1),
            ("consent:local:alice".into(), -1..=-1),
        ];
        for (key, expected) in &expectations {
            let seconds = ttl(&mut raw, &format!("{PREFIX}{key}")).await;
            assert!(expected.contains(&seconds), "TTL of {key}: {seconds}");
        }
        let window_left = 60 - (t % 60) as i64;
        let counter = format!("{PREFIX}rate:60:{}:login:1.2.3.4", t - t % 60);
        let seconds = ttl(&mut raw, &counter).await;
        assert!(
            (window_left - 5..=window_left).contains(&seconds),
            "{seconds}"
        );

        // Use pushes a client's expiry (and its index's); rotation the family's.
        store.touch_client("c1", t + 5_000).await.unwrap();
        store.touch_client("c1", t + 10).await.unwrap();
        assert!(about(5_000).contains(&ttl(&mut raw, &format!("{PREFIX}client:c1")).await));
        assert!(
            about(5_000).contains(&ttl(&mut raw, &format!("{PREFIX}client_fingerprint:fp")).await)
        );
        store
            .rotate_refresh(digest(5), digest(6), t + 2_000, t, 30)
            .await
            .unwrap();
        assert!(about(2_000).contains(&ttl(&mut raw, &format!("{PREFIX}family:fam")).await));
        assert!(about(2_000).contains(&ttl(&mut raw, &format!("{PREFIX}client_families:c")).await));
        assert!(about(2_000).contains(&ttl(&mut raw, &format!("{PREFIX}refresh:{}", hex(6))).await));
        assert!(about(1_000).contains(&ttl(&mut raw, &format!("{PREFIX}refresh:{}", hex(5))).await));
        // Retirement schedules the key's end.
        store
            .retire_keys_except("k-other", t, t + 4_000)
            .await
            .unwrap();
        assert!(about(4_000).contains(&ttl(&mut raw, &format!("{PREFIX}signing_key:k-new")).await));

        // Everything is under the prefix.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(keys.len() >= expectations.len());
        for key in keys {
            assert!(key.starts_with(PREFIX), "{key}");
        }
    }

    #[tokio::test]
    async fn password_protected_redis() {
        let password = "s3cret-Pass-w0rd";
        let Some(server) = RedisServer::start_with_password("password", password).await else {
            return;
        };
        let with = |username: Option<&str>, password: Option<&str>| RedisSettings {
            username: username.map(str::to_string),
            password: password.map(|p| Secret::new(p.to_string())),
            ..settings(&server.url(), Duration::from_secs(2))
        };
        let store = RedisStore::connect(&with(None, Some(password)))
            .await
            .expect("the right password");
        assert_eq!(store.hit("k", now_unix(), 60).await.unwrap(), 1);
        RedisStore::connect(&with(Some("default"), Some(password)))
            .await
            .expect("the default user by name");

        let wrong = "wrong-Pass-w0rd";
        for (username, attempt) in [
            (None, Some(wrong)),
            (None, None),
            (Some("app"), Some(password)),
        ] {
            let error = match RedisStore::connect(&with(username, attempt)).await {
                Ok(_) => panic!("connected with {username:?}"),
                Err(error) => error.to_string(),
            };
            assert!(
                !error.contains(password) && !error.contains(wrong),
                "{error}"
            );
            assert!(error.contains(&server.url()), "{error}");
        }

        // An ACL user with its own password.
        let mut raw =
            redis::Client::open(format!("redis://:{password}@127.0.0.1:{}/0", server.port()))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "app", "on", ">app-Pass-w0rd", "~*", "+@all"])
            .query_async(&mut raw)
            .await
            .unwrap();
        let app = RedisStore::connect(&with(Some("app"), Some("app-Pass-w0rd")))
            .await
            .expect("the ACL user");
        assert_eq!(app.hit("k", now_unix(), 60).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn unreachable_redis_fails_connect_within_the_timeout() {
        let dead = common::dead_port();
        let url = format!("redis://127.0.0.1:{}/0", dead.port);
        let started = Instant::now();
        let error = match RedisStore::connect(&settings(&url, Duration::from_millis(500))).await {
            Ok(_) => panic!("connected to nothing"),
            Err(error) => error.to_string(),
        };
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(error.contains(&url), "{error}");
    }

    #[tokio::test]
    async fn silent_redis_fails_connect_within_the_timeout() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/0", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                connections.push(connection);
            }
        });
        let started = Instant::now();
        let error = match RedisStore::connect(&settings(&url, Duration::from_millis(500))).await {
            Ok(_) => panic!("connected to a silent server"),
            Err(error) => error.to_string(),
        };
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
        assert!(error.contains(&url), "{error}");
        held.abort();
    }

    /// Calls until one succeeds (bounded): the store reconnects by itself.
    async fn until_it_answers(store: &RedisStore) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match store.session(digest(1), now_unix()).await {
                Ok(_) => return,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("the store did not come back: {error}"),
            }
        }
    }

    #[tokio::test]
    async fn calls_fail_fast_while_redis_is_down_and_recover_after_restart() {
        let Some(mut server) = RedisServer::start("restart").await else {
            return;
        };
        let timeout = Duration::from_millis(500);
        let store = RedisStore::connect(&settings(&server.url(), timeout))
            .await
            .unwrap();
        let t = now_unix();
        store
            .put_session(
                digest(1),
                BrowserSession {
                    user: Some(user()),
                    expires_at: t + 600,
                },
            )
            .await
            .unwrap();
        store
            .put_code(digest(2), code_grant("c", "fam", t + 600))
            .await
            .unwrap();
        server.stop().await;
        for _ in 0..3 {
            let started = Instant::now();
            let outcome = store.session(digest(1), t).await;
            assert!(outcome.is_err(), "{outcome:?}");
            assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
        }
        let started = Instant::now();
        assert!(store.redeem_code(digest(2), "c", t).await.is_err());
        assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());

        server.restart().await;
        until_it_answers(&store).await;
        // The data survived (append-only file) and the scripts load again by themselves.
        assert!(store.session(digest(1), t).await.unwrap().is_some());
        let redeemed = store.redeem_code(digest(2), "c", t).await.unwrap();
        assert!(
            matches!(redeemed, Redemption::Fresh(_)),
            "after the restart: {redeemed:?}"
        );
    }

    #[tokio::test]
    async fn a_paused_redis_times_calls_out() {
        let Some(server) = RedisServer::start("paused").await else {
            return;
        };
        let timeout = Duration::from_millis(500);
        let store = RedisStore::connect(&settings(&server.url(), timeout))
            .await
            .unwrap();
        let pid = server.pid().expect("running").to_string();
        let signal = |name: &str| {
            let status = std::process::Command::new("kill")
                .args([name, &pid])
                .status()
                .expect("kill");
            assert!(status.success());
        };
        signal("-STOP");
        let started = Instant::now();
        let outcome = store.hit("k", now_unix(), 60).await;
        let elapsed = started.elapsed();
        signal("-CONT");
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(
            elapsed >= timeout / 2 && elapsed < timeout * 3,
            "{elapsed:?}"
        );
        until_it_answers(&store).await;
    }
}

mod tls {
    use super::*;

    #[tokio::test]
    async fn rediss_with_a_private_ca() {
        let Some(server) = RedisServer::start_tls("tls").await else {
            return;
        };
        let ca_file = server.ca_file().expect("a TLS server has a CA");
        let with_ca = RedisSettings {
            ca_file: Some(ca_file),
            ..settings(&server.url(), Duration::from_secs(2))
        };
        let store = RedisStore::connect(&with_ca)
            .await
            .expect("TLS with the CA");
        assert_eq!(store.hit("k", now_unix(), 60).await.unwrap(), 1);
        // The system's roots alone do not know the private CA.
        let error =
            match RedisStore::connect(&settings(&server.url(), Duration::from_secs(2))).await {
                Ok(_) => panic!("trusted an unknown CA"),
                Err(error) => error.to_string(),
            };
        assert!(error.contains(&server.url()), "{error}");
    }
}
