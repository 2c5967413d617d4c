//! Checks `docs/protocol-vectors.json`, the byte-level vectors every client implementation checks.
//!
//! Each vector names a message and its fields; this test builds the message from the fields, encodes it and
//! compares the frame byte for byte, then decodes the frame and encodes it again. Invalid vectors must fail
//! to decode with the named error. `SPARK_REGEN_VECTORS=1 cargo test -p spark-proto --test vectors` rewrites
//! the file from the table in this test (review the diff: a changed vector is a protocol change).

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use spark_proto::cache::*;
use spark_proto::compile::{
    Backend, Binding, BindingKind, CompileAccepted, CompileRequest, CompileResult, CompileStats,
    Diagnostic, IncludeFile, Language, Origin, ResultStatus, Severity, Stage, Target,
};
use spark_proto::control::*;
use spark_proto::messages::{self, MessageInfo};
use spark_proto::watch::{self as w, Change, ChangeKind};
use spark_proto::{ErrorResponse, Frame, Message, ProtoError, service};

fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol-vectors.json")
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn u(f: &Value, k: &str) -> u64 {
    f[k].as_u64().unwrap_or_else(|| panic!("field {k}"))
}
fn s(f: &Value, k: &str) -> String {
    f[k].as_str()
        .unwrap_or_else(|| panic!("field {k}"))
        .to_string()
}
fn b(f: &Value, k: &str) -> Bytes {
    Bytes::from(unhex(f[k].as_str().unwrap_or_else(|| panic!("field {k}"))))
}
fn shader_key(f: &Value) -> ShaderKey {
    ShaderKey {
        source_hash: u64::from_str_radix(&s(f, "source_hash"), 16).unwrap(),
        target: u(f, "target") as u8,
        stage: u(f, "stage") as u8,
    }
}
fn asset_key(f: &Value) -> AssetKey {
    AssetKey {
        path: s(f, "path"),
        platform: u(f, "platform") as u8,
    }
}
fn u16s(f: &Value, k: &str) -> Vec<u16> {
    f[k].as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u16)
        .collect()
}

fn strs(f: &Value, k: &str) -> Vec<String> {
    f[k].as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}
