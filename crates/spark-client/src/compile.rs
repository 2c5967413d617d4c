//! The Compile service from the client side: [`Client::compile`] and friends.
//!
//! A compile reply is a stream (protocol.md §13): a CompileAccepted announcing N results, N StreamChunks
//! each holding one [`CompileResult`] in completion order, then a StreamEnd whose checksum covers the chunk
//! payloads. A result names its permutation by index.

use spark_proto::compile::{self, CompileAccepted, CompileRequest, CompileResult, CompileStats};
use spark_proto::{BlobHasher, Message, msg, service};

use crate::{Client, Error, Result};

impl Client {
    /// Compiles every permutation of `req` and returns the results ordered by permutation index.
    pub fn compile(&self, req: &CompileRequest) -> Result<Vec<CompileResult>> {
        let mut out = Vec::with_capacity(req.permutations.len());
        self.compile_each(req, |r| out.push(r))?;
        out.sort_by_key(|r| r.index);
        Ok(out)
    }

    /// Compiles every permutation of `req`, calling `on_result` as each result arrives (completion order; match
    /// them by [`CompileResult::index`]).
    pub fn compile_each(
        &self,
        req: &CompileRequest,
        mut on_result: impl FnMut(CompileResult),
    ) -> Result<()> {
        let mut c = self.lock();
        c.write_msg(service::COMPILE, req)?;
        c.flush()?;
        let accepted: CompileAccepted = c.read_msg()?;
        let want = accepted.permutations as usize;
        let mut seen = vec![false; want];
        let mut hasher = BlobHasher::new();
        loop {
            let f = c.read_reply()?;
            match f.msg_type {
                msg::STREAM_CHUNK => {
                    hasher.update(&f.payload);
                    let r = match CompileResult::decode(&f.payload) {
                        Ok(r) => r,
                        Err(e) => {
                            c.poison();
                            return Err(e.into());
                        }
                    };
                    match seen.get_mut(r.index as usize) {
                        Some(s) if !*s => *s = true,
                        _ => {
                            c.poison();
                            return Err(Error::Protocol(format!(
                                "compile result for permutation {} out of range or repeated",
                                r.index
                            )));
                        }
                    }
                    on_result(r);
                }
                msg::STREAM_END => {
                    let end = spark_proto::cache::StreamEnd::decode(&f.payload)?;
                    if seen.iter().any(|s| !s) {
                        return Err(Error::Protocol(
                            "compile stream ended before every permutation's result".into(),
                        ));
                    }
                    if end.checksum != hasher.digest128() {
                        return Err(Error::Protocol("compile stream failed its checksum".into()));
                    }
                    return Ok(());
                }
                t => {
                    c.poison();
                    return Err(Error::Protocol(format!(
                        "unexpected message 0x{t:04x} in a compile stream"
                    )));
                }
            }
        }
    }

    /// Compiles one permutation (the request's first) and returns its result.
    pub fn compile_one(&self, req: &CompileRequest) -> Result<CompileResult> {
        self.compile(req)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("compile reply without a result".into()))
    }

    /// The Compile service's counters.
    pub fn compile_stats(&self) -> Result<CompileStats> {
        self.call(service::COMPILE, &compile::Stats)
    }
}
