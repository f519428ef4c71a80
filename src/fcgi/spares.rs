//! Buffers a worker thread keeps for its next request or connection, so
//! that serving one does not allocate, zero and free the same buffers each
//! time (malloc and free were a quarter of the user-space work of a small
//! request). Each thread has its own; nothing here is shared or locked.
//! It lives beside the connection code, its only user, which stays
//! correct on any thread: a buffer taken on one thread and given back on
//! another merely lands in that thread's store.

use std::cell::RefCell;

/// What one thread keeps.
pub(super) struct Spares {
    /// Receive buffers of connections that were dropped or parked.
    pub rx: Vec<Vec<u8>>,
    /// A PARAMS stream.
    pub params: Vec<u8>,
    /// The index of a PARAMS stream's pairs.
    pub index: Vec<(u32, u32, u32)>,
    /// A handler's buffered output.
    pub stdout: Vec<u8>,
    /// The records that end a response.
    pub records: Vec<u8>,
}

/// Receive buffers kept per thread.
pub(super) const RX_KEPT: usize = 16;

/// A buffer larger than this is freed, not kept: an idle thread does not
/// hold on to what one large request needed.
const KEEP_MAX: usize = 64 * 1024;

thread_local! {
    static SPARES: RefCell<Spares> = const {
        RefCell::new(Spares {
            rx: Vec::new(),
            params: Vec::new(),
            index: Vec::new(),
            stdout: Vec::new(),
            records: Vec::new(),
        })
    };
}

/// Runs `f` on this thread's spares; None while the thread's locals are
/// being torn down (a buffer dropped then is simply freed).
pub(super) fn with<R>(f: impl FnOnce(&mut Spares) -> R) -> Option<R> {
    SPARES
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

/// Takes the empty buffer kept in the slot `pick` chooses (a new one if
/// there is none).
pub(super) fn take<T>(
    pick: impl FnOnce(&mut Spares) -> &mut Vec<T>,
) -> Vec<T> {
    with(|s| std::mem::take(pick(s))).unwrap_or_default()
}

/// Keeps `v`, emptied, in the slot `pick` chooses, unless it is large or
/// the slot holds a larger one already.
pub(super) fn give<T>(
    mut v: Vec<T>,
    pick: impl FnOnce(&mut Spares) -> &mut Vec<T>,
) {
    if v.capacity() * std::mem::size_of::<T>() > KEEP_MAX {
        return;
    }
    with(|s| {
        let slot = pick(s);
        if slot.capacity() < v.capacity() {
            v.clear();
            *slot = v;
        }
    });
}

/// Frees everything this thread keeps. For a worker that has had nothing
/// to do for a while: a quiet server holds no buffers for requests that
/// may not come (up to RX_KEPT receive buffers plus the others, a few
/// hundred KiB per thread).
pub(crate) fn release() {
    with(|s| {
        s.rx = Vec::new();
        s.params = Vec::new();
        s.index = Vec::new();
        s.stdout = Vec::new();
        s.records = Vec::new();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let mut v = Vec::with_capacity(100);
        v.extend_from_slice(b"old bytes");
        give(v, |s| &mut s.stdout);
        let again = take(|s| &mut s.stdout);
        assert!(again.is_empty());
        assert!(again.capacity() >= 100);
        assert_eq!(take(|s| &mut s.stdout).capacity(), 0);
    }

    #[test]
    fn release_frees_what_was_kept() {
        give(Vec::<u8>::with_capacity(1000), |s| &mut s.params);
        give(Vec::<u8>::with_capacity(1000), |s| &mut s.stdout);
        with(|s| s.rx.push(Vec::with_capacity(1000)));
        release();
        assert_eq!(take(|s| &mut s.params).capacity(), 0);
        assert_eq!(take(|s| &mut s.stdout).capacity(), 0);
        assert_eq!(with(|s| s.rx.len()), Some(0));
    }

    #[test]
    fn a_large_buffer_is_not_kept() {
        give(Vec::<u8>::with_capacity(KEEP_MAX + 1), |s| &mut s.records);
        assert_eq!(take(|s| &mut s.records).capacity(), 0);
    }
}
