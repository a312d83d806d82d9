//! External programs (nginx, Traefik, Caddy, node): a test that needs one fails when
//! `CI=true` and the program is missing; locally it skips with a loud message.

use std::path::{Path, PathBuf};

/// The path of `program` on PATH, or `None` (after printing why) when a local run may skip.
pub fn require(program: &str) -> Option<PathBuf> {
    if let Some(path) = find(program) {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "{program} is required when CI=true but was not found on PATH (.ci/run installs it)"
        );
    }
    // Written straight to fd 2: libtest captures `eprintln!` of passing tests, and a skip
    // must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPING: {program} not found on PATH; run .ci/run (or install it) to run this test !!!!!\n"
    );
    None
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The repository root (for deploy/ files and tests/node).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A child process killed when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts TCP connections on `port` (the program's readiness).
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on port {port} within 15 s");
}
