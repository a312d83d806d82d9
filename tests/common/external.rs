//! External programs (nginx, Traefik, Caddy, node): a test that needs one fails when
//! `CI=true` and the program is missing; locally it skips with a loud message and the skip is
//! recorded, so that `tests/zz_skip_report.rs` (the last test target cargo runs) can count
//! the skips of this `cargo test` run in a closing summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The path of `program` on PATH, or `None` (after printing why) when a local run may skip.
pub fn require(program: &str) -> Option<PathBuf> {
    if let Some(path) = find(program) {
        return Some(path);
    }
    skip(
        program,
        &format!("{program} not found on PATH; run .ci/run (or install it) to run this test"),
    );
    None
}

/// Whether this is a CI run, where nothing may be skipped.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the calling test: panics under `CI=true`; otherwise says so loudly and records the
/// skip for the closing summary.
pub fn skip(what: &str, why: &str) {
    if is_ci() {
        panic!("{why} (required when CI=true)");
    }
    // Written straight to fd 2: libtest captures `eprintln!` of passing tests, and a skip
    // must be seen.
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPING {test}: {why} !!!!!\n");
    let record = skip_record_file();
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record)
    {
        let binary = std::env::args().next().unwrap_or_default();
        let binary = Path::new(&binary)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        // One write per line: tests of one binary skip concurrently, and O_APPEND keeps a
        // single small write whole.
        let _ = file.write_all(format!("{what}\t{binary} {test}\n").as_bytes());
    }
}

/// Where this `cargo test` run records its skips: every test binary of one run is a child of
/// the same cargo process, so the parent's pid names the run.
pub fn skip_record_file() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "skipped-tests-{}.tsv",
        std::os::unix::process::parent_id()
    ))
}

/// Where this `cargo test` run lists the files its tests keep for people to look at
/// (screenshots): the closing summary (`zz_skip_report`) prints them, so CI logs name them.
pub fn artifact_record_file() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "kept-artifacts-{}.txt",
        std::os::unix::process::parent_id()
    ))
}

/// Records `path` (which must exist) as an artifact of this run.
pub fn keep_artifact(path: &Path) {
    assert!(path.is_file(), "no artifact at {}", path.display());
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(artifact_record_file())
    {
        let _ = writeln!(file, "{}", path.display());
    }
}

/// `tests/node/node_modules`, installed with `npm ci` the first time a test needs it (a fresh
/// clone has none). `None` after a loud skip when npm is missing or cannot install (offline)
/// on a local run; a failure under `CI=true`.
pub fn node_packages() -> Option<PathBuf> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let dir = repo_root().join("tests/node");
    let modules = dir.join("node_modules");
    // npm writes this file last: its presence means a finished install.
    let finished = modules.join(".package-lock.json");
    let _one_installer = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Installed, and not older than the lock file (a pull that added a package reinstalls).
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    if let (Some(installed), Some(locked)) = (
        modified(&finished),
        modified(&dir.join("package-lock.json")),
    ) {
        if installed >= locked {
            return Some(modules);
        }
    }
    let npm = require("npm")?;
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("npm-ci.log");
    let _ = writeln!(
        std::io::stderr(),
        "\n..... tests/node/node_modules is missing or older than package-lock.json: running `npm ci` in tests/node (log: {}) .....\n",
        log.display()
    );
    let status = std::fs::File::create(&log).and_then(|out| {
        std::process::Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
    });
    match status {
        Ok(status) if status.success() && finished.is_file() => Some(modules),
        outcome => {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            skip(
                "npm ci",
                &format!(
                    "`npm ci` in tests/node failed ({outcome:?}); install the packages by hand \
                     (cd tests/node && npm ci). npm said:\n{log_text}"
                ),
            );
            None
        }
    }
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
