//! The one body type every response and every outbound request uses: a boxed stream of
//! `Bytes`, so a buffered answer and a streamed upstream body are the same type.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A client's request body: from hyper (HTTP/2, TLS clients) or from the gateway's own
/// HTTP/1.1 server (`server::http1`), which hands it over boxed so that this module does
/// not depend on the server's.
pub enum RequestBody {
    Empty,
    Hyper(hyper::body::Incoming),
    Stream(std::pin::Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync>>),
}

/// Why a client's request body stopped short (the cause is its source).
#[derive(Debug, thiserror::Error)]
#[error("reading the client's request body")]
pub struct RequestBodyError(#[source] BoxError);

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, RequestBodyError>>> {
        let polled = match self.get_mut() {
            RequestBody::Empty => return std::task::Poll::Ready(None),
            RequestBody::Hyper(incoming) => std::pin::Pin::new(incoming)
                .poll_frame(cx)
                .map_err(|error| RequestBodyError(Box::new(error))),
            RequestBody::Stream(stream) => stream.as_mut().poll_frame(cx).map_err(RequestBodyError),
        };
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(incoming) => incoming.is_end_stream(),
            RequestBody::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
            RequestBody::Hyper(incoming) => incoming.size_hint(),
            RequestBody::Stream(stream) => stream.size_hint(),
        }
    }
}
