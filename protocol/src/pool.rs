//! Reusable buffers for the hot paths that gather or read megabytes at a time (a fetch answer
//! off the wire, a produce or mirror append body, a segment read for a fetch).
//!
//! Why: on the machines Strait runs on, the first touch of freshly allocated memory is several
//! times slower than copying into memory already touched, and buffers of tens of MiB are above
//! the allocator's mmap threshold, so every fresh one is mapped, faulted in and unmapped again.
//! A pool hands out an allocation again once every `Bytes` cut from it has been dropped, so a
//! steady stream of fetches or appends keeps reusing the same few warm buffers.
//!
//! The pool is bounded in count and in the size of what it keeps; a buffer still in use is
//! simply skipped, and a request the pool cannot serve gets a fresh allocation.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// Buffers kept for reuse.
#[derive(Debug)]
pub struct BufferPool {
    /// Kept buffers (empty, their allocation possibly still shared) and each one's size.
    spare: Mutex<Vec<(BytesMut, usize)>>,
    buffers_max: usize,
    kept_bytes_max: usize,
}

impl BufferPool {
    /// A pool that keeps up to `buffers_max` buffers of `kept_bytes_max` bytes in all.
    pub fn new(buffers_max: usize, kept_bytes_max: usize) -> BufferPool {
        BufferPool {
            spare: Mutex::new(Vec::with_capacity(buffers_max)),
            buffers_max,
            kept_bytes_max,
        }
    }

    /// An empty buffer with room for at least `len` bytes: a kept one whose earlier contents
    /// have all been dropped, or a fresh one.
    pub fn take(&self, len: usize) -> BytesMut {
        let mut spare = self.lock();
        match spare.iter_mut().position(|(b, _)| b.try_reclaim(len)) {
            Some(i) => spare.swap_remove(i).0,
            None => BytesMut::with_capacity(len),
        }
    }

    /// Hands out what `buffer` holds and keeps its allocation for a later [`BufferPool::take`],
    /// which can reuse it once every `Bytes` cut from the result has been dropped.
    pub fn freeze(&self, mut buffer: BytesMut) -> Bytes {
        let filled = buffer.split().freeze();
        let size = filled.len() + buffer.capacity();
        self.keep(buffer, size);
        filled
    }

    /// Keeps the allocation of `buffer`, whose contents were all cut off and handed out in
    /// pieces (`split_to`), for a later [`BufferPool::take`]; `size` is what it was taken
    /// for. It is reused once every piece has been dropped.
    pub fn give_back(&self, mut buffer: BytesMut, size: usize) {
        buffer.clear();
        self.keep(buffer, size);
    }

    fn keep(&self, buffer: BytesMut, size: usize) {
        if size > 0 && size <= self.kept_bytes_max {
            let mut spare = self.lock();
            // Make room by dropping the oldest: the likeliest to be free, but also the likeliest
            // to be sized for what was asked before rather than now.
            while spare.len() >= self.buffers_max
                || spare.iter().map(|(_, n)| n).sum::<usize>() + size > self.kept_bytes_max
            {
                spare.remove(0);
            }
            spare.push((buffer, size));
        }
    }

    /// Buffers kept right now.
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(BytesMut, usize)>> {
        // The vector is valid whatever a panicking holder was doing.
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_once_its_contents_are_dropped() {
        let pool = BufferPool::new(4, 1 << 20);
        let mut b = pool.take(1000);
        let first = b.as_ptr();
        b.extend_from_slice(&[7; 1000]);
        let held = pool.freeze(b);
        assert_eq!(&held[..], &[7; 1000][..]);
        assert_eq!(pool.kept(), 1);
        // Still held: the pool cannot hand that allocation out again.
        let other = pool.take(1000);
        assert_ne!(other.as_ptr(), first);
        drop(other);
        drop(held);
        let again = pool.take(1000);
        assert_eq!(again.as_ptr(), first, "the warm allocation came back");
        assert_eq!(pool.kept(), 0);
    }

    #[test]
    fn a_buffer_handed_out_in_pieces_comes_back_once_every_piece_is_dropped() {
        let pool = BufferPool::new(4, 1 << 20);
        let mut b = pool.take(1000);
        let first = b.as_ptr();
        b.extend_from_slice(&[1; 1000]);
        let head = b.split_to(600).freeze();
        let tail = b.split_to(400).freeze();
        pool.give_back(b, 1000);
        assert_eq!(pool.kept(), 1);
        drop(head);
        assert_ne!(pool.take(1000).as_ptr(), first, "a piece is still held");
        drop(tail);
        assert_eq!(
            pool.take(1000).as_ptr(),
            first,
            "the warm allocation came back"
        );
    }

    #[test]
    fn the_pool_is_bounded_in_count_and_size() {
        let pool = BufferPool::new(3, 4096);
        let mut held = Vec::new();
        for _ in 0..5 {
            let mut b = pool.take(1000);
            b.extend_from_slice(&[1; 1000]);
            held.push(pool.freeze(b));
        }
        assert_eq!(pool.kept(), 3, "at most three buffers");
        let mut big = pool.take(3000);
        big.extend_from_slice(&[2; 3000]);
        held.push(pool.freeze(big));
        assert_eq!(
            pool.kept(),
            2,
            "3000 + 1000 bytes fit the 4096-byte cap, no more"
        );
        let mut huge = pool.take(10_000);
        huge.extend_from_slice(&[3; 10_000]);
        held.push(pool.freeze(huge));
        assert_eq!(pool.kept(), 2, "a buffer over the cap is not kept");
    }
}
