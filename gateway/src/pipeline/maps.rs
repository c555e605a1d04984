//! Header maps kept for reuse by the HTTP/1.1 paths that build them (a request read by the
//! connection's task, an answer read from an upstream connection).
//!
//! A request's map holds the client's fields and the ones the gateway adds, which takes a map of
//! 16 slots: over a kilobyte, more than the allocator keeps at hand per thread, so a new one
//! each request goes the allocator's slow way, and so does freeing it. A map that has been sent
//! on is cleared (its room kept) and given back here instead; the next head on the same thread
//! takes it. Each thread keeps a few, none larger than a usual head needs.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: about as many as heads in flight between a take and a give on one
/// thread (one request and one answer per connection at a time).
const KEPT: usize = 32;

/// Larger maps (a head with many fields) are freed, not kept.
const MAX_CAPACITY: usize = 48;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `fields` fields: a kept one when there is one.
pub fn take(fields: usize) -> HeaderMap {
    let kept = SPARE.with_borrow_mut(|spare| {
        let at = spare.iter().rposition(|m| m.capacity() >= fields)?;
        Some(spare.swap_remove(at))
    });
    kept.unwrap_or_else(|| HeaderMap::with_capacity(fields))
}

/// Gives back a map that is no longer needed: cleared and kept for [`take`], or freed.
pub fn give(mut map: HeaderMap) {
    let capacity = map.capacity();
    if capacity == 0 || capacity > MAX_CAPACITY {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < KEPT {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_map_comes_back_empty_with_its_room() {
        let mut m = HeaderMap::with_capacity(12);
        m.insert("x-a", http::HeaderValue::from_static("1"));
        let room = m.capacity();
        give(m);
        let again = take(9);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
        // Nothing kept that fits: a new map.
        assert!(take(9).capacity() >= 9);
    }

    #[test]
    fn a_map_too_small_or_too_large_is_not_handed_out_or_kept() {
        give(HeaderMap::with_capacity(2));
        assert!(take(20).capacity() >= 20, "the small one is not handed out");
        give(HeaderMap::with_capacity(500));
        assert!(take(20).capacity() < 500, "the large one was not kept");
    }
}
