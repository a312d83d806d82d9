//! `mcp-auth-gateway token …`: look inside a JWT, and make one for demos and tests.
//!
//! - `token inspect TOKEN` prints the header and claims, marked UNVERIFIED (nothing is
//!   checked: anyone can write any claims); with `--verify --config FILE` the token goes
//!   through the configured issuer exactly as a request's would (JWKS fetched, signature,
//!   algorithm, `typ`, time claims) and the principal it stands for is printed.
//! - `token mint` signs a token with a local private key (PEM: EC P-256/P-384, RSA or
//!   Ed25519) for a route's audience — for a `public_key_file` / `jwks_file` issuer in a demo
//!   or a test, never for production identities.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use mcp_auth_gateway::auth::jwt;
use mcp_auth_gateway::config;

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Print a JWT's header and claims (UNVERIFIED), or verify it with --verify.
    Inspect {
        /// The token (or `-` to read it from stdin).
        token: String,
        /// Verify it with the issuer the configuration has for its `iss`.
        #[arg(long)]
        verify: bool,
        #[arg(
            long,
            short,
            default_value = "gateway.toml",
            env = "MCP_GATEWAY_CONFIG"
        )]
        config: PathBuf,
    },
    /// Sign a test token with a local private key (PEM) for a route's audience.
    Mint {
        /// PEM private key: EC (ES256 / ES384), RSA (RS256) or Ed25519 (EdDSA).
        #[arg(long)]
        key: PathBuf,
        /// `iss` — the issuer the gateway's `[[issuers]]` entry names.
        #[arg(long)]
        issuer: String,
        /// `aud` — the route's resource, e.g. https://mcp.example.com/mcp.
        #[arg(long)]
        audience: String,
        #[arg(long, default_value = "test-user")]
        subject: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "")]
        scope: String,
        /// `kid` to put in the header (the key's id in the issuer's JWKS).
        #[arg(long)]
        kid: Option<String>,
        /// Lifetime, e.g. "1h".
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

pub fn run(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Inspect {
            token,
            verify,
            config,
        } => inspect(&token, verify.then_some(config)),
        TokenCommand::Mint {
            key,
            issuer,
            audience,
            subject,
            scope,
            kid,
            ttl,
        } => mint(&key, &issuer, &audience, &subject, &scope, kid, &ttl),
    }
}

fn read_token(token: &str) -> Result<String, String> {
    if token != "-" {
        return Ok(token.trim().to_string());
    }
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
    Ok(input.trim().to_string())
}

/// A JWT part as JSON (base64url, no signature check).
fn decode_part(part: Option<&str>, what: &str) -> Result<Value, String> {
    let part = part.ok_or_else(|| format!("not a JWT: no {what}"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| format!("not a JWT: the {what} is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| format!("not a JWT: the {what} is not JSON"))
}

fn inspect(token: &str, verify_with: Option<PathBuf>) -> ExitCode {
    let token = match read_token(token) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let mut parts = token.split('.');
    let decoded = decode_part(parts.next(), "header")
        .and_then(|header| Ok((header, decode_part(parts.next(), "payload")?)));
    let (header, claims) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let Some(config_path) = verify_with else {
        println!("UNVERIFIED — decoded only; anyone can write these claims. Use --verify --config FILE to check the signature.");
        println!("header: {}", pretty(&header));
        println!("claims: {}", pretty(&claims));
        return ExitCode::SUCCESS;
    };
    let config = match config::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            eprint!("{}: {error}", config_path.display());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let verified = runtime.block_on(async {
        let issuer = jwt::select_issuer(&token, &config.verifiers.issuers)
            .map_err(|e| format!("no configured issuer for this token: {e}"))?;
        // The first verification fetches the keys (an unknown kid triggers the fetch).
        issuer
            .verify(&token)
            .await
            .map_err(|e| format!("INVALID for issuer {:?}: {e}", issuer.id))
    });
    match verified {
        Ok(principal) => {
            println!(
                "VERIFIED by issuer {:?} (signature, algorithm, typ, exp/nbf, iss).",
                claims["iss"]
            );
            println!(
                "The audience is checked per route when a request arrives: aud = {}",
                claims["aud"]
            );
            println!("subject: {}", principal.subject);
            println!("scopes: {}", principal.scopes.join(" "));
            println!("groups: {}", principal.groups.join(", "));
            if let Some(client_id) = &principal.client_id {
                println!("client_id: {client_id}");
            }
            println!("claims: {}", pretty(&claims));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// The signing algorithm and key for a PEM private key, told by the key's OIDs.
fn signing_key(pem: &[u8]) -> Result<(Algorithm, EncodingKey), String> {
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let text = String::from_utf8_lossy(pem);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| "not a PEM file".to_string())?;
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let bad = |e: jsonwebtoken::errors::Error| format!("cannot read the key: {e}");
    if has(ED25519) {
        return Ok((
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(pem).map_err(bad)?,
        ));
    }
    if has(P256) {
        return Ok((
            Algorithm::ES256,
            EncodingKey::from_ec_pem(pem).map_err(bad)?,
        ));
    }
    if has(P384) {
        return Ok((
            Algorithm::ES384,
            EncodingKey::from_ec_pem(pem).map_err(bad)?,
        ));
    }
    EncodingKey::from_rsa_pem(pem)
        .map(|key| (Algorithm::RS256, key))
        .map_err(|_| {
            "not a PEM private key of a supported type (EC P-256/P-384, RSA, Ed25519)".into()
        })
}

fn mint(
    key: &PathBuf,
    issuer: &str,
    audience: &str,
    subject: &str,
    scope: &str,
    kid: Option<String>,
    ttl: &str,
) -> ExitCode {
    let result = (|| -> Result<String, String> {
        let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let (algorithm, encoding_key) = signing_key(&pem)?;
        let ttl = config::duration::parse(ttl)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let claims = json!({
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
        });
        let mut header = Header::new(algorithm);
        header.kid = kid;
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, &claims, &encoding_key).map_err(|e| e.to_string())
    })();
    match result {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot mint a token: {error}");
            ExitCode::FAILURE
        }
    }
}
