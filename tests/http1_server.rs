//! The gateway's own HTTP/1.1 server for plain-TCP clients (`src/server/http1/`), over
//! real loopback sockets, byte for byte as clients send them:
//! - pipelined requests are answered in order on one connection; refusals also after the
//!   client shut its sending side behind them (raw-socket tools), then the end; a request
//!   being proxied when the client shuts its side is dropped (the client is taken as gone);
//! - `Expect: 100-continue` gets `100 Continue` only when the body is read: a request
//!   refused before its body gets its answer at once and the connection closes;
//! - a body the gateway did not need (a 401) is drained and the connection kept;
//! - HTTP/1.0 closes after the answer unless it asked for keep-alive;
//! - an answer that ends its connection (`Connection: close`) arrives whole, then the end of
//!   the stream — a small one, and a large one behind a client that starts reading late;
//! - a fragment in the request target is refused;
//! - answers carry `Date` and exactly one framing; a large chunked answer comes through
//!   intact, re-chunked;
//! - a client closing an open SSE stream closes the upstream's stream too, and so does one
//!   sending more than 16 KB ahead while it streams.

mod common;

use std::time::Duration;

use common::faulty::{chunk, event, read_request, send, FaultyServer, LAST_CHUNK, SSE_HEAD};
use common::gateway::standard_config;
use common::{TestGateway, Upstream, API_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

/// One answer as read off the socket: status line, lowercase header lines, decoded body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads exactly one answer from `stream` (whatever `buf` already holds first); bytes
/// behind it stay in `buf`.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: Vec::new(),
    };
    if status == 100 {
        return answer;
    }
    if let Some(length) = answer.header("content-length") {
        let length: usize = length.parse().unwrap();
        while buf.len() < length {
            fill(stream, buf).await;
        }
        answer.body = buf.drain(..length).collect();
    } else if answer.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(stream, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await;
            }
            answer.body.extend(buf.drain(..size));
            assert_eq!(buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
            if size == 0 {
                break;
            }
        }
    }
    answer
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
        .await
        .expect("the gateway answers")
        .expect("read");
    assert!(
        n > 0,
        "closed early; so far: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// Whether the gateway closes the connection (nothing more arrives) within `WAIT`.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn standard() -> (Upstream, TestGateway) {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    (upstream, gateway)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_upstream, gateway) = standard().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut all = String::new();
    for n in 1..=3 {
        all.push_str(&format!(
            "GET /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nX-Seq: {n}\r\n\r\n",
            gateway.addr,
            bearer()
        ));
    }
    // The three heads in one write: the second and third wait behind the first.
    stream.write_all(all.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    for n in 1..=3 {
        let answer = read_answer(&mut stream, &mut buf).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let echo: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(echo["headers"]["x-seq"][0], n.to_string(), "{echo}");
        assert!(answer.header("date").is_some(), "{answer:?}");
        assert_eq!(answer.header("connection"), None, "kept alive: {answer:?}");
    }
}

/// Raw-socket tools send their requests and shut their sending side at once: what the
/// gateway refuses by itself is still answered, in order, then the connection ends. (A
/// request it proxies is dropped with its upstream exchange instead, as nginx and Go's
/// server do: a closed sending side cannot be told from a client that left; next test.)
#[tokio::test]
async fn refusals_reach_a_client_that_shut_its_sending_side_then_the_connection_ends() {
    let (upstream, gateway) = standard().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let host = gateway.addr;
    let requests = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}\
         POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer wrong\r\n\
         Content-Length: 2\r\n\r\n{{}}\
         GET /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    );
    stream.write_all(requests.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut buf = Vec::new();
    for expected in [401, 401, 400] {
        let answer = read_answer(&mut stream, &mut buf).await;
        assert_eq!(answer.status, expected, "{answer:?}");
    }
    assert!(buf.is_empty(), "nothing behind the third answer: {buf:?}");
    assert!(closed(&mut stream).await, "the gateway ends the connection");
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_proxied_request_whose_client_shut_its_sending_side_is_dropped() {
    let (_upstream, gateway) = standard().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    // The upstream answers `…/slow` after 30 s; the gateway does not wait for it.
    let request = format!(
        "GET /mcp/slow HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        gateway.addr,
        bearer()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, no answer: {read:?} {rest:?}"
    );
}

#[tokio::test]
async fn expect_continue_is_answered_only_when_the_body_is_read() {
    let (upstream, gateway) = standard().await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let head = |auth: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            gateway.addr,
            body.len()
        )
    };

    // Authorized: 100 Continue first, then the body goes, then the answer.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let auth = format!("Authorization: {}\r\n", bearer());
    stream.write_all(head(&auth).as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let interim = read_answer(&mut stream, &mut buf).await;
    assert_eq!(interim.status, 100, "{interim:?}");
    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(&upstream.last().body[..], body.as_bytes());
    let forwarded = upstream.last();
    assert_eq!(
        forwarded.header("expect"),
        None,
        "the expectation is the gateway's to meet"
    );

    // Refused before the body is needed: the 401 at once, no 100, and the connection closes
    // (the client may still be waiting to send a body it was never asked for).
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(head("").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(closed(&mut stream).await);
}

#[tokio::test]
async fn a_body_the_gateway_did_not_need_is_drained_and_the_connection_kept() {
    let (upstream, gateway) = standard().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let body = "x".repeat(5000);
    let refused = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        gateway.addr,
        body.len()
    );
    stream.write_all(refused.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("connection"), None, "kept: {answer:?}");
    let next = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        gateway.addr,
        bearer()
    );
    stream.write_all(next.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(
        answer.status, 200,
        "the body was not read as a request: {answer:?}"
    );
    assert_eq!(upstream.requests().len(), 1);

    // A length over the limits: refused at once, and the answer says the connection closes.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
        gateway.addr,
        bearer()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 100_000]).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(closed(&mut stream).await);

    // More than 64 KB left unread: not worth draining, the connection closes after the 401.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        gateway.addr,
        64 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 64 * 1024 + 1]).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        closed(&mut stream).await,
        "a long unread body closes the connection"
    );
}

