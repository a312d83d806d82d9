//! The gateway binary as a process of its own (`serve --config`), for tests that need a
//! second built-in authorization server (its keys are process-wide) or several replicas.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::external::ChildGuard;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-auth-gateway");

/// A running `serve`, killed when dropped.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    pub log: PathBuf,
    _child: ChildGuard,
}

impl GatewayProcess {
    /// Starts `serve --config <config>` with these environment variables, its output in
    /// `log`, and waits until it listens on 127.0.0.1:`port` (the configuration's).
    pub async fn start(
        config: &Path,
        port: u16,
        log: &Path,
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        let out = std::fs::File::create(log).expect("gateway log");
        let mut command = std::process::Command::new(BIN);
        command
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = ChildGuard(command.spawn().expect("start the gateway"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("gateway on {port} exited ({status}):\n{}", read_lossy(log));
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "gateway on {port} did not listen:\n{}",
                read_lossy(log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        GatewayProcess {
            addr,
            log: log.to_path_buf(),
            _child: child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The resident memory of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"))
}
