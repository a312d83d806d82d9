//! One client must not take the gateway down (slow-loris): connections that never finish
//! saying which protocol they speak are closed after `header_read_timeout`, an address may
//! hold at most `max_connections_per_ip` connections, and connections with nothing in flight
//! (an HTTP/2 peer that only answers pings, an idle keep-alive) are closed after
//! `idle_timeout`. Real sockets; the bounded waits are deadlines, not performance claims.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::gateway::standard_config;
use common::http::{raw, raw_status};
use common::{TestGateway, Upstream, API_KEY};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn gateway(limits: &str) -> (Upstream, TestGateway) {
    let upstream = Upstream::start().await;
    let config = standard_config(&upstream.url("/mcp"), "", "")
        .replace("[server.limits]", &format!("[server.limits]\n{limits}"));
    let gateway = TestGateway::start(&config).await;
    (upstream, gateway)
}

fn get_mcp() -> String {
    format!("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n")
}

/// Waits (at most `within`) for the server to close `stream`; true if it did.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_byte_of_preface_does_not_hold_a_slot() {
    let (_upstream, gateway) =
        gateway("header_read_timeout = \"1s\"\nmax_connections = 20\nmax_connections_per_ip = 0")
            .await;
    // 20 sockets each send `P`, the first byte of the HTTP/2 preface, and stop.
    let mut loris = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream.write_all(b"P").await.unwrap();
        loris.push(stream);
    }
    for stream in &mut loris {
        assert!(
            closed_by_server(stream, Duration::from_secs(10)).await,
            "a connection that sent one byte is still open after header_read_timeout"
        );
    }
    // Their slots are back: a real client is served.
    let answer = raw(gateway.addr, get_mcp().as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let (_upstream, gateway) = gateway("max_connections_per_ip = 5").await;
    // Eight connections from one address that send nothing: the workers accept them in
    // any order, so which three are closed is not known — only that three are.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from("127.0.0.1", gateway.addr).await);
    }
    let mut open = Vec::new();
    let mut closed = 0;
    for mut stream in held {
        if closed < 3 && closed_by_server(&mut stream, Duration::from_millis(1500)).await {
            closed += 1;
        } else {
            open.push(stream);
        }
    }
    assert_eq!(
        closed, 3,
        "connections over max_connections_per_ip are closed at once"
    );
    let mut held = open;
    // Another address is still served.
    let mut other = connect_from("127.0.0.2", gateway.addr).await;
    other.write_all(get_mcp().as_bytes()).await.unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).await.unwrap();
    assert_eq!(raw_status(&answer), 200, "{answer}");
    // A held connection closing returns its slot to the address.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.1", gateway.addr).await;
    again.write_all(get_mcp().as_bytes()).await.unwrap();
    let mut answer = String::new();
    again.read_to_string(&mut answer).await.unwrap();
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

/// An HTTP/2 connection that made one request and then stays open answering pings only:
/// the gateway must end it within 10 s.
async fn assert_idle_http2_connection_closed(limits: &str, why: &str) {
    let (_upstream, gateway) = gateway(limits).await;
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::builder()
        .uri(format!("http://{}/mcp", gateway.addr))
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(ended.is_ok(), "{why}");
}

#[tokio::test]
async fn idle_http2_connection_is_closed_after_idle_timeout() {
    assert_idle_http2_connection_closed(
        "idle_timeout = \"1s\"",
        "an HTTP/2 connection with no stream stayed open past idle_timeout",
    )
    .await;
}

#[tokio::test]
async fn idle_close_is_not_postponed_by_the_slow_reader_check() {
    // The slow-reader check runs every send_timeout / 2 (here 0.5 s): it must not restart
    // the idle clock, or a connection would never be idle for longer than that.
    assert_idle_http2_connection_closed(
        "idle_timeout = \"2s\"\nsend_timeout = \"1s\"",
        "idle_timeout longer than send_timeout / 2 never closed an idle HTTP/2 connection",
    )
    .await;
}

#[tokio::test]
async fn an_open_stream_is_not_idle() {
    // A response still streaming keeps its connection: idle means nothing in flight.
    let (upstream, gateway) = gateway("idle_timeout = \"1s\"").await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET /mcp/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: first") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first event");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        !closed_by_server(&mut stream, Duration::from_secs(3)).await,
        "a connection with an open event stream was closed as idle"
    );
    upstream.release();
    while !String::from_utf8_lossy(&seen).contains("data: second") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the second event");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408() {
    // Slow-POST: the head and a few bytes, then silence. The gateway gives up after
    // body_read_timeout (the upstream was waiting for the rest) and frees the connection.
    let (_upstream, gateway) = gateway("body_read_timeout = \"1s\"").await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"jsonrpc\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&answer).contains("\r\n\r\n{") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(answer.contains("request body timed out"), "{answer}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    // Slow read: an HTTP/2 client that opens no window for the response (and answers pings)
    // would keep its request "in flight" — and its slot — forever.
    let (_upstream, gateway) = gateway("send_timeout = \"1s\"\nidle_timeout = \"1h\"").await;
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::builder()
        .uri(format!("http://{}/healthz", gateway.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    // The head arrives (headers are not flow-controlled); the body never can.
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(15), driver).await;
    assert!(
        ended.is_ok(),
        "a connection whose client reads nothing stayed open past send_timeout"
    );
    drop(response);
}

#[tokio::test]
async fn a_body_trickling_past_response_timeout_is_the_clients_408() {
    // One byte every 300 ms never trips body_read_timeout, but the upstream, still waiting
    // for the body, cannot answer: when response_timeout runs out the slow one is the client.
    // (The standard configuration has response_timeout = "2s".)
    let (_upstream, gateway) = gateway("body_read_timeout = \"1s\"").await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n{") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw_status(&answer), 408, "{answer}");
}
