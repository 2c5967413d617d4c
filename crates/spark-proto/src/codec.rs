//! Primitive field codecs shared by every message: little-endian integers, length-prefixed strings and byte
//! strings, lists. Readers never panic: every read is bounds-checked and returns [`ProtoError::Truncated`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::ProtoError;

/// A bounds-checked cursor over one payload.
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn u128(&mut self) -> Result<u128, ProtoError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(u128::from_le_bytes(a))
    }
    /// A string with a `u16` byte-length prefix; must be UTF-8.
    pub fn str16(&mut self) -> Result<String, ProtoError> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| ProtoError::InvalidUtf8)
    }
    /// A list of `u16` with a `u16` count prefix.
    pub fn list_u16(&mut self) -> Result<Vec<u16>, ProtoError> {
        let n = self.u16()? as usize;
        // Bound the allocation by what the payload can actually hold.
        if n * 2 > self.remaining() {
            return Err(ProtoError::Truncated);
        }
        (0..n).map(|_| self.u16()).collect()
    }
    /// A list of `str16` with a `u16` count prefix.
    pub fn list_str16(&mut self) -> Result<Vec<String>, ProtoError> {
        let n = self.u16()? as usize;
        if n * 2 > self.remaining() {
            return Err(ProtoError::Truncated);
        }
        (0..n).map(|_| self.str16()).collect()
    }
    /// Everything left, without copying.
    pub fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Fails when bytes are left over: messages have exact layouts.
    pub fn finish(self) -> Result<(), ProtoError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(ProtoError::TrailingBytes)
        }
    }
}

/// Appends a `u16`-length-prefixed string. Strings longer than 65535 bytes are cut at a char boundary:
/// every caller passes names, messages or paths already validated to be shorter.
pub fn put_str16(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16_le(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

pub fn put_list_u16(out: &mut BytesMut, v: &[u16]) {
    out.put_u16_le(v.len() as u16);
    for x in v {
        out.put_u16_le(*x);
    }
}

pub fn put_list_str16(out: &mut BytesMut, v: &[String]) {
    out.put_u16_le(v.len() as u16);
    for s in v {
        put_str16(out, s);
    }
}

impl Reader<'_> {
    /// A byte string with a `u32` length prefix, without copying.
    pub fn bytes32(&mut self) -> Result<Bytes, ProtoError> {
        let n = self.u32()? as usize;
        if n > self.remaining() {
            return Err(ProtoError::Truncated);
        }
        let start = self.buf.len() - self.remaining();
        let b = self.buf.slice(start..start + n);
        self.pos += n;
        Ok(b)
    }
    /// A string with a `u32` byte-length prefix (shader sources can exceed 64 KiB); must be UTF-8.
    pub fn str32(&mut self) -> Result<String, ProtoError> {
        let b = self.bytes32()?;
        String::from_utf8(b.to_vec()).map_err(|_| ProtoError::InvalidUtf8)
    }
}

/// Appends a `u32`-length-prefixed byte string.
pub fn put_bytes32(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

/// A fixed record inside a message's list (`list16 of <Record>` in the registry): a `u16` count, then each
/// record's fields in order. Records are documented with their message in `docs/protocol.md`.
pub trait Record: Sized {
    /// The least bytes one record takes, so a hostile count cannot make a decoder allocate beyond the payload.
    const MIN_LEN: usize;
    fn put(&self, out: &mut BytesMut);
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError>;
}

/// Appends a `u16` count and the records (at most 65535; callers bound their lists below that).
pub fn put_records<R: Record>(out: &mut BytesMut, v: &[R]) {
    let n = v.len().min(u16::MAX as usize);
    out.put_u16_le(n as u16);
    for r in &v[..n] {
        r.put(out);
    }
}

impl Reader<'_> {
    /// A `u16` count and that many records.
    pub fn records<R: Record>(&mut self) -> Result<Vec<R>, ProtoError> {
        let n = self.u16()? as usize;
        if n * R::MIN_LEN.max(1) > self.remaining() {
            return Err(ProtoError::Truncated);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(R::get(self)?);
        }
        Ok(v)
    }
}
