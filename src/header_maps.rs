//! Header maps reused per worker thread.
//!
//! Every proxied request makes two maps (its own head, the upstream's answer) and every
//! `/verify` check two (the front proxy's head, the answer), each one allocation of 1–3 KB:
//! above what glibc keeps in its per-thread cache, so each went through the allocator's
//! slow path (and often made it sort its free lists first). Where a head has been written
//! out and its map is done with, the map goes back to its worker, emptied; the next head
//! parsed takes it. At most [`MAX_SPARE_MAPS`] per worker, none larger than
//! [`MAX_SPARE_ENTRIES`]: a map grown for a head with many fields is freed.

use std::cell::RefCell;

use http::HeaderMap;

/// Emptied maps kept per worker thread.
pub const MAX_SPARE_MAPS: usize = 16;

/// The most fields a kept map has room for (a map's room grows in powers of two: 12, 24,
/// 48, …). A head of ordinary size and what the rewrite adds fit in 24.
pub const MAX_SPARE_ENTRIES: usize = 48;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields`: a spare of this thread if there is one.
pub fn take(fields: usize) -> HeaderMap {
    let spare = SPARE
        .try_with(|spare| spare.borrow_mut().pop())
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
    if room == 0 || room > MAX_SPARE_ENTRIES {
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
            assert_eq!(spares(), 0, "too large and unallocated maps are not kept");
            for _ in 0..MAX_SPARE_MAPS + 5 {
                give_back(HeaderMap::with_capacity(10));
            }
            assert_eq!(spares(), MAX_SPARE_MAPS);
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
            give_back(map);
            let mut again = take(1);
            again.insert(HOST, HeaderValue::from_static("a"));
            assert_eq!(again.len(), 1);
            assert_eq!(again.get(HOST).unwrap(), "a");
        })
        .join()
        .unwrap();
    }
}
