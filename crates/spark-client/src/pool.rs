//! Recycling of the large buffers that [`crate::CacheClient::get`] hands out.
//!
//! A streamed get needs one buffer as large as the blob. A fresh allocation of tens of MiB is fresh pages: the
//! kernel faults in and zeroes every one as the blob is read into it, which measured as most of a 32 MiB get's
//! client time. The blob is returned as `Bytes` whose owner hands the buffer back here when the caller drops
//! it, so the next large get reads into pages that are already mapped. The pool keeps one buffer, of at most
//! [`KEEP_MAX`] bytes, so an idle client holds little memory.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Blobs below this size come from the allocator as usual.
pub(crate) const POOL_MIN: usize = 1 << 20;
/// Larger buffers are freed, not kept.
pub(crate) const KEEP_MAX: usize = 64 << 20;

#[derive(Default)]
pub(crate) struct BlobPool {
    free: Mutex<Option<Vec<u8>>>,
}

impl BlobPool {
    /// A buffer of exactly `len` initialised bytes: the kept one when it is large enough.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let kept = self.free.lock().unwrap_or_else(|e| e.into_inner()).take();
        match kept {
            Some(mut v) if v.capacity() >= len => {
                // Only growth is zeroed; a buffer at least this long is truncated, not touched.
                v.resize(len, 0);
                v
            }
            _ => vec![0u8; len],
        }
    }

    fn give_back(&self, v: Vec<u8>) {
        if v.capacity() <= KEEP_MAX {
            *self.free.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        }
    }

    /// Wraps a filled buffer as `Bytes` that returns it to this pool when the last clone is dropped.
    pub(crate) fn into_bytes(self: &Arc<Self>, v: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf: v,
            pool: Arc::downgrade(self),
        })
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Weak<BlobPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(p) = self.pool.upgrade() {
            p.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_blob_lends_its_buffer_to_the_next_and_contents_are_exact() {
        let pool = Arc::new(BlobPool::default());
        let mut v = pool.take(2 * POOL_MIN);
        v.fill(7);
        let ptr = v.as_ptr();
        let b = pool.into_bytes(v);
        assert!(b.iter().all(|&x| x == 7));
        let c = b.clone();
        drop(b);
        // Still shared: the buffer is not back yet.
        let fresh = pool.take(POOL_MIN);
        assert_ne!(fresh.as_ptr(), ptr);
        drop(fresh);
        drop(c);
        // The fresh buffer given back above was replaced by the blob's own when it came home.
        let w = pool.take(POOL_MIN + 5);
        assert_eq!(w.as_ptr(), ptr, "the buffer came back");
        assert_eq!(w.len(), POOL_MIN + 5);
        // A larger request than the kept buffer gets a fresh one.
        let pool2 = Arc::new(BlobPool::default());
        drop(pool2.into_bytes(vec![1u8; 10]));
        assert_eq!(pool2.take(100).len(), 100);
    }
}
