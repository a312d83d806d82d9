//! One client connection, from accept to close. Every phase before the first request head
//! runs under a deadline — the TLS handshake, then reading enough bytes to tell HTTP/2's
//! preface from HTTP/1.1 — so a client that sends one byte and stops holds its slot for
//! `header_read_timeout` at most. After that hyper bounds each HTTP/1.1 head, and
//! [`Activity`] tells the server when a connection has had no request in flight for
//! `idle_timeout`, so that it is closed gracefully (HTTP/2 GOAWAY: an HTTP/2 peer answering
//! pings no longer keeps an empty connection forever).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// RFC 9113 §3.4: what an HTTP/2 client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Reads until the protocol is known: the HTTP/2 preface in full, or a byte that departs
/// from it. The bytes read are replayed to hyper. `None` if the peer closes first.
pub async fn sniff<S: AsyncRead + Unpin>(
    mut stream: S,
) -> io::Result<Option<(Prefixed<S>, Protocol)>> {
    let mut read = Vec::with_capacity(H2_PREFACE.len());
    let mut buf = [0u8; 24];
    loop {
        let want = H2_PREFACE.len() - read.len();
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        read.extend_from_slice(&buf[..n]);
        let protocol = if !H2_PREFACE.starts_with(&read) {
            Protocol::Http1
        } else if read.len() == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            continue;
        };
        return Ok(Some((Prefixed::new(Bytes::from(read), stream), protocol)));
    }
}

/// A stream whose first bytes were already read: they are returned again before the rest.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
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
            return Poll::Ready(Ok(()));
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

/// Requests in flight on one connection. Each request holds an [`InFlight`] until its
/// response body is finished or dropped; the connection is idle when none is held.
#[derive(Clone)]
pub struct Activity {
    in_flight: Arc<watch::Sender<usize>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Activity {
    pub fn start(&self) -> InFlight {
        self.in_flight.send_modify(|n| *n += 1);
        InFlight {
            in_flight: self.in_flight.clone(),
        }
    }

    /// Completes once no request has been in flight for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        let mut count = self.in_flight.subscribe();
        loop {
            if count.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            match tokio::time::timeout(limit, count.wait_for(|n| *n > 0)).await {
                Err(_elapsed) => return,
                Ok(Err(_closed)) => return,
                Ok(Ok(_busy)) => continue,
            }
        }
    }
}

/// One request in flight; dropping it ends the request.
pub struct InFlight {
    in_flight: Arc<watch::Sender<usize>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request counted as in flight until it ends.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
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
        Pin::new(&mut self.inner).poll_frame(cx)
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

    #[tokio::test]
    async fn sniff_tells_the_preface_from_anything_else() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, H2_PREFACE)
            .await
            .unwrap();
        let (mut io, protocol) = sniff(server).await.unwrap().unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut replay = [0u8; 24];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(&replay, H2_PREFACE);

        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PUT / HTTP/1.1\r\n")
            .await
            .unwrap();
        let (mut io, protocol) = sniff(server).await.unwrap().unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut replay = [0u8; 3];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(&replay, b"PUT");

        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniff(server).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_the_last_request_ends() {
        let activity = Activity::default();
        let request = activity.start();
        let idle = activity.idle_for(Duration::from_secs(5));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), idle.as_mut())
                .await
                .is_err(),
            "busy connections are not idle"
        );
        drop(request);
        tokio::time::timeout(Duration::from_secs(6), idle)
            .await
            .expect("idle 5 s after the request ended");
    }
}
