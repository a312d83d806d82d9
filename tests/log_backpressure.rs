//! A stuck log reader must not stall the gateway: the real binary runs with its stdout on a
//! pipe nobody reads (as with a blocked journald or Docker log driver). Requests keep being
//! answered; the lines that could not be written are dropped, counted line by line (the
//! metric and the lines that do come out add up to the requests) and reported on stderr.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_stuck_stdout_drops_log_lines_instead_of_stalling_requests() {
    let port = common::free_port();
    let admin = common::free_port();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let config_path = dir.join("log-backpressure.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[server]
listen = ["127.0.0.1:{port}"]
public_url = "http://127.0.0.1"
workers = 1

[admin]
listen = ["127.0.0.1:{admin}"]

[log]
format = "json"
level = "info"

{keys}

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
verifiers = ["api_keys"]
"#,
            keys = common::gateway::api_key_toml("alice", &[]),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-auth-gateway"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        // Never read: the pipe fills after a few hundred audit lines.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let mut running = common::external::ChildGuard(child);
    let (said, stderr_lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if said.send(line).is_err() {
                break;
            }
        }
    });
    common::external::wait_for_port(port, "the gateway").await;

    // 20,000 requests (each one audit line, far more than the pipe and the queue hold) on
    // one keep-alive connection, each within a deadline: a blocked writer would stall them.
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for i in 0..20_000 {
        let request = http::Request::get("/mcp")
            .header("host", "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("request {i} stalled: the log writer blocks requests"))
            .unwrap();
        assert_eq!(response.status(), 401);
        let _ = response.into_body().collect().await;
    }

    // The loss is reported on stderr (the reporter looks every 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    let report = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match stderr_lines.recv_timeout(left) {
            Ok(line) if line.contains("log lines dropped") => break line,
            Ok(_) => continue,
            Err(_) => panic!("no report of dropped log lines on stderr"),
        }
    };
    assert!(report.contains("cannot keep up"), "{report}");

    // Lines are counted, not batches: the dropped lines and the audit lines that come out
    // once stdout is read again add up to the requests. (The metrics request is not
    // audited, and nothing else is logged meanwhile.)
    let metrics = common::http::get(
        std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
        "/metrics",
        &[],
    )
    .await;
    let dropped: u64 = metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("mcp_gateway_log_lines_dropped_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped-lines metric in:\n{}", metrics.body));
    assert!(dropped > 0, "the test must overflow the queue");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.contains(r#""target":"audit""#))
            .count() as u64
    });
    // Shutdown writes out what is queued; the reader then sees the end of the output.
    let kill = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = running.0.wait().expect("wait for the gateway");
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let written = reader.join().expect("stdout reader");
    assert_eq!(
        written + dropped,
        20_000,
        "{written} audit lines written, {dropped} dropped"
    );
}
