//! The Shader service (`0x0002`): compiled shader blobs keyed by (source hash, target, stage), over the
//! `shader` namespace.

use std::sync::Arc;

use spark_proto::cache::ShaderKey;
use spark_proto::{Frame, service};

use crate::namespaces::Namespace;
use crate::registry::{BoxFuture, HandlerError, HandlerResult, Request, Service};
use crate::services::blob_cache::{BlobCache, CacheKey};

impl CacheKey for ShaderKey {
    /// 10 bytes: the hash little-endian, target, stage.
    fn store_key(&self) -> Result<Vec<u8>, HandlerError> {
        let mut k = Vec::with_capacity(10);
        k.extend_from_slice(&self.source_hash.to_le_bytes());
        k.push(self.target);
        k.push(self.stage);
        Ok(k)
    }
}

pub struct ShaderService(BlobCache<ShaderKey>);

pub fn shader_service(ns: Arc<Namespace>) -> ShaderService {
    ShaderService(BlobCache::new(ns))
}

impl Service for ShaderService {
    fn id(&self) -> u16 {
        service::SHADER
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["shader-cache"]
    }

    fn is_write(&self, frame: &Frame) -> bool {
        BlobCache::<ShaderKey>::is_write(frame)
    }

    fn opens_upload(&self, frame: &Frame) -> bool {
        BlobCache::<ShaderKey>::opens_upload(frame)
    }

    fn effect_key(&self, frame: &Frame) -> Option<u64> {
        BlobCache::<ShaderKey>::effect_key(frame)
    }

    fn handle(self: Arc<Self>, mut req: Request) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            match self.0.handle_common(&mut req).await {
                Some(r) => r,
                None => Err(self.0.unknown(&req)),
            }
        })
    }
}
