//! The compilers the Compile service runs: naga in process, `glslangValidator` as a subprocess.

pub mod glslang;
pub mod naga;

use std::time::Duration;

/// Why a job did not run to an answer. Never cached: the next request tries again.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("the compile took longer than --compile-timeout ({0:?}); its worker was stopped")]
    Timeout(Duration),
    #[error("the compiler crashed: {0}")]
    Crashed(String),
    #[error("{0}")]
    Missing(String),
    #[error("could not run the compiler: {0}")]
    Io(String),
}

/// The backends present in this daemon, found once at startup.
pub struct Backends {
    pub glslang: Option<glslang::Glslang>,
}

impl Backends {
    /// The capability names for HelloResponse: only what is present.
    pub fn capabilities(&self) -> &'static [&'static str] {
        if self.glslang.is_some() {
            &["compile", "compile-glslang", "compile-naga"]
        } else {
            &["compile", "compile-naga"]
        }
    }
}
