//! The asset pipeline from the client side: declaring the sources a variant was built from, hearing about
//! invalidations, and `get_or_import`, which runs an import once across every process sharing the daemon.

use std::path::Path;

use bytes::Bytes;
use spark_proto::cache::{
    AssetInvalidated, AssetKey, CLAIM_READY, DeclareDeps, DeclareDepsResponse, ImportClaim,
    ImportClaimResponse, ImportDone, ImportDoneResponse, SubscribeInvalidations,
    SubscribeInvalidationsResponse,
};
use spark_proto::service;

use crate::cache::AssetCache;
use crate::error::{Error, Result};
use crate::event::Event;

/// What an import is made from: the source, the importer, the platform, and other files it reads.
#[derive(Debug, Clone)]
pub struct ImportSpec<'a> {
    pub source: &'a Path,
    pub platform: u8,
    pub importer_id: &'a str,
    pub importer_version: u32,
    /// Files besides the source that the import reads (includes, palettes …): part of the key, and watched.
    pub deps: &'a [&'a Path],
}

/// What `get_or_import` returned.
#[derive(Debug, Clone)]
pub struct Imported {
    pub data: Bytes,
    /// The variant's asset key (`import/<BLAKE3 hex>`, the spec's platform).
    pub key: AssetKey,
    /// True when this call ran the import; false when the variant was cached or another process imported it.
    pub ran: bool,
}

fn local(msg: String) -> Error {
    Error::Local(std::io::Error::other(msg))
}

fn path_str(p: &Path) -> Result<String> {
    let abs = std::path::absolute(p).map_err(Error::Local)?;
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| local(format!("{} is not UTF-8", abs.display())))
}

/// An AssetInvalidated event, if `e` is one.
pub fn asset_invalidated(e: &Event) -> Result<Option<AssetInvalidated>> {
    e.decode::<AssetInvalidated>(service::ASSET)
}

impl AssetCache<'_> {
    /// Declares the source files (absolute or relative to the current directory) `key` was built from: when
    /// one changes, the daemon drops the variant and sends AssetInvalidated. Returns how many are watched.
    pub fn declare_deps(&self, key: &AssetKey, deps: &[&Path]) -> Result<u32> {
        let deps = deps
            .iter()
            .map(|p| path_str(p))
            .collect::<Result<Vec<_>>>()?;
        let r: DeclareDepsResponse = self.client.call(
            self.service,
            &DeclareDeps {
                path: key.path.clone(),
                platform: key.platform,
                deps,
            },
        )?;
        Ok(r.watched)
    }

    /// Asks for AssetInvalidated events on this connection (take them with `Client::next_event`).
    pub fn subscribe_invalidations(&self) -> Result<()> {
        let _: SubscribeInvalidationsResponse =
            self.client.call(self.service, &SubscribeInvalidations)?;
        Ok(())
    }

    /// The variant of `spec`, from the cache, or made by `import_fn` — run at most once across every process
    /// asking for the same variant at the same time: others wait for its result. The variant is keyed on the
    /// content (BLAKE3) of the source and deps, the importer's id and version and the platform; once stored,
    /// its source and deps are watched, so a change drops it.
    pub fn get_or_import<E: std::fmt::Display>(
        &self,
        spec: &ImportSpec<'_>,
        import_fn: impl FnOnce() -> std::result::Result<Vec<u8>, E>,
    ) -> Result<Imported> {
        let claim = ImportClaim {
            platform: spec.platform,
            importer_id: spec.importer_id.to_string(),
            importer_version: spec.importer_version,
            source: path_str(spec.source)?,
            deps: spec
                .deps
                .iter()
                .map(|p| path_str(p))
                .collect::<Result<Vec<_>>>()?,
        };
        let mut import_fn = Some(import_fn);
        // A ready variant can be evicted before we read it: claim again (then we may import it ourselves).
        for _ in 0..8 {
            let r: ImportClaimResponse = self.client.call(self.service, &claim)?;
            let key = AssetKey {
                path: r.path,
                platform: spec.platform,
            };
            if r.status == CLAIM_READY {
                if let Some(data) = self.get(&key)? {
                    return Ok(Imported {
                        data,
                        key,
                        ran: false,
                    });
                }
                continue;
            }
            let f = import_fn
                .take()
                .ok_or_else(|| local("import claimed twice".into()))?;
            return self.run_import(key, f);
        }
        Err(local(
            "the imported variant kept being evicted before it could be read".into(),
        ))
    }

    fn run_import<E: std::fmt::Display>(
        &self,
        key: AssetKey,
        f: impl FnOnce() -> std::result::Result<Vec<u8>, E>,
    ) -> Result<Imported> {
        let done = |ok: bool| -> Result<ImportDoneResponse> {
            self.client.call(
                self.service,
                &ImportDone {
                    path: key.path.clone(),
                    platform: key.platform,
                    ok,
                },
            )
        };
        let data = match f() {
            Ok(d) => Bytes::from(d),
            Err(e) => {
                // Wake the waiters: one of them imports instead.
                done(false)?;
                return Err(local(format!("import of {} failed: {e}", key.path)));
            }
        };
        let stored = match self.put(&key, &data) {
            Ok(s) => s,
            Err(e) => {
                let _ = done(false);
                return Err(e);
            }
        };
        done(stored)?;
        Ok(Imported {
            data,
            key,
            ran: true,
        })
    }
}
