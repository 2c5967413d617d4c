//! One client connection's framing: buffered frame reads with a per-frame deadline, and batched writes.
//!
//! Reads are cancel-safe (partial frames stay in the buffer), so the connection loop can race a read against
//! shutdown. Replies are buffered and flushed when no complete request is waiting, so a pipelining client gets
//! its replies in few syscalls while a one-at-a-time client gets each reply at once.

use std::io::IoSlice;
use std::time::Duration;

use bytes::BytesMut;
use spark_proto::{ErrorResponse, Frame, FrameHeader, HEADER_LEN, Message, ProtoError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Payloads at least this large are written straight from their buffer instead of being copied into the
/// write buffer.
const DIRECT_WRITE_MIN: usize = 64 * 1024;
/// Flush the write buffer once it holds this much, even mid-batch.
const WRITE_BUF_HIGH: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client closed the connection")]
    Closed,
    #[error("client closed the connection in the middle of a frame")]
    TruncatedFrame,
    #[error("frame not completed within {0:?}")]
    FrameTimeout(Duration),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Conn {
    stream: UnixStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    frame_timeout: Duration,
}

impl Conn {
    pub fn new(stream: UnixStream, frame_timeout: Duration) -> Self {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
            frame_timeout,
        }
    }

    /// True when a whole frame is already buffered, so a reply flush can wait for the next one.
    pub fn has_buffered_frame(&self) -> bool {
        if self.rbuf.len() < HEADER_LEN {
            return false;
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.rbuf[..HEADER_LEN]);
        match FrameHeader::decode(&hb) {
            Ok(h) => self.rbuf.len() >= HEADER_LEN + h.len as usize,
            Err(_) => true,
        }
    }

    /// Reads the next frame. Waiting for the first byte of a frame is unbounded (idle clients are fine);
    /// once a frame has started, all of it must arrive within the frame timeout.
    pub async fn read_frame(&mut self) -> Result<Frame, ConnError> {
        let mut deadline = None;
        loop {
            if let Some(frame) = Frame::decode_from(&mut self.rbuf)? {
                return Ok(frame);
            }
            if !self.rbuf.is_empty() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + self.frame_timeout);
            }
            // Grow only towards what the announced (already validated) frame needs.
            let want = self.bytes_wanted();
            self.rbuf.reserve(want.clamp(4096, 1 << 20));
            let n = match deadline {
                None => self.stream.read_buf(&mut self.rbuf).await?,
                Some(d) => {
                    match tokio::time::timeout_at(d, self.stream.read_buf(&mut self.rbuf)).await {
                        Ok(r) => r?,
                        Err(_) => return Err(ConnError::FrameTimeout(self.frame_timeout)),
                    }
                }
            };
            if n == 0 {
                return Err(if self.rbuf.is_empty() {
                    ConnError::Closed
                } else {
                    ConnError::TruncatedFrame
                });
            }
        }
    }

    fn bytes_wanted(&self) -> usize {
        if self.rbuf.len() < HEADER_LEN {
            return HEADER_LEN - self.rbuf.len();
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.rbuf[..HEADER_LEN]);
        FrameHeader::decode(&hb)
            .map(|h| (HEADER_LEN + h.len as usize).saturating_sub(self.rbuf.len()))
            .unwrap_or(0)
    }

    /// Queues a message as a frame.
    pub async fn send<M: Message>(&mut self, service: u16, msg: &M) -> Result<(), ConnError> {
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(&[0u8; HEADER_LEN]);
        msg.encode(&mut self.wbuf);
        let len = self.wbuf.len() - start - HEADER_LEN;
        if len > spark_proto::MAX_PAYLOAD {
            self.wbuf.truncate(start);
            return Err(ProtoError::FrameTooLarge { len: len as u64 }.into());
        }
        let h = FrameHeader {
            len: len as u32,
            service,
            msg_type: M::TYPE,
        };
        self.wbuf[start..start + HEADER_LEN].copy_from_slice(&h.encode());
        if self.wbuf.len() >= WRITE_BUF_HIGH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Queues an ErrorResponse on `service`.
    pub async fn send_error(&mut self, service: u16, err: &ErrorResponse) -> Result<(), ConnError> {
        self.send(service, err).await
    }

    /// Sends a frame whose payload is an existing buffer (blob bodies), without copying large payloads:
    /// the header and payload go out in one vectored write.
    pub async fn send_raw(
        &mut self,
        service: u16,
        msg_type: u16,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        self.send_parts(service, msg_type, &[], payload).await
    }

    /// Sends a frame whose payload is `head` then `body` (a status byte, then a blob) without joining them
    /// first. A small body is copied once, into the write buffer, to be batched with other replies; a large
    /// one goes out with everything queued before it in one vectored write and is never copied. The body is
    /// no longer needed when this returns.
    pub async fn send_parts(
        &mut self,
        service: u16,
        msg_type: u16,
        head: &[u8],
        body: &[u8],
    ) -> Result<(), ConnError> {
        let len = head.len() + body.len();
        if len > spark_proto::MAX_PAYLOAD {
            return Err(ProtoError::FrameTooLarge { len: len as u64 }.into());
        }
        let h = FrameHeader {
            len: len as u32,
            service,
            msg_type,
        }
        .encode();
        self.wbuf.extend_from_slice(&h);
        self.wbuf.extend_from_slice(head);
        if body.len() < DIRECT_WRITE_MIN {
            self.wbuf.extend_from_slice(body);
            if self.wbuf.len() >= WRITE_BUF_HIGH {
                self.flush().await?;
            }
            return Ok(());
        }
        let mut bufs = [IoSlice::new(&self.wbuf), IoSlice::new(body)];
        write_all_vectored(&mut self.stream, &mut bufs).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

/// Writes all buffers with as few syscalls as the kernel allows.
async fn write_all_vectored(
    stream: &mut UnixStream,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let n = stream.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}
