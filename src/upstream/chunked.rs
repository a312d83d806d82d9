//! The chunked transfer coding of an upstream's response body (RFC 9112 §7.1), decoded in
//! place: data comes out as slices of the connection's read buffer (no copy), whatever
//! the chunk boundaries and read boundaries are.
//!
//! Strict where a lenient reader would disagree with another: a size line is hex digits,
//! optional whitespace and extensions, and CRLF (a bare LF, a sign, `0x` or more than 16
//! digits are refused); every chunk's data ends in CRLF; a trailer section is fields as in
//! a head, bounded like one.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::head::{header_map, MAX_HEADERS};

/// The longest size line (size, extensions, CRLF) read before giving up.
const MAX_SIZE_LINE: usize = 4096;
/// The largest trailer section.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// The most chunk-extension bytes in one body (as hyper): extensions are ignored, and
/// without a bound a body of one-byte chunks with 4 KB extensions each would cost 4 KB of
/// parsing per byte of data.
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    SizeLine,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("invalid trailer section")]
    Trailers,
    #[error("more than {MAX_EXTENSION_BYTES} bytes of chunk extensions")]
    Extensions,
}

/// What one step of decoding produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data.
    Data(Bytes),
    /// The body is complete; the trailer fields, if any.
    End(Option<HeaderMap>),
    /// The buffer holds no complete next piece: read more.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailer section's end.
    Trailers,
    Done,
}

/// Decodes a chunked body from the front of a read buffer, consuming what it decodes.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Chunk-extension bytes seen so far.
    extensions: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size,
            extensions: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes the next piece from the front of `buf`, removing the bytes it consumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some((size, line, extension)) = size_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.extensions += extension as u64;
                    if self.extensions > MAX_EXTENSION_BYTES {
                        return Err(ChunkError::Extensions);
                    }
                    buf.advance(line);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    match buf.get(..2) {
                        None if buf.first().is_none_or(|&b| b == b'\r') => {
                            return Ok(Decoded::NeedMore)
                        }
                        Some(b"\r\n") => buf.advance(2),
                        _ => return Err(ChunkError::DataEnd),
                    }
                    self.state = State::Size;
                }
                State::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    return match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((length, fields)))
                            if length <= MAX_TRAILER_BYTES =>
                        {
                            let trailers = (!fields.is_empty())
                                .then(|| header_map(fields))
                                .transpose()
                                .map_err(|_| ChunkError::Trailers)?;
                            buf.advance(length);
                            self.state = State::Done;
                            Ok(Decoded::End(trailers))
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILER_BYTES => {
                            Ok(Decoded::NeedMore)
                        }
                        _ => Err(ChunkError::Trailers),
                    };
                }
                State::Done => return Ok(Decoded::End(None)),
            }
        }
    }
}

