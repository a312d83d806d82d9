//! Header maps reused per worker thread.
//!
//! Every proxied request makes two maps (its own head, the upstream's answer) and every
//! `/verify` check two (the front proxy's head, the answer), each one allocation of 1–3 KB:
//! above what glibc keeps in its per-thread cache, so each went through the allocator's
//! slow path (and often made it sort its free lists first). Where a head has been written
//! out and its map is done with, the map goes back to its worker, emptied; the next head
//! parsed takes it, if its room is no more than twice what is asked (hyper keeps a TLS
//! connection's last answer map, and a spare must not make that larger). At most
//! [`MAX_SPARE_MAPS`] per worker, none with room or values for more than
//! [`MAX_SPARE_ENTRIES`] fields. Only maps of heads the gateway parsed (at most 128
//! fields) or built come back: a map hyper read from HTTP/2 ([`Foreign`]) could have kept
//! room for hundreds of repeated values that `clear` does not give up.

use std::cell::RefCell;

use http::{request, response, HeaderMap, Version};

/// Emptied maps kept per worker thread.
pub const MAX_SPARE_MAPS: usize = 16;

/// The most fields a kept map has room for (a map's room grows in powers of two: 12, 24,
/// 48, …). A head of ordinary size and what the rewrite adds fit in 24.
pub const MAX_SPARE_ENTRIES: usize = 48;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// Marks a request whose header map hyper built from HTTP/2: it is not given back.
#[derive(Debug, Clone, Copy)]
pub struct Foreign;

/// Before a request's version is rewritten for the upstream: marks a map hyper read from
/// HTTP/2, so that [`give_back_sent`] knows it once the version no longer tells.
pub fn mark_foreign(parts: &mut request::Parts) {
    if parts.version == Version::HTTP_2 {
        parts.extensions.insert(Foreign);
    }
}

/// A request's head has been written: its map is given back unless [`mark_foreign`]
/// marked it.
pub fn give_back_sent(parts: &mut request::Parts) {
    if parts.extensions.get::<Foreign>().is_none() {
        give_back(std::mem::take(&mut parts.headers));
    }
}

/// An answer's head has been written: its map is given back unless hyper read it from an
/// HTTP/2 upstream.
pub fn give_back_answered(parts: response::Parts) {
    if parts.version != Version::HTTP_2 {
        give_back(parts.headers);
    }
}

/// An empty map with room for `fields`: a spare of this thread that is not much larger, if
/// there is one.
pub fn take(fields: usize) -> HeaderMap {
    // At least 24: a request's map (room for 24) serves an answer's head, which asks less.
    let most_room = 2 * fields.max(12);
    let spare = SPARE
        .try_with(|spare| {
            let mut spare = spare.borrow_mut();
            let fitting = spare.iter().rposition(|map| map.capacity() <= most_room)?;
            Some(spare.swap_remove(fitting))
        })
        .ok()
        .flatten();
    match spare {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map`, emptied, for the next head on this thread, unless it is too large or there
/// are enough spares already.
pub fn give_back(mut map: HeaderMap) {
    let room = map.capacity();
    if room == 0 || room > MAX_SPARE_ENTRIES || map.len() > MAX_SPARE_ENTRIES {
        return;
    }
    // Values are dropped now (the bytes they share are freed with them), not when the map
    // is next used; `clear` also forgets a switch to the flood-resistant hasher.
    map.clear();
    // `try_with`: a map dropped while the thread exits is freed.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE_MAPS {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, HOST};

    fn spares() -> usize {
        SPARE.with(|spare| spare.borrow().len())
    }

    #[test]
    fn a_map_given_back_is_taken_again_empty() {
        std::thread::spawn(|| {
            let mut map = take(8);
            map.insert(HOST, HeaderValue::from_static("example.com"));
            let room = map.capacity();
            give_back(map);
            assert_eq!(spares(), 1);
            let again = take(4);
            assert!(again.is_empty(), "a spare holds no field");
            assert_eq!(again.capacity(), room, "the same allocation, not a new one");
            assert_eq!(spares(), 0);
            let more = take(30);
            assert!(more.capacity() >= 30, "room as asked");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn spares_are_bounded_in_number_and_size() {
        std::thread::spawn(|| {
            give_back(HeaderMap::with_capacity(200));
            give_back(HeaderMap::new());
            let mut repeated = HeaderMap::with_capacity(12);
            for _ in 0..MAX_SPARE_ENTRIES + 1 {
                repeated.append(HOST, HeaderValue::from_static("again"));
            }
            assert!(repeated.capacity() <= MAX_SPARE_ENTRIES);
            give_back(repeated);
            assert_eq!(
                spares(),
                0,
                "too large, unallocated and too many values are not kept"
            );
            for _ in 0..MAX_SPARE_MAPS + 5 {
                give_back(HeaderMap::with_capacity(10));
            }
            assert_eq!(spares(), MAX_SPARE_MAPS);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn maps_hyper_read_from_http2_are_not_kept() {
        std::thread::spawn(|| {
            for version in [Version::HTTP_11, Version::HTTP_2] {
                let kept = usize::from(version != Version::HTTP_2);
                let (mut parts, ()) = http::Request::builder()
                    .version(version)
                    .header(HOST, "a")
                    .body(())
                    .unwrap()
                    .into_parts();
                mark_foreign(&mut parts);
                // What the rewrite then does: the upstream is asked in HTTP/1.1.
                parts.version = Version::HTTP_11;
                give_back_sent(&mut parts);
                assert_eq!(spares(), kept, "request from {version:?}");
                take(1);

                let (parts, ()) = http::Response::builder()
                    .version(version)
                    .header(HOST, "a")
                    .body(())
                    .unwrap()
                    .into_parts();
                give_back_answered(parts);
                assert_eq!(spares(), kept, "answer from {version:?}");
                take(1);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_grown_map_is_reused_empty() {
        std::thread::spawn(|| {
            let mut map = take(24);
            for i in 0..40 {
                map.append(
                    http::header::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("v"),
                );
            }
            let room = map.capacity();
            give_back(map);
            let mut again = take(24);
            assert_eq!(again.capacity(), room, "the grown map, reused");
            again.insert(HOST, HeaderValue::from_static("a"));
            assert_eq!(again.len(), 1);
            assert_eq!(again.get(HOST).unwrap(), "a");
            give_back(again);
            assert!(
                take(1).capacity() < room,
                "much larger than asked: not taken"
            );
            assert_eq!(spares(), 1);
        })
        .join()
        .unwrap();
    }
}
