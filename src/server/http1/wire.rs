//! A client's socket, shared by the connection's driver (which reads request heads and
//! writes answers) and the request body it hands the pipeline (which reads the body from
//! the same buffer). Both run in the connection's one task; the lock is taken for one
//! poll at a time and never held across an `await`.
//!
//! Nothing is buffered while nothing arrives: the read buffer is allocated when the socket
//! is readable and released when a read would wait with nothing in it, and answers are
//! written as they come (no write buffer kept between them). An idle SSE stream holds the
//! socket and this struct.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::socket::READ_CHUNK;
use crate::upstream::chunked::{ChunkError, ChunkedDecoder, Decoded};

/// While an answer streams, bytes the client sends ahead (a pipelined request) are read
/// up to this much, to notice the client closing; beyond it the socket is left alone.
const READ_AHEAD: usize = 16 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long, and how much, a closing connection reads and drops of what the client still
/// sends after its answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// How a write goes out: at once, or held by the kernel until the sending side is shut.
/// (Not `Send`: that name is the marker trait's.)
#[derive(Clone, Copy)]
enum Push {
    Now,
    HeldForTheEnd,
}

#[cfg(target_os = "linux")]
const SEND_HELD: libc::c_int = libc::MSG_MORE | libc::MSG_NOSIGNAL;
#[cfg(not(target_os = "linux"))]
const SEND_HELD: libc::c_int = 0;

pub struct Wire {
    stream: TcpStream,
    reading: Mutex<Reading>,
}

/// What has been read from the client and how far its current request body is.
pub struct Reading {
    /// Bytes read and not yet consumed: a request head, body bytes, a pipelined request.
    pub buf: BytesMut,
    pub body: BodyState,
    /// `100 Continue` is owed before the body is read: how many of its bytes are written.
    pub continue_owed: Option<usize>,
    /// The client closed its side.
    pub eof: bool,
}

/// How much of the current request body is left to read.
#[derive(Debug)]
pub enum BodyState {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
    /// The body was cut short or malformed: the connection cannot carry another request.
    Failed,
}

