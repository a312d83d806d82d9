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

    let rss_before = common::process::rss_kib(running.0.id());

    // 20,000 requests (each one audit line, far more than the pipe and the queue hold),
    // each within a deadline: a blocked writer would stall them. First one at a time on
    // one connection (the worker parks between them: one line per hand-over, the case
    // where a queue that counted lines but held their gathering buffers would grow most),
    // then on 32 connections at once (several lines per hand-over).
    requests(port, 0, SEQUENTIAL).await;
    let mut clients = tokio::task::JoinSet::new();
    for client in 1..=CONNECTIONS {
        clients.spawn(requests(
            port,
            client,
            (REQUESTS - SEQUENTIAL) / CONNECTIONS,
        ));
    }
    while let Some(finished) = clients.join_next().await {
        finished.expect("a client failed");
    }

    // What stdout could not take is dropped, not held: the queue is bounded in bytes.
    let rss_after = common::process::rss_kib(running.0.id());
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the gateway grew from {rss_before} KiB to {rss_after} KiB while stdout was stuck"
    );

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
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let counted = counted.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(r#""target":"audit""#) {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    // Stdout is read again: the queued lines come out, every line that was not dropped.
    // Waiting for all of them (not for a quiet moment) leaves shutdown nothing to write,
    // so the count below does not depend on how fast the writer drains.
    let audit_lines = || counted.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while audit_lines() < REQUESTS - dropped && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = running.0.wait().expect("wait for the gateway");
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    reader.join().expect("stdout reader");
    let written = audit_lines();
    assert_eq!(
        written + dropped,
        REQUESTS,
        "{written} audit lines written, {dropped} dropped"
    );
}

const REQUESTS: u64 = 20_000;
const SEQUENTIAL: u64 = 8_000;
const CONNECTIONS: u64 = 32;

/// `count` requests on one keep-alive connection, each answered 401 within 10 s.
async fn requests(port: u16, client: u64, count: u64) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for i in 0..count {
        let request = http::Request::get("/mcp")
            .header("host", "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .unwrap_or_else(|_| {
                panic!("request {i} of client {client} stalled: the log writer blocks requests")
            })
            .unwrap();
        assert_eq!(response.status(), 401);
        let _ = response.into_body().collect().await;
    }
}
