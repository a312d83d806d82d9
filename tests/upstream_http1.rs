//! The gateway's own HTTP/1.1 client for `http://` upstreams (`src/upstream/`), over real
//! loopback sockets against upstreams that speak exact bytes:
//! - kept-alive upstream connections are reused, one per request at a time;
//! - a pooled connection the upstream closed while idle is replaced without failing the
//!   request; when the upstream closes it just as the next request arrives, a `GET` is sent
//!   again on a new connection and a `POST` (which the upstream may have acted on) is a 502,
//!   never sent twice;
//! - answers whose length could be read two ways (`Transfer-Encoding` with
//!   `Content-Length`, two lengths, codings other than `chunked`, broken chunks), folded
//!   headers and unasked-for upgrades are 502, and their connections are never reused;
//! - malformed chunks cut the answer off (nothing after them passes as data);
//! - chunked, close-delimited, HTTP/1.0 and interim (1xx) answers come through intact;
//!   an answer's trailers reach an HTTP/2 client without cookies, CORS or hop-by-hop fields;
//! - the gateway frames request bodies itself: a body of unknown length goes chunked, one
//!   with a length keeps it, a `GET` has no framing header, an `Expect` is not forwarded.

mod common;

use std::time::Duration;

use common::faulty::{read_request, response, send, FaultyServer, RawRequest};
use common::gateway::standard_config;
use common::http::{get, post_json, raw, raw_status};
use common::{TestGateway, API_KEY};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const ECHO_JSON: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

/// One worker, so that every request shares one upstream pool.
async fn gateway_for(upstream: &FaultyServer) -> TestGateway {
    let config = standard_config(&upstream.url("/mcp"), "", "").replace(
        "public_url = \"http://127.0.0.1\"",
        "public_url = \"http://127.0.0.1\"\nworkers = 1",
    );
    TestGateway::start(&config).await
}

/// An upstream answering every request on a connection with `200 ok`, reporting each
/// request with the index of the connection it came on.
async fn recording_upstream() -> (FaultyServer, mpsc::UnboundedReceiver<(usize, RawRequest)>) {
    let (seen, requests) = mpsc::unbounded_channel();
    let upstream = FaultyServer::start(move |mut stream, index| {
        let seen = seen.clone();
        async move {
            while let Some(request) = read_request(&mut stream).await {
                let _ = seen.send((index, request));
                send(&mut stream, &response(200, &[], "ok")).await;
            }
        }
    })
    .await;
    (upstream, requests)
}

#[tokio::test]
async fn kept_alive_upstream_connections_are_reused() {
    let (upstream, mut requests) = recording_upstream().await;
    let gateway = gateway_for(&upstream).await;
    let auth = bearer();
    for _ in 0..5 {
        let answer = get(gateway.addr, "/mcp", &[("authorization", &auth)]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body, "ok");
    }
    for _ in 0..5 {
        let (connection, request) = requests.recv().await.unwrap();
        assert_eq!(connection, 0, "every request on the first connection");
        let head = request.head.to_ascii_lowercase();
        assert!(
            !head.contains("content-length") && !head.contains("transfer-encoding"),
            "a GET without a body carries no framing: {head}"
        );
        assert!(head.contains(&format!("host: {}", upstream.addr)), "{head}");
    }
    assert_eq!(upstream.accepted(), 1);
}

/// What an upstream connection does after answering its one request.
#[derive(Clone, Copy)]
enum Then {
    /// Closes a moment later without saying so (an upstream's keep-alive timeout).
    CloseSoon,
    /// Reads the next request and closes without answering it: the close raced the
    /// request (a keep-alive timeout), or the upstream died on it — the gateway cannot
    /// tell which.
    CloseOnNextRequest,
}