/// A complete size line at the front of `buf`: the size, the line's length with CRLF and
/// the length of what follows the size (whitespace and extensions).
fn size_line(buf: &[u8]) -> Result<Option<(u64, usize, usize)>, ChunkError> {
    let window = &buf[..buf.len().min(MAX_SIZE_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_SIZE_LINE {
            Err(ChunkError::SizeLine)
        } else {
            Ok(None)
        };
    };
    let line = window[..lf]
        .strip_suffix(b"\r")
        .ok_or(ChunkError::SizeLine)?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::SizeLine);
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    // Extensions are ignored, but must be text: no control bytes other than tab.
    if !(rest.is_empty() || rest[0] == b';')
        || rest.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        return Err(ChunkError::SizeLine);
    }
    let size = line[..digits].iter().fold(0u64, |size, &digit| {
        // At most 16 hex digits: no overflow.
        (size << 4) | u64::from(hex_value(digit))
    });
    Ok(Some((size, lf + 1, line.len() - digits)))
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: the data, the trailers, or the error.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                Decoded::End(trailers) => {
                    assert!(decoder.is_done());
                    return Ok((data, trailers));
                }
                Decoded::NeedMore if fed >= input.len() => return Err(ChunkError::DataEnd),
                Decoded::NeedMore => {
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn valid_bodies_decode_whatever_the_read_boundaries() {
        let cases: [(&str, &str); 5] = [
            ("0\r\n\r\n", ""),
            ("5\r\nhello\r\n0\r\n\r\n", "hello"),
            (
                "5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\n\r\n",
                "hello world",
            ),
            ("A\r\n0123456789\r\n00\r\n\r\n", "0123456789"),
            ("0000000000000003\r\nabc\r\n0\r\n\r\n", "abc"),
        ];
        for (input, expected) in cases {
            for step in [1, 2, 3, 7, 64] {
                let (data, trailers) = decode_all(input.as_bytes(), step).unwrap();
                assert_eq!(data, expected.as_bytes(), "{input:?} by {step}");
                assert!(trailers.is_none());
            }
        }
    }

    #[test]
    fn trailers_come_out_as_a_map() {
        let (data, trailers) = decode_all(
            b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nWWW-Authenticate: x\r\n\r\n",
            4,
        )
        .unwrap();
        assert_eq!(data, b"abc");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-checksum"], "1");
        assert_eq!(trailers.len(), 2);
    }

    #[test]
    fn ambiguous_or_broken_framing_is_refused() {
        for input in [
            "5\nhello\r\n0\r\n\r\n",
            "+5\r\nhello\r\n0\r\n\r\n",
            "-5\r\nhello\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            " 5\r\nhello\r\n0\r\n\r\n",
            "5\r\r\nhello\r\n0\r\n\r\n",
            "5\x0c\r\nhello\r\n0\r\n\r\n",
            "\r\nhello\r\n0\r\n\r\n",
            "5 x\r\nhello\r\n0\r\n\r\n",
            "5;a\rb\r\nhello\r\n0\r\n\r\n",
            "10000000000000000\r\nx\r\n",
            "5\r\nhelloXY0\r\n\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(decode_all(input.as_bytes(), 3).is_err(), "{input:?}");
        }
        let long_line = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(MAX_SIZE_LINE));
        assert_eq!(
            decode_all(long_line.as_bytes(), 1000),
            Err(ChunkError::SizeLine)
        );
        // Extensions are bounded per body, not only per line.
        let extended = format!("1;{}\r\nx\r\n", "e".repeat(1000));
        let many = format!("{}0\r\n\r\n", extended.repeat(17));
        assert_eq!(
            decode_all(many.as_bytes(), 1000),
            Err(ChunkError::Extensions)
        );
        let fewer = format!("{}0\r\n\r\n", extended.repeat(16));
        assert!(decode_all(fewer.as_bytes(), 1000).is_ok());
        let long_trailers = format!("0\r\nx: {}\r\n\r\n", "y".repeat(MAX_TRAILER_BYTES));
        assert_eq!(
            decode_all(long_trailers.as_bytes(), 1000),
            Err(ChunkError::Trailers)
        );
    }

    #[test]
    fn bytes_after_the_body_stay_in_the_buffer() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"a")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End(None)));
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    fn encode(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    proptest! {
        /// Any body, cut into any chunks and read in any steps, decodes to itself.
        #[test]
        fn encoded_bodies_round_trip(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..8),
            step in 1usize..50,
        ) {
            let (data, _) = decode_all(&encode(&chunks), step).unwrap();
            prop_assert_eq!(data, chunks.concat());
        }

        /// Arbitrary bytes never panic, and never yield more data than they hold.
        #[test]
        fn arbitrary_bytes_are_total(bytes in prop::collection::vec(any::<u8>(), 0..256), step in 1usize..20) {
            if let Ok((data, _)) = decode_all(&bytes, step) {
                prop_assert!(data.len() <= bytes.len());
            }
        }
    }
}
