//! The Asset service (`0x0003`): platform variants of source assets, keyed by (path, platform), with
//! Invalidate(path) dropping every variant of a path in one round trip.
//!
//! Paths are opaque keys: they never become file-system paths, so no path can reach outside the cache.

use spark_proto::cache::{AssetKey, INVALIDATE, Invalidate, InvalidateResponse, MAX_ASSET_PATH};
use spark_proto::{ErrorCode, service};
use spark_store::Store;

use crate::registry::{BoxFuture, HandlerError, Request, Service};
use crate::services::blob_cache::{BlobCache, CacheKey};

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

pub fn asset_service(store: Store) -> AssetService {
    AssetService(BlobCache::new(service::ASSET, store))
}

impl AssetService {
    async fn invalidate(&self, req: &mut Request<'_>) -> Result<(), HandlerError> {
        let inv: Invalidate = req.decode()?;
        check_path(&inv.path)?;
        let path = inv.path;
        // A platform is one byte, so every variant of a path is one of 256 keys: exact, no secondary index.
        let dropped = self
            .0
            .blocking(move |s| s.remove_many((0..=255u8).map(|p| asset_store_key(&path, p))))
            .await?;
        req.reply(&InvalidateResponse {
            dropped: dropped as u32,
        })
        .await
    }
}

impl Service for AssetService {
    fn id(&self) -> u16 {
        service::ASSET
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["asset-cache", "invalidate"]
    }

    fn handle<'a>(&'a self, mut req: Request<'a>) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if req.frame.msg_type == INVALIDATE {
                return self.invalidate(&mut req).await;
            }
            match self.0.handle_common(&mut req).await {
                Some(r) => r,
                None => Err(self.0.unknown(&req)),
            }
        })
    }
}
