//! Shared test harness: real sockets on 127.0.0.1:0, a small recording upstream, a JWKS
//! server, key generation, the in-process gateway and helpers for external programs.
//! Each integration test file uses what it needs.
#![allow(dead_code)]

pub mod external;
pub mod faulty;
pub mod gateway;
pub mod http;
pub mod jwks;
pub mod keys;
pub mod oauth;
pub mod process;
pub mod redis;
pub mod sdk;
pub mod upstream;

#[allow(unused_imports)]
pub use gateway::{free_port, TestGateway};
#[allow(unused_imports)]
pub use upstream::Upstream;

/// The API key the standard test configuration accepts (hash in `gateway::api_key_toml`).
pub const API_KEY: &str = "test-key-0123456789";
