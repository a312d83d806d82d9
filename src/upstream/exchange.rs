//! One request and its answer on an upstream HTTP/1.1 connection, driven by the request's
//! own task: the head and body are written, the answer's head read, and the answer's body
//! becomes a [`ResponseBody`] that reads the socket as the client's connection asks for
//! more — no connection task, no channel between two tasks, and no buffer held while a
//! stream is idle (an SSE stream waiting for its next event holds its socket and ~200
//! bytes). A connection goes back to the worker's [`Pool`] only when its answer was read
//! to the exact end.
//!
//! Request bodies are written whole before the answer is read. An upstream that answers
//! early and stops reading is still heard (its answer is read after a failed write); one
//! that stops reading *without* answering holds the request until `response_timeout`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::chunked::{ChunkError, ChunkedDecoder, Decoded};
use super::head::{
    encode_request_head, omits_empty_length, parse_response_head, response_framing, BodyFraming,
    HeadError, RequestFraming, ResponseHead,
};
use super::pool::Pool;
use super::SetFields;
use crate::body::{Body, BoxError};
use crate::socket::READ_CHUNK;

/// A request whose head and body fit in this many bytes goes out in one write (one system
/// call), and can be sent again as it was (see [`may_resend`]).
const COALESCE: usize = 16 * 1024;

