//! # mcp-auth-gateway
//!
//! An auth gateway for MCP servers: a streaming reverse proxy and a ForwardAuth `/verify`
//! endpoint that decide every request with one pipeline.
//!
//! ```text
//!             inline                                      ForwardAuth
//!  client ──► server::router ──► proxy ─┐     Traefik/nginx/Caddy ──► forward_auth ─┐
//!                 │                     ▼                                           ▼
//!                 │            pipeline::admit  (1 route · 2 transport guard · 4 credential
//!                 │                     │        · 5 verify [auth] · 6 policy → Grant)
//!                 │                     ▼                                           ▼
//!                 │     sessions · 7 MCP rules [mcp::jsonrpc]        sessions · 7 · 8
//!                 │     · 8 limits · 9 rewrite · 10 forward          200 + identity headers
//!                 │       [upstream]
//!                 │     · 11 list filter [mcp::filter]               or 401/403 + challenge
//!                 ▼
//!   built-ins: /healthz, /readyz, /.well-known/oauth-protected-resource[/…] (metadata),
//!   /verify; on the admin listener also /metrics; with [authorization_server] its
//!   discovery, /authorize, /login, /consent, /token, /register, /revoke, /introspect, /jwks.json
//! ```
//!
//! `auth` answers "who is this?" and knows nothing of routes; `pipeline` decides and knows
//! nothing of listeners; `config` compiles the TOML into `model` types and `pipeline` runs
//! on them (`model` imports neither, so there is no cycle); `mcp` reads JSON-RPC without
//! changing a byte, filters lists and binds sessions; `authorization_server` issues the
//! tokens (it and `pipeline` never import each other: `server::router` mounts both);
//! `server` owns connections (deadlines, budgets, idle and slow-reader closing; its own
//! HTTP/1.1 server for plain-TCP clients, hyper for TLS clients and HTTP/2);
//! `upstream` owns the connections to the MCP servers (the gateway's own HTTP/1.1 client for
//! `http://` upstreams, the pooled hyper client for `https://`) and knows no policy;
//! `observability` (a leaf) holds logging, the audit event, request ids and the metrics
//! registry; `redis_connection` is the one way to Redis (`[redis]`: the authorization
//! server's store, session bindings, rate limits). `secret`, `glob`, `body`, `socket` and
//! `header_maps` are leaves everything may use; `memory` (giving freed memory back) reads
//! only the metrics. Below the composition root (`app`, `server`, `proxy`, `forward_auth`,
//! which call each other) no two modules import each other.

// Denied, not forbidden: `memory` holds the one exception (a call into glibc), allowed there
// alone and explained.
#![deny(unsafe_code)]

pub mod app;
pub mod auth;
pub mod authorization_server;
pub mod body;
pub mod config;
pub mod forward_auth;
pub mod glob;
pub mod header_maps;
pub mod mcp;
pub mod memory;
pub mod metadata;
pub mod model;
pub mod observability;
pub mod outbound;
pub mod pipeline;
pub mod proxy;
pub mod redis_connection;
pub mod secret;
pub mod server;
pub mod socket;
pub mod text;
pub mod upstream;

pub use app::{Gateway, StartError};
pub use config::Config;
