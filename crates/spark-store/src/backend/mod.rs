//! Where blob bytes live: the seam between the engine (index, LRU, streaming, recovery) and storage.
//!
//! The engine never names a file. It asks a [`BlobBackend`] to write a blob and keeps the [`Location`] and
//! checksum it gets back in the index entry (and, through the index log, across restarts); it hands that
//! location back to read, remove, or verify the blob. Two backends: `files::FileBackend`, one file per
//! blob (format v1, still used for large blobs), and `packs::PackBackend` (format v2), which appends small
//! blobs to a few large pack files in batches (group commit) and hands larger ones to a `FileBackend`. A
//! pack location is [`Location::Pack`], with its own record kinds in the index log
//! (`index_log::put_record`); eviction, streaming, the victim queues and the public API did not change.
//!
//! The seam sits above the byte format on purpose. redb's `StorageBackend` is a byte device (`len`, `read`
//! at an offset, `write`, `set_len`, `sync_data`) under one file whose layout redb owns; here each backend
//! owns its layout (a pack file frames and indexes blobs differently from a file per blob), so the trait
//! speaks in whole blobs and locations, and each backend documents its byte layout next to its code.
//!
//! What stays with the engine: blob ids (unique and growing, reserved in the index log, so a later run can
//! tell earlier runs' leftovers from its own), what is indexed, LRU, budgets and every decision to drop an
//! entry. What a backend owns: its bytes on disk, their framing and checksums, crash-safe publication (a
//! blob is either wholly visible at its location or not at all) and its own leftovers.

pub(crate) mod files;
pub(crate) mod packs;

use std::collections::HashMap;
use std::path::PathBuf;

use crate::{StoreError, SweepReport};

/// Where one blob's bytes are: part of every index entry of a disk store. Within one variant, locations
/// order by when they were written (pack ids are blob ids, which grow, and a pack is only appended to);
/// recovery keeps the newest blob per key by this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Location {
    /// The file `blobs/<ff>/<id>.blob` of `files::FileBackend`; the id is the blob id it was written with.
    File { id: u64 },
    /// The record at byte `offset` of `packs/<pack>.pack`. Its length follows from the key and body
    /// lengths the index holds anyway, so it is not stored (16 bytes per location, as for files).
    Pack { pack: u64, offset: u32 },
}

/// One blob of a batch written by [`BlobBackend::write_batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// A blob id of the store's, unique; a pack created for the batch takes the first item's.
    pub id: u64,
    pub key: &'a [u8],
    pub body: &'a [u8],
    /// A copy made by compaction of a blob already indexed elsewhere (recovery never adopts one alone).
    pub copy: bool,
}

/// A record recovery found in a pack past what the index accounts for: whole and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub key: Vec<u8>,
    pub loc: Location,
    pub body_len: u64,
    pub checksum: u128,
    /// A copy written by compaction.
    pub copy: bool,
}

/// What [`BlobBackend::recover_packs`] did.
#[derive(Debug, Default)]
pub struct PackRecovery {
    /// Whole verified records past the index's marks, in the order they were written.
    pub found: Vec<Recovered>,
    /// Bytes cut off pack tails at the first record that did not verify.
    pub truncated_bytes: u64,
}

/// A blob the backend has made visible at `loc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub loc: Location,
    /// The backend's checksum of the stored blob, which the index records and every read is checked
    /// against (for blob files: XXH3-128 over header, key and body).
    pub checksum: u128,
}

/// What [`BlobBackend::open`] found at a location.
pub enum Opened {
    /// The blob, whose stored key and body length match what the index says; positioned at the body.
    Ready(Box<dyn BlobRead>),
    /// Nothing there: removed or replaced meanwhile, or lost in a crash.
    Missing,
    /// Something there that is not the blob the index describes (a symlink, another key, a bad header).
    Damaged(&'static str),
}

/// A blob being read, body first. Errors are [`StoreError::Corrupt`] for damage (the engine then drops the
/// entry) and [`StoreError::Io`] for anything else.
pub trait BlobRead: Send {
    /// Fills `buf` with the next bytes of the body.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<(), StoreError>;
    /// After the whole body has been read: checks the stored checksum against the bytes read and against
    /// `expected` (the index's), and that nothing follows the blob.
    fn verify(&mut self, expected: u128) -> Result<(), StoreError>;
}

/// A blob being written by a streamed put. Dropping it unfinished leaves no trace.
pub trait BlobSink: Send {
    /// Appends the next bytes of the body.
    fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;
    /// Completes the blob (all announced bytes were written) and makes it visible at its location.
    fn finish(self: Box<Self>) -> Result<Written, StoreError>;
}

/// A blob found by recovery, verified whole (a damaged key must never be adopted under a wrong name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: Vec<u8>,
    pub body_len: u64,
    pub checksum: u128,
}

