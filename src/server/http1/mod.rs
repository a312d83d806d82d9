//! The gateway's own HTTP/1.1 server, for clients on plain TCP — MCP clients behind a TLS
//! terminator, ForwardAuth fronts, the common case. One task per connection reads a request
//! head, runs the router on it with a body that reads the same socket, and writes the answer
//! as its body produces it; then the next request. TLS clients and HTTP/2 keep hyper.
//!
//! Why not hyper here: hyper's server connection keeps an 8 KB read buffer and an 8 KB
//! write buffer for as long as the connection lives, a body channel between the connection
//! and the request, and its own state machine per connection — most of an idle SSE stream's
//! memory and a good part of the CPU per request beyond nginx's (BENCHMARKS.md). This
//! server holds no buffer while nothing arrives, writes a small answer's head and body in
//! one system call, and registers a timer only while it waits.
//!
//! What hyper enforced is enforced here, by the same rules (tests/adversarial.rs,
//! tests/slow_clients.rs): heads bounded (431) and parsed by `httparse`; ambiguous framing
//! refused (400, [`head`]); `header_read_timeout` from the first byte of a head to its end;
//! `idle_timeout` between requests; `send_timeout` for a client that stops taking its
//! answer; `Expect: 100-continue` answered when the body is first read; a body the pipeline
//! left unread drained (bounded) or the connection closed; on shutdown, the answer in
//! progress finishes and the connection closes.

pub mod head;
mod wire;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::connection::later;
use super::{router, Connection, Shared};
use crate::body::{self, Body};
use crate::observability::metrics::METRICS;
use crate::pipeline::rejection::Rejection;
use head::{HeadError, Persistence, RequestFraming, RequestHead, ResponseFraming};
use wire::{BodyState, RequestBody, Wire};

/// Data frames up to this size are copied behind the head (or the chunk size line) and go
/// out in the same write; larger ones are written as they are.
const COPY_LIMIT: usize = 8 * 1024;
/// Queued answer bytes go out once they reach this much, even while the body has more
/// ready (a fast upstream and a slow client must not pile an answer up in memory).
const FLUSH_AT: usize = 16 * 1024;
/// A request body the pipeline did not read is drained up to this much (and within
/// `header_read_timeout`) to keep the connection; a longer one closes it.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// Serves one plain-TCP HTTP/1.x connection whose first bytes, `sniffed`, were read to
/// tell it from HTTP/2. `accepted` starts the first head's `header_read_timeout`.
pub(super) async fn serve(
    stream: TcpStream,
    sniffed: BytesMut,
    shared: &Shared,
    connection: Connection,
    mut stopping: watch::Receiver<bool>,
    accepted: Instant,
) {
    let wire = Wire::new(stream, sniffed);
    let limits = &shared.limits;
    let max_head = (limits.max_header_bytes + 4096).max(8192);
    let mut closing = false;
    let mut head_started = Some(accepted);
    // The pipeline's future: kilobytes, so boxed (inline it would size every connection's
    // task for it, an idle stream's included), and the box is kept for the connection's
    // next request. Allocated per request it took glibc's slow path each time (above its
    // per-thread cache), which first merges the small blocks freed since (BENCHMARKS.md).
    // Typed by its first use (an async fn's future has no name): a `Box<dyn Future>` that
    // takes each request's future by value (tokio-util's `ReusableBoxFuture`) copied its
    // 6 KB twice per request (once into `set`, once into the box); set here, once.
    let mut pipeline: Option<Pin<Box<_>>> = None;
    loop {
        let next = next_head(
            &wire,
            max_head,
            head_started.take(),
            shared,
            &mut stopping,
            &mut closing,
        )
        .await;
        let head = match next {
            Next::Head(head) => head,
            Next::Close => return,
            Next::Refuse(error) => {
                tracing::debug!(peer = %connection.peer, %error, "malformed request head");
                let response = refusal(&error).into_response();
                let answered = respond(
                    &wire,
                    response,
                    &Method::GET,
                    Version::HTTP_11,
                    false,
                    limits.send_timeout,
                )
                .await;
                if answered.is_ok() {
                    wire.linger_close().await;
                }
                return;
            }
        };
        let (request, method, version, keep_alive) = request(&wire, head);
        let counted = Counted::start();
        let response = {
            let handling = router::handle(&shared.app, &shared.upstream, request, connection);
            let handling = match &mut pipeline {
                Some(boxed) => {
                    // By path: the box's type is not known yet where this is checked.
                    Pin::set(&mut Pin::as_mut(boxed), handling);
                    boxed
                }
                None => pipeline.insert(Box::pin(handling)),
            };
            // Polled until it is ready, and set anew before it is polled again.
            let handled = poll_fn(|cx| std::future::Future::poll(handling.as_mut(), cx));
            let gone = poll_fn(|cx| wire.poll_client_gone(cx));
            // The client closing drops the pipeline's work (and its upstream exchange).
            tokio::select! {
                biased;
                response = handled => response,
                () = gone => return,
            }
        };
        // An answer of unknown length may stream for hours (SSE): its connection does not
        // keep the box meanwhile.
        if http_body::Body::size_hint(response.body())
            .exact()
            .is_none()
        {
            pipeline = None;
        }
        if !closing && stopping.has_changed().unwrap_or(true) {
            closing = true;
        }
        // A client waiting for `100 Continue` that never came may or may not send its body
        // now: the connection cannot tell the body from a next request, so it closes; and
        // so it does when what is left of the body is too long to drain.
        let keep_alive = keep_alive && wire.body_drainable(DRAIN_LIMIT);
        wire.finish_continue(limits.send_timeout).await;
        let kept = respond(
            &wire,
            response,
            &method,
            version,
            keep_alive && !closing,
            limits.send_timeout,
        )
        .await;
        drop(counted);
        match kept {
            Ok(true) => {}
            // The answer is out; the request's body may not be.
            Ok(false) => return wire.linger_close().await,
            Err(()) => return,
        }
        if !finish_request_body(&wire, limits.header_read_timeout).await {
            return wire.linger_close().await;
        }
        // Fairness: pipelined requests already buffered are served without waiting on the
        // socket; one connection must not hold its worker for all of them in a row.
        tokio::task::consume_budget().await;
    }
}

