//! One client connection, from accept to close. Every phase before the first request head
//! runs under a deadline — the TLS handshake, then reading enough bytes to tell HTTP/2's
//! preface from HTTP/1.1 — so a client that sends one byte and stops holds its slot for
//! `header_read_timeout` at most. After that hyper bounds each HTTP/1.1 head, and
//! [`Activity`] tells the server when a connection has had no request in flight for
//! `idle_timeout`, so that it is closed gracefully (HTTP/2 GOAWAY: an HTTP/2 peer answering
//! pings no longer keeps an empty connection forever).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::observability::metrics::METRICS;

/// RFC 9113 §3.4: what an HTTP/2 client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// How much one read of the sniff may take: a whole request head as clients send it, so
/// that hyper parses it from the sniffed bytes instead of reading the socket again (one
/// `recvfrom` per connection fewer). Heap-allocated and freed once replayed.
const SNIFF_READ: usize = 2048;

/// Reads until the protocol is known: the HTTP/2 preface in full, or a byte that departs
/// from it. Returns what was read (to be replayed, or parsed as the first request head).
/// `None` if the peer closes first.
pub async fn sniff<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<Option<(BytesMut, Protocol)>> {
    let mut read = BytesMut::with_capacity(SNIFF_READ);
    loop {
        // The preface is 24 bytes: the loop ends long before the capacity is used up.
        let n = stream.read_buf(&mut read).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(protocol) = protocol_of(&read) {
            return Ok(Some((read, protocol)));
        }
    }
}

/// [`sniff`] for a plain TCP connection, reading as the gateway's HTTP/1.1 server does
/// ([`crate::socket::poll_fill`]): nothing is held until the first bytes arrive, and then
/// a spare read buffer of the worker is used rather than a new one.
pub async fn sniff_plain(
    stream: &tokio::net::TcpStream,
) -> io::Result<Option<(BytesMut, Protocol)>> {
    let mut read = BytesMut::new();
    loop {
        let n = std::future::poll_fn(|cx| {
            crate::socket::poll_fill(stream, &mut read, crate::socket::READ_CHUNK, cx)
        })
        .await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(protocol) = protocol_of(&read) {
            return Ok(Some((read, protocol)));
        }
    }
}

/// The protocol the first bytes of a connection speak, once they tell: the HTTP/2 preface
/// in full, or a byte that departs from it.
pub fn protocol_of(start: &[u8]) -> Option<Protocol> {
    let start = &start[..start.len().min(H2_PREFACE.len())];
    if !H2_PREFACE.starts_with(start) {
        Some(Protocol::Http1)
    } else if start.len() == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// A stream whose first bytes were already read: they are returned again before the rest.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
    /// An error met while reading on behind the prefix, returned by the next read.
    deferred: Option<io::Error>,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self {
            prefix,
            inner,
            deferred: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            if self.prefix.is_empty() {
                // An empty view still holds the sniff's allocation: let it go.
                self.prefix = Bytes::new();
            }
            // Hand over whatever has arrived behind the prefix in the same read: hyper then
            // parses the request head in one pass instead of finding the 24 sniffed bytes
            // incomplete and scanning the whole head again for its end.
            if self.prefix.is_empty() && buf.remaining() > 0 {
                // Pending registers the waker (a later wake-up is harmless); an error is kept
                // for the next read, the end of the stream shows again by itself.
                if let Poll::Ready(Err(error)) = Pin::new(&mut self.inner).poll_read(cx, buf) {
                    self.deferred = Some(error);
                }
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(error) = self.deferred.take() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Requests in flight on one connection, and whether the client is still taking its
/// responses. Each request holds an [`InFlight`] until its response body is finished or
/// dropped; the connection is idle when none is held, and [`Activity::idle_deadline`] says
/// since when.
///
/// Plain atomics, no channel: a request starting or ending only counts. The connection's
/// one timer asks [`Activity::next_check`] when to look again, so nothing is woken per
/// request.
///
/// A client that stops reading (an HTTP/2 stream window left at zero, a full TCP receive
/// buffer) keeps its requests in flight forever: hyper stops polling a body it cannot send.
/// [`Tracked`] bodies therefore count how many of them wait for hyper to come back for more
/// (a frame handed over, or a body not polled yet), and the connection notes the last time
/// hyper polled any of them; waiting without progress for `send_timeout` means the client
/// is not reading ([`Activity::client_stalled`]).
#[derive(Clone)]
pub struct Activity {
    state: Arc<State>,
}

struct State {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the last request in flight ended (or the start).
    idle_since_ms: AtomicU64,
    /// Bodies waiting for hyper to poll them again.
    waiting: AtomicUsize,
    /// Milliseconds since `epoch` at the last poll (or since waiting began).
    last_progress_ms: AtomicU64,
    epoch: Instant,
}

impl State {
    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    fn start_waiting(&self) {
        if self.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.last_progress_ms
                .store(self.now_ms(), Ordering::Release);
        }
    }

    fn stop_waiting(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    fn progressed(&self) {
        self.last_progress_ms
            .store(self.now_ms(), Ordering::Release);
    }
}

/// However short the configured limits, the connection is not looked at more often.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// `at + after`, or a year from `at` when that does not fit (a huge configured limit).
pub fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            state: Arc::new(State {
                in_flight: AtomicUsize::new(0),
                idle_since_ms: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                last_progress_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }
}

impl Activity {
    pub fn start(&self) -> InFlight {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        METRICS.request_started();
        InFlight {
            state: self.state.clone(),
        }
    }

    /// When the connection will have been idle for `limit`: `None` while a request is in
    /// flight.
    pub fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        let state = &self.state;
        if state.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(state.idle_since_ms.load(Ordering::Acquire));
        Some(later(state.epoch, since.saturating_add(limit)))
    }

    /// When to look at the connection next, from `now`: at its idle deadline if it is idle,
    /// and at least every `every` (stalled clients; requests that end in between).
    pub fn next_check(&self, now: Instant, idle_limit: Duration, every: Duration) -> Instant {
        let periodic = later(now, every.min(idle_limit).max(MIN_CHECK_INTERVAL));
        match self.idle_deadline(idle_limit) {
            Some(idle) => idle.min(periodic),
            None => periodic,
        }
    }

    /// Some response has waited for the client for longer than `limit` with no progress.
    pub fn client_stalled(&self, limit: Duration) -> bool {
        let state = &self.state;
        if state.waiting.load(Ordering::Acquire) == 0 {
            return false;
        }
        let since = state.last_progress_ms.load(Ordering::Acquire);
        state.now_ms().saturating_sub(since) > millis(limit)
    }
}

/// One request in flight; dropping it ends the request.
pub struct InFlight {
    state: Arc<State>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.request_finished();
        let state = &self.state;
        // The idle clock starts when the last request ends. The time is stored before the
        // count can reach zero, so whoever sees zero also sees when.
        let now = state.now_ms();
        if state.in_flight.load(Ordering::Acquire) == 1 {
            state.idle_since_ms.store(now, Ordering::Release);
        }
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            state.idle_since_ms.store(now, Ordering::Release);
        }
    }
}

