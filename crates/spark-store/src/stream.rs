//! Blobs in and out through the backend: the cold read path ([`Store::read_cold`], [`Store::get`]), the
//! verifying [`BlobReader`] for large blobs, and the streamed put ([`PutWriter`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3;

use crate::StoreError;
use crate::backend::{BlobRead, BlobSink, Opened};
use crate::index::Entry;
use crate::store::{ColdEntry, Lookup, Store};

/// Blobs up to this size are read whole and verified before they are returned; larger ones stream.
const SMALL_READ_MAX: u64 = 16 << 20;

/// The result of [`Store::read_cold`].
pub enum ColdRead {
    /// The whole blob, verified.
    Whole(Bytes),
    /// A large blob to stream; verified as it is read.
    Stream(Box<BlobReader>),
    /// Gone (removed meanwhile, or dropped as corrupt): a miss.
    Gone,
}

impl Store {
    /// Reads a cold entry from disk (blocking). Small blobs are verified whole and promoted to the memory
    /// tier; large ones come back as a verifying stream.
    pub fn read_cold(&self, cold: ColdEntry) -> Result<ColdRead, StoreError> {
        let ColdEntry { key, entry } = cold;
        let (Some(disk), Some(loc)) = (&self.inner.disk, entry.loc) else {
            self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(ColdRead::Gone);
        };
        let reader = match disk.backend.open(loc, &key, entry.size)? {
            Opened::Ready(r) => r,
            Opened::Missing => {
                // Moved by pack compaction meanwhile: read it where it is now.
                if let Some(cur) = self.find(&key)
                    && !Arc::ptr_eq(&cur, &entry)
                    && cur.loc.is_some()
                {
                    return self.read_cold(ColdEntry { key, entry: cur });
                }
                // Replaced or evicted meanwhile, or lost: a miss, and forget it if it is still indexed.
                self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.remove_if_same(&key, &entry);
                return Ok(ColdRead::Gone);
            }
            Opened::Damaged(why) => {
                self.drop_corrupt(&key, &entry, why);
                return Ok(ColdRead::Gone);
            }
        };
        if entry.size > SMALL_READ_MAX {
            return Ok(ColdRead::Stream(Box::new(BlobReader {
                store: self.clone(),
                remaining: entry.size,
                key,
                entry,
                reader,
                done: false,
            })));
        }
        self.read_small(&key, &entry, reader)
    }

    /// Reads and verifies a whole small blob, then promotes it to the memory tier.
    fn read_small(
        &self,
        key: &[u8],
        entry: &Arc<Entry>,
        mut reader: Box<dyn BlobRead>,
    ) -> Result<ColdRead, StoreError> {
        let mut buf = BytesMut::zeroed(entry.size as usize);
        let read = reader
            .read_body(&mut buf)
            .and_then(|()| reader.verify(entry.checksum()));
        match read {
            Ok(()) => {}
            Err(StoreError::Corrupt(why)) => {
                self.drop_corrupt(key, entry, &why);
                return Ok(ColdRead::Gone);
            }
            Err(e) => return Err(e),
        }
        let body = buf.freeze();
        self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        self.promote(entry, &body);
        Ok(ColdRead::Whole(body))
    }

    /// Convenience for callers that want a whole blob (blocking): memory, then disk. Streams are collected.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        match self.lookup(key) {
            Lookup::Hit(b) => Ok(Some(b)),
            Lookup::Miss => Ok(None),
            Lookup::Cold(c) => match self.read_cold(c)? {
                ColdRead::Whole(b) => Ok(Some(b)),
                ColdRead::Gone => Ok(None),
                ColdRead::Stream(mut r) => {
                    let mut out = BytesMut::with_capacity(r.len() as usize);
                    loop {
                        match r.next_chunk(1 << 20) {
                            Ok(Some(c)) => out.extend_from_slice(&c),
                            Ok(None) => return Ok(Some(out.freeze())),
                            Err(StoreError::Corrupt(_)) => return Ok(None),
                            Err(e) => return Err(e),
                        }
                    }
                }
            },
        }
    }
}

/// Where a streamed put's bytes go.
pub(crate) enum Sink {
    Backend(Box<dyn BlobSink>),
    Memory(BytesMut),
    /// Too big for every budget: consume the stream, store nothing.
    Discard,
}

/// A streamed put in progress. Dropping it without [`PutWriter::commit`] abandons it and leaves no trace.
pub struct PutWriter {
    pub(crate) store: Store,
    pub(crate) key: Box<[u8]>,
    pub(crate) total: u64,
    pub(crate) written: u64,
    /// Over the body only: what the sender's checksum (the wire's StreamEnd) covers.
    pub(crate) body_hasher: Xxh3,
    pub(crate) sink: Sink,
}