// Returned once per request and unpacked at once: boxing the head would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(RequestHead),
    Close,
    Refuse(HeadError),
}

/// Waits for the next request head: `idle_timeout` for its first byte (unless `started`,
/// the first request's accept time), then `header_read_timeout` for the rest. Shutdown
/// closes a connection waiting here.
async fn next_head(
    wire: &Wire,
    max_head: usize,
    mut started: Option<Instant>,
    shared: &Shared,
    stopping: &mut watch::Receiver<bool>,
    closing: &mut bool,
) -> Next {
    let limits = &shared.limits;
    // Read from the clock only when the connection has to wait (a pipelined or already
    // arrived head needs no deadline).
    let mut idle_deadline = None;
    loop {
        {
            let mut reading = wire.reading();
            if !reading.buf.is_empty() {
                let before = reading.buf.len();
                match head::parse_request_head(&mut reading.buf, max_head) {
                    Ok(Some(head)) => {
                        let length = before - reading.buf.len();
                        crate::socket::shed_large(
                            &mut reading.buf,
                            length,
                            crate::socket::READ_CHUNK,
                        );
                        return Next::Head(head);
                    }
                    Err(error) => return Next::Refuse(error),
                    Ok(None) => {
                        started.get_or_insert_with(Instant::now);
                    }
                }
            }
            if reading.eof {
                return Next::Close;
            }
        }
        if *closing {
            return Next::Close;
        }
        let deadline = match started {
            Some(at) => later(at, limits.header_read_timeout),
            None => {
                *idle_deadline.get_or_insert_with(|| later(Instant::now(), limits.idle_timeout))
            }
        };
        let filled = poll_fn(|cx| wire.poll_fill(&mut wire.reading(), cx));
        tokio::select! {
            biased;
            filled = filled => match filled {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            },
            _ = stopping.changed() => {
                *closing = true;
                return Next::Close;
            }
            () = tokio::time::sleep_until(deadline.into()) => return Next::Close,
        }
    }
}

/// The pipeline's request for `head`, its body reading the connection.
fn request(
    wire: &Arc<Wire>,
    head: RequestHead,
) -> (Request<body::RequestBody>, Method, Version, bool) {
    let RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expects_continue,
    } = head;
    let state = match framing {
        RequestFraming::Length(0) => BodyState::Done,
        RequestFraming::Length(length) => BodyState::Length(length),
        RequestFraming::Chunked => BodyState::Chunked(Default::default()),
    };
    let has_body = !matches!(state, BodyState::Done);
    {
        let mut reading = wire.reading();
        reading.body = state;
        reading.continue_owed = (has_body && expects_continue).then_some(0);
    }
    let body = if has_body {
        body::RequestBody::Stream(Box::pin(RequestBody::new(wire.clone())))
    } else {
        body::RequestBody::Empty
    };
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    (request, method, version, keep_alive)
}

