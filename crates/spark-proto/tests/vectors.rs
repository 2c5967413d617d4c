//! Checks `docs/protocol-vectors.json`, the byte-level vectors every client implementation checks.
//!
//! Each vector names a message and its fields; this test builds the message from the fields, encodes it and
//! compares the frame byte for byte, then decodes the frame and encodes it again. Invalid vectors must fail
//! to decode with the named error. `SPARK_REGEN_VECTORS=1 cargo test -p spark-proto --test vectors` rewrites
//! the file from the table in `tests/vectors/table.rs` (review the diff: a changed vector is a protocol change).

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use spark_proto::cache::*;
use spark_proto::control::*;
use spark_proto::messages::{self, MessageInfo};
use spark_proto::watch::{self as w, Change, ChangeKind};
use spark_proto::{ErrorResponse, Frame, Message, ProtoError, service};

#[path = "vectors/collab.rs"]
mod collab;
#[path = "vectors/compile.rs"]
mod compile;
#[path = "vectors/operator.rs"]
mod operator;
#[path = "vectors/table.rs"]
mod table;
use table::{invalid_table, table};

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
        other => compile::build(other, f)
            .or_else(|| operator::build(other, f))
            .or_else(|| collab::build(other, f))
            .unwrap_or_else(|| panic!("vector names unknown message {other}")),
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
        other => compile::roundtrip(other, p)
            .or_else(|| operator::roundtrip(other, p))
            .or_else(|| collab::roundtrip(other, p))
            .unwrap_or_else(|| panic!("unknown message {other}")),
    }
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
            "collab" => &[service::COLLAB],
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
