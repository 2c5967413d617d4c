//! The table of namespaces this daemon serves. Adding a namespace is one line here (plus, for one reached
//! over the binary protocol, its service).

use spark_proto::service;

/// What keys of a namespace must look like, checked before the store sees them.
#[derive(Debug, Clone, Copy)]
pub struct KeyRule {
    pub min_len: usize,
    pub max_len: usize,
}

/// One namespace: its name (also its directory under the cache root), the service that serves it on the
/// binary protocol (0 for none), and its key rule.
#[derive(Debug, Clone, Copy)]
pub struct Decl {
    pub name: &'static str,
    pub service: u16,
    pub key: KeyRule,
}

/// Every namespace, in the order `sparkctl stats` lists them.
pub const DECLARED: &[Decl] = &[
    // (u64 source hash, target, stage): exactly 10 bytes.
    Decl {
        name: "shader",
        service: service::SHADER,
        key: KeyRule {
            min_len: 10,
            max_len: 10,
        },
    },
    // A platform byte, then a non-empty UTF-8 path of at most 4 KiB.
    Decl {
        name: "asset",
        service: service::ASSET,
        key: KeyRule {
            min_len: 2,
            max_len: 1 + spark_proto::cache::MAX_ASSET_PATH,
        },
    },
    // BLAKE3-256 of the compile's canonical encoding (docs/protocol.md §13.5): exactly 32 bytes.
    Decl {
        name: "compile",
        service: service::COMPILE,
        key: KeyRule {
            min_len: 32,
            max_len: 32,
        },
    },
    // ccache's remote storage over HTTP (crate::http::ccache): the key as ccache names it, 1..=128 characters.
    Decl {
        name: "ccache",
        service: 0,
        key: KeyRule {
            min_len: 1,
            max_len: 128,
        },
    },
    // Bazel's HTTP cache (crate::http::bazel): the SHA-256 in the URL, decoded to 32 bytes.
    Decl {
        name: "bazel-ac",
        service: 0,
        key: KeyRule {
            min_len: 32,
            max_len: 32,
        },
    },
    Decl {
        name: "bazel-cas",
        service: 0,
        key: KeyRule {
            min_len: 32,
            max_len: 32,
        },
    },
];

pub fn find(name: &str) -> Option<&'static Decl> {
    DECLARED.iter().find(|d| d.name == name)
}
