//! `server::http1::head`: a client's request head as the gateway's own HTTP/1.1 server
//! reads it, from anyone on the network, and the response head it writes back.
//!
//! Input: the first byte chooses a read size (1–64 bytes); the rest is what the client
//! sends, head then whatever follows.
//!
//! Properties: never panics; a head parsed whole is parsed the same (method, target,
//! fields, framing, what is left behind it) when it arrives in reads of the chosen size; a
//! parsed head lies within the limit and leaves exactly the bytes behind it; a body framed
//! by length has no `Transfer-Encoding` and at most one `Content-Length`, holding that
//! number; a chunked one is HTTP/1.1 with exactly one `Transfer-Encoding: chunked` and no
//! `Content-Length` left, and a request that also named a length does not keep the
//! connection; every response head the gateway writes with the parsed fields reads back,
//! with the gateway's own upstream parser, as the same fields and the same length; the
//! protocol sniff takes no request line that starts otherwise than HTTP/2's preface for it.
#![no_main]

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::server::http1::head::{
    encode_response_head, parse_request_head, HeadError, Persistence, RequestFraming,
    RequestHead, ResponseFraming,
};
use mcp_auth_gateway::server::connection::{protocol_of, Protocol};
use mcp_auth_gateway::upstream::head::{parse_length, parse_response_head, response_framing, BodyFraming};

const MAX: usize = 4096;

/// Feeds `input` `step` bytes at a time until the head is complete or refused.
fn stepped(input: &[u8], step: usize) -> (Result<Option<RequestHead>, HeadError>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        let next = (fed + step).min(input.len());
        buf.extend_from_slice(&input[fed..next]);
        fed = next;
        match parse_request_head(&mut buf, MAX) {
            Ok(None) if fed < input.len() => continue,
            outcome => {
                buf.extend_from_slice(&input[fed..]);
                return (outcome, buf);
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, request)) = input.split_first() else {
        return;
    };
    let step = usize::from(first % 64) + 1;
    // The sniff before any head: a request head is never taken for HTTP/2's preface.
    let sniffed = protocol_of(request);
    let head_line = request.first().is_some_and(u8::is_ascii_uppercase) && request.first() != Some(&b'P');
    assert!(!head_line || sniffed == Some(Protocol::Http1));
    let mut whole_buf = BytesMut::from(request);
    let whole = parse_request_head(&mut whole_buf, MAX);
    let (pieces, pieces_buf) = stepped(request, step);
    let Ok(Some(head)) = whole else {
        // Refused or incomplete whole: in pieces it is never accepted.
        assert!(!matches!(pieces, Ok(Some(_))), "accepted only in pieces");
        return;
    };
    let consumed = request.len() - whole_buf.len();
    assert!(consumed <= MAX);
    assert_eq!(&whole_buf[..], &request[consumed..]);
    let other = pieces.expect("refused only in pieces").expect("complete in pieces");
    assert_eq!(head.method, other.method);
    assert_eq!(head.uri, other.uri);
    assert_eq!(head.headers, other.headers);
    assert_eq!(head.framing, other.framing);
    assert_eq!(head.keep_alive, other.keep_alive);
    assert_eq!(&whole_buf[..], &pieces_buf[..]);

    let lengths: Vec<_> = head.headers.get_all(CONTENT_LENGTH).iter().collect();
    let codings: Vec<_> = head.headers.get_all(TRANSFER_ENCODING).iter().collect();
    match head.framing {
        RequestFraming::Length(n) => {
            assert!(codings.is_empty() && lengths.len() <= 1);
            assert_eq!(lengths.first().map_or(Some(0), |l| parse_length(l.as_bytes())), Some(n));
        }
        RequestFraming::Chunked => {
            assert_eq!(head.version, Version::HTTP_11);
            assert!(lengths.is_empty() && codings.len() == 1);
            assert!(codings[0].as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
            let named_length = request[..consumed]
                .split(|&b| b == b'\n')
                .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"));
            assert!(!named_length || !head.keep_alive);
        }
    }

    // What the gateway writes back reads as what it meant (within the upstream parser's
    // field count: the gateway adds `date` and `content-length`).
    if head.headers.len() + 2 > mcp_auth_gateway::upstream::head::MAX_HEADERS {
        return;
    }
    let mut out = Vec::new();
    let length = u64::from(first);
    encode_response_head(
        StatusCode::OK,
        &head.headers,
        ResponseFraming::Length(length),
        Persistence::KeepAlive,
        b"Thu, 01 Jan 1970 00:00:00 GMT",
        &mut out,
    );
    let (answer, at) = parse_response_head(&out).expect("readable").expect("complete");
    assert_eq!(at, out.len());
    assert_eq!(response_framing(&Method::GET, &answer), Ok(BodyFraming::Length(length)));
    for (name, value) in &head.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == "connection" || name == "keep-alive" || name == "date" {
            continue;
        }
        assert!(answer.headers.get_all(name).iter().any(|v| v == value), "{name} lost");
    }
});
