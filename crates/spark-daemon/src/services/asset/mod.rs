//! The Asset service (`0x0003`): platform variants of source assets, keyed by (path, platform), over the
//! `asset` namespace, with Invalidate(path) dropping every variant of a path in one round trip.
//!
//! Paths are opaque keys: they never become file-system paths, so no path can reach outside the cache.

use std::sync::Arc;

use spark_proto::cache::{AssetKey, INVALIDATE, Invalidate, InvalidateResponse, MAX_ASSET_PATH};
use spark_proto::{ErrorCode, Frame, service};

use crate::namespaces::Namespace;
use crate::registry::{BoxFuture, HandlerError, HandlerResult, Reply, Request, Service};
use crate::services::blob_cache::{BlobCache, CacheKey, ns_error};

fn check_path(path: &str) -> Result<(), HandlerError> {
    if path.is_empty() {
        return Err(HandlerError::reply(
            ErrorCode::InvalidKey,
            "asset path is empty",
        ));
    }
    if path.len() > MAX_ASSET_PATH {
        return Err(HandlerError::reply(
            ErrorCode::InvalidKey,
            format!(
                "asset path is {} bytes; the limit is {MAX_ASSET_PATH}",
                path.len()
            ),
        ));
    }
    Ok(())
}

/// Store key: the platform byte, then the path bytes.
fn asset_store_key(path: &str, platform: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + path.len());
    k.push(platform);
    k.extend_from_slice(path.as_bytes());
    k
}

impl CacheKey for AssetKey {
    fn store_key(&self) -> Result<Vec<u8>, HandlerError> {
        check_path(&self.path)?;
        Ok(asset_store_key(&self.path, self.platform))
    }
}

pub struct AssetService(BlobCache<AssetKey>);

pub fn asset_service(ns: Arc<Namespace>) -> AssetService {
    AssetService(BlobCache::new(ns))
}

impl AssetService {
    async fn invalidate(&self, req: &Request) -> HandlerResult {
        let inv: Invalidate = req.decode()?;
        check_path(&inv.path)?;
        // A platform is one byte, so every variant of a path is one of 256 keys: exact, no secondary index.
        let keys = (0..=255u8).map(|p| asset_store_key(&inv.path, p)).collect();
        let dropped = self.0.ns.remove_many(keys).await.map_err(ns_error)?;
        Ok(Reply::msg(InvalidateResponse {
            dropped: dropped as u32,
        }))
    }
}

impl Service for AssetService {
    fn id(&self) -> u16 {
        service::ASSET
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["asset-cache", "invalidate"]
    }

    fn is_write(&self, frame: &Frame) -> bool {
        BlobCache::<AssetKey>::is_write(frame)
    }

    fn opens_upload(&self, frame: &Frame) -> bool {
        BlobCache::<AssetKey>::opens_upload(frame)
    }

    fn handle(self: Arc<Self>, mut req: Request) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            if req.frame.msg_type == INVALIDATE {
                return self.invalidate(&req).await;
            }
            match self.0.handle_common(&mut req).await {
                Some(r) => r,
                None => Err(self.0.unknown(&req)),
            }
        })
    }
}
