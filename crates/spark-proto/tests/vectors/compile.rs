//! The Compile service's vectors (protocol.md §13): building and round-tripping each message from its JSON
//! fields. Their table entries stay in `table.rs`.

use bytes::Bytes;
use serde_json::Value;
use spark_proto::compile::{
    Backend, Binding, BindingKind, CompileAccepted, CompileRequest, CompileResult, CompileStats,
    Diagnostic, IncludeFile, Language, Origin, ResultStatus, Severity, Stage, Target,
};
use spark_proto::{Message, ProtoError};

use super::{b, enc, s, strs, u, unhex};

fn compile_request(f: &Value) -> CompileRequest {
    CompileRequest {
        language: Language::parse(&s(f, "language")).unwrap(),
        stage: Stage::parse(&s(f, "stage")).unwrap(),
        target: Target::parse(&s(f, "target")).unwrap(),
        backend: Backend::parse(&s(f, "backend")).unwrap(),
        flags: u(f, "flags") as u8,
        spirv_version: u(f, "spirv_version") as u16,
        entry: s(f, "entry"),
        include_dirs: strs(f, "include_dirs"),
        include_map: f["include_map"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| IncludeFile {
                path: s(m, "path"),
                content: s(m, "content"),
            })
            .collect(),
        permutations: f["permutations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect()
            })
            .collect(),
        source: s(f, "source"),
    }
}

fn compile_result(f: &Value) -> CompileResult {
    let mut key = [0u8; 32];
    key.copy_from_slice(&unhex(&s(f, "key")));
    let status = match u(f, "status") {
        0 => ResultStatus::Ok,
        1 => ResultStatus::CompileError,
        _ => ResultStatus::Failed,
    };
    let origin = match u(f, "origin") {
        0 => Origin::Fresh,
        1 => Origin::Hit,
        _ => Origin::Joined,
    };
    let wg = f["workgroup_size"].as_array().unwrap();
    CompileResult {
        index: u(f, "index") as u16,
        status,
        origin,
        key,
        compiler: s(f, "compiler"),
        entry: s(f, "entry"),
        workgroup_size: [0, 1, 2].map(|i| wg[i].as_u64().unwrap() as u32),
        bindings: f["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| Binding {
                set: u(b, "set") as u32,
                binding: u(b, "binding") as u32,
                kind: match u(b, "kind") {
                    1 => BindingKind::UniformBuffer,
                    2 => BindingKind::StorageBuffer,
                    3 => BindingKind::SampledTexture,
                    4 => BindingKind::StorageTexture,
                    5 => BindingKind::Sampler,
                    _ => BindingKind::Other,
                },
            })
            .collect(),
        diagnostics: f["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| Diagnostic {
                severity: match u(d, "severity") {
                    0 => Severity::Error,
                    1 => Severity::Warning,
                    _ => Severity::Note,
                },
                file: s(d, "file"),
                line: u(d, "line") as u32,
                column: u(d, "column") as u32,
                message: s(d, "message"),
            })
            .collect(),
        output: b(f, "output"),
    }
}

/// Encodes a Compile message from its vector's fields; `None` when `message` is not one.
pub fn build(message: &str, f: &Value) -> Option<Bytes> {
    Some(match message {
        "CompileRequest" => enc(&compile_request(f)),
        "CompileAccepted" => enc(&CompileAccepted {
            permutations: u(f, "permutations") as u16,
        }),
        "CompileResult" => enc(&compile_result(f)),
        "CompileStatsRequest" => enc(&spark_proto::compile::Stats),
        "CompileStats" => enc(&CompileStats {
            compiles: u(f, "compiles"),
            hits: u(f, "hits"),
            negative_hits: u(f, "negative_hits"),
            joins: u(f, "joins"),
            failures: u(f, "failures"),
            timeouts: u(f, "timeouts"),
            worker_crashes: u(f, "worker_crashes"),
            queue_depth: u(f, "queue_depth"),
            running: u(f, "running"),
            jobs: u(f, "jobs"),
            p50_us: u(f, "p50_us"),
            p90_us: u(f, "p90_us"),
            p99_us: u(f, "p99_us"),
            max_us: u(f, "max_us"),
        }),
        _ => return None,
    })
}

/// Decodes then re-encodes a Compile message; `None` when `message` is not one.
pub fn roundtrip(message: &str, p: &Bytes) -> Option<Result<(Bytes, u16), ProtoError>> {
    fn rt<M: Message>(p: &Bytes) -> Result<(Bytes, u16), ProtoError> {
        Ok((enc(&M::decode(p)?), M::TYPE))
    }
    Some(match message {
        "CompileRequest" => rt::<CompileRequest>(p),
        "CompileAccepted" => rt::<CompileAccepted>(p),
        "CompileResult" => rt::<CompileResult>(p),
        "CompileStatsRequest" => rt::<spark_proto::compile::Stats>(p),
        "CompileStats" => rt::<CompileStats>(p),
        _ => return None,
    })
}