/// `changes`: a list of `{"kind": 1..4, "path": …, "to": …}` (`to` only for renamed, kind 4).
fn changes(f: &Value) -> Vec<Change> {
    f["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Change {
            kind: ChangeKind::from_u8(u(c, "kind") as u8).unwrap(),
            path: s(c, "path"),
            to: c["to"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

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

fn enc<M: Message>(m: &M) -> Bytes {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out.freeze()
}

/// Encodes the message a vector names from its fields; returns the payload.
fn build(message: &str, f: &Value) -> Bytes {
    match message {
        "Ping" => enc(&Ping { data: b(f, "data") }),
        "Pong" => enc(&Pong { data: b(f, "data") }),
        "Version" => enc(&Version),
        "VersionResponse" => enc(&VersionResponse {
            protocol_version: u(f, "protocol_version") as u16,
            daemon_version: s(f, "daemon_version"),
        }),
        "Shutdown" => enc(&Shutdown),
        "ShutdownAck" => enc(&ShutdownAck),
        "Stats" => enc(&spark_proto::control::Stats),
        "StatsResponse" => enc(&StatsResponse {
            uptime_secs: u(f, "uptime_secs"),
            protocol_version: u(f, "protocol_version") as u16,
            services: u16s(f, "services"),
            current_connections: u(f, "current_connections") as u32,
            total_connections: u(f, "total_connections"),
        }),
        "Hello" => enc(&Hello {
            protocol_version: u(f, "protocol_version") as u16,
            flags: u(f, "flags") as u32,
            pid: u(f, "pid") as u32,
            client_name: s(f, "client_name"),
        }),
        "HelloResponse" => enc(&HelloResponse {
            protocol_version: u(f, "protocol_version") as u16,
            daemon_version: s(f, "daemon_version"),
            daemon_pid: u(f, "daemon_pid") as u32,
            services: u16s(f, "services"),
            capabilities: f["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().into())
                .collect(),
        }),
        "RegisterSponsor" => enc(&RegisterSponsor {
            pid: u(f, "pid") as u32,
        }),
        "RegisterSponsorAck" => enc(&RegisterSponsorAck {
            sponsors: u(f, "sponsors") as u32,
        }),
        "ErrorResponse" => enc(&ErrorResponse {
            code: u(f, "code") as u16,
            message: s(f, "message"),
        }),
        "ShaderGet" => enc(&Get { key: shader_key(f) }),
        "ShaderPut" => enc(&Put {
            key: shader_key(f),
            data: b(f, "data"),
        }),
        "ShaderPutStream" => enc(&PutStream {
            key: shader_key(f),
            total_len: u(f, "total_len"),
        }),
        "ShaderExists" => enc(&Exists { key: shader_key(f) }),
        "AssetGet" => enc(&Get { key: asset_key(f) }),
        "AssetPut" => enc(&Put {
            key: asset_key(f),
            data: b(f, "data"),
        }),
        "AssetExists" => enc(&Exists { key: asset_key(f) }),
        "GetResponse" => enc(&GetResponse {
            status: match u(f, "status") {
                0 => GetStatus::Miss,
                1 => GetStatus::Inline(b(f, "data")),
                _ => GetStatus::Streamed {
                    total_len: u(f, "total_len"),
                },
            },
        }),
        "PutResponse" => enc(&PutResponse {
            stored: u(f, "stored") != 0,
        }),
        "StreamChunk" => enc(&StreamChunk { data: b(f, "data") }),
        "StreamEnd" => enc(&StreamEnd {
            checksum: u128::from_str_radix(&s(f, "checksum"), 16).unwrap(),
        }),
        "ExistsResponse" => enc(&ExistsResponse {
            exists: u(f, "exists") != 0,
            size: u(f, "size"),
        }),
        "Clear" => enc(&Clear),
        "ClearResponse" => enc(&ClearResponse {
            removed: u(f, "removed"),
        }),
        "CacheStatsRequest" => enc(&spark_proto::cache::Stats),
        "CacheStats" => {
            let mut st = CacheStats::default();
            let v: Vec<u64> = CacheStats::FIELDS.iter().map(|k| u(f, k)).collect();
            (
                st.hits,
                st.misses,
                st.puts,
                st.entries,
                st.entries_in_memory,
            ) = (v[0], v[1], v[2], v[3], v[4]);
            (
                st.bytes_in_memory,
                st.bytes_on_disk,
                st.evictions,
                st.corrupt_dropped,
            ) = (v[5], v[6], v[7], v[8]);
            (st.memory_budget, st.disk_budget) = (v[9], v[10]);
            enc(&st)
        }
        "Invalidate" => enc(&Invalidate { path: s(f, "path") }),
        "InvalidateResponse" => enc(&InvalidateResponse {
            dropped: u(f, "dropped") as u32,
        }),
        "AssetPutStream" => enc(&PutStream {
            key: asset_key(f),
            total_len: u(f, "total_len"),
        }),
        "Namespaces" => enc(&Namespaces),
        "NamespacesResponse" => enc(&NamespacesResponse {
            namespaces: f["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ns| NamespaceStats {
                    name: s(ns, "name"),
                    service: u(ns, "service") as u16,
                    counters: ns["counters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| (s(c, "name"), u(c, "value")))
                        .collect(),
                })
                .collect(),
        }),
        "EventsLost" => enc(&EventsLost {
            dropped: u(f, "dropped"),
        }),
        "DeclareDeps" => enc(&DeclareDeps {
            path: s(f, "path"),
            platform: u(f, "platform") as u8,
            deps: strs(f, "deps"),
        }),
        "DeclareDepsResponse" => enc(&DeclareDepsResponse {
            watched: u(f, "watched") as u32,
        }),
        "SubscribeInvalidations" => enc(&SubscribeInvalidations),
        "SubscribeInvalidationsResponse" => enc(&SubscribeInvalidationsResponse),
        "ImportClaim" => enc(&ImportClaim {
            platform: u(f, "platform") as u8,
            importer_id: s(f, "importer_id"),
            importer_version: u(f, "importer_version") as u32,
            source: s(f, "source"),
            deps: strs(f, "deps"),
        }),
        "ImportClaimResponse" => enc(&ImportClaimResponse {
            status: u(f, "status") as u8,
            path: s(f, "path"),
        }),
        "ImportDone" => enc(&ImportDone {
            path: s(f, "path"),
            platform: u(f, "platform") as u8,
            ok: u(f, "ok") != 0,
        }),
        "ImportDoneResponse" => enc(&ImportDoneResponse {
            watched: u(f, "watched") as u32,
        }),
        "AssetInvalidated" => enc(&AssetInvalidated {
            path: s(f, "path"),
            platform: u(f, "platform") as u8,
            source: s(f, "source"),
        }),
        "WatchSubscribe" => enc(&w::Subscribe {
            root: s(f, "root"),
            flags: u(f, "flags") as u8,
            include: strs(f, "include"),
            exclude: strs(f, "exclude"),
            since_instance: u64::from_str_radix(&s(f, "since_instance"), 16).unwrap(),
            since_seq: u(f, "since_seq"),
        }),
        "WatchSubscribeResponse" => enc(&w::SubscribeResponse {
            subscription: u(f, "subscription") as u32,
            instance: u64::from_str_radix(&s(f, "instance"), 16).unwrap(),
            seq: u(f, "seq"),
            watched_dirs: u(f, "watched_dirs") as u32,
            watched_files: u(f, "watched_files"),
        }),
        "WatchUnsubscribe" => enc(&w::Unsubscribe {
            subscription: u(f, "subscription") as u32,
        }),
        "WatchUnsubscribeResponse" => enc(&w::UnsubscribeResponse {
            existed: u(f, "existed") != 0,
        }),
        "WatchQuery" => enc(&w::Query {
            root: s(f, "root"),
            flags: u(f, "flags") as u8,
            include: strs(f, "include"),
            exclude: strs(f, "exclude"),
            since_instance: u64::from_str_radix(&s(f, "since_instance"), 16).unwrap(),
            since_seq: u(f, "since_seq"),
        }),
        "WatchQueryResponse" => enc(&w::QueryResponse {
            instance: u64::from_str_radix(&s(f, "instance"), 16).unwrap(),
            seq: u(f, "seq"),
            fresh_instance: u(f, "fresh_instance") != 0,
            changes: changes(f),
        }),
        "WatchList" => enc(&w::List),
        "WatchListResponse" => enc(&w::ListResponse {
            roots: f["roots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| w::RootInfo {
                    root: s(r, "root"),
                    flags: u(r, "flags") as u8,
                    subscribers: u(r, "subscribers") as u32,
                    watches: u(r, "watches") as u32,
                    files: u(r, "files"),
                    seq: u(r, "seq"),
                    rescans: u(r, "rescans"),
                })
                .collect(),
        }),
        "WatchChanges" => enc(&w::Changes {
            subscription: u(f, "subscription") as u32,
            instance: u64::from_str_radix(&s(f, "instance"), 16).unwrap(),
            seq: u(f, "seq"),
            flags: u(f, "flags") as u8,
            changes: changes(f),
        }),
        "WatchRescan" => enc(&w::Rescan {
            subscription: u(f, "subscription") as u32,
            root: s(f, "root"),
            instance: u64::from_str_radix(&s(f, "instance"), 16).unwrap(),
            seq: u(f, "seq"),
            reason: s(f, "reason"),
        }),
        "WatchEnded" => enc(&w::Ended {
            subscription: u(f, "subscription") as u32,
            root: s(f, "root"),
            reason: u(f, "reason") as u8,
            message: s(f, "message"),
        }),
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
        other => panic!("vector names unknown message {other}"),
    }
}

/// Decodes a payload as the named message and encodes it again; also returns the Rust type's message type.
fn roundtrip(message: &str, p: &Bytes) -> Result<(Bytes, u16), ProtoError> {
    fn rt<M: Message>(p: &Bytes) -> Result<(Bytes, u16), ProtoError> {
        Ok((enc(&M::decode(p)?), M::TYPE))
    }
    match message {
        "Ping" => rt::<Ping>(p),
        "Pong" => rt::<Pong>(p),
        "Version" => rt::<Version>(p),
        "VersionResponse" => rt::<VersionResponse>(p),
        "Shutdown" => rt::<Shutdown>(p),
        "ShutdownAck" => rt::<ShutdownAck>(p),
        "Stats" => rt::<spark_proto::control::Stats>(p),
        "StatsResponse" => rt::<StatsResponse>(p),
        "Hello" => rt::<Hello>(p),
        "HelloResponse" => rt::<HelloResponse>(p),
        "RegisterSponsor" => rt::<RegisterSponsor>(p),
        "RegisterSponsorAck" => rt::<RegisterSponsorAck>(p),
        "ErrorResponse" => rt::<ErrorResponse>(p),
        "ShaderGet" => rt::<Get<ShaderKey>>(p),
        "ShaderPut" => rt::<Put<ShaderKey>>(p),
        "ShaderPutStream" => rt::<PutStream<ShaderKey>>(p),
        "ShaderExists" => rt::<Exists<ShaderKey>>(p),
        "AssetGet" => rt::<Get<AssetKey>>(p),
        "AssetPut" => rt::<Put<AssetKey>>(p),
        "AssetExists" => rt::<Exists<AssetKey>>(p),
        "GetResponse" => rt::<GetResponse>(p),
        "PutResponse" => rt::<PutResponse>(p),
        "StreamChunk" => rt::<StreamChunk>(p),
        "StreamEnd" => rt::<StreamEnd>(p),
        "ExistsResponse" => rt::<ExistsResponse>(p),
        "Clear" => rt::<Clear>(p),
        "ClearResponse" => rt::<ClearResponse>(p),
        "CacheStatsRequest" => rt::<spark_proto::cache::Stats>(p),
        "CacheStats" => rt::<CacheStats>(p),
        "Invalidate" => rt::<Invalidate>(p),
        "InvalidateResponse" => rt::<InvalidateResponse>(p),
        "AssetPutStream" => rt::<PutStream<AssetKey>>(p),
        "Namespaces" => rt::<Namespaces>(p),
        "NamespacesResponse" => rt::<NamespacesResponse>(p),
        "EventsLost" => rt::<EventsLost>(p),
        "DeclareDeps" => rt::<DeclareDeps>(p),
        "DeclareDepsResponse" => rt::<DeclareDepsResponse>(p),
        "SubscribeInvalidations" => rt::<SubscribeInvalidations>(p),
        "SubscribeInvalidationsResponse" => rt::<SubscribeInvalidationsResponse>(p),
        "ImportClaim" => rt::<ImportClaim>(p),
        "ImportClaimResponse" => rt::<ImportClaimResponse>(p),
        "ImportDone" => rt::<ImportDone>(p),
        "ImportDoneResponse" => rt::<ImportDoneResponse>(p),
        "AssetInvalidated" => rt::<AssetInvalidated>(p),
        "WatchSubscribe" => rt::<w::Subscribe>(p),
        "WatchSubscribeResponse" => rt::<w::SubscribeResponse>(p),
        "WatchUnsubscribe" => rt::<w::Unsubscribe>(p),
        "WatchUnsubscribeResponse" => rt::<w::UnsubscribeResponse>(p),
        "WatchQuery" => rt::<w::Query>(p),
        "WatchQueryResponse" => rt::<w::QueryResponse>(p),
        "WatchList" => rt::<w::List>(p),
        "WatchListResponse" => rt::<w::ListResponse>(p),
        "WatchChanges" => rt::<w::Changes>(p),
        "WatchRescan" => rt::<w::Rescan>(p),
        "WatchEnded" => rt::<w::Ended>(p),
        "CompileRequest" => rt::<CompileRequest>(p),
        "CompileAccepted" => rt::<CompileAccepted>(p),
        "CompileResult" => rt::<CompileResult>(p),
        "CompileStatsRequest" => rt::<spark_proto::compile::Stats>(p),
        "CompileStats" => rt::<CompileStats>(p),
        other => panic!("unknown message {other}"),
    }
}

/// The source table: (name, service, message, fields).
fn table() -> Vec<(&'static str, u16, &'static str, Value)> {
    let c = service::CONTROL;
    let sh = service::SHADER;
    let a = service::ASSET;
    let wt = service::WATCH;
    let cp = service::COMPILE;
    let stats = json!({"hits": 10, "misses": 2, "puts": 12, "entries": 7, "entries_in_memory": 5,
        "bytes_in_memory": 4096, "bytes_on_disk": 8192, "evictions": 3, "corrupt_dropped": 1,
        "memory_budget": 536870912u64, "disk_budget": 0});
    let asset_stats = json!({"hits": 1, "misses": 1, "puts": 1, "entries": 1, "entries_in_memory": 0,
        "bytes_in_memory": 0, "bytes_on_disk": 4135, "evictions": 0, "corrupt_dropped": 0,
        "memory_budget": 268435456u64, "disk_budget": 1073741824u64});
    vec![
        ("control.ping", c, "Ping", json!({"data": "68656c6c6f"})),
        ("control.pong", c, "Pong", json!({"data": "68656c6c6f"})),
        ("control.ping_empty", c, "Ping", json!({"data": ""})),
        ("control.version", c, "Version", json!({})),
        (
            "control.version_response",
            c,
            "VersionResponse",
            json!({"protocol_version": 1, "daemon_version": "0.1.0"}),
        ),
        ("control.shutdown", c, "Shutdown", json!({})),
        ("control.shutdown_ack", c, "ShutdownAck", json!({})),
        ("control.stats", c, "Stats", json!({})),
        (
            "control.stats_response",
            c,
            "StatsResponse",
            json!({"uptime_secs": 3600, "protocol_version": 1,
            "services": [1, 2, 3], "current_connections": 2, "total_connections": 42}),
        ),
        (
            "control.hello",
            c,
            "Hello",
            json!({"protocol_version": 1, "flags": 1, "pid": 4242, "client_name": "editor"}),
        ),
        (
            "control.hello_response",
            c,
            "HelloResponse",
            json!({"protocol_version": 1, "daemon_version": "0.1.0",
            "daemon_pid": 777, "services": [1, 2, 3], "capabilities": ["sponsor", "stream"]}),
        ),
        (
            "control.register_sponsor",
            c,
            "RegisterSponsor",
            json!({"pid": 4242}),
        ),
        (
            "control.register_sponsor_ack",
            c,
            "RegisterSponsorAck",
            json!({"sponsors": 1}),
        ),
        (
            "control.error_unknown_message",
            c,
            "ErrorResponse",
            json!({"code": 2, "message": "unknown message type 0x0042"}),
        ),
        (
            "shader.error_no_space",
            sh,
            "ErrorResponse",
            json!({"code": 6, "message": "no space left on device"}),
        ),
        (
            "shader.get",
            sh,
            "ShaderGet",
            json!({"source_hash": "0123456789abcdef", "target": 3, "stage": 1}),
        ),
        (
            "shader.get_response_miss",
            sh,
            "GetResponse",
            json!({"status": 0}),
        ),
        (
            "shader.get_response_inline",
            sh,
            "GetResponse",
            json!({"status": 1, "data": "deadbeef"}),
        ),
        (
            "shader.get_response_streamed",
            sh,
            "GetResponse",
            json!({"status": 2, "total_len": 33554432u64}),
        ),
        (
            "shader.put",
            sh,
            "ShaderPut",
            json!({"source_hash": "0123456789abcdef", "target": 3, "stage": 1, "data": "deadbeef"}),
        ),
        (
            "shader.put_response",
            sh,
            "PutResponse",
            json!({"stored": 1}),
        ),
        (
            "shader.put_stream",
            sh,
            "ShaderPutStream",
            json!({"source_hash": "00000000000000ff", "target": 0, "stage": 4, "total_len": 20971520u64}),
        ),
        (
            "shader.stream_chunk",
            sh,
            "StreamChunk",
            json!({"data": "000102030405"}),
        ),
        (
            "shader.stream_end",
            sh,
            "StreamEnd",
            json!({"checksum": format!("{:032x}", spark_proto::blob_checksum(&[0, 1, 2, 3, 4, 5]))}),
        ),
        (
            "shader.exists",
            sh,
            "ShaderExists",
            json!({"source_hash": "0123456789abcdef", "target": 3, "stage": 1}),
        ),
        (
            "shader.exists_response",
            sh,
            "ExistsResponse",
            json!({"exists": 1, "size": 4}),
        ),
        ("shader.clear", sh, "Clear", json!({})),
        (
            "shader.clear_response",
            sh,
            "ClearResponse",
            json!({"removed": 9}),
        ),
        ("shader.stats", sh, "CacheStatsRequest", json!({})),
        ("shader.stats_response", sh, "CacheStats", stats),
        (
            "asset.get",
            a,
            "AssetGet",
            json!({"path": "textures/rock.png", "platform": 2}),
        ),
        (
            "asset.put",
            a,
            "AssetPut",
            json!({"path": "textures/rock.png", "platform": 2, "data": "cafe"}),
        ),
        (
            "asset.exists",
            a,
            "AssetExists",
            json!({"path": "textures/rock.png", "platform": 2}),
        ),
        (
            "asset.invalidate",
            a,
            "Invalidate",
            json!({"path": "textures/rock.png"}),
        ),
        (
            "asset.invalidate_response",
            a,
            "InvalidateResponse",
            json!({"dropped": 3}),
        ),
        (
            "asset.get_response_miss",
            a,
            "GetResponse",
            json!({"status": 0}),
        ),
        (
            "asset.get_response_inline",
            a,
            "GetResponse",
            json!({"status": 1, "data": "cafe"}),
        ),
        (
            "asset.get_response_streamed",
            a,
            "GetResponse",
            json!({"status": 2, "total_len": 20971520u64}),
        ),
        (
            "asset.put_response_not_stored",
            a,
            "PutResponse",
            json!({"stored": 0}),
        ),
        (
            "asset.put_stream",
            a,
            "AssetPutStream",
            json!({"path": "textures/rock.png", "platform": 2, "total_len": 20971520u64}),
        ),
        (
            "asset.stream_chunk",
            a,
            "StreamChunk",
            json!({"data": "cafe"}),
        ),
        (
            "asset.stream_end",
            a,
            "StreamEnd",
            json!({"checksum": format!("{:032x}", spark_proto::blob_checksum(&[0xca, 0xfe]))}),
        ),
        (
            "asset.exists_response_absent",
            a,
            "ExistsResponse",
            json!({"exists": 0, "size": 0}),
        ),
        ("asset.clear", a, "Clear", json!({})),
        (
            "asset.clear_response",
            a,
            "ClearResponse",
            json!({"removed": 0}),
        ),
        ("asset.stats", a, "CacheStatsRequest", json!({})),
        ("asset.stats_response", a, "CacheStats", asset_stats),
        (
            "asset.error_invalid_key",
            a,
            "ErrorResponse",
            json!({"code": 10, "message": "asset path is empty"}),
        ),
        ("control.namespaces", c, "Namespaces", json!({})),
        (
            "control.namespaces_response",
            c,
            "NamespacesResponse",
            json!({"namespaces": [
                {"name": "shader", "service": 2, "counters": [
                    {"name": "hits", "value": 10}, {"name": "misses", "value": 2}]},
                {"name": "http-cas", "service": 0, "counters": []},
            ]}),
        ),
        (
            "control.namespaces_response_empty",
            c,
            "NamespacesResponse",
            json!({"namespaces": []}),
        ),
        (
            "control.events_lost",
            c,
            "EventsLost",
            json!({"dropped": 1500}),
        ),
        (
            "asset.declare_deps",
            a,
            "DeclareDeps",
            json!({"path": "textures/rock.png", "platform": 2,
                "deps": ["/proj/src/rock.psd", "/proj/src/palette.act"]}),
        ),
        (
            "asset.declare_deps_response",
            a,
            "DeclareDepsResponse",
            json!({"watched": 2}),
        ),
        (
            "asset.subscribe_invalidations",
            a,
            "SubscribeInvalidations",
            json!({}),
        ),
        (
            "asset.subscribe_invalidations_response",
            a,
            "SubscribeInvalidationsResponse",
            json!({}),
        ),
        (
            "asset.import_claim",
            a,
            "ImportClaim",
            json!({"platform": 2, "importer_id": "png", "importer_version": 3,
                "source": "/proj/src/rock.png", "deps": []}),
        ),
        (
            "asset.import_claim_response_owner",
            a,
            "ImportClaimResponse",
            json!({"status": 0, "path": "import/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}),
        ),
        (
            "asset.import_claim_response_ready",
            a,
            "ImportClaimResponse",
            json!({"status": 1, "path": "import/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}),
        ),
        (
            "asset.import_done",
            a,
            "ImportDone",
            json!({"path": "import/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "platform": 2, "ok": 1}),
        ),
        (
            "asset.import_done_response",
            a,
            "ImportDoneResponse",
            json!({"watched": 1}),
        ),
        (
            "asset.invalidated",
            a,
            "AssetInvalidated",
            json!({"path": "textures/rock.png", "platform": 2, "source": "/proj/src/palette.act"}),
        ),
        (
            "watch.subscribe",
            wt,
            "WatchSubscribe",
            json!({"root": "/home/ana/game/assets", "flags": 0, "include": ["*.png", "src/**/*.rs"],
                "exclude": ["tmp/**"], "since_instance": "0", "since_seq": 0}),
        ),
        (
            "watch.subscribe_since",
            wt,
            "WatchSubscribe",
            json!({"root": "/w", "flags": 1, "include": [], "exclude": [],
                "since_instance": "9e3779b97f4a7c15", "since_seq": 42}),
        ),
        (
            "watch.subscribe_response",
            wt,
            "WatchSubscribeResponse",
            json!({"subscription": 7, "instance": "9e3779b97f4a7c15", "seq": 42, "watched_dirs": 12,
                "watched_files": 345}),
        ),
        (
            "watch.unsubscribe",
            wt,
            "WatchUnsubscribe",
            json!({"subscription": 7}),
        ),
        (
            "watch.unsubscribe_response",
            wt,
            "WatchUnsubscribeResponse",
            json!({"existed": 1}),
        ),
        (
            "watch.query",
            wt,
            "WatchQuery",
            json!({"root": "/w", "flags": 0, "include": ["*.png"], "exclude": [],
                "since_instance": "9e3779b97f4a7c15", "since_seq": 42}),
        ),
        (
            "watch.query_response",
            wt,
            "WatchQueryResponse",
            json!({"instance": "9e3779b97f4a7c15", "seq": 45, "fresh_instance": 0, "changes": [
                {"kind": 1, "path": "a.png"}, {"kind": 2, "path": "b.png"},
                {"kind": 3, "path": "c.png"}, {"kind": 4, "path": "d.png", "to": "e.png"}]}),
        ),
        (
            "watch.query_response_fresh",
            wt,
            "WatchQueryResponse",
            json!({"instance": "1", "seq": 1, "fresh_instance": 1, "changes": []}),
        ),
        ("watch.list", wt, "WatchList", json!({})),
        (
            "watch.list_response",
            wt,
            "WatchListResponse",
            json!({"roots": [{"root": "/w", "flags": 0, "subscribers": 2, "watches": 12, "files": 345,
                "seq": 45, "rescans": 1}]}),
        ),
        (
            "watch.changes",
            wt,
            "WatchChanges",
            json!({"subscription": 7, "instance": "9e3779b97f4a7c15", "seq": 43, "flags": 0, "changes": [
                {"kind": 2, "path": "scene.json"}, {"kind": 4, "path": "old", "to": "new"}]}),
        ),
        (
            "watch.changes_fresh",
            wt,
            "WatchChanges",
            json!({"subscription": 7, "instance": "9e3779b97f4a7c15", "seq": 43, "flags": 1,
                "changes": []}),
        ),
        (
            "watch.rescan",
            wt,
            "WatchRescan",
            json!({"subscription": 7, "root": "/w", "instance": "9e3779b97f4a7c15", "seq": 44,
                "reason": "overflow: events were missed"}),
        ),
        (
            "watch.ended",
            wt,
            "WatchEnded",
            json!({"subscription": 7, "root": "/w", "reason": 1, "message": "the root /w no longer exists"}),
        ),
        (
            "compile.request",
            cp,
            "CompileRequest",
            json!({"language": "glsl", "stage": "frag", "target": "spirv", "backend": "auto", "flags": 1,
                "spirv_version": 0x0103, "entry": "main", "include_dirs": ["shaders"],
                "include_map": [{"path": "common.glsl", "content": "#define K 1\n"}],
                "permutations": [[], ["FOG", "LIGHTS=4"]],
                "source": "#version 450\nvoid main(){}\n"}),
        ),
        (
            "compile.accepted",
            cp,
            "CompileAccepted",
            json!({"permutations": 2}),
        ),
        (
            "compile.result_ok",
            cp,
            "CompileResult",
            json!({"index": 1, "status": 0, "origin": 2,
                "key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                "compiler": "naga 25.0.1", "entry": "main", "workgroup_size": [8, 8, 1],
                "bindings": [{"set": 0, "binding": 1, "kind": 2}],
                "diagnostics": [{"severity": 1, "file": "<source>", "line": 3, "column": 5,
                    "message": "unused"}],
                "output": "03022307"}),
        ),
        (
            "compile.result_error",
            cp,
            "CompileResult",
            json!({"index": 0, "status": 1, "origin": 1,
                "key": "ff00000000000000000000000000000000000000000000000000000000000001",
                "compiler": "glslangValidator 12.0.0", "entry": "main", "workgroup_size": [0, 0, 0],
                "bindings": [],
                "diagnostics": [{"severity": 0, "file": "common/light.glsl", "line": 12, "column": 0,
                    "message": "'x' : undeclared identifier"}],
                "output": ""}),
        ),
        ("compile.stats", cp, "CompileStatsRequest", json!({})),
        (
            "compile.stats_response",
            cp,
            "CompileStats",
            json!({"compiles": 12, "hits": 40, "negative_hits": 2, "joins": 7, "failures": 3,
                "timeouts": 1, "worker_crashes": 1, "queue_depth": 0, "running": 1, "jobs": 3,
                "p50_us": 1200, "p90_us": 5300, "p99_us": 9100, "max_us": 12000}),
        ),
    ]
}

fn invalid_table() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        // 4 GiB - 1 announced: rejected from the header alone.
        (
            "invalid.oversize_header",
            "ffffffff01000100",
            "frame_too_large",
        ),
        // 16 MiB + 1 announced.
        (
            "invalid.just_over_limit",
            "0100000101000100",
            "frame_too_large",
        ),
        ("invalid.truncated_header", "05000000", "truncated"),
        (
            "invalid.truncated_payload",
            "0500000001000100aabb",
            "truncated",
        ),
    ]
}

fn generate() -> Value {
    let mut vs = Vec::new();
    for (name, svc, message, fields) in table() {
        let payload = build(message, &fields);
        let frame = Frame::new(svc, msg_type_of(message), payload).unwrap();
        vs.push(
            json!({"name": name, "service": svc, "msg_type": frame.msg_type, "message": message,
            "fields": fields, "frame": hexs(&frame.to_bytes())}),
        );
    }
    let inv: Vec<Value> = invalid_table()
        .into_iter()
        .map(|(n, f, e)| json!({"name": n, "frame": f, "error": e}))
        .collect();
    json!({"protocol_version": spark_proto::PROTOCOL_VERSION,
        "notes": "Generated by crates/spark-proto/tests/vectors.rs. Integers are decimal; source_hash, checksum and the watch clocks' instance (and since_instance) are big-endian hex strings of the numeric value; watch changes are {kind, path, to (renamed only)}; byte strings (data) are hex. 'frame' is the whole frame: header and payload. xxh3_128: the XXH3-128 (seed 0) of 'length' bytes where byte i = (i * 7 + 3) mod 256.",
        "vectors": vs, "invalid": inv, "xxh3_128": xxh3_table()})
}

/// The registry entry a vector's `message` names. Keyed cache messages are named per key (`ShaderGet`).
fn info_of(message: &str) -> &'static MessageInfo {
    messages::ALL
        .iter()
        .find(|i| i.vector_names().iter().any(|n| n == message))
        .unwrap_or_else(|| panic!("vector message {message} is not in spark_proto::messages::ALL"))
}

fn msg_type_of(message: &str) -> u16 {
    info_of(message).msg_type
}

/// Lengths that reach every branch of XXH3-128: 0, 1–3, 4–8, 9–16, 17–128, 129–240 and > 240 bytes.
const XXH3_LENGTHS: [usize; 7] = [0, 3, 8, 16, 100, 200, 1000];

/// The check-value input: byte `i` is `(i * 7 + 3) mod 256`.
fn xxh3_input(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 256) as u8).collect()
}

fn xxh3_table() -> Vec<Value> {
    XXH3_LENGTHS
        .iter()
        .map(|&len| {
            json!({"name": format!("xxh3_128.len_{len}"), "length": len,
                "checksum": format!("{:032x}", spark_proto::blob_checksum(&xxh3_input(len)))})
        })
        .collect()
}

#[test]
fn vectors_file_matches_codec() {
    if std::env::var_os("SPARK_REGEN_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
        std::fs::write(vectors_path(), text).unwrap();
    }
    let text = std::fs::read_to_string(vectors_path()).expect("docs/protocol-vectors.json exists");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc["protocol_version"].as_u64(),
        Some(spark_proto::PROTOCOL_VERSION as u64)
    );
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(
        vectors.len(),
        table().len(),
        "every table entry is in the file"
    );
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let message = v["message"].as_str().unwrap();
        let bytes = unhex(v["frame"].as_str().unwrap());
        // Encode from fields: byte-exact.
        let payload = build(message, &v["fields"]);
        let built = Frame::new(
            v["service"].as_u64().unwrap() as u16,
            v["msg_type"].as_u64().unwrap() as u16,
            payload,
        )
        .unwrap();
        assert_eq!(
            hexs(&built.to_bytes()),
            hexs(&bytes),
            "{name}: encoding differs"
        );
        // Decode the frame, then the payload, then encode again: byte-exact.
        let frame = Frame::decode_exact(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(frame.msg_type, msg_type_of(message), "{name}: message type");
        let (again, rust_type) =
            roundtrip(message, &frame.payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, frame.payload, "{name}: decode/encode differs");
        assert_eq!(
            rust_type, frame.msg_type,
            "{name}: registry and Message::TYPE differ"
        );
        // The registry's `exact` is what the decoder does (a trailing `bytes` field absorbs anything).
        let info = info_of(message);
        let longer = Bytes::from([&frame.payload[..], &[0u8]].concat());
        let absorbs = info.fields.iter().any(|(_, t)| t.starts_with("bytes"));
        match roundtrip(message, &longer) {
            Err(ProtoError::TrailingBytes) => assert!(info.exact, "{name}: registry says lenient"),
            Ok(_) => assert!(!info.exact || absorbs, "{name}: registry says exact"),
            Err(e) => panic!("{name}: one more byte gives {e}"),
        }
    }
    let invalid = doc["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), invalid_table().len());
    for v in invalid {
        let name = v["name"].as_str().unwrap();
        let err = Frame::decode_exact(&unhex(v["frame"].as_str().unwrap())).expect_err(name);
        let want = v["error"].as_str().unwrap();
        let got = match err {
            ProtoError::FrameTooLarge { .. } => "frame_too_large",
            ProtoError::Truncated => "truncated",
            _ => "other",
        };
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(
        doc["xxh3_128"],
        Value::Array(xxh3_table()),
        "xxh3_128 check values"
    );
}

/// Every message in the registry has a vector, on a service that carries it: a message added to spark-proto
/// without one fails here (and the Python client, which checks itself against the file, follows).
#[test]
fn every_registered_message_has_a_vector() {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    let has = |message: &str, services: &[u16]| {
        vectors.iter().any(|v| {
            v["message"] == message && services.contains(&(v["service"].as_u64().unwrap() as u16))
        })
    };
    let mut missing = Vec::new();
    for info in messages::ALL {
        let services: &[u16] = match info.service {
            "control" => &[service::CONTROL],
            "cache" => &[service::SHADER, service::ASSET],
            "watch" => &[service::WATCH],
            "compile" => &[service::COMPILE],
            "any" => &[service::CONTROL, service::SHADER, service::ASSET],
            other => panic!("{}: unknown registry service {other}", info.name),
        };
        // A keyed message has one layout per key, so each key needs its own vector.
        for name in info.vector_names() {
            if !has(&name, services) {
                missing.push(format!("{} {name}", info.service));
            }
        }
    }
    assert!(missing.is_empty(), "messages without a vector: {missing:?}");
}

/// The registry is consistent: names unique, one message per (service, type), fields named.
#[test]
fn registry_is_consistent() {
    let mut seen = std::collections::HashSet::new();
    for info in messages::ALL {
        for n in info.vector_names() {
            assert!(seen.insert(n.clone()), "duplicate registry name {n}");
        }
        let clash = messages::ALL.iter().filter(|o| {
            o.msg_type == info.msg_type
                && (o.service == info.service || o.service == "any" || info.service == "any")
        });
        assert_eq!(
            clash.count(),
            1,
            "{}: message type 0x{:04x} used twice",
            info.name,
            info.msg_type
        );
        assert!(
            info.fields
                .iter()
                .all(|(n, t)| !n.is_empty() && !t.is_empty())
        );
    }
    assert_eq!(CacheStats::INFO.fields.len(), CacheStats::FIELDS.len());
    assert_eq!(
        Put::<AssetKey>::INFO.fields,
        &[("key", "key"), ("data", "bytes")]
    );
}

/// The vectors and check values quoted in `docs/protocol.md` are the file's: the page is what client authors
/// read first, so a stale quote there is a bug report waiting to happen.
#[test]
fn protocol_md_quotes_the_vector_file() {
    let md = std::fs::read_to_string(vectors_path().with_file_name("protocol.md")).unwrap();
    let doc = generate();
    for v in doc["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let Some(at) = md.find(&format!("#### `{name}`")) else {
            continue;
        };
        let section = &md[at..];
        let end = section[4..]
            .find("\n#### ")
            .map_or(section.len(), |i| i + 4);
        let frame = v["frame"].as_str().unwrap();
        assert!(
            section[..end].contains(&format!("```text\n{frame}\n```")),
            "protocol.md's {name} does not quote the frame {frame}"
        );
    }
    for c in doc["xxh3_128"].as_array().unwrap() {
        let row = format!(
            "| {} | `0x{}` |",
            c["length"],
            c["checksum"].as_str().unwrap()
        );
        assert!(
            md.contains(&row),
            "protocol.md 9.1 lacks the check value row {row}"
        );
    }
}
