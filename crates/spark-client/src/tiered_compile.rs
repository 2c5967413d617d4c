//! [`TieredShaderCache::get_or_compile`]: compile through the daemon when one answers, else from the local
//! disk cache, else with naga in this process. "No daemon" means slower, never broken.
//!
//! The local tier keys results exactly as the daemon does (BLAKE3 over the canonical encoding, see
//! `spark_compile::key`), so a shader compiled locally and one compiled by the daemon share a key, and the
//! local file `<dir>/compile/<key hex>.spcr` holds the CompileResult message itself (protocol.md §13.3).

use bytes::{Bytes, BytesMut};
use spark_compile::include::{IncludeSources, SOURCE_NAME};
use spark_compile::{Backend, Job, canonical_defines, error_at, resolve_backend};
use spark_proto::Message;
use spark_proto::compile::{CompileRequest, CompileResult, Origin, ResultStatus};
use tracing::debug;

use crate::error::Error;
use crate::tiered::TieredShaderCache;

/// Where [`TieredShaderCache::get_or_compile`] found its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// The daemon answered (its [`Origin`] says whether it compiled, joined or hit).
    Daemon(Origin),
    /// The local disk cache had it.
    LocalCache,
    /// Compiled in this process with naga.
    LocalCompile,
}

/// A result and where it came from.
#[derive(Debug, Clone)]
pub struct TieredCompile {
    pub result: CompileResult,
    pub source: CompileSource,
}

impl TieredShaderCache {
    /// Compiles `req`'s first permutation: the daemon first; if it is absent or cannot run the job, the local
    /// compile cache, then naga in process (results, compile errors included, are kept locally). A job only
    /// glslang can do gets a Failed result when the daemon is absent.
    pub fn get_or_compile(&self, req: &CompileRequest) -> TieredCompile {
        let mut one = req.clone();
        one.permutations.truncate(1);
        if one.permutations.is_empty() {
            one.permutations.push(Vec::new());
        }
        if let Some(d) = self.daemon_connection() {
            match d.call(|c| c.compile_one(&one)) {
                Ok(r) if r.status != ResultStatus::Failed => {
                    self.store_compiled(&r);
                    let source = CompileSource::Daemon(r.origin);
                    return TieredCompile { result: r, source };
                }
                Ok(r) => debug!("the daemon could not run the compile: {:?}", r.diagnostics),
                Err(Error::NotRunning { .. }) => {}
                Err(e) => debug!("daemon compile failed ({e}); compiling locally"),
            }
        }
        self.compile_locally(&one)
    }

    fn compile_path(&self, key: &[u8; 32]) -> std::path::PathBuf {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.local()
            .dir()
            .join("compile")
            .join(format!("{hex}.spcr"))
    }

    fn store_compiled(&self, r: &CompileResult) {
        let mut stored = r.clone();
        stored.index = 0;
        stored.origin = Origin::Fresh;
        let mut out = BytesMut::new();
        stored.encode(&mut out);
        let path = self.compile_path(&r.key);
        let write = std::fs::create_dir_all(path.parent().unwrap_or(self.local().dir()))
            .and_then(|_| crate::tiered::write_atomically(&path, &out));
        if let Err(e) = write {
            debug!("cannot keep the compile result locally: {e}");
        }
    }

    fn compile_locally(&self, req: &CompileRequest) -> TieredCompile {
        let failed = |compiler: &str, d| TieredCompile {
            result: spark_compile_failed(compiler, &req.entry, d),
            source: CompileSource::LocalCompile,
        };
        let backend = match resolve_backend(req.backend, req.language, req.target) {
            Ok(Backend::Naga) => Backend::Naga,
            Ok(_) => {
                return failed(
                    "",
                    error_at(
                        SOURCE_NAME,
                        0,
                        "this compile needs glslangValidator, which runs in the daemon; no daemon answered",
                    ),
                );
            }
            Err(why) => return failed("", error_at(SOURCE_NAME, 0, why)),
        };
        let compiler = spark_compile::naga_backend::identity();
        let expanded = match IncludeSources::new(&req.include_dirs, &req.include_map)
            .expand(&req.source, spark_compile::DEFAULT_MAX_INPUT)
        {
            Ok(e) => e,
            Err(e) => {
                let (file, line) = e.position();
                return failed(&compiler, error_at(file, line, e.to_string()));
            }
        };
        let defines = match canonical_defines(&req.permutations[0]) {
            Ok(d) => d,
            Err(why) => return failed(&compiler, error_at(SOURCE_NAME, 0, why)),
        };
        let job = Job::for_permutation(req, backend, defines, expanded);
        let key = spark_compile::key::cache_key(&job, &compiler);
        if let Ok(bytes) = std::fs::read(self.compile_path(&key))
            && let Ok(r) = CompileResult::decode(&Bytes::from(bytes))
            && r.key == key
        {
            return TieredCompile {
                result: r,
                source: CompileSource::LocalCache,
            };
        }
        let outcome = spark_compile::naga_backend::compile(&job);
        let r = spark_compile::result_message(outcome, key, compiler, req.entry.clone());
        self.store_compiled(&r);
        TieredCompile {
            result: r,
            source: CompileSource::LocalCompile,
        }
    }
}

fn spark_compile_failed(
    compiler: &str,
    entry: &str,
    d: spark_proto::compile::Diagnostic,
) -> CompileResult {
    CompileResult {
        index: 0,
        status: ResultStatus::Failed,
        origin: Origin::Fresh,
        key: [0; 32],
        compiler: compiler.to_string(),
        entry: entry.to_string(),
        workgroup_size: [0; 3],
        bindings: Vec::new(),
        diagnostics: vec![d],
        output: Bytes::new(),
    }
}