/// Writes `response` as its body produces it: a small answer's head and body in one write,
/// a stream's events each as it comes. `Ok(true)` when the connection may carry another
/// request; `Err` when the answer could not be delivered whole (the connection closes, so
/// the client sees the cut).
async fn respond(
    wire: &Wire,
    response: Response<Body>,
    method: &Method,
    version: Version,
    keep_alive: bool,
    send_timeout: Duration,
) -> Result<bool, ()> {
    let (parts, mut body) = response.into_parts();
    let framing = head::response_framing(
        method,
        version,
        parts.status,
        &parts.headers,
        http_body::Body::size_hint(&body).exact(),
    );
    let keep_alive = keep_alive && framing != ResponseFraming::UntilClose;
    let persistence = match (keep_alive, version) {
        (false, _) => Persistence::Close,
        (true, Version::HTTP_10) => Persistence::KeepAlive10,
        (true, _) => Persistence::KeepAlive,
    };
    let mut out = Vec::with_capacity(256 + parts.headers.len() * 64);
    with_date(|date| {
        head::encode_response_head(
            parts.status,
            &parts.headers,
            framing,
            persistence,
            date,
            &mut out,
        )
    });
    // The head is written: its map serves the next head parsed on this worker.
    crate::header_maps::give_back_answered(parts);
    let (length, chunked) = match framing {
        ResponseFraming::NoBody(_) => {
            drop(body);
            write_end(wire, &out, keep_alive, send_timeout).await?;
            return Ok(keep_alive);
        }
        ResponseFraming::Length(length) => (Some(length), false),
        ResponseFraming::Chunked => (None, true),
        ResponseFraming::UntilClose => (None, false),
    };
    let mut sent: u64 = 0;
    loop {
        // What the body has ready goes behind what is already queued; when it has nothing
        // ready, the queue goes out before waiting (a stream's event is never held back).
        let ready = poll_fn(|cx| {
            Poll::Ready(http_body::Body::poll_frame(
                std::pin::Pin::new(&mut body),
                cx,
            ))
        })
        .await;
        let frame = match ready {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    wire.write_all(&out, send_timeout).await.map_err(drop)?;
                    out = Vec::new();
                }
                let gone = poll_fn(|cx| wire.poll_client_gone(cx));
                tokio::select! {
                    biased;
                    frame = body.frame() => frame,
                    () = gone => return Err(()),
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => {
                tracing::debug!(error = %crate::pipeline::forward::error_chain(error.as_ref()), "answer body failed; closing the client's connection");
                if !out.is_empty() {
                    let _ = wire.write_all(&out, send_timeout).await;
                }
                return Err(());
            }
            // Trailers are not passed on (hyper sent them only to clients asking for them).
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if length.is_some_and(|length| sent > length) {
            return Err(());
        }
        if chunked {
            head::push_chunk_size(data.len(), &mut out);
        }
        if data.len() <= COPY_LIMIT {
            out.extend_from_slice(&data);
        } else {
            wire.write_all(&out, send_timeout).await.map_err(drop)?;
            out = Vec::new();
            wire.write_all(&data, send_timeout).await.map_err(drop)?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            wire.write_all(&out, send_timeout).await.map_err(drop)?;
            out = Vec::new();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if length.is_some_and(|length| sent != length) {
        if !out.is_empty() {
            let _ = wire.write_all(&out, send_timeout).await;
        }
        return Err(());
    }
    write_end(wire, &out, keep_alive, send_timeout).await?;
    Ok(keep_alive)
}

/// Writes what is left of an answer; when it is the connection's last, the end of the
/// stream goes with it.
async fn write_end(
    wire: &Wire,
    out: &[u8],
    keep_alive: bool,
    send_timeout: Duration,
) -> Result<(), ()> {
    match (out.is_empty(), keep_alive) {
        (true, _) => Ok(()),
        (false, true) => wire.write_all(out, send_timeout).await.map_err(drop),
        (false, false) => wire.write_last(out, send_timeout).await.map_err(drop),
    }
}

/// Reads and discards what the pipeline left of the request body, so that the connection
/// can carry the next request: `false` (close) when it is too long, too slow, broken, or
/// was never asked for (`100 Continue` not sent: the client is waiting).
async fn finish_request_body(wire: &Arc<Wire>, within: Duration) -> bool {
    {
        let reading = wire.reading();
        match reading.body {
            BodyState::Done => return true,
            BodyState::Failed => return false,
            _ if reading.continue_owed.is_some() => return false,
            _ => {}
        }
    }
    let mut rest = RequestBody::new(wire.clone());
    let draining = async {
        let mut drained: u64 = 0;
        while let Some(frame) = rest.frame().await {
            let Ok(data) = frame.map(|frame| frame.into_data().unwrap_or_default()) else {
                return false;
            };
            drained += data.len() as u64;
            if drained > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(within, draining)
        .await
        .unwrap_or(false)
}

/// The answer to a head that cannot be served.
fn refusal(error: &HeadError) -> Rejection {
    if error.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
        return Rejection::HeadersTooLarge;
    }
    Rejection::MalformedMessage(match error {
        HeadError::Framing(why) => why,
        HeadError::Target => "invalid request target",
        HeadError::Field(_) => "invalid header field",
        HeadError::Connect => "CONNECT is not served: the gateway opens no tunnels",
        HeadError::Malformed(_) | HeadError::TooLarge => "malformed request head",
    })
}

/// Counts the request as in flight (the metrics' gauge) until dropped.
struct Counted;

impl Counted {
    fn start() -> Self {
        METRICS.request_started();
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        METRICS.request_finished();
    }
}

/// The `Date` value for now, formatted once a second per thread.
fn with_date<R>(write: impl FnOnce(&[u8]) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *text = httpdate::fmt_http_date(now);
            *at = second;
        }
        write(text.as_bytes())
    })
}
