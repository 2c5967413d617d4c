//! The Asset service (`0x0003`): platform variants of source assets, keyed by (path, platform), over the
//! `asset` namespace, with Invalidate(path) dropping every variant of a path in one round trip.
//!
//! The asset pipeline: a variant may declare the source files it was built from ([`deps`]); the Watch
//! service watches them and a change drops every variant built from them, with an AssetInvalidated event to
//! the connections that asked. Imports are single-flight across processes ([`import`]): ImportClaim derives
//! a content-addressed key and lets exactly one caller import while the others wait for its ImportDone.
//!
//! Paths are opaque keys: they never become file-system paths, so no path can reach outside the cache.

pub mod deps;
pub mod deps_log;
pub mod import;

use std::sync::Arc;

use spark_proto::cache::{
    AssetKey, CLAIM_OWNER, CLAIM_READY, DECLARE_DEPS, DeclareDeps, DeclareDepsResponse,
    IMPORT_CLAIM, IMPORT_DONE, INVALIDATE, ImportClaim, ImportClaimResponse, ImportDone,
    ImportDoneResponse, Invalidate, InvalidateResponse, MAX_ASSET_PATH, SUBSCRIBE_INVALIDATIONS,
    SubscribeInvalidationsResponse,
};
use spark_proto::{ErrorCode, Frame, service};

use crate::namespaces::Namespace;
use crate::registry::{BoxFuture, HandlerError, HandlerResult, Reply, Request, Service};
use crate::services::blob_cache::{BlobCache, CacheKey, ns_error};
use crate::services::watch::Shared as WatchShared;
use deps::Deps;
use import::{Attempt, Claims};

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

pub struct AssetService {
    cache: BlobCache<AssetKey>,
    deps: Arc<Deps>,
    claims: Claims,
}

pub fn asset_service(ns: Arc<Namespace>, watch: Arc<WatchShared>) -> AssetService {
    AssetService {
        deps: Deps::new(ns.clone(), watch),
        cache: BlobCache::new(ns),
        claims: Claims::default(),
    }
}

impl AssetService {
    async fn invalidate(&self, req: &Request) -> HandlerResult {
        let inv: Invalidate = req.decode()?;
        check_path(&inv.path)?;
        // A platform is one byte, so every variant of a path is one of 256 keys: exact, no secondary index.
        let keys = (0..=255u8).map(|p| asset_store_key(&inv.path, p)).collect();
        let dropped = self.cache.ns.remove_many(keys).await.map_err(ns_error)?;
        Ok(Reply::msg(InvalidateResponse {
            dropped: dropped as u32,
        }))
    }

    async fn declare_deps(&self, req: &Request) -> HandlerResult {
        let m: DeclareDeps = req.decode()?;
        check_path(&m.path)?;
        let watched = self.deps.declare((m.path, m.platform), &m.deps).await?;
        Ok(Reply::msg(DeclareDepsResponse { watched }))
    }

    async fn import_claim(&self, req: &Request) -> HandlerResult {
        let m: ImportClaim = req.decode()?;
        let msg = m.clone();
        let path = tokio::task::spawn_blocking(move || import::variant_path(&msg))
            .await
            .map_err(|e| HandlerError::reply(ErrorCode::Internal, e.to_string()))??;
        let variant = (path.clone(), m.platform);
        let store_key = asset_store_key(&path, m.platform);
        let mut sources = vec![m.source.clone()];
        sources.extend(m.deps.iter().cloned());
        let conn = req.ctx.conn.id;
        loop {
            if self.cache.ns.exists(&store_key).is_some() {
                return Ok(Reply::msg(ImportClaimResponse {
                    status: CLAIM_READY,
                    path,
                }));
            }
            let done = match self.claims.try_claim(&variant, conn, sources.clone()) {
                Attempt::Owner => {
                    return Ok(Reply::msg(ImportClaimResponse {
                        status: CLAIM_OWNER,
                        path,
                    }));
                }
                Attempt::Wait(done) => done,
            };
            let notified = done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Released between the look and the arming: look again instead of waiting for nothing.
            if !self.claims.still_claimed(&variant, &done) {
                continue;
            }
            tokio::select! {
                _ = notified => {}
                _ = req.ctx.shutdown() => {
                    return Err(HandlerError::reply(ErrorCode::ShuttingDown, "the daemon is shutting down"));
                }
            }
        }
    }

    async fn import_done(&self, req: &Request) -> HandlerResult {
        let m: ImportDone = req.decode()?;
        check_path(&m.path)?;
        let variant = (m.path.clone(), m.platform);
        let Some(sources) = self.claims.release(&variant, req.ctx.conn.id) else {
            return Err(HandlerError::reply(
                ErrorCode::InvalidKey,
                format!("this connection holds no import claim on {}", m.path),
            ));
        };
        let stored = self
            .cache
            .ns
            .exists(&asset_store_key(&m.path, m.platform))
            .is_some();
        let watched = if m.ok && stored {
            self.deps.declare(variant, &sources).await?
        } else {
            0
        };
        Ok(Reply::msg(ImportDoneResponse { watched }))
    }
}

impl Service for AssetService {
    fn id(&self) -> u16 {
        service::ASSET
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["asset-cache", "asset-deps", "import", "invalidate"]
    }

    fn is_write(&self, frame: &Frame) -> bool {
        // Dependencies are declared after the put that stored the variant, in request order.
        matches!(frame.msg_type, DECLARE_DEPS | IMPORT_DONE)
            || BlobCache::<AssetKey>::is_write(frame)
    }

    fn opens_upload(&self, frame: &Frame) -> bool {
        BlobCache::<AssetKey>::opens_upload(frame)
    }

    fn effect_key(&self, frame: &Frame) -> Option<u64> {
        BlobCache::<AssetKey>::effect_key(frame)
    }

    fn handle(self: Arc<Self>, mut req: Request) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            // After a restart, a variant may be served only once its sources have been checked.
            self.deps.wait_restored().await;
            match req.frame.msg_type {
                INVALIDATE => return self.invalidate(&req).await,
                DECLARE_DEPS => return self.declare_deps(&req).await,
                IMPORT_CLAIM => return self.import_claim(&req).await,
                IMPORT_DONE => return self.import_done(&req).await,
                SUBSCRIBE_INVALIDATIONS => {
                    self.deps
                        .listen(req.ctx.conn.id, req.ctx.conn.events.clone());
                    return Ok(Reply::msg(SubscribeInvalidationsResponse));
                }
                _ => {}
            }
            match self.cache.handle_common(&mut req).await {
                Some(r) => r,
                None => Err(self.cache.unknown(&req)),
            }
        })
    }

    fn start(self: Arc<Self>) {
        self.deps.start_restore();
    }

    fn on_disconnect(&self, conn_id: u64) {
        self.deps.on_disconnect(conn_id);
        self.claims.release_conn(conn_id);
    }
}
