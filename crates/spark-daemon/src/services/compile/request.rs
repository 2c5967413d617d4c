//! From a CompileRequest to one keyed job per permutation: backend choice, include expansion (once per
//! request: it does not depend on the defines) and the cache key.

use spark_compile::include::{IncludeSources, SOURCE_NAME};
use spark_compile::{Job, canonical_defines, error_at, resolve_backend};
use spark_proto::compile::{Backend, CompileRequest, Diagnostic};

use super::backends::Backends;
use super::backends::glslang::Glslang;

/// One permutation ready to run, or why it cannot (never cached).
pub enum Prepared {
    Ready {
        job: Box<Job>,
        key: [u8; 32],
        compiler: String,
    },
    Failed {
        compiler: String,
        diagnostic: Diagnostic,
    },
}

/// Prepares every permutation of `req`. Reads include files: call it off the runtime.
pub fn prepare(req: &CompileRequest, backends: &Backends, max_input: usize) -> Vec<Prepared> {
    let failed_all = |compiler: &str, d: Diagnostic| -> Vec<Prepared> {
        req.permutations
            .iter()
            .map(|_| Prepared::Failed {
                compiler: compiler.to_string(),
                diagnostic: d.clone(),
            })
            .collect()
    };
    let backend = match resolve_backend(req.backend, req.language, req.target) {
        Ok(b) => b,
        Err(why) => return failed_all("", error_at(SOURCE_NAME, 0, why)),
    };
    let compiler = match backend {
        Backend::Glslang => match &backends.glslang {
            Some(g) => g.identity.clone(),
            None => {
                return failed_all(
                    spark_compile::glslang::PROGRAM,
                    error_at(SOURCE_NAME, 0, Glslang::missing().to_string()),
                );
            }
        },
        _ => spark_compile::naga_backend::identity(),
    };
    let expanded = match IncludeSources::new(&req.include_dirs, &req.include_map)
        .expand(&req.source, max_input)
    {
        Ok(e) => e,
        Err(e) => {
            let (file, line) = e.position();
            return failed_all(&compiler, error_at(file, line, e.to_string()));
        }
    };
    req.permutations
        .iter()
        .map(|defines| match canonical_defines(defines) {
            Err(why) => Prepared::Failed {
                compiler: compiler.clone(),
                diagnostic: error_at(SOURCE_NAME, 0, why),
            },
            Ok(defines) => {
                let job = Job::for_permutation(req, backend, defines, expanded.clone());
                let key = spark_compile::key::cache_key(&job, &compiler);
                Prepared::Ready {
                    job: Box::new(job),
                    key,
                    compiler: compiler.clone(),
                }
            }
        })
        .collect()
}