#[tokio::test]
async fn http_1_0_closes_unless_it_asks_for_keep_alive() {
    let (_upstream, gateway) = standard().await;
    let request = |extra: &str| {
        format!(
            "GET /mcp HTTP/1.0\r\nHost: {}\r\nAuthorization: {}\r\n{extra}\r\n",
            gateway.addr,
            bearer()
        )
    };
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(request("").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed(&mut stream).await);

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(request("Connection: keep-alive\r\n").as_bytes())
            .await
            .unwrap();
        let answer = read_answer(&mut stream, &mut buf).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.header("connection"), Some("keep-alive"));
        assert!(answer.header("content-length").is_some(), "{answer:?}");
    }
}

/// An upstream answering `GET` with an open SSE stream (one event, then silence) and
/// reporting when the gateway closes it, and `POST` with a large chunked answer.
async fn streaming_upstream() -> (FaultyServer, mpsc::UnboundedReceiver<&'static str>) {
    let (report, reports) = mpsc::unbounded_channel();
    let upstream = FaultyServer::start(move |mut stream, _| {
        let report = report.clone();
        async move {
            let Some(request) = read_request(&mut stream).await else {
                return;
            };
            if request.head.starts_with("GET") {
                send(&mut stream, SSE_HEAD).await;
                send(&mut stream, &chunk(&event(1, "first"))).await;
                let mut rest = [0u8; 64];
                let closed = matches!(stream.read(&mut rest).await, Ok(0) | Err(_));
                let _ = report.send(if closed { "closed" } else { "data" });
            } else {
                let mut answer =
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                        .to_vec();
                // One 40 KB chunk and many small ones: written as they are and copied.
                answer.extend(chunk(&"a".repeat(40_000)));
                for _ in 0..100 {
                    answer.extend(chunk("b"));
                }
                answer.extend(LAST_CHUNK);
                send(&mut stream, &answer).await;
            }
        }
    })
    .await;
    (upstream, reports)
}

#[tokio::test]
async fn a_client_closing_an_open_stream_closes_the_upstreams_stream() {
    let (upstream, mut reports) = streaming_upstream().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let open = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n\r\n",
        gateway.addr,
        bearer()
    );
    stream.write_all(open.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains("data: first") {
        fill(&mut stream, &mut buf).await;
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    drop(stream);
    let report = tokio::time::timeout(WAIT, reports.recv()).await;
    assert_eq!(
        report,
        Ok(Some("closed")),
        "the upstream stream outlived the client"
    );
}

#[tokio::test]
async fn a_large_chunked_answer_comes_through_intact() {
    let (upstream, _reports) = streaming_upstream().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        gateway.addr,
        bearer(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-length"), None, "{answer:?}");
    let expected = format!("{}{}", "a".repeat(40_000), "b".repeat(100));
    assert_eq!(answer.body, expected.as_bytes());
    assert!(buf.is_empty(), "nothing after the last chunk");
}

#[tokio::test]
async fn a_client_sending_far_ahead_during_a_stream_is_disconnected() {
    let (upstream, mut reports) = streaming_upstream().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let open = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n\r\n",
        gateway.addr,
        bearer()
    );
    stream.write_all(open.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains("data: first") {
        fill(&mut stream, &mut buf).await;
    }
    // No pipelining client sends this much ahead of an open stream.
    stream.write_all(&[b'x'; 17 * 1024]).await.unwrap();
    assert!(closed(&mut stream).await, "the gateway kept the connection");
    let report = tokio::time::timeout(WAIT, reports.recv()).await;
    assert_eq!(
        report,
        Ok(Some("closed")),
        "the upstream stream outlived the client"
    );
}

#[tokio::test]
async fn an_answer_ending_its_connection_arrives_whole_then_the_end() {
    const LARGE: usize = 4 * 1024 * 1024 + 10;
    let pattern = |i: usize| (i % 251) as u8;
    let upstream = FaultyServer::start(move |mut stream, _| async move {
        if read_request(&mut stream).await.is_none() {
            return;
        }
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {LARGE}\r\n\r\n"
        )
        .into_bytes();
        answer.extend((0..LARGE).map(pattern));
        send(&mut stream, &answer).await;
    })
    .await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;

    // Small: a refusal, head and body in one write.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        gateway.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(!answer.body.is_empty(), "{answer:?}");
    assert!(buf.is_empty() && closed(&mut stream).await, "then the end");

    // Large: the client reads nothing until the gateway's writes had to wait on it.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        gateway.addr,
        bearer()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert_eq!(answer.body.len(), LARGE);
    assert!(
        answer
            .body
            .iter()
            .enumerate()
            .all(|(i, byte)| *byte == pattern(i)),
        "the body came through altered"
    );
    assert!(buf.is_empty() && closed(&mut stream).await, "then the end");
}

/// A request target has no fragment: one is refused (400), not cut off before the path
/// checks could see it.
#[tokio::test]
async fn a_fragment_in_the_request_target_is_refused() {
    let (upstream, gateway) = standard().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET /mcp/health#/../admin HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        gateway.addr,
        bearer()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(upstream.requests().is_empty(), "nothing forwarded");
}
