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
pub use gateway::{dead_port, free_port, TestGateway};
#[allow(unused_imports)]
pub use upstream::Upstream;

/// The API key the standard test configuration accepts (hash in `gateway::api_key_toml`).
pub const API_KEY: &str = "test-key-0123456789";

/// A fresh directory under the system's temporary directory, removed with what it holds
/// when dropped (a failing test leaves its directory only if it aborts the process).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// `mcp-gw-<name>-<pid>-<n>`: unique across the tests of one process and across
    /// processes.
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-gw-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// The path, no longer removed on drop: for owners that decide themselves (keeping a
    /// failed test's files to look at).
    pub fn keep(self) -> std::path::PathBuf {
        let mut this = std::mem::ManuallyDrop::new(self);
        std::mem::take(&mut this.0)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
