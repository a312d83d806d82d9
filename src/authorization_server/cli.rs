//! What the `clients`, `keys` and `hash-password` commands do, on the store a gateway with
//! the same configuration uses (a running gateway sees the changes: clients at once, keys
//! within seconds).

use serde_json::{json, Value};

use super::store::{ClientDeletion, RegisteredClient, StoreError};
use super::{digest, random_token};
use crate::auth::api_key::sha256;
use crate::auth::principal::now_unix;
use crate::config::authorization_server::{check_redirect_uri, AuthorizationServerSettings};

pub use super::authorize::hash_password;
pub use super::rotate_keys;

/// One line of `clients list`.
pub struct ClientSummary {
    pub client_id: String,
    pub name: String,
    pub source: &'static str,
    pub redirect_uris: Vec<String>,
    pub confidential: bool,
}

pub async fn list_clients(
    settings: &AuthorizationServerSettings,
) -> Result<Vec<ClientSummary>, StoreError> {
    let mut out: Vec<ClientSummary> = settings
        .clients
        .iter()
        .map(|c| ClientSummary {
            client_id: c.client_id.clone(),
            name: c.client_name.clone().unwrap_or_default(),
            source: "configuration",
            redirect_uris: c.redirect_uris.clone(),
            confidential: c.secret_sha256.is_some(),
        })
        .collect();
    let store = super::store::open(settings).await?;
    for client in store.list_clients().await? {
        out.push(ClientSummary {
            name: client.metadata["client_name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            redirect_uris: client.metadata["redirect_uris"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            confidential: client.secret_sha256.is_some(),
            source: if client.used {
                "registered"
            } else {
                "registered (unused)"
            },
            client_id: client.client_id,
        });
    }
    Ok(out)
}

/// Registers a client in the store; returns its id and, when confidential, its secret
/// (shown once, stored hashed).
pub async fn add_client(
    settings: &AuthorizationServerSettings,
    name: &str,
    redirect_uris: &[String],
    confidential: bool,
) -> Result<(String, Option<String>), String> {
    for uri in redirect_uris {
        check_redirect_uri(uri).map_err(|why| format!("{uri}: {why}"))?;
    }
    if redirect_uris.is_empty() {
        return Err("give at least one --redirect-uri".into());
    }
    let store = super::store::open(settings)
        .await
        .map_err(|e| e.to_string())?;
    let now = now_unix();
    let client_id = format!("mcp_{}", random_token());
    let secret = confidential.then(random_token);
    let metadata = json!({
        "client_name": name,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": if confidential { "client_secret_basic" } else { "none" },
    });
    let client = RegisteredClient {
        client_id: client_id.clone(),
        metadata,
        secret_sha256: secret.as_deref().map(|s| sha256(s.as_bytes())),
        // Managed from the command line: no registration access token is handed out.
        registration_token_sha256: digest(&random_token()),
        fingerprint: format!("cli:{client_id}"),
        issued_at: now,
        // Added by an operator: kept until removed.
        expires_at: u64::MAX / 2,
        used: true,
    };
    store.put_client(client).await.map_err(|e| e.to_string())?;
    Ok((client_id, secret))
}

/// Removes a registered client and revokes every grant made to it (running gateways refuse
/// its access tokens from their next look at the store's revocations).
pub async fn remove_client(
    settings: &AuthorizationServerSettings,
    client_id: &str,
) -> Result<ClientDeletion, StoreError> {
    super::store::open(settings)
        .await?
        .delete_client(client_id, now_unix())
        .await
}
