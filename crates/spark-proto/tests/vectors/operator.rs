//! The operator messages' vectors (Control Verify/Trim, protocol.md §7.9-7.10): building and round-tripping
//! each from its JSON fields. Their table entries stay in `table.rs` with the other Control messages.

use bytes::Bytes;
use serde_json::Value;
use spark_proto::operator as op;
use spark_proto::{Message, ProtoError};

use super::{enc, s, u};

/// Encodes an operator message from its vector's fields; `None` when `message` is not one.
pub fn build(message: &str, f: &Value) -> Option<Bytes> {
    Some(match message {
        "Verify" => enc(&op::Verify {
            namespace: s(f, "namespace"),
        }),
        "VerifyResponse" => enc(&op::VerifyResponse {
            checked: u(f, "checked"),
            bytes: u(f, "bytes"),
            corrupt: u(f, "corrupt"),
            memory_only: u(f, "memory_only"),
        }),
        "VerifyProgress" => enc(&op::VerifyProgress {
            namespace: s(f, "namespace"),
            checked: u(f, "checked"),
            total: u(f, "total"),
            corrupt: u(f, "corrupt"),
        }),
        "Trim" => enc(&op::Trim {
            namespace: s(f, "namespace"),
            target_bytes: u(f, "target_bytes"),
        }),
        "TrimResponse" => enc(&op::TrimResponse {
            evicted: u(f, "evicted"),
            bytes_before: u(f, "bytes_before"),
            bytes_after: u(f, "bytes_after"),
        }),
        _ => return None,
    })
}

/// Decodes then re-encodes an operator message; `None` when `message` is not one.
pub fn roundtrip(message: &str, p: &Bytes) -> Option<Result<(Bytes, u16), ProtoError>> {
    fn rt<M: Message>(p: &Bytes) -> Result<(Bytes, u16), ProtoError> {
        Ok((enc(&M::decode(p)?), M::TYPE))
    }
    Some(match message {
        "Verify" => rt::<op::Verify>(p),
        "VerifyResponse" => rt::<op::VerifyResponse>(p),
        "VerifyProgress" => rt::<op::VerifyProgress>(p),
        "Trim" => rt::<op::Trim>(p),
        "TrimResponse" => rt::<op::TrimResponse>(p),
        _ => return None,
    })
}