/// What [`BlobBackend::scan`] lists.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every blob location (not verified yet), except those of this run when asked to skip them.
    pub blobs: Vec<Location>,
    /// The highest blob id seen, including this run's: after damage, ids below it must not be reused.
    pub max_id: u64,
}

/// Storage of blob bytes for one store. Object safe: the store holds a `Box<dyn BlobBackend>`, so the public
/// `Store` type does not change with the backend. Every method may block on the disk.
pub trait BlobBackend: Send + Sync {
    /// Bytes a blob of this key and body length occupies when written now: what the disk budget counts.
    fn stored_len(&self, key_len: usize, body_len: u64) -> u64;

    /// Bytes the blob at `loc` occupies (a small blob may sit in a file, e.g. when it was streamed).
    fn stored_len_at(&self, _loc: Location, key_len: usize, body_len: u64) -> u64 {
        self.stored_len(key_len, body_len)
    }

    /// Writes a whole blob under the blob id `id` (unique, from the store) and publishes it atomically.
    fn write(&self, id: u64, key: &[u8], body: &[u8]) -> Result<Written, StoreError>;

    /// Starts a streamed write of a blob of exactly `body_len` bytes.
    fn begin(&self, id: u64, key: &[u8], body_len: u64) -> Result<Box<dyn BlobSink>, StoreError>;

    /// Opens the blob at `loc`, checking that it holds `key` and `body_len` bytes of body.
    fn open(&self, loc: Location, key: &[u8], body_len: u64) -> Result<Opened, StoreError>;

    /// Deletes the blob at `loc`, which occupies `stored` bytes ([`BlobBackend::stored_len`]); a pack
    /// backend marks them dead. Best effort: failures are logged, and a missing blob is not one.
    fn remove(&self, loc: Location, stored: u64);

    /// Recovery, first step: removes the backend's own leftovers (partial writes, symlinks) of earlier runs,
    /// counting them in `report`, and lists the blobs it holds. With `own_from`, blob ids from it up are
    /// this run's and are neither listed nor touched.
    fn scan(&self, own_from: Option<u64>, report: &mut SweepReport) -> Scan;

    /// Recovery, second step: reads and verifies the whole blob at `loc`; `None` when it is unreadable or
    /// damaged.
    fn inspect(&self, loc: Location) -> Option<Found>;

    /// The file holding the blob at `loc`, for tests and tools.
    fn path(&self, loc: Location) -> Option<PathBuf>;

    /// Whether a whole blob of this length is written by [`BlobBackend::write_batch`] (so the store
    /// batches concurrent puts of it) rather than by [`BlobBackend::write`].
    fn batches(&self, _body_len: u64) -> bool {
        false
    }

    /// Whether a batch of `stored` bytes would be appended to a file that is already open (no new file to
    /// create first). The store writes a lone put on its caller's thread only then.
    fn appends_in_place(&self, _stored: u64) -> bool {
        false
    }

    /// Writes several whole blobs as one batch (one write, and with fsync durability one `fdatasync`) and
    /// publishes them together; on an error none of them is visible.
    fn write_batch(&self, items: &[BatchItem<'_>]) -> Result<Vec<Written>, StoreError> {
        items
            .iter()
            .map(|i| self.write(i.id, i.key, i.body))
            .collect()
    }

    /// Recovery of packed blobs, after index replay: `marks` holds, per pack, the end of what the index
    /// accounts for; `live` the stored bytes the index uses in each pack. Cuts torn tails and returns the
    /// whole records past the marks (dead until the store adopts one with [`BlobBackend::revive`]). With `damaged` (the index lost records mid-log), returns every whole
    /// record of every pack, skipping damage, and cuts nothing before a mark.
    fn recover_packs(
        &self,
        _marks: &HashMap<u64, u32>,
        _live: &HashMap<u64, u64>,
        _damaged: bool,
    ) -> Result<PackRecovery, StoreError> {
        Ok(PackRecovery::default())
    }

    /// Counts a record found by [`BlobBackend::recover_packs`] as live: the store adopted it.
    fn revive(&self, _loc: Location, _stored: u64) {}

    /// Every pack and where its data ends: a rewritten index log records these as marks.
    fn pack_ends(&self) -> Vec<(u64, u32)> {
        Vec::new()
    }

    /// A sealed pack worth compacting (its live records re-appended, then the pack deleted), if any.
    fn compaction_candidate(&self) -> Option<u64> {
        None
    }

    /// Deletes a pack whose live records have all moved.
    fn drop_pack(&self, _pack: u64) {}

    /// Deletes every pack (the store was cleared): must happen before the index log forgets them, or
    /// recovery would find their records again.
    fn clear_packs(&self) {}

    /// Bytes in packs that no entry uses any more (reclaimed by compaction).
    fn dead_bytes(&self) -> u64 {
        0
    }
}