/// Why an exchange failed before the answer's head was in.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("connecting to {authority}")]
    Connect {
        authority: Authority,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {0}: timed out after {1:?}")]
    ConnectTimeout(Authority, Duration),
    #[error("writing the request")]
    Write(#[source] io::Error),
    #[error("reading the answer")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before answering")]
    Closed,
    #[error("the upstream closed the connection in the middle of its answer's head")]
    TruncatedHead,
    #[error("the upstream's answer")]
    Head(#[from] HeadError),
    /// The client's body failed (the cause is kept for the caller to tell whose fault).
    #[error("the request body")]
    RequestBody(#[source] BoxError),
    #[error("the request body is not as long as its Content-Length")]
    BodyLength,
}

impl ExchangeError {
    /// Failures that a pooled connection closed by the upstream while idle produces before
    /// any byte of an answer: worth one more try on a new connection.
    fn is_stale_connection(&self) -> bool {
        match self {
            Self::Closed => true,
            Self::Write(error) | Self::Read(error) => matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// Why an answer's body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the upstream's body")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before the end of the body")]
    Truncated,
    #[error("the upstream's chunked body")]
    Chunked(#[from] ChunkError),
}

/// Where the exchange's connection comes from and goes back to.
pub struct Upstream<'a> {
    pub pool: &'a Pool,
    pub authority: &'a Authority,
    pub connect_timeout: Duration,
}

/// Sends `request` (origin-form target from its URI) to the upstream and returns the
/// answer with a streaming body.
pub async fn exchange(
    upstream: Upstream<'_>,
    request: Request<Body>,
    set: &SetFields<'_>,
) -> Result<Response<Body>, ExchangeError> {
    let (mut parts, mut body) = request.into_parts();
    let framing = request_framing(&parts.method, &parts.headers, &body);
    // Room to spare for a small body behind the head (one buffer, one write), not sized
    // for the body before any of it has arrived.
    let mut head = Vec::with_capacity(256 + (parts.headers.len() + set.len()) * 48);
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // `Host` as hyper sent it: without the scheme's default port.
    let host = match upstream.authority.port_u16() {
        Some(80) => upstream.authority.host(),
        _ => upstream.authority.as_str(),
    };
    encode_request_head(
        &parts.method,
        target,
        host,
        &parts.headers,
        set,
        framing,
        &mut head,
    );
    // The head is written: its map serves the next head parsed on this worker.
    crate::header_maps::give_back_sent(&mut parts);
    let (mut connection, reused) = match upstream.pool.checkout(upstream.authority) {
        Some(stream) => (Connection::new(stream), true),
        None => (connect(&upstream).await?, false),
    };
    let mut whole = None;
    let mut outcome = send(&mut connection, head, framing, &mut body, &mut whole).await;
    if let (Err(error), Some(request)) = (&outcome, &whole) {
        if reused && may_resend(&parts.method, error, &connection) {
            connection = connect(&upstream).await?;
            outcome = match connection.write(request).await {
                Ok(()) => connection.read_head().await,
                Err(error) => Err(error),
            };
        }
    }
    let head = outcome?;
    let framing = response_framing(&parts.method, &head)?;
    let reusable = head.keeps_alive() && framing != BodyFraming::UntilClose;
    let body = ResponseBody {
        connection: Some(connection),
        decoder: match framing {
            BodyFraming::Empty => Decoder::Length(0),
            BodyFraming::Length(length) => Decoder::Length(length),
            BodyFraming::Chunked => Decoder::Chunked(ChunkedDecoder::default()),
            BodyFraming::UntilClose => Decoder::UntilClose,
        },
        give_back: reusable.then(|| (upstream.pool.clone(), upstream.authority.clone())),
    };
    let body = body.finish_if_empty();
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// The framing of the request body: its known length, or chunked.
fn request_framing(method: &Method, headers: &HeaderMap, body: &Body) -> RequestFraming {
    if http_body::Body::is_end_stream(body) {
        return if omits_empty_length(method) {
            RequestFraming::None
        } else {
            RequestFraming::Length(0)
        };
    }
    let hint = http_body::Body::size_hint(body);
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| super::head::parse_length(value.as_bytes()));
    match (hint.exact(), declared) {
        (Some(0), None) if omits_empty_length(method) => RequestFraming::None,
        (Some(length), _) => RequestFraming::Length(length),
        // The client's body was delimited by this length (the server side enforced it).
        (None, Some(length)) => RequestFraming::Length(length),
        (None, None) => RequestFraming::Chunked,
    }
}

/// Whether a request that failed on a pooled connection is sent again on a new one. Only
/// when nothing came back on the old one (so it was the upstream closing an idle
/// connection, not failing this request), and then only if the request cannot have been
/// acted on twice: a safe method, or a write that failed outright (an upstream that reads
/// a `tools/call` and then dies must not get it a second time; Go's and hyper's clients
/// draw the same line).
fn may_resend(method: &Method, error: &ExchangeError, connection: &Connection) -> bool {
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    !connection.heard
        && error.is_stale_connection()
        && (safe || matches!(error, ExchangeError::Write(_)))
}

/// Writes the head and the body, then reads the answer's head. A request written in one
/// piece is left in `whole`, to be sent again if [`may_resend`] says so.
async fn send(
    connection: &mut Connection,
    head: Vec<u8>,
    framing: RequestFraming,
    body: &mut Body,
    whole: &mut Option<Vec<u8>>,
) -> Result<ResponseHead, ExchangeError> {
    let written = write_request(connection, head, framing, body, whole).await;
    match written {
        Ok(()) => connection.read_head().await,
        // The upstream may have answered (413, 400) and stopped reading: its answer wins.
        Err(ExchangeError::Write(error)) => match connection.read_head().await {
            Ok(answer) => {
                connection.reusable = false;
                Ok(answer)
            }
            Err(_) => Err(ExchangeError::Write(error)),
        },
        Err(other) => Err(other),
    }
}

/// `head` is the encoded head; what is written next goes behind it while it is short.
async fn write_request(
    connection: &mut Connection,
    head: Vec<u8>,
    framing: RequestFraming,
    body: &mut Body,
    whole: &mut Option<Vec<u8>>,
) -> Result<(), ExchangeError> {
    let mut pending = head;
    let mut length = 0u64;
    let mut in_pieces = false;
    if framing != RequestFraming::None {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ExchangeError::RequestBody)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            length += data.len() as u64;
            if matches!(framing, RequestFraming::Length(declared) if length > declared) {
                return Err(ExchangeError::BodyLength);
            }
            let chunked = framing == RequestFraming::Chunked;
            if chunked {
                pending.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            if pending.len() + data.len() <= COALESCE {
                pending.extend_from_slice(&data);
            } else {
                in_pieces = true;
                connection.write(&pending).await?;
                pending.clear();
                connection.write(&data).await?;
            }
            if chunked {
                pending.extend_from_slice(b"\r\n");
            }
        }
        match framing {
            RequestFraming::Length(declared) if length != declared => {
                return Err(ExchangeError::BodyLength)
            }
            RequestFraming::Chunked => pending.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
    }
    let written = connection.write(&pending).await;
    if !in_pieces {
        *whole = Some(pending);
    }
    written
}

async fn connect(upstream: &Upstream<'_>) -> Result<Connection, ExchangeError> {
    let authority = upstream.authority;
    let connecting = async {
        let host = authority.host();
        // `[::1]` in an authority is `::1` to the resolver.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16().unwrap_or(80);
        let addresses: Vec<_> = tokio::net::lookup_host((host, port)).await?.collect();
        // Each address gets its share of the time: one that drops packets must not use it
        // all up before the next is tried.
        let count = u32::try_from(addresses.len()).unwrap_or(u32::MAX).max(1);
        let share = upstream.connect_timeout / count;
        let mut last_error = None;
        for address in addresses {
            match tokio::time::timeout(share, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(error)) => last_error = Some(error),
                Err(_) => last_error = Some(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
        }))
    };
    match tokio::time::timeout(upstream.connect_timeout, connecting).await {
        Err(_) => Err(ExchangeError::ConnectTimeout(
            authority.clone(),
            upstream.connect_timeout,
        )),
        Ok(Err(source)) => Err(ExchangeError::Connect {
            authority: authority.clone(),
            source,
        }),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(Connection::new(stream))
        }
    }
}

/// A socket and what has been read from it but not yet consumed.
struct Connection {
    stream: TcpStream,
    read: BytesMut,
    /// Cleared when the exchange leaves the connection in a state no other may inherit.
    reusable: bool,
    /// Something was read on it during this exchange.
    heard: bool,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::new(),
            reusable: true,
            heard: false,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ExchangeError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(ExchangeError::Write)
    }

    /// Reads the answer's head, skipping interim (1xx) answers.
    async fn read_head(&mut self) -> Result<ResponseHead, ExchangeError> {
        loop {
            if let Some((head, length)) = parse_response_head(&self.read)? {
                self.read.advance(length);
                crate::socket::shed_large(&mut self.read, length, READ_CHUNK);
                if head.is_interim() {
                    continue;
                }
                return Ok(head);
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx))
                .await
                .map_err(ExchangeError::Read)?;
            if read == 0 && self.read.is_empty() {
                return Err(ExchangeError::Closed);
            }
            if read == 0 {
                return Err(ExchangeError::TruncatedHead);
            }
        }
    }

    /// Reads what the socket has into the buffer: `Ok(0)` at the end of the stream. The
    /// buffer is allocated only once there is something to read, and released while
    /// waiting if it holds nothing.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let result = ready!(crate::socket::poll_fill(
            &self.stream,
            &mut self.read,
            READ_CHUNK,
            cx
        ));
        self.heard |= matches!(result, Ok(read) if read > 0);
        Poll::Ready(result)
    }
}

enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// An answer's body, read from the upstream's socket as it is polled.
struct ResponseBody {
    /// `None` once the body is complete (the connection pooled or closed).
    connection: Option<Connection>,
    decoder: Decoder,
    /// Where the connection goes once the body is read to its exact end.
    give_back: Option<(Pool, Authority)>,
}

impl ResponseBody {
    /// An answer without a body releases its connection at once.
    fn finish_if_empty(mut self) -> Self {
        if matches!(self.decoder, Decoder::Length(0)) {
            self.finish();
        }
        self
    }

    /// The body is complete: the connection goes back to the pool if nothing else came on
    /// it and the answer allows reuse; otherwise it is closed. Its emptied read buffer goes
    /// to the worker's spares (a pooled connection is given a buffer again when its next
    /// answer arrives).
    fn finish(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let Connection {
            stream,
            read,
            reusable,
            ..
        } = connection;
        let clean = read.is_empty();
        crate::socket::release(read);
        if let Some((pool, authority)) = self.give_back.take() {
            if reusable && clean {
                pool.checkin(&authority, stream);
            }
        }
    }

    fn poll_decoded(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(connection) = self.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = !connection.read.is_empty();
            match &mut self.decoder {
                Decoder::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Decoder::Length(left) if buffered => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(connection.read.len());
                    *left -= take as u64;
                    let data = connection.read.split_to(take).freeze();
                    if *left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::UntilClose if buffered => {
                    let data = connection.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Chunked(decoder) => match decoder.decode(&mut connection.read)? {
                    Decoded::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Decoded::End(trailers) => {
                        self.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Decoded::NeedMore => {}
                },
                Decoder::Length(_) | Decoder::UntilClose => {}
            }
            // More is needed from the socket.
            let read = ready!(connection.poll_fill(cx)).map_err(BodyError::Read)?;
            if read == 0 {
                if let Decoder::UntilClose = self.decoder {
                    // Read to its end: the emptied buffer goes to the spares.
                    if let Some(connection) = self.connection.take() {
                        crate::socket::release(connection.read);
                    }
                    return Poll::Ready(None);
                }
                self.connection = None;
                return Poll::Ready(Some(Err(BodyError::Truncated)));
            }
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.poll_decoded(cx).map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || matches!(self.decoder, Decoder::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