/// Why a request body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("the client closed the connection before the end of its request body")]
    Incomplete,
    #[error("reading the request body")]
    Read(#[source] io::Error),
    #[error("the request body's chunked coding")]
    Chunked(#[from] ChunkError),
    #[error("the request body cannot be read again")]
    Failed,
}

/// A closed connection's emptied read buffer goes to the worker's spares.
impl Drop for Wire {
    fn drop(&mut self) {
        let reading = self
            .reading
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        crate::socket::release(std::mem::take(&mut reading.buf));
    }
}

impl Wire {
    pub fn new(stream: TcpStream, buf: BytesMut) -> Arc<Self> {
        Arc::new(Self {
            stream,
            reading: Mutex::new(Reading {
                buf,
                body: BodyState::Done,
                continue_owed: None,
                eof: false,
            }),
        })
    }

    pub fn reading(&self) -> MutexGuard<'_, Reading> {
        self.reading.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads what the socket has into the buffer: `Ok(0)` at the end of the stream. The
    /// buffer is allocated only once there is something to read, and released while
    /// waiting if it holds nothing.
    pub fn poll_fill(
        &self,
        reading: &mut Reading,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let read = ready!(crate::socket::poll_fill(
            &self.stream,
            &mut reading.buf,
            READ_CHUNK,
            cx
        ));
        reading.eof |= matches!(read, Ok(0));
        Poll::Ready(read)
    }

    /// Writes all of `bytes`, giving up when the client takes nothing for `stall_limit`
    /// (it stopped reading). No timer unless the socket's send buffer is full.
    pub async fn write_all(&self, bytes: &[u8], stall_limit: Duration) -> io::Result<()> {
        self.write(bytes, stall_limit, Push::Now).await
    }

    /// Writes the last bytes the connection carries and shuts its sending side. The kernel
    /// is told more follows (`MSG_MORE`) so that it holds them until the shutdown, which then
    /// sends the end of the stream (FIN) in the same segment: fewer segments through both
    /// kernels for every answer that closes its connection (`Connection: close`, a front
    /// proxy's check on a new connection).
    pub async fn write_last(&self, bytes: &[u8], stall_limit: Duration) -> io::Result<()> {
        self.write(bytes, stall_limit, Push::HeldForTheEnd).await?;
        socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write)
    }

    async fn write(&self, bytes: &[u8], stall_limit: Duration, push: Push) -> io::Result<()> {
        let mut written = 0;
        while written < bytes.len() {
            match self.try_send(&bytes[written..], push) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
            match tokio::time::timeout(stall_limit, self.stream.writable()).await {
                Ok(ready) => ready?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing for send_timeout",
                    ))
                }
            }
        }
        Ok(())
    }

    fn try_send(&self, bytes: &[u8], push: Push) -> io::Result<usize> {
        match push {
            Push::Now => self.stream.try_write(bytes),
            Push::HeldForTheEnd => self.stream.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(&self.stream).send_with_flags(bytes, SEND_HELD)
            }),
        }
    }

    /// Ready once the client has closed its side while an answer is pending. Watched only
    /// when the request body has been read (until then the body's reads notice a close);
    /// bytes sent ahead are kept for the next request, up to [`READ_AHEAD`].
    pub fn poll_client_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut reading = self.reading();
        loop {
            if reading.eof {
                return Poll::Ready(());
            }
            if !matches!(reading.body, BodyState::Done) {
                return Poll::Pending;
            }
            // More sent ahead than any client pipelines: not waited for (nor read) any longer.
            if reading.buf.len() >= READ_AHEAD {
                return Poll::Ready(());
            }
            match ready!(self.poll_fill(&mut reading, cx)) {
                Ok(0) | Err(_) => {
                    reading.eof = true;
                    return Poll::Ready(());
                }
                Ok(_) => continue,
            }
        }
    }

    /// Whether the connection can carry another request after this one's answer: the
    /// client is not waiting for a `100 Continue` it never got, and what is left of the
    /// body is known to be at most `limit` bytes (or chunked, drained up to it) and sound.
    pub fn body_drainable(&self, limit: u64) -> bool {
        let reading = self.reading();
        if reading
            .continue_owed
            .is_some_and(|written| written < CONTINUE.len())
        {
            return false;
        }
        match reading.body {
            BodyState::Done | BodyState::Chunked(_) => true,
            BodyState::Length(left) => left <= limit,
            BodyState::Failed => false,
        }
    }

    /// Finishes a `100 Continue` begun and not completed (its write would wait), so that the
    /// answer's head never follows half of it.
    pub async fn finish_continue(&self, stall_limit: Duration) {
        let rest = {
            let mut reading = self.reading();
            match reading.continue_owed {
                Some(written) if written > 0 && written < CONTINUE.len() => {
                    reading.continue_owed = None;
                    written
                }
                _ => return,
            }
        };
        let _ = self.write_all(&CONTINUE[rest..], stall_limit).await;
    }

    /// Closes after an answer that may have left the client's input unread (RFC 9112
    /// §9.6): the sending side is shut (the client sees the end), and what the client still
    /// sends is read and dropped for a moment — closing with unread input would make the
    /// kernel reset the connection, and a reset can destroy the answer before the client
    /// has read it.
    pub async fn linger_close(&self) {
        {
            let reading = self.reading();
            // Everything asked for was read and nothing more is here: a plain close.
            if reading.eof {
                return;
            }
            let unread = !matches!(reading.body, BodyState::Done) || !reading.buf.is_empty();
            if !unread && !matches!(self.stream.try_read(&mut [0u8; 1]), Ok(n) if n > 0) {
                return;
            }
        }
        let _ = socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write);
        let mut discarded = 0;
        let lingering = async {
            while discarded < LINGER_BYTES {
                let read = std::future::poll_fn(|cx| {
                    let mut reading = self.reading();
                    let read = ready!(self.poll_fill(&mut reading, cx));
                    discarded += reading.buf.len();
                    reading.buf.clear();
                    Poll::Ready(read)
                })
                .await;
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, lingering).await;
    }

    /// Writes what is left of `100 Continue`.
    fn poll_send_continue(
        &self,
        reading: &mut Reading,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(written) = reading.continue_owed {
            if written == CONTINUE.len() {
                reading.continue_owed = None;
                break;
            }
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(&CONTINUE[written..]) {
                Ok(n) => reading.continue_owed = Some(written + n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The current request's body, read from the client's connection as the pipeline asks.
/// Whatever it leaves unread the connection drains (or closes) after the answer.
pub struct RequestBody {
    wire: Arc<Wire>,
}

impl RequestBody {
    pub fn new(wire: Arc<Wire>) -> Self {
        Self { wire }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RequestBodyError>>> {
        let wire = &self.wire;
        let mut guard = wire.reading();
        let reading = &mut *guard;
        if reading.continue_owed.is_some() {
            if let Err(error) = ready!(wire.poll_send_continue(reading, cx)) {
                reading.body = BodyState::Failed;
                return Poll::Ready(Some(Err(RequestBodyError::Read(error))));
            }
        }
        loop {
            match &mut reading.body {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Failed => return Poll::Ready(Some(Err(RequestBodyError::Failed))),
                BodyState::Length(left) => {
                    if !reading.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(reading.buf.len());
                        *left -= take as u64;
                        if *left == 0 {
                            reading.body = BodyState::Done;
                        }
                        return Poll::Ready(Some(Ok(reading.buf.split_to(take).freeze())));
                    }
                }
                BodyState::Chunked(decoder) => match decoder.decode(&mut reading.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    // Request trailers are not passed on (nothing upstream asks for them).
                    Ok(Decoded::End(_)) => {
                        reading.body = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => {
                        reading.body = BodyState::Failed;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                },
            }
            match ready!(wire.poll_fill(reading, cx)) {
                Ok(0) => {
                    reading.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(RequestBodyError::Incomplete)));
                }
                Ok(_) => {}
                Err(error) => {
                    reading.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(RequestBodyError::Read(error))));
                }
            }
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.poll_next(cx)
            .map(|next| next.map(|data| data.map(Frame::data).map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.wire.reading().body, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.wire.reading().body {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
