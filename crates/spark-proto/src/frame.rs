//! The 8-byte frame header and whole frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ProtoError;

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// Largest payload one frame may carry: 16 MiB. Larger blobs are streamed (see [`crate::msg::STREAM_CHUNK`]).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The frame header: payload length, service id, message type, all little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub service: u16,
    pub msg_type: u16,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..6].copy_from_slice(&self.service.to_le_bytes());
        b[6..8].copy_from_slice(&self.msg_type.to_le_bytes());
        b
    }

    /// Parses a header, rejecting a length above [`MAX_PAYLOAD`] before anything is allocated for it.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, ProtoError> {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if len as usize > MAX_PAYLOAD {
            return Err(ProtoError::FrameTooLarge { len: len as u64 });
        }
        Ok(FrameHeader {
            len,
            service: u16::from_le_bytes([b[4], b[5]]),
            msg_type: u16::from_le_bytes([b[6], b[7]]),
        })
    }
}

/// One frame: a header's routing fields plus its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub service: u16,
    pub msg_type: u16,
    pub payload: Bytes,
}

impl Frame {
    /// Builds a frame, checking the payload fits.
    pub fn new(service: u16, msg_type: u16, payload: Bytes) -> Result<Self, ProtoError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(ProtoError::FrameTooLarge {
                len: payload.len() as u64,
            });
        }
        Ok(Frame {
            service,
            msg_type,
            payload,
        })
    }

    pub fn header(&self) -> FrameHeader {
        FrameHeader {
            len: self.payload.len() as u32,
            service: self.service,
            msg_type: self.msg_type,
        }
    }

    /// True for ErrorResponse frames, whatever the service.
    pub fn is_error(&self) -> bool {
        self.msg_type == crate::msg::ERROR
    }

    /// Appends header and payload to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.payload.len());
        out.put_slice(&self.header().encode());
        out.put_slice(&self.payload);
    }

    /// Header and payload as one contiguous buffer (tests, vectors, small frames).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Takes one whole frame off the front of `buf` if it holds one.
    ///
    /// Returns `Ok(None)` when more bytes are needed; an oversize header is an error as soon as its 8 bytes
    /// are in, and nothing is reserved for the announced size.
    pub fn decode_from(buf: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&buf[..HEADER_LEN]);
        let h = FrameHeader::decode(&hb)?;
        let total = HEADER_LEN + h.len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(h.len as usize).freeze();
        Ok(Some(Frame {
            service: h.service,
            msg_type: h.msg_type,
            payload,
        }))
    }

    /// Decodes exactly one frame from a complete buffer (no trailing bytes).
    pub fn decode_exact(bytes: &[u8]) -> Result<Frame, ProtoError> {
        let mut buf = BytesMut::from(bytes);
        match Frame::decode_from(&mut buf)? {
            Some(f) if buf.is_empty() => Ok(f),
            Some(_) => Err(ProtoError::TrailingBytes),
            None => Err(ProtoError::Truncated),
        }
    }
}
