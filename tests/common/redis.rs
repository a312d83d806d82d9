//! A real `redis-server` for tests: on 127.0.0.1, a free port, append-only persistence in a
//! temporary directory (so [`RedisServer::restart`] keeps the data, as a crashed and
//! restarted Redis would), optionally password-protected or TLS-only. Killed and cleaned up
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct RedisServer {
    program: PathBuf,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
    /// TLS only (`rediss://`), with a private CA made by the openssl CLI in `dir`.
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A fresh server; `None` (after a loud skip) when redis-server is missing on a local
    /// run. `name` names its directory (use the test's name).
    pub async fn start(name: &str) -> Option<RedisServer> {
        Self::launch(name, None, false).await
    }

    /// A server that requires `password` (`--requirepass`, the `default` user's password).
    pub async fn start_with_password(name: &str, password: &str) -> Option<RedisServer> {
        Self::launch(name, Some(password.to_string()), false).await
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 and localhost issued
    /// by a private CA ([`RedisServer::ca_file`]). `None` when redis-server or openssl is
    /// missing on a local run.
    pub async fn start_tls(name: &str) -> Option<RedisServer> {
        super::external::require("openssl")?;
        Self::launch(name, None, true).await
    }

    async fn launch(name: &str, password: Option<String>, tls: bool) -> Option<RedisServer> {
        let program = super::external::require("redis-server")?;
        // A port found free can be taken before redis-server binds it (another test's
        // outgoing connection, say): then another port is tried.
        for _ in 0..5 {
            let port = super::free_port();
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("redis-{name}-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the redis directory");
            let mut server = RedisServer {
                program: program.clone(),
                port,
                dir,
                password: password.clone(),
                tls,
                child: None,
            };
            if tls {
                make_certificates(&server.dir);
            }
            if server.spawn().await {
                return Some(server);
            }
        }
        panic!("redis-server found its port taken five times in a row");
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://…` for TLS (no credentials: they go in the
    /// settings).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The CA that issued a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("ca.pem"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running server's process id (to pause it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Starts it again on the same port with the same data directory (stopping it first
    /// if it runs).
    pub async fn restart(&mut self) {
        self.stop().await;
        assert!(
            self.spawn().await,
            "redis-server's port {} was taken meanwhile",
            self.port
        );
    }

    /// Starts redis-server and waits until it answers; `false` if its port was taken.
    async fn spawn(&mut self) -> bool {
        let log = self.dir.join("redis.log");
        let mut command = Command::new(&self.program);
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(self.dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.pem"));
        }
        let child = command.spawn().expect("start redis-server");
        self.child = Some(child);
        self.wait_until_ready(&log).await
    }

    /// Polls with `PING` until the server answers (`+PONG`, or `-NOAUTH` when it wants a
    /// password); `-LOADING` means not yet. A TLS server is ready when it accepts.
    async fn wait_until_ready(&mut self, log: &std::path::Path) -> bool {
        for _ in 0..200 {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    if text.contains("Address already in use") {
                        self.child = None;
                        return false;
                    }
                    panic!(
                        "redis-server exited ({status}) on port {}:\n{text}",
                        self.port
                    );
                }
            }
            if self.tls {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    return true;
                }
            } else if let Some(answer) = ping(self.port).await {
                if answer.starts_with("+PONG") || answer.starts_with("-NOAUTH") {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panic!(
            "redis-server did not answer on port {} within 10 s:\n{text}",
            self.port
        );
    }
}

async fn ping(port: u16) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buffer = [0u8; 256];
        let n = stream.read(&mut buffer).await.ok()?;
        Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
}

/// `ca.pem`, and `cert.pem` + `key.pem` for 127.0.0.1 and localhost signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let split = |line: String| -> Vec<String> { line.split(' ').map(str::to_string).collect() };
    let ca = split(format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=redis-test-ca"
    ));
    run(&ca.iter().map(String::as_str).collect::<Vec<_>>());
    let request = split(format!(
        "req -new {ec} -keyout key.pem -out leaf.csr -subj /CN=localhost"
    ));
    run(&request.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write leaf.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
