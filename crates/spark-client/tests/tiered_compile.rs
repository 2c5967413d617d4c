//! `TieredShaderCache::get_or_compile`: the daemon first, else the local cache, else naga in process; the
//! local tier keys results exactly as the daemon does.

use std::sync::Arc;

use spark_client::spark_proto::compile::{
    Backend, CompileRequest, Language, Origin, ResultStatus, Stage, Target,
};
use spark_client::{CompileSource, DaemonConfig, DaemonConnection, TieredShaderCache};
use spark_testkit::Daemon;

const WGSL: &str = "@group(0) @binding(0) var<storage, read_write> v: array<f32>;\n\
    @compute @workgroup_size(32)\nfn main(@builtin(global_invocation_id) id: vec3<u32>) { v[id.x] = v[id.x] * K; }\n";

fn request() -> CompileRequest {
    let mut r = CompileRequest::new(Language::Wgsl, Stage::Compute, Target::SpirV, WGSL);
    r.permutations = vec![vec!["K=2.0".into()]];
    r
}

#[test]
fn without_a_daemon_it_compiles_locally_then_hits_the_local_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TieredShaderCache::open(dir.path()).unwrap();
    let a = cache.get_or_compile(&request());
    assert_eq!(a.source, CompileSource::LocalCompile);
    assert_eq!(
        a.result.status,
        ResultStatus::Ok,
        "{:?}",
        a.result.diagnostics
    );
    assert_eq!(a.result.workgroup_size, [32, 1, 1]);
    let b = cache.get_or_compile(&request());
    assert_eq!(b.source, CompileSource::LocalCache);
    assert_eq!(
        (b.result.key, &b.result.output),
        (a.result.key, &a.result.output)
    );
    // A compile error is a result too, and kept.
    let mut bad = request();
    bad.permutations = vec![vec![]];
    let e = cache.get_or_compile(&bad);
    assert_eq!(e.result.status, ResultStatus::CompileError);
    assert_eq!(cache.get_or_compile(&bad).source, CompileSource::LocalCache);
    // A job only glslang can run fails clearly without a daemon.
    let mut hlsl = CompileRequest::new(Language::Hlsl, Stage::Fragment, Target::SpirV, "x");
    hlsl.backend = Backend::Auto;
    let f = cache.get_or_compile(&hlsl);
    assert_eq!(f.result.status, ResultStatus::Failed);
    assert!(f.result.diagnostics[0].message.contains("glslangValidator"));
}

#[test]
fn with_a_daemon_it_compiles_there_with_the_same_key_and_survives_its_loss() {
    let mut d = Daemon::start(&[]);
    let conn = Arc::new(DaemonConnection::new());
    assert!(conn.init(DaemonConfig::for_socket(&d.socket)));
    let dir = tempfile::tempdir().unwrap();
    let cache = TieredShaderCache::open(dir.path())
        .unwrap()
        .with_daemon(conn.clone());
    let a = cache.get_or_compile(&request());
    assert_eq!(a.source, CompileSource::Daemon(Origin::Fresh));
    assert_eq!(
        cache.get_or_compile(&request()).source,
        CompileSource::Daemon(Origin::Hit)
    );
    // The same key and bytes as a local compile in another cache.
    let other = tempfile::tempdir().unwrap();
    let local = TieredShaderCache::open(other.path())
        .unwrap()
        .get_or_compile(&request());
    assert_eq!(local.source, CompileSource::LocalCompile);
    assert_eq!(
        (local.result.key, &local.result.output),
        (a.result.key, &a.result.output)
    );
    // The daemon goes away: the result the daemon gave was kept locally.
    d.kill();
    let after = cache.get_or_compile(&request());
    assert_eq!(after.source, CompileSource::LocalCache);
    assert_eq!(after.result.output, a.result.output);
    conn.shutdown();
}
