//! The vector table: every message with the field values its vector encodes, and the invalid frames.
//! `SPARK_REGEN_VECTORS=1` writes `docs/protocol-vectors.json` from it.

use serde_json::{Value, json};
use spark_proto::service;

/// The source table: (name, service, message, fields).
pub fn table() -> Vec<(&'static str, u16, &'static str, Value)> {
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
            "control.verify",
            c,
            "Verify",
            json!({"namespace": "shader"}),
        ),
        (
            "control.verify_response",
            c,
            "VerifyResponse",
            json!({"checked": 1200, "bytes": 5242880, "corrupt": 2, "memory_only": 0}),
        ),
        (
            "control.verify_progress",
            c,
            "VerifyProgress",
            json!({"namespace": "asset", "checked": 300, "total": 1200, "corrupt": 1}),
        ),
        (
            "control.trim",
            c,
            "Trim",
            json!({"namespace": "asset", "target_bytes": 1073741824u64}),
        ),
        (
            "control.trim_response",
            c,
            "TrimResponse",
            json!({"evicted": 42, "bytes_before": 2147483648u64, "bytes_after": 1073741000u64}),
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
    .into_iter()
    .chain(super::collab::table())
    .collect()
}

pub fn invalid_table() -> Vec<(&'static str, &'static str, &'static str)> {
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