impl PutWriter {
    /// Appends the next piece of the blob.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let n = chunk.len() as u64;
        if self.written + n > self.total {
            return Err(StoreError::StreamMismatch(format!(
                "received more than the announced {} bytes",
                self.total
            )));
        }
        self.body_hasher.update(chunk);
        match &mut self.sink {
            Sink::Backend(s) => s.write(chunk)?,
            Sink::Memory(m) => m.extend_from_slice(chunk),
            Sink::Discard => {}
        }
        self.written += n;
        Ok(())
    }

    /// Finishes the put. `body_checksum` is the XXH3-128 the client computed over the blob (`None` = not
    /// supplied); a mismatch or a short stream stores nothing. Returns whether the blob was kept.
    pub fn commit(mut self, body_checksum: Option<u128>) -> Result<bool, StoreError> {
        if self.written != self.total {
            return Err(StoreError::StreamMismatch(format!(
                "stream ended after {} of {} announced bytes",
                self.written, self.total
            )));
        }
        if let Some(c) = body_checksum
            && c != self.body_hasher.digest128()
        {
            return Err(StoreError::StreamMismatch(
                "checksum of the received bytes differs from the sender's".into(),
            ));
        }
        let store = self.store.clone();
        match std::mem::replace(&mut self.sink, Sink::Discard) {
            Sink::Discard => {
                store.remove(&self.key)?;
                Ok(false)
            }
            Sink::Memory(m) => {
                store.commit(&self.key, self.total, None, 0, Some(m.freeze()))?;
                Ok(true)
            }
            Sink::Backend(s) => {
                let w = s.finish()?;
                store.commit(&self.key, self.total, Some(w.loc), w.checksum, None)?;
                Ok(true)
            }
        }
    }
}

/// Streams a large blob from disk, verifying it as it goes: the last chunk is only returned once the whole
/// blob has matched its checksum, so a reader never receives all of a corrupt blob.
pub struct BlobReader {
    store: Store,
    key: Box<[u8]>,
    entry: Arc<Entry>,
    reader: Box<dyn BlobRead>,
    remaining: u64,
    done: bool,
}

impl BlobReader {
    pub fn len(&self) -> u64 {
        self.entry.size
    }

    pub fn is_empty(&self) -> bool {
        self.entry.size == 0
    }

    /// The next chunk of at most `max` bytes; `None` after the last one.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        let Some(n) = self.next_len(max) else {
            return Ok(None);
        };
        let mut buf = BytesMut::zeroed(n);
        self.read_next(&mut buf)?;
        Ok(Some(buf.freeze()))
    }

    /// As [`BlobReader::next_chunk`], into `buf` (set to the chunk's length): a caller that streams a blob
    /// reuses one buffer instead of allocating and zeroing a fresh one per chunk. `false` after the last.
    pub fn next_chunk_into(&mut self, max: usize, buf: &mut Vec<u8>) -> Result<bool, StoreError> {
        let Some(n) = self.next_len(max) else {
            return Ok(false);
        };
        // Zeroes only growth: from the second chunk on, the length is already right.
        buf.resize(n, 0);
        self.read_next(buf)?;
        Ok(true)
    }

    /// As [`BlobReader::next_chunk`], carved from `pool`: once the chunks handed out before have been dropped
    /// (written), their allocation is used again instead of a fresh one. `None` after the last.
    pub fn next_chunk_from(
        &mut self,
        max: usize,
        pool: &mut BytesMut,
    ) -> Result<Option<Bytes>, StoreError> {
        let Some(n) = self.next_len(max) else {
            return Ok(None);
        };
        // One chunk's worth: reclaimed when the chunks handed out before are gone, else fresh. Reserving more
        // would hold several chunks' memory per stream for every concurrent stream.
        pool.reserve(n);
        pool.resize(n, 0);
        self.read_next(pool)?;
        Ok(Some(pool.split().freeze()))
    }

    /// Length of the next chunk, or `None` when the blob is done.
    fn next_len(&mut self, max: usize) -> Option<usize> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            return None;
        }
        Some((max as u64).min(self.remaining) as usize)
    }

    /// Fills `buf` with the next bytes of the blob; after the last one, checks the whole blob's checksum.
    /// Damage drops the entry and ends the stream.
    fn read_next(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        let mut read = self.reader.read_body(buf);
        if read.is_ok() {
            self.remaining -= buf.len() as u64;
            if self.remaining == 0 {
                read = self.reader.verify(self.entry.checksum());
            }
        }
        match read {
            Ok(()) if self.remaining == 0 => {
                self.store
                    .inner
                    .counters
                    .hits
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(()) => Ok(()),
            Err(e) => {
                self.done = true;
                if let StoreError::Corrupt(why) = &e {
                    self.store.drop_corrupt(&self.key, &self.entry, why);
                }
                Err(e)
            }
        }
    }
}
