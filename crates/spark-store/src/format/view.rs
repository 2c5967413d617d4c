//! Index-log records decoded in place: keys borrowed from the log's bytes, so replaying a million records
//! allocates nothing per record for keys that the index stores inline anyway.

use xxhash_rust::xxh3::xxh3_64;

use super::{
    FormatError, KIND_CLEAR, KIND_DEL, KIND_DEL_PACK, KIND_PACK_END, KIND_PUT, KIND_PUT_PACK,
    KIND_RESERVE, MAX_BODY_LEN, MAX_KEY_LEN, MAX_RECORD_LEN, RECORD_PREFIX, Record, pack,
    valid_file_id,
};

/// A [`Record`] whose key points into the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordRef<'a> {
    Put {
        key: &'a [u8],
        file_id: u64,
        body_len: u64,
        checksum: u128,
    },
    Del {
        key: &'a [u8],
        file_id: u64,
    },
    Reserve {
        up_to: u64,
    },
    PutPack {
        key: &'a [u8],
        pack: u64,
        offset: u32,
        body_len: u64,
        checksum: u128,
    },
    DelPack {
        key: &'a [u8],
        pack: u64,
        offset: u32,
        len: u32,
    },
    PackEnd {
        pack: u64,
        end: u32,
    },
}

impl<'a> RecordRef<'a> {
    /// Parses the record at the start of `b`; returns it and its encoded length. `None`: a valid record
    /// with nothing to apply (a v1 Clear, which no sparkd writes; replay skips it).
    pub fn decode(b: &'a [u8]) -> Result<(Option<RecordRef<'a>>, usize), FormatError> {
        if b.len() < RECORD_PREFIX {
            return Err(FormatError::Truncated);
        }
        let len = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_RECORD_LEN - RECORD_PREFIX {
            return Err(FormatError::Invalid("record length"));
        }
        let total = RECORD_PREFIX + len;
        if b.len() < total {
            return Err(FormatError::Truncated);
        }
        let sum = u64::from_le_bytes(b[4..12].try_into().expect("8 bytes"));
        let body = &b[RECORD_PREFIX..total];
        if xxh3_64(body) != sum {
            return Err(FormatError::Checksum);
        }
        let mut r = Cursor { b: body, pos: 0 };
        let rec = match r.u8()? {
            KIND_PUT => {
                let file_id = r.u64()?;
                let body_len = r.u64()?;
                let checksum = r.u128()?;
                let key = r.key()?;
                RecordRef::Put {
                    key,
                    file_id,
                    body_len,
                    checksum,
                }
            }
            KIND_DEL => {
                let file_id = r.u64()?;
                let key = r.key()?;
                RecordRef::Del { key, file_id }
            }
            KIND_CLEAR => {
                if r.pos != body.len() {
                    return Err(FormatError::Invalid("record has trailing bytes"));
                }
                return Ok((None, total));
            }
            KIND_RESERVE => RecordRef::Reserve { up_to: r.u64()? },
            KIND_PUT_PACK => {
                let pack = r.u64()?;
                let offset = r.u32()?;
                let body_len = r.u64()?;
                let checksum = r.u128()?;
                let key = r.key()?;
                RecordRef::PutPack {
                    key,
                    pack,
                    offset,
                    body_len,
                    checksum,
                }
            }
            KIND_DEL_PACK => {
                let pack = r.u64()?;
                let offset = r.u32()?;
                let len = r.u32()?;
                let key = r.key()?;
                RecordRef::DelPack {
                    key,
                    pack,
                    offset,
                    len,
                }
            }
            KIND_PACK_END => RecordRef::PackEnd {
                pack: r.u64()?,
                end: r.u32()?,
            },
            _ => return Err(FormatError::Invalid("record kind")),
        };
        if r.pos != body.len() {
            return Err(FormatError::Invalid("record has trailing bytes"));
        }
        rec.check_fields()?;
        Ok((Some(rec), total))
    }

    /// A checksum only proves the bytes were written as they are; these field values were never written by a
    /// store, and would break its accounting (found by fuzzing index replay).
    fn check_fields(&self) -> Result<(), FormatError> {
        match self {
            RecordRef::Put {
                file_id, body_len, ..
            } if !valid_file_id(*file_id) || *body_len > MAX_BODY_LEN => {
                return Err(FormatError::Invalid("put record file id or length"));
            }
            RecordRef::Del { file_id, .. } if !valid_file_id(*file_id) => {
                return Err(FormatError::Invalid("del record file id"));
            }
            RecordRef::PutPack {
                key,
                pack,
                offset,
                body_len,
                ..
            } if !valid_file_id(*pack)
                || (*offset as usize) < pack::PACK_HEADER_LEN
                || *body_len > pack::MAX_PACKED_BODY
                || pack::record_len(key.len(), *body_len) > u64::from(u32::MAX) =>
            {
                return Err(FormatError::Invalid(
                    "put-pack record pack, offset or length",
                ));
            }
            RecordRef::DelPack {
                key,
                pack,
                offset,
                len,
            } if !valid_file_id(*pack)
                || (*offset as usize) < pack::PACK_HEADER_LEN
                || u64::from(*len) < pack::record_len(key.len(), 0) =>
            {
                return Err(FormatError::Invalid(
                    "del-pack record pack, offset or length",
                ));
            }
            RecordRef::PackEnd { pack, .. } if !valid_file_id(*pack) => {
                return Err(FormatError::Invalid("pack-end record pack"));
            }
            _ => {}
        }
        Ok(())
    }

    /// The same record with its key copied.
    pub fn to_owned(self) -> Record {
        match self {
            RecordRef::Put {
                key,
                file_id,
                body_len,
                checksum,
            } => Record::Put {
                key: key.to_vec(),
                file_id,
                body_len,
                checksum,
            },
            RecordRef::Del { key, file_id } => Record::Del {
                key: key.to_vec(),
                file_id,
            },
            RecordRef::Reserve { up_to } => Record::Reserve { up_to },
            RecordRef::PutPack {
                key,
                pack,
                offset,
                body_len,
                checksum,
            } => Record::PutPack {
                key: key.to_vec(),
                pack,
                offset,
                body_len,
                checksum,
            },
            RecordRef::DelPack {
                key,
                pack,
                offset,
                len,
            } => Record::DelPack {
                key: key.to_vec(),
                pack,
                offset,
                len,
            },
            RecordRef::PackEnd { pack, end } => Record::PackEnd { pack, end },
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or(FormatError::Truncated)?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u128(&mut self) -> Result<u128, FormatError> {
        Ok(u128::from_le_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    fn key(&mut self) -> Result<&'a [u8], FormatError> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        if n > MAX_KEY_LEN {
            return Err(FormatError::Invalid("key length"));
        }
        self.take(n)
    }
}
