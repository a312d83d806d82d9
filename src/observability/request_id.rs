//! Request ids and trace context: every request gets an id that the upstream receives, the
//! client gets back, and the audit event records, so one request can be followed through the
//! front proxy, the gateway and the MCP server.
//!
//! - `X-Request-Id` from the client is taken only behind a trusted front proxy
//!   (`trust_forwarded_headers`) and only if it is short and plain ([`accept`]); otherwise
//!   the gateway makes one: a random per-process prefix and a counter, 32 hex digits.
//! - W3C `traceparent` (Trace Context §3.2) is passed on when well formed and dropped (with
//!   its `tracestate`) when not, so a malformed one cannot break the upstream's tracer.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use http::HeaderValue;

pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

const MAX_ID_BYTES: usize = 128;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bits of the counter that count a thread's ids; the bits above number the thread.
const THREAD_SHIFT: u32 = 44;

/// A new id: 16 hex digits of a per-process random prefix, 16 of a counter. Each thread
/// counts in a range of its own (its number in the counter's top 20 bits, 2^44 ids each):
/// one counter shared by the workers moved a cache line between cores at every request.
pub fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NEXT: Cell<u64> =
            Cell::new(THREADS.fetch_add(1, Ordering::Relaxed) << THREAD_SHIFT);
    }
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without randomness the prefix is the time: ids stay unique within this process.
        if SystemRandom::new().fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64).to_be_bytes();
        }
        u64::from_be_bytes(bytes)
    });
    let count = NEXT.with(|next| {
        let count = next.get();
        next.set(count.wrapping_add(1));
        count
    });
    // By hand rather than `format!`: one per request, on the hot path.
    let mut text = [0u8; 32];
    for (i, byte) in prefix
        .to_be_bytes()
        .into_iter()
        .chain(count.to_be_bytes())
        .enumerate()
    {
        text[2 * i] = HEX[usize::from(byte >> 4)];
        text[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// An inbound id worth keeping: 1–128 bytes of letters, digits and `-._:/+=`, nothing a log
/// line or a header could be bent with.
pub fn accept(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_BYTES
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/+=".contains(b))
}

/// W3C Trace Context `traceparent`: `version-traceid-parentid-flags`, lowercase hex, version
/// not `ff`, ids not all zero. Later versions may append fields after a `-`.
pub fn valid_traceparent(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut parts = text.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none())
}

/// The trace id of a valid `traceparent`, for the audit event.
pub fn trace_id(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok()?.split('-').nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_acceptable() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(accept(&a));
    }

    #[test]
    fn threads_never_share_an_id() {
        let ids: Vec<HeaderValue> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..100).map(|_| generate()).collect::<Vec<_>>()))
                .collect();
            threads
                .into_iter()
                .flat_map(|thread| thread.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // One process, one prefix.
        assert!(ids
            .iter()
            .all(|id| id.as_bytes()[..16] == ids[0].as_bytes()[..16]));
    }

    #[test]
    fn inbound_ids() {
        for ok in ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "req:1/2+3="] {
            assert!(accept(&HeaderValue::from_static(ok)), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", "a b", "a\"b", "a;b", long.as_str()] {
            assert!(!accept(&HeaderValue::from_str(bad).unwrap()), "{bad:?}");
        }
    }

    #[test]
    fn traceparents() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(&HeaderValue::from_static(ok)));
        assert_eq!(
            trace_id(&HeaderValue::from_static(ok)),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert!(!valid_traceparent(&HeaderValue::from_static(bad)), "{bad}");
        }
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(valid_traceparent(&HeaderValue::from_static(future)));
    }
}
