//! Phase 10 — Forward: send the rewritten request to the upstream and stream the answer
//! back. Deadlines: the response *head* (`response_timeout`), then the longest *silence*
//! inside the body (`stream_idle_timeout`) — a healthy SSE stream that sends events or
//! keep-alive comments is never cut, however long it lives. A client that goes away drops
//! the response body, which drops the upstream connection — no synthesized cancel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, LengthLimitError};

use super::rejection::Rejection;
use super::rewrite::{connection_listed, is_hop_by_hop, remove_where, NameFilter, HOP_BY_HOP};
use crate::body::{Body, BoxError};
use crate::observability::Throttle;
use crate::upstream::{SetFields, Upstreams};

pub async fn forward(
    upstream: &Upstreams,
    request: Request<Body>,
    set: &SetFields<'_>,
    response_timeout: Duration,
    stream_idle_timeout: Duration,
    client_body: &BodyProgress,
) -> Result<Response<Body>, Rejection> {
    // Not `tokio::time::timeout`: it would take the exchange's future (kilobytes) by value
    // and move it once more; pinned here, it stays where it was made.
    let mut sending = std::pin::pin!(upstream.send(request, set));
    // Unconstrained, as `Timeout` polls its timer once the exchange used up the task's
    // budget: a deadline must be seen even while a long body streams without a pause.
    let mut deadline = std::pin::pin!(tokio::task::unconstrained(tokio::time::sleep(
        response_timeout
    )));
    let answered = std::future::poll_fn(|cx| match sending.as_mut().poll(cx) {
        Poll::Ready(answer) => Poll::Ready(Some(answer)),
        Poll::Pending => deadline.as_mut().poll(cx).map(|()| None),
    });
    let response = match answered.await {
        // An upstream still waiting for the client's body is not the slow one (slow-POST).
        None if client_body.waiting_for_client() => return Err(Rejection::BodyTimeout),
        None => return Err(Rejection::UpstreamTimeout),
        Some(Err(error)) => {
            // The client's own body failing (too long, bad chunked framing) is the client's
            // fault, not the upstream's.
            if let Some(client_error) = find_cause::<ClientBodyError>(&error) {
                return Err(if find_cause::<LengthLimitError>(client_error).is_some() {
                    Rejection::BodyTooLarge
                } else if find_cause::<StreamIdle>(client_error).is_some() {
                    Rejection::BodyTimeout
                } else {
                    Rejection::MalformedBody
                });
            }
            static FAILURES: Throttle = Throttle::new(Duration::from_secs(10));
            if let Some(suppressed) = FAILURES.allow() {
                tracing::warn!(error = %error_chain(&error), suppressed, "upstream request failed (logged at most every 10 s)");
            }
            return Err(Rejection::UpstreamUnavailable);
        }
        Some(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    // A 401 from the upstream is about the gateway's credential for it (the client's token
    // never reaches the upstream); passing it on would send MCP clients to re-authorize in a
    // loop, or to an authorization server the upstream names.
    if parts.status == http::StatusCode::UNAUTHORIZED {
        static REFUSALS: Throttle = Throttle::new(Duration::from_secs(10));
        if let Some(suppressed) = REFUSALS.allow() {
            tracing::warn!(
                suppressed,
                "the upstream answered 401 to the gateway; check the route's upstream_headers (logged at most every 10 s)"
            );
        }
        return Err(Rejection::UpstreamRefusedGateway);
    }
    withhold_upstream_headers(&mut parts.headers);
    let is_event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if is_event_stream {
        // Tell a buffering proxy in front of us (nginx) to pass events through immediately.
        parts
            .headers
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    // Trailers get the same treatment as the head: a challenge or a cookie must not slip
    // through after the body.
    let body = TrailersWithheld(body);
    let body = if stream_idle_timeout.is_zero() {
        body.boxed_unsync()
    } else {
        IdleTimeout::new(body, stream_idle_timeout).boxed_unsync()
    };
    Ok(Response::from_parts(parts, body))
}

/// An upstream answer's body whose trailers lose the fields its head loses. Not
/// `map_frame`: that forgets the body's length, and the HTTP/1.1 server takes an answer of
/// unknown length for a stream: it gives up the connection's kept pipeline box
/// (`server::http1`), which then costs an allocation past glibc's per-thread cache on
/// every request.
struct TrailersWithheld<B>(B);

impl<B> http_body::Body for TrailersWithheld<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.0)
            .poll_frame(cx)
            .map_ok(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    withhold_upstream_headers(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    /// Trailers are not data: the length is the inner body's.
    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Upstream response headers that speak for the gateway's whole origin, which every route
/// shares: challenges (an upstream's would send MCP clients to another authorization
/// server), cookies (`Cookie` is never forwarded either), and origin-wide policies an
/// upstream could set or clear for every other route (`Strict-Transport-Security`,
/// `Clear-Site-Data`, `Alt-Svc`, `Service-Worker-Allowed`).
const ORIGIN_WIDE: [&str; 8] = [
    "www-authenticate",
    "authentication-info",
    "set-cookie",
    "set-cookie2",
    "strict-transport-security",
    "clear-site-data",
    "alt-svc",
    "service-worker-allowed",
];

/// Removes from an upstream's head or trailers, in one pass over the names present, what
/// the client must not receive: hop-by-hop headers, [`ORIGIN_WIDE`] ones, and CORS headers —
/// CORS is the gateway's decision (route allowlist), not the upstream's: an upstream's
/// `Access-Control-Allow-Origin: *` must not widen it.
fn withhold_upstream_headers(headers: &mut http::HeaderMap) {
    static WITHHELD: std::sync::LazyLock<NameFilter> = std::sync::LazyLock::new(|| {
        NameFilter::of(
            HOP_BY_HOP
                .iter()
                .chain([&header::UPGRADE])
                .map(http::HeaderName::as_str)
                .chain(ORIGIN_WIDE),
        )
    });
    let listed = connection_listed(headers);
    let candidates = WITHHELD.with(NameFilter::of(listed.iter().map(http::HeaderName::as_str)));
    remove_where(headers, |name| {
        // Most names match no bit and skip the comparisons ([`NameFilter`]).
        let spelled = name.as_str();
        if !candidates.may_match(spelled) && !spelled.starts_with("access-control-") {
            return None;
        }
        let withheld = is_hop_by_hop(name, &listed)
            || ORIGIN_WIDE.contains(&name.as_str())
            || name.as_str().starts_with("access-control-");
        withheld.then_some(false)
    });
}

/// Where the client's request body stands, told by [`Completing`]: whether it has ended, and
/// whether the last read of it was left waiting for the client.
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(Arc<[AtomicBool; 2]>);

const ENDED: usize = 0;
const AWAITING_CLIENT: usize = 1;

impl BodyProgress {
    /// The upstream asked for more of the body and the client has not sent it: the request
    /// is slow because of the client (not an upstream that never connected or stopped
    /// reading).
    pub fn waiting_for_client(&self) -> bool {
        !self.0[ENDED].load(Ordering::Acquire) && self.0[AWAITING_CLIENT].load(Ordering::Acquire)
    }

    fn set(&self, which: usize, value: bool) {
        self.0[which].store(value, Ordering::Release);
    }
}

/// A request body that reports when it has ended (read to the end, or empty from the start).
pub struct Completing<B> {
    inner: B,
    progress: BodyProgress,
}

impl<B> Completing<B> {
    pub fn new(inner: B, progress: &BodyProgress) -> Self {
        Self {
            inner,
            progress: progress.clone(),
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Completing<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.progress.set(AWAITING_CLIENT, polled.is_pending());
        if matches!(polled, Poll::Ready(None)) {
            self.progress.set(ENDED, true);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let ended = self.inner.is_end_stream();
        if ended {
            self.progress.set(ENDED, true);
        }
        ended
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An error of the client's request body (wrapped by the inline proxy before the body is
/// handed to the upstream client), so that a failure can be told apart from the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// The first error of type `E` in `error`'s source chain.
fn find_cause<'e, E: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `error: cause: cause…` as one readable line (not Rust `Debug`).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

/// A body cut off after `limit` without a frame (a half-dead upstream must not hold the
/// client's stream, nor a silent client an upstream connection, forever).
///
/// The timer is armed only when the body has to wait, and moved once per wait: a
/// body whose frames are ready when asked (most requests and answers) registers no timer
/// and does not even read the clock (a frame marks the body as having spoken; the silence
/// is counted from the first time it is asked and has nothing — right after the frame
/// when the reader keeps asking, later only if the reader itself was busy).
pub struct IdleTimeout<B> {
    inner: B,
    limit: Duration,
    /// Since when the body has been asked and had nothing; `None` until it first waits
    /// after a frame (or after its creation).
    silent_since: Option<tokio::time::Instant>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            silent_since: None,
            deadline: None,
        }
    }
}

/// `limit` after `since`; a huge configured limit must not overflow (a year is "never"
/// here).
fn due(since: tokio::time::Instant, limit: Duration) -> tokio::time::Instant {
    since
        .checked_add(limit)
        .unwrap_or_else(|| since + Duration::from_secs(365 * 24 * 3600))
}

#[derive(Debug, thiserror::Error)]
#[error("upstream stream idle for longer than {0:?}")]
pub struct StreamIdle(pub Duration);

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Error = BoxError> + Unpin,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.silent_since = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let since = *this
                    .silent_since
                    .get_or_insert_with(tokio::time::Instant::now);
                let due = due(since, this.limit);
                let deadline = match &mut this.deadline {
                    Some(deadline) => {
                        if deadline.deadline() != due {
                            deadline.as_mut().reset(due);
                        }
                        deadline
                    }
                    None => this
                        .deadline
                        .insert(Box::pin(tokio::time::sleep_until(due))),
                };
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::warn!(idle = ?this.limit, "upstream stream idle; closing it");
                        Poll::Ready(Some(Err(Box::new(StreamIdle(this.limit)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
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
    use proptest::prelude::*;

    use super::super::rewrite::tests::{map, names};
    use super::*;

    /// A body whose frames come when the test sends them.
    struct Channel(tokio::sync::mpsc::Receiver<bytes::Bytes>);

    impl http_body::Body for Channel {
        type Data = bytes::Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|data| data.map(|data| Ok(http_body::Frame::data(data))))
        }
    }

    #[tokio::test]
    async fn upstream_trailers_lose_what_the_head_loses_and_the_length_stays() {
        use http_body_util::BodyExt;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("set-cookie", HeaderValue::from_static("session=upstream"));
        trailers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let inner = http_body_util::Full::new(bytes::Bytes::from_static(b"twelve bytes"))
            .with_trailers(std::future::ready(Some(Ok::<_, std::convert::Infallible>(
                trailers,
            ))));
        let mut body = TrailersWithheld(inner);
        // The exact length goes on (the client's framing, the connection's kept box).
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(12));
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"twelve bytes");
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(names(&trailers), ["grpc-status"]);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_cuts_silence_not_a_body_that_keeps_talking() {
        use http_body_util::BodyExt;
        let limit = Duration::from_secs(10);
        let (send, receive) = tokio::sync::mpsc::channel(1);
        let mut body = IdleTimeout::new(Channel(receive), limit);
        // Frames 6 s apart for a minute: every wait is shorter than the limit.
        for _ in 0..10 {
            let sending = async {
                tokio::time::sleep(Duration::from_secs(6)).await;
                send.send(bytes::Bytes::from_static(b"x")).await.unwrap();
            };
            let (frame, ()) = tokio::join!(body.frame(), sending);
            assert!(frame.unwrap().unwrap().is_data());
        }
        // A frame that is there at once arms no timer and resets the clock.
        send.send(bytes::Bytes::from_static(b"y")).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let waited = tokio::time::Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<StreamIdle>());
        assert_eq!(waited.elapsed(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_counts_while_the_body_is_waited_on() {
        use http_body_util::BodyExt;
        let limit = Duration::from_secs(10);
        let (send, receive) = tokio::sync::mpsc::channel(1);
        let mut body = IdleTimeout::new(Channel(receive), limit);
        // Not yet asked (the upstream was still connecting): no silence counted.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let asked = tokio::time::Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<StreamIdle>());
        assert_eq!(asked.elapsed(), limit);

        // A frame, then a reader busy elsewhere for most of the limit (the other side
        // taking its time): the wait counts from when it asks again.
        let (send_more, receive) = tokio::sync::mpsc::channel(1);
        let mut body = IdleTimeout::new(Channel(receive), limit);
        send_more
            .send(bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_secs(8)).await;
        let asked = tokio::time::Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<StreamIdle>());
        assert_eq!(asked.elapsed(), limit);
        drop(send);
    }

    #[test]
    fn upstream_answers_lose_hop_by_hop_origin_wide_and_cors_headers() {
        let mut headers = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            (
                "www-authenticate",
                "Bearer resource_metadata=\"https://elsewhere\"",
            ),
            ("set-cookie", "a=b"),
            ("set-cookie", "c=d"),
            ("strict-transport-security", "max-age=0"),
            ("alt-svc", "h3=\":443\""),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("content-type", "text/event-stream"),
            ("mcp-session-id", "s"),
            ("x-accel-buffering", "yes"),
        ]);
        withhold_upstream_headers(&mut headers);
        assert_eq!(
            names(&headers),
            ["content-type", "mcp-session-id", "x-accel-buffering"]
        );
    }

    /// The strip as written before the single pass: one lookup per candidate name.
    fn reference(headers: &mut http::HeaderMap) {
        let named = connection_listed(headers);
        for name in named.iter().chain(super::super::rewrite::HOP_BY_HOP.iter()) {
            headers.remove(name);
        }
        headers.remove(header::UPGRADE);
        for name in ORIGIN_WIDE {
            headers.remove(name);
        }
        let cors: Vec<_> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }

    proptest! {
        #[test]
        fn the_single_pass_strips_what_the_lookups_stripped(
            pairs in prop::collection::vec((
                prop::sample::select(vec![
                    "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
                    "proxy-authenticate", "www-authenticate", "authentication-info", "set-cookie",
                    "clear-site-data", "service-worker-allowed", "access-control-allow-origin",
                    "access-control-max-age", "content-type", "content-length", "x-custom",
                    "mcp-session-id", "x-secret",
                ]),
                "[a-z, -]{0,16}",
            ), 0..20),
        ) {
            let mut headers = http::HeaderMap::new();
            for (name, value) in &pairs {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.append(http::HeaderName::from_static(name), value);
                }
            }
            let mut expected = headers.clone();
            reference(&mut expected);
            withhold_upstream_headers(&mut headers);
            prop_assert_eq!(headers, expected);
        }
    }
}