/// A response body that keeps its request counted as in flight until it ends, and tells the
/// connection when it waits for the client.
pub struct Tracked<B> {
    inner: B,
    client: Arc<State>,
    /// Handed to hyper (or not polled yet) and not polled again since.
    waiting: bool,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight, activity: &Activity) -> Self {
        activity.state.start_waiting();
        Self {
            inner,
            client: activity.state.clone(),
            waiting: true,
            _in_flight: in_flight,
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.waiting {
            self.client.stop_waiting();
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        // hyper came back for more: the client is taking what was sent.
        this.client.progressed();
        if this.waiting {
            this.waiting = false;
            this.client.stop_waiting();
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.waiting = true;
            this.client.start_waiting();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sniffed<S: AsyncRead + Unpin>(mut stream: S) -> Option<(Prefixed<S>, Protocol)> {
        let (read, protocol) = sniff(&mut stream).await.unwrap()?;
        Some((Prefixed::new(read.freeze(), stream), protocol))
    }

    #[tokio::test]
    async fn sniff_tells_the_preface_from_anything_else() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, H2_PREFACE)
            .await
            .unwrap();
        let (mut io, protocol) = sniffed(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut replay = [0u8; 24];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(&replay, H2_PREFACE);

        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PUT / HTTP/1.1\r\n")
            .await
            .unwrap();
        let (mut io, protocol) = sniffed(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut replay = [0u8; 3];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(&replay, b"PUT");

        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniffed(server).await.is_none());

        // The preface in pieces, then a frame behind it: all replayed, in order.
        let (mut client, server) = tokio::io::duplex(4096);
        let sending = tokio::spawn(async move {
            for piece in [&H2_PREFACE[..3], &H2_PREFACE[3..20], &H2_PREFACE[20..]] {
                tokio::io::AsyncWriteExt::write_all(&mut client, piece)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            tokio::io::AsyncWriteExt::write_all(&mut client, &[7u8; 3000])
                .await
                .unwrap();
            client
        });
        let (mut io, protocol) = sniffed(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let _client = sending.await.unwrap();
        let mut replay = vec![0u8; 24 + 3000];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(&replay[..24], H2_PREFACE);
        assert!(replay[24..].iter().all(|&b| b == 7));

        // A request head larger than one sniff read: nothing lost at the seam.
        let head = format!("GET / HTTP/1.1\r\nx-long: {}\r\n\r\n", "a".repeat(5000));
        let (mut client, server) = tokio::io::duplex(8192);
        tokio::io::AsyncWriteExt::write_all(&mut client, head.as_bytes())
            .await
            .unwrap();
        let (mut io, protocol) = sniffed(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut replay = vec![0u8; head.len()];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(replay, head.as_bytes());
    }

    #[test]
    fn a_body_handed_over_and_not_polled_again_is_a_stalled_client() {
        let activity = Activity::default();
        assert!(!activity.client_stalled(Duration::ZERO), "nothing waits");
        let body = Tracked::new(
            http_body_util::Full::new(Bytes::from_static(b"x")),
            activity.start(),
            &activity,
        );
        #[allow(clippy::disallowed_methods)] // a plain #[test]: no runtime to block
        std::thread::sleep(Duration::from_millis(20));
        assert!(activity.client_stalled(Duration::from_millis(5)));
        assert!(!activity.client_stalled(Duration::from_secs(60)));
        drop(body);
        assert!(
            !activity.client_stalled(Duration::ZERO),
            "a dropped body waits no more"
        );
    }

    #[test]
    fn idle_from_the_end_of_the_last_request() {
        let limit = Duration::from_secs(5);
        let activity = Activity::default();
        let idle_at_start = activity
            .idle_deadline(limit)
            .expect("idle before any request");
        assert_eq!(idle_at_start, activity.state.epoch + limit);

        let first = activity.start();
        let second = activity.start();
        assert_eq!(
            activity.idle_deadline(limit),
            None,
            "busy connections are not idle"
        );
        drop(first);
        assert_eq!(
            activity.idle_deadline(limit),
            None,
            "one request is still in flight"
        );
        #[allow(clippy::disallowed_methods)] // a plain #[test]: no runtime to block
        std::thread::sleep(Duration::from_millis(20));
        drop(second);
        let idle = activity.idle_deadline(limit).expect("idle once both ended");
        assert!(idle >= idle_at_start + Duration::from_millis(20));
    }

    #[test]
    fn the_next_check_comes_at_the_idle_deadline_or_the_period() {
        let activity = Activity::default();
        let now = activity.state.epoch;
        let (idle, every) = (Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(activity.next_check(now, idle, every), now + every);
        let later = now + Duration::from_secs(45);
        assert_eq!(
            activity.next_check(later, idle, every),
            now + idle,
            "idle since the start: the idle deadline comes first"
        );
        let busy = activity.start();
        assert_eq!(activity.next_check(later, idle, every), later + every);
        assert_eq!(
            activity.next_check(later, Duration::from_secs(10), every),
            later + Duration::from_secs(10),
            "a request ending now could make the connection idle within the idle limit"
        );
        drop(busy);
    }

    #[tokio::test]
    async fn a_plain_connection_is_sniffed_from_what_arrives_and_nothing_is_lost() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        for (sent, expected) in [
            (&b"POST /mcp HTTP/1.1\r\n"[..], Some(Protocol::Http1)),
            (&H2_PREFACE[..], Some(Protocol::Http2)),
            (&H2_PREFACE[..10], None),
        ] {
            let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let sending = tokio::spawn(async move {
                // In two writes, which may arrive apart: a sniff that has only a piece of
                // the preface waits for more.
                tokio::io::AsyncWriteExt::write_all(&mut client, &sent[..1])
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                tokio::io::AsyncWriteExt::write_all(&mut client, &sent[1..])
                    .await
                    .unwrap();
                // The client closes: a preface cut short tells nothing.
            });
            let sniffed = sniff_plain(&server).await.unwrap();
            sending.await.unwrap();
            match (sniffed, expected) {
                (Some((read, protocol)), Some(expected)) => {
                    assert_eq!(protocol, expected);
                    assert!(sent.starts_with(&read) && !read.is_empty());
                }
                (None, None) => {}
                (sniffed, expected) => panic!("{sniffed:?} for {expected:?}"),
            }
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Undecided only on a piece of the preface; HTTP/2 only on the whole preface.
        #[test]
        fn the_protocol_is_told_by_the_preface_alone(
            start in prop_oneof![
                (0..=24usize, prop::collection::vec(any::<u8>(), 0..8))
                    .prop_map(|(n, rest)| [&H2_PREFACE[..n], &rest[..]].concat()),
                prop::collection::vec(any::<u8>(), 0..40),
            ]
        ) {
            let expected = if start.len() >= 24 && start[..24] == H2_PREFACE[..] {
                Some(Protocol::Http2)
            } else if H2_PREFACE.starts_with(&start) {
                None
            } else {
                Some(Protocol::Http1)
            };
            prop_assert_eq!(protocol_of(&start), expected);
        }
    }
}