/// An upstream answering one request per connection with `200 ok`, reporting it with the
/// index of its connection, and then doing what `then` says.
async fn one_answer_per_connection(
    then: Then,
) -> (FaultyServer, mpsc::UnboundedReceiver<(usize, RawRequest)>) {
    let (seen, requests) = mpsc::unbounded_channel();
    let upstream = FaultyServer::start(move |mut stream: TcpStream, index| {
        let seen = seen.clone();
        async move {
            if let Some(request) = read_request(&mut stream).await {
                let _ = seen.send((index, request));
                send(&mut stream, &response(200, &[], "ok")).await;
            }
            match then {
                Then::CloseSoon => tokio::time::sleep(Duration::from_millis(20)).await,
                Then::CloseOnNextRequest => drop(read_request(&mut stream).await),
            }
        }
    })
    .await;
    (upstream, requests)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_while_idle_is_replaced() {
    let (upstream, mut requests) = one_answer_per_connection(Then::CloseSoon).await;
    let gateway = gateway_for(&upstream).await;
    let auth = bearer();
    for round in 0..3 {
        let answer = post_json(gateway.addr, "/mcp", &[("authorization", &auth)], ECHO_JSON).await;
        assert_eq!(answer.status, 200, "round {round}: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for round in 0..3 {
        let (connection, request) = requests.recv().await.unwrap();
        assert_eq!(connection, round);
        assert_eq!(request.body, ECHO_JSON.as_bytes());
    }
}

#[tokio::test]
async fn a_connection_closed_as_a_request_arrives_costs_a_get_nothing_and_a_post_a_502() {
    let (upstream, mut requests) = one_answer_per_connection(Then::CloseOnNextRequest).await;
    let gateway = gateway_for(&upstream).await;
    let auth = bearer();
    let headers = [("authorization", auth.as_str())];
    let post = post_json(gateway.addr, "/mcp", &headers, ECHO_JSON).await;
    assert_eq!(post.status, 200, "{}", post.body);
    // A GET is safe to send again: it is, on a new connection.
    let retried = get(gateway.addr, "/mcp", &headers).await;
    assert_eq!(
        (retried.status.as_u16(), retried.body.as_str()),
        (200, "ok")
    );
    // A POST the upstream may have acted on is not sent twice: 502.
    let refused = post_json(gateway.addr, "/mcp", &headers, ECHO_JSON).await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(refused.json()["jsonrpc"], "2.0");
    let after = get(gateway.addr, "/mcp", &headers).await;
    assert_eq!(after.status, 200);
    let mut answered = Vec::new();
    for _ in 0..3 {
        let (connection, request) = requests.recv().await.unwrap();
        answered.push((connection, request.method));
    }
    assert_eq!(
        answered,
        [
            (0, "POST".to_string()),
            (1, "GET".to_string()),
            (2, "GET".to_string())
        ]
    );
    assert_eq!(
        upstream.accepted(),
        3,
        "no new connection to send the POST again"
    );
}

/// An upstream that answers the first request on its first connection with `answer` (and
/// closes that connection if `answer` is delimited by the close), then `200 ok` to every
/// other request.
async fn answering(answer: &'static [u8]) -> FaultyServer {
    FaultyServer::start(move |mut stream, index| async move {
        if index == 0 && read_request(&mut stream).await.is_some() {
            send(&mut stream, answer).await;
            if String::from_utf8_lossy(answer).contains("connection: close") {
                return;
            }
        }
        while read_request(&mut stream).await.is_some() {
            send(&mut stream, &response(200, &[], "ok")).await;
        }
    })
    .await
}

#[tokio::test]
async fn answers_of_ambiguous_length_are_502_and_their_connection_is_dropped() {
    let answers: [&[u8]; 10] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nbad name: a\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
    ];
    let auth = bearer();
    for (index, answer) in answers.into_iter().enumerate() {
        let upstream = answering(answer).await;
        let gateway = gateway_for(&upstream).await;
        let first = get(gateway.addr, "/mcp", &[("authorization", &auth)]).await;
        let second = get(gateway.addr, "/mcp", &[("authorization", &auth)]).await;
        let text = String::from_utf8_lossy(answer);
        if index == answers.len() - 1 {
            // A well-framed answer followed by bytes nobody asked for: the answer passes,
            // the extra bytes never become the next request's answer.
            assert_eq!(
                (first.status.as_u16(), first.body.as_str()),
                (200, "hello"),
                "{text}"
            );
        } else {
            assert_eq!(first.status, 502, "{text} → {}", first.body);
            assert_eq!(first.json()["jsonrpc"], "2.0", "{text}");
        }
        assert_eq!(
            (second.status.as_u16(), second.body.as_str()),
            (200, "ok"),
            "{text}"
        );
        assert_eq!(
            upstream.accepted(),
            2,
            "{text}: its connection was not reused"
        );
    }
}

#[tokio::test]
async fn chunked_close_delimited_old_and_interim_answers_come_through() {
    let cases: [(&[u8], &str, usize); 4] = [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nx-trailer: t\r\n\r\n",
            "hello",
            1,
        ),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello", "hello", 2),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello", "hello", 2),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "hello",
            1,
        ),
    ];
    let auth = bearer();
    for (answer, body, connections) in cases {
        let upstream = answering(answer).await;
        let gateway = gateway_for(&upstream).await;
        let text = String::from_utf8_lossy(answer);
        let first = get(gateway.addr, "/mcp", &[("authorization", &auth)]).await;
        assert_eq!(
            (first.status.as_u16(), first.body.as_str()),
            (200, body),
            "{text}"
        );
        let second = get(gateway.addr, "/mcp", &[("authorization", &auth)]).await;
        assert_eq!(
            (second.status.as_u16(), second.body.as_str()),
            (200, "ok"),
            "{text}"
        );
        assert_eq!(upstream.accepted(), connections, "{text}: connections used");
    }
}

