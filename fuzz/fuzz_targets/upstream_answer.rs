//! `upstream::head` and `upstream::chunked`: an upstream's answer as the gateway's own
//! HTTP/1.1 client reads it — attacker-influenced whenever an upstream is compromised or
//! shares a connection with something that is.
//!
//! Input: the first byte chooses a read size (1–64 bytes); the rest is the answer, head
//! then body, as it arrives on the socket.
//!
//! Properties: never panics; a parsed head lies within the input and the head limit; a
//! body framed by length had exactly one `Content-Length`, holding that number, and no
//! `Transfer-Encoding`; one framed chunked had exactly one `Transfer-Encoding`, `chunked`,
//! and no `Content-Length`; a chunked body decodes to the same data, trailers and outcome
//! whether it arrives in one piece or in reads of the chosen size, and never yields more
//! data than it holds.
#![no_main]

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Method;
use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::upstream::chunked::{ChunkedDecoder, Decoded};
use mcp_auth_gateway::upstream::head::{
    parse_length, parse_response_head, response_framing, BodyFraming, MAX_HEAD_BYTES,
};

/// Decodes `input` fed `step` bytes at a time: the data, the trailer count and whether it
/// completed (`None`: refused).
fn decode(input: &[u8], step: usize) -> Option<(Vec<u8>, usize, bool)> {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf).ok()? {
            Decoded::Data(bytes) => {
                assert!(!bytes.is_empty(), "empty data frame");
                data.extend_from_slice(&bytes);
            }
            Decoded::End(trailers) => return Some((data, trailers.map_or(0, |t| t.len()), true)),
            Decoded::NeedMore if fed >= input.len() => return Some((data, 0, false)),
            Decoded::NeedMore => {
                let next = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, answer)) = input.split_first() else {
        return;
    };
    let step = usize::from(first % 64) + 1;
    let Ok(Some((head, length))) = parse_response_head(answer) else {
        return;
    };
    assert!(length <= answer.len() && length <= MAX_HEAD_BYTES);
    let lengths: Vec<_> = head.headers.get_all(CONTENT_LENGTH).iter().collect();
    let codings: Vec<_> = head.headers.get_all(TRANSFER_ENCODING).iter().collect();
    match response_framing(&Method::POST, &head) {
        Ok(BodyFraming::Length(n)) => {
            assert!(codings.is_empty() && lengths.len() == 1);
            assert_eq!(parse_length(lengths[0].as_bytes()), Some(n));
        }
        Ok(BodyFraming::Chunked) => {
            assert!(lengths.is_empty() && codings.len() == 1);
            assert!(codings[0].as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
        Ok(BodyFraming::UntilClose) => assert!(lengths.is_empty() && codings.is_empty()),
        Ok(BodyFraming::Empty) => assert!(matches!(head.status.as_u16(), 204 | 304)),
        Err(_) => {}
    }
    let body = &answer[length..];
    let whole = decode(body, body.len().max(1));
    let stepped = decode(body, step);
    if let Some((data, _, _)) = &whole {
        assert!(data.len() <= body.len());
    }
    // Refusal may come earlier in pieces than whole (a bad size line is seen before its
    // end), but whatever completes completes the same way.
    if let (Some(whole), Some(stepped)) = (&whole, &stepped) {
        if whole.2 && stepped.2 {
            assert_eq!(whole, stepped);
        }
    }
    assert_eq!(
        whole.as_ref().is_some_and(|w| w.2),
        stepped.as_ref().is_some_and(|s| s.2),
        "completion must not depend on read boundaries"
    );
});
