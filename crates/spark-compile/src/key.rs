//! The cache key of one compile: BLAKE3-256 over a canonical encoding (`docs/protocol.md` §13.5).
//!
//! The encoding holds everything that decides the output and nothing else: the backend's identity and
//! version, language, stage, target, flags, SPIR-V version, entry point, the sorted defines, the source, and
//! every include occurrence (the name as written and the content read), in expansion order. Never a
//! timestamp, and never a path without the content behind it: editing an included file changes the key, so a
//! stale result cannot be served; moving a checkout does not, so identical inputs share one entry.

use crate::Job;

/// Version of the encoding below; bumped on any change so old entries are never misread.
pub const KEY_VERSION: u16 = 1;

/// The domain tag the encoding starts with.
pub const KEY_TAG: &[u8] = b"spark-compile-key";

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

/// The canonical encoding of `job` compiled by `compiler` (identity and version, e.g. `naga 25.0.1`).
pub fn encode(job: &Job, compiler: &str) -> Vec<u8> {
    let ex = &job.expanded;
    let mut out = Vec::with_capacity(64 + ex.input_len());
    put_str(&mut out, KEY_TAG);
    out.extend_from_slice(&KEY_VERSION.to_le_bytes());
    put_str(&mut out, compiler.as_bytes());
    out.push(job.language.to_u8());
    out.push(job.stage.to_u8());
    out.push(job.target.to_u8());
    out.push(job.flags);
    out.extend_from_slice(&job.spirv_version.to_le_bytes());
    put_str(&mut out, job.entry.as_bytes());
    out.extend_from_slice(&(job.defines.len() as u32).to_le_bytes());
    for d in &job.defines {
        put_str(&mut out, d.as_bytes());
    }
    put_str(&mut out, ex.source.as_bytes());
    out.extend_from_slice(&(ex.files.len() as u32).to_le_bytes());
    for f in &ex.files {
        put_str(&mut out, f.name.as_bytes());
        put_str(&mut out, f.content.as_bytes());
    }
    out
}

/// BLAKE3-256 of [`encode`].
pub fn cache_key(job: &Job, compiler: &str) -> [u8; 32] {
    *blake3::hash(&encode(job, compiler)).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::include::{Expanded, ResolvedFile};
    use crate::{Backend, Language, Stage, Target};

    const EXAMPLE_KEY: &str = "160eb035d82fe720c6a8a8a853454ead81a467aab7a7090bc6cb23183b2177e7";

    fn job(include: &str) -> Job {
        Job {
            language: Language::Glsl,
            stage: Stage::Fragment,
            target: Target::SpirV,
            backend: Backend::Naga,
            flags: 0,
            spirv_version: 0,
            entry: "main".into(),
            defines: vec!["A=1".into()],
            expanded: Expanded {
                source: "S".into(),
                files: vec![ResolvedFile {
                    name: "i".into(),
                    content: include.into(),
                }],
                ..Expanded::default()
            },
        }
    }

    /// The encoding byte by byte, as docs/protocol.md §13.5 gives it; and the hash of it.
    #[test]
    fn encoding_matches_the_spec_example() {
        let enc = encode(&job("I"), "naga 25.0.1");
        let mut want = Vec::new();
        want.extend_from_slice(&[17, 0, 0, 0]);
        want.extend_from_slice(b"spark-compile-key");
        want.extend_from_slice(&[1, 0]);
        want.extend_from_slice(&[11, 0, 0, 0]);
        want.extend_from_slice(b"naga 25.0.1");
        want.extend_from_slice(&[2, 2, 1, 0, 0, 0]);
        want.extend_from_slice(&[4, 0, 0, 0]);
        want.extend_from_slice(b"main");
        want.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0]);
        want.extend_from_slice(b"A=1");
        want.extend_from_slice(&[1, 0, 0, 0, b'S']);
        want.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'i', 1, 0, 0, 0, b'I']);
        assert_eq!(enc, want);
        let hex: String = cache_key(&job("I"), "naga 25.0.1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, blake3::hash(&want).to_hex().to_string());
        // The value docs/protocol.md §13.5 quotes.
        assert_eq!(hex, EXAMPLE_KEY, "update docs/protocol.md §13.5 with {hex}");
    }

    #[test]
    fn include_content_changes_the_key() {
        assert_ne!(cache_key(&job("I"), "c"), cache_key(&job("J"), "c"));
        assert_eq!(cache_key(&job("I"), "c"), cache_key(&job("I"), "c"));
        assert_ne!(cache_key(&job("I"), "c 1"), cache_key(&job("I"), "c 2"));
    }
}
