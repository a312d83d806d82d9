//! The gateway under test, started in-process with `Gateway::start` on a free port.

use std::net::SocketAddr;
use std::path::Path;

use mcp_auth_gateway::auth::api_key;
use mcp_auth_gateway::{config, Gateway};

pub struct TestGateway {
    pub addr: SocketAddr,
    /// `[admin] listen` addresses, if the configuration has any.
    pub admin_addrs: Vec<SocketAddr>,
    gateway: Option<Gateway>,
}

impl TestGateway {
    /// Compiles `toml` (relative paths resolve against `base_dir`) and starts it. The
    /// configuration's `listen` decides the port; use `listen = ["127.0.0.1:0"]` unless the
    /// test needs to know the port in advance (see [`free_port`]).
    pub async fn start_in(toml: &str, base_dir: &Path) -> TestGateway {
        let config = match config::from_toml_str(toml, base_dir) {
            Ok(config) => config,
            Err(error) => panic!("test configuration does not compile:\n{error}\n{toml}"),
        };
        let gateway = Gateway::start(config).await.expect("gateway starts");
        TestGateway {
            addr: gateway.local_addrs()[0],
            admin_addrs: gateway.admin_addrs().to_vec(),
            gateway: Some(gateway),
        }
    }

    pub async fn start(toml: &str) -> TestGateway {
        Self::start_in(toml, Path::new(".")).await
    }

    /// Compiles `toml` and swaps it in, as SIGHUP does; returns the settings that changed but
    /// need a restart.
    pub fn reload(&self, toml: &str) -> Vec<&'static str> {
        let config = match config::from_toml_str(toml, Path::new(".")) {
            Ok(config) => config,
            Err(error) => panic!("reloaded configuration does not compile:\n{error}\n{toml}"),
        };
        self.gateway.as_ref().expect("running").reload(config)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }
}

/// A port that was free a moment ago (for programs that must be told their port). Taken
/// below the kernel's ephemeral range, where neither outgoing connections nor listeners on
/// port 0 land, and never twice in one test process: a port free a moment ago in the
/// ephemeral range could be another test's connection or server by the time the program
/// bound it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 12_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low < 2 * SPAN {
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
    }
    let low = ephemeral_low - SPAN;
    // Test binaries run one after another: each starts elsewhere in the span.
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(low + (start + n) % SPAN).expect("a port number");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A port where nothing answers, for as long as the value lives: bound and never listening,
/// so connections to it are refused, and no other test can take it meanwhile ([`free_port`]
/// only says a port was free a moment ago; under a full parallel run another test's server
/// took one and answered).
pub struct DeadPort {
    _bound: socket2::Socket,
    pub port: u16,
}

pub fn dead_port() -> DeadPort {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
    socket.bind(&any.into()).expect("a port to bind");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|address| address.as_socket())
        .map(|address| address.port())
        .expect("the bound port");
    DeadPort {
        _bound: socket,
        port,
    }
}

/// `[[api_keys]]` for [`super::API_KEY`] with the given subject and scopes.
pub fn api_key_toml(subject: &str, scopes: &[&str]) -> String {
    let hash = api_key::format_hash(&api_key::sha256(super::API_KEY.as_bytes()));
    format!(
        "[[api_keys]]\nid = \"test\"\nhash = \"{hash}\"\nsubject = \"{subject}\"\nname = \"Test User\"\nscopes = {scopes:?}\n"
    )
}

/// A complete configuration: one route `/mcp` → `upstream_url`, API keys, public URL
/// `http://127.0.0.1` (loopback hosts on any port are allowed). `extra` is appended (more
/// tables); `route_extra` goes inside the route table.
pub fn standard_config(upstream_url: &str, route_extra: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[server.limits]
max_header_bytes = 8192
max_body_bytes = 65536
response_timeout = "2s"
shutdown_grace = "5s"

{keys}

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream_url}"
verifiers = ["api_keys"]
scopes = ["mcp:tools"]
public_paths = ["/health"]
{route_extra}

{extra}
"#,
        keys = api_key_toml("alice", &["mcp:tools"]),
    )
}