#[tokio::test]
async fn malformed_chunks_cut_the_answer_off_and_the_next_request_works() {
    // A chunk announcing 5 bytes and carrying 7: what follows the 5 is not passed as data.
    // The first bytes go out first, so that the client has the head before the fault.
    let upstream = FaultyServer::start(|mut stream, index| async move {
        if index == 0 && read_request(&mut stream).await.is_some() {
            send(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            send(&mut stream, b"loXY\r\n0\r\n\r\n").await;
        }
        while read_request(&mut stream).await.is_some() {
            send(&mut stream, &response(200, &[], "ok")).await;
        }
    })
    .await;
    let gateway = gateway_for(&upstream).await;
    let request = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\r\n",
        bearer()
    );
    let answer = raw(gateway.addr, request.as_bytes()).await;
    // The head and the first bytes reach the client when the gateway read them before the
    // fault; when both arrive in one read, the connection is dropped before anything is
    // written. Either way the answer is cut off.
    if !answer.is_empty() {
        assert_eq!(raw_status(&answer), 200, "{answer}");
    }
    assert!(
        !answer.contains("XY"),
        "the bytes after the chunk are not data: {answer:?}"
    );
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "the client does not get a complete answer: {answer:?}"
    );
    let auth = bearer();
    let next = get(gateway.addr, "/mcp", &[("authorization", &auth)]).await;
    assert_eq!((next.status.as_u16(), next.body.as_str()), (200, "ok"));
    assert_eq!(
        upstream.accepted(),
        2,
        "the broken connection was not reused"
    );
}

#[tokio::test]
async fn the_gateway_frames_request_bodies_itself() {
    let (upstream, mut requests) = recording_upstream().await;
    let gateway = gateway_for(&upstream).await;
    let auth = bearer();
    let head = |framing: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Expect: 100-continue\r\n{framing}\r\nConnection: close\r\n\r\n"
        )
    };
    // A chunked body of unknown length goes on chunked; one with a length keeps it.
    let chunked = format!(
        "{}{:x}\r\n{ECHO_JSON}\r\n0\r\n\r\n",
        head("Transfer-Encoding: chunked"),
        ECHO_JSON.len()
    );
    let sized = format!(
        "{}{ECHO_JSON}",
        head(&format!("Content-Length: {}", ECHO_JSON.len()))
    );
    for (request, framing) in [
        (chunked, "transfer-encoding: chunked\r\n".to_string()),
        (sized, format!("content-length: {}\r\n", ECHO_JSON.len())),
    ] {
        let answer = raw(gateway.addr, request.as_bytes()).await;
        // hyper answers the client's `Expect` itself before the answer.
        let answer = answer.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(raw_status(answer), 200, "{answer}");
        let (_, forwarded) = requests.recv().await.unwrap();
        let head = forwarded.head.to_ascii_lowercase();
        assert!(head.contains(&framing), "{framing:?} in {head}");
        assert_eq!(
            head.matches("content-length").count() + head.matches("transfer-encoding").count(),
            1,
            "{head}"
        );
        assert!(!head.contains("expect"), "{head}");
        let body = String::from_utf8_lossy(&forwarded.body);
        assert!(body.contains(ECHO_JSON), "{body}");
    }
}

/// An upstream's trailers lose what its head would lose (cookies, CORS, hop-by-hop) and
/// keep the rest, for clients that receive trailers (HTTP/2; the HTTP/1.1 server sends none).
#[tokio::test]
async fn trailers_reach_an_http2_client_without_what_the_head_would_lose() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let upstream = answering(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 42\r\nset-cookie: session=upstream\r\naccess-control-allow-origin: *\r\nconnection: x-drop\r\nx-drop: 1\r\nkeep-alive: timeout=5\r\n\r\n",
    )
    .await;
    let gateway = gateway_for(&upstream).await;
    let stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri(format!("http://{}/mcp", gateway.addr))
        .header("authorization", bearer())
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("answer");
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(&collected.to_bytes()[..], b"hello");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"42"[..])
    );
    for withheld in [
        "set-cookie",
        "access-control-allow-origin",
        "connection",
        "x-drop",
        "keep-alive",
    ] {
        assert!(!trailers.contains_key(withheld), "{withheld}: {trailers:?}");
    }
}
