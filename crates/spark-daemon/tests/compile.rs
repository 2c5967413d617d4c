//! The Compile service end to end: the shader corpus through both backends (every SPIR-V checked by
//! spirv-val), reflection, compile errors with file:line and negative caching, include confinement, include
//! edits, batches and stats.

mod common_compile;

use common_compile::*;
use spark_client::spark_proto::compile::{
    Backend, Binding, BindingKind, CompileRequest, Language, Origin, ResultStatus, Severity, Stage,
    Target,
};
use spark_testkit::Daemon;

#[test]
fn corpus_compiles_with_naga_and_every_spirv_validates() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let cases = [
        (
            "basic.vert",
            Language::Glsl,
            Stage::Vertex,
            "main",
            vec!["SCALE=2.0"],
        ),
        (
            "lit.frag",
            Language::Glsl,
            Stage::Fragment,
            "main",
            vec!["FOG", "LIGHTS=3"],
        ),
        (
            "particles.comp",
            Language::Glsl,
            Stage::Compute,
            "main",
            vec![],
        ),
        (
            "pbr.frag",
            Language::Glsl,
            Stage::Fragment,
            "main",
            vec![
                "HAS_BASE_COLOR_MAP",
                "HAS_NORMAL_MAP",
                "HAS_METAL_ROUGH_MAP",
                "HAS_OCCLUSION_MAP",
                "HAS_EMISSIVE_MAP",
                "ALPHA_MASK",
            ],
        ),
        ("pbr.frag", Language::Glsl, Stage::Fragment, "main", vec![]),
        ("blur.wgsl", Language::Wgsl, Stage::Compute, "main", vec![]),
        (
            "triangle.wgsl",
            Language::Wgsl,
            Stage::Vertex,
            "vs_main",
            vec!["BRIGHTNESS=1.0"],
        ),
        (
            "triangle.wgsl",
            Language::Wgsl,
            Stage::Fragment,
            "fs_main",
            vec!["BRIGHTNESS=0.5"],
        ),
    ];
    for (name, lang, stage, entry, defines) in cases {
        let mut r = with_defines(request(name, lang, stage, Target::SpirV), &defines);
        r.entry = entry.into();
        let res = c.compile_one(&r).unwrap();
        ok(&res);
        assert_eq!(res.origin, Origin::Fresh, "{name}");
        assert!(res.compiler.starts_with("naga "), "{}", res.compiler);
        assert_eq!(res.entry, entry);
        spirv_val(&res.output, name);
        // The other targets naga writes are text.
        for target in [Target::Msl, Target::Hlsl, Target::Glsl] {
            let mut r = r.clone();
            r.target = target;
            let out = c.compile_one(&r).unwrap();
            ok(&out);
            assert!(
                std::str::from_utf8(&out.output).is_ok(),
                "{name} {target:?}"
            );
        }
    }
}

#[test]
fn glslang_compiles_glsl_and_hlsl_and_its_spirv_validates() {
    if !have_glslang("glslang_compiles_glsl_and_hlsl_and_its_spirv_validates") {
        return;
    }
    let d = Daemon::start(&[]);
    let c = d.client();
    assert!(
        c.hello()
            .capabilities
            .iter()
            .any(|x| x == "compile-glslang"),
        "{:?}",
        c.hello().capabilities
    );
    let cases = [
        (
            "basic.vert",
            Language::Glsl,
            Stage::Vertex,
            "main",
            vec!["SCALE=2.0"],
        ),
        (
            "lit.frag",
            Language::Glsl,
            Stage::Fragment,
            "main",
            vec!["LIGHTS=2"],
        ),
        (
            "particles.comp",
            Language::Glsl,
            Stage::Compute,
            "main",
            vec![],
        ),
        (
            "shade.hlsl",
            Language::Hlsl,
            Stage::Fragment,
            "PSMain",
            vec!["TINT=0.5"],
        ),
        (
            "pbr.frag",
            Language::Glsl,
            Stage::Fragment,
            "main",
            vec!["HAS_NORMAL_MAP", "HAS_METAL_ROUGH_MAP", "ALPHA_MASK"],
        ),
    ];
    for (name, lang, stage, entry, defines) in cases {
        let mut r = with_defines(request(name, lang, stage, Target::SpirV), &defines);
        r.backend = Backend::Glslang;
        r.entry = entry.into();
        let res = c.compile_one(&r).unwrap();
        ok(&res);
        assert!(
            res.compiler.starts_with("glslangValidator "),
            "{}",
            res.compiler
        );
        spirv_val(&res.output, name);
    }
    // HLSL goes to glslang on its own (auto).
    let r = with_defines(
        request("shade.hlsl", Language::Hlsl, Stage::Fragment, Target::SpirV),
        &["TINT=1.0"],
    );
    let mut r = r;
    r.entry = "PSMain".into();
    assert!(
        c.compile_one(&r)
            .unwrap()
            .compiler
            .starts_with("glslangValidator")
    );
}

#[test]
fn reflection_reports_bindings_and_workgroup_size() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let res = c
        .compile_one(&request(
            "blur.wgsl",
            Language::Wgsl,
            Stage::Compute,
            Target::SpirV,
        ))
        .unwrap();
    ok(&res);
    assert_eq!(res.workgroup_size, [8, 8, 1]);
    assert_eq!(
        res.bindings,
        vec![
            Binding {
                set: 0,
                binding: 0,
                kind: BindingKind::SampledTexture
            },
            Binding {
                set: 0,
                binding: 1,
                kind: BindingKind::StorageTexture
            },
        ]
    );
    let res = c
        .compile_one(&request(
            "particles.comp",
            Language::Glsl,
            Stage::Compute,
            Target::SpirV,
        ))
        .unwrap();
    assert_eq!(res.workgroup_size, [64, 1, 1]);
    assert_eq!(
        res.bindings
            .iter()
            .map(|b| (b.binding, b.kind))
            .collect::<Vec<_>>(),
        [
            (0, BindingKind::StorageBuffer),
            (1, BindingKind::UniformBuffer)
        ]
    );
}

#[test]
fn compile_errors_carry_file_and_line_and_the_second_ask_is_a_negative_hit() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let r = request(
        "broken.frag",
        Language::Glsl,
        Stage::Fragment,
        Target::SpirV,
    );
    let first = c.compile_one(&r).unwrap();
    assert_eq!(first.status, ResultStatus::CompileError);
    assert_eq!(first.origin, Origin::Fresh);
    let e = first.errors().next().expect("an error diagnostic");
    assert_eq!((e.file.as_str(), e.line), ("common/broken.glsl", 4), "{e}");
    assert_eq!(e.severity, Severity::Error);
    assert!(e.to_string().starts_with("common/broken.glsl:4"), "{e}");
    let second = c.compile_one(&r).unwrap();
    assert_eq!(second.status, ResultStatus::CompileError);
    assert_eq!(second.origin, Origin::Hit);
    assert_eq!(second.diagnostics, first.diagnostics);
    let s = c.compile_stats().unwrap();
    assert_eq!((s.compiles, s.failures, s.negative_hits), (1, 1, 1));
    // An error in the source itself points at the source.
    let r = request(
        "syntax_error.frag",
        Language::Glsl,
        Stage::Fragment,
        Target::SpirV,
    );
    let res = c.compile_one(&r).unwrap();
    assert_eq!(res.status, ResultStatus::CompileError);
    let e = res.errors().next().unwrap();
    assert_eq!((e.file.as_str(), e.line), ("<source>", 5), "{e}");
}

#[test]
fn include_traversal_and_absolute_paths_outside_are_refused() {
    let d = Daemon::start(&[]);
    let c = d.client();
    for inc in [
        "../../etc/passwd",
        "../../../../../../../etc/passwd",
        "/etc/passwd",
        "/etc/hostname",
    ] {
        let src = format!("#version 450\n#include \"{inc}\"\nvoid main() {{}}\n");
        let mut r = CompileRequest::new(Language::Glsl, Stage::Fragment, Target::SpirV, src);
        r.include_dirs = vec![shaders().join("common").to_string_lossy().into_owned()];
        let res = c.compile_one(&r).unwrap();
        assert_eq!(res.status, ResultStatus::Failed, "{inc}");
        let e = &res.diagnostics[0];
        assert!(e.message.contains("refused"), "{inc}: {e}");
        assert_eq!((e.file.as_str(), e.line), ("<source>", 2));
    }
    // The include map cannot climb above its root either.
    let mut r = CompileRequest::new(
        Language::Glsl,
        Stage::Fragment,
        Target::SpirV,
        "#include \"../x.glsl\"\n",
    );
    r.include_map = vec![spark_client::spark_proto::compile::IncludeFile {
        path: "x.glsl".into(),
        content: "".into(),
    }];
    let res = c.compile_one(&r).unwrap();
    assert_eq!(res.status, ResultStatus::Failed);
    assert!(res.diagnostics[0].message.contains("refused"));
}

#[test]
fn editing_an_included_file_recompiles_and_reverting_hits() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("common")).unwrap();
    let inc = dir.path().join("common/lighting.glsl");
    let original = read("common/lighting.glsl");
    std::fs::write(&inc, &original).unwrap();
    let mut r = CompileRequest::new(
        Language::Glsl,
        Stage::Fragment,
        Target::SpirV,
        read("lit.frag"),
    );
    r.include_dirs = vec![dir.path().to_string_lossy().into_owned()];
    let a = c.compile_one(&r).unwrap();
    ok(&a);
    assert_eq!(a.origin, Origin::Fresh);
    assert_eq!(c.compile_one(&r).unwrap().origin, Origin::Hit);
    // Same size, same mtime granularity: only the content differs.
    std::fs::write(
        &inc,
        original.replace("max(dot(n, l), 0.0)", "max(dot(n, l), 0.1)"),
    )
    .unwrap();
    let b = c.compile_one(&r).unwrap();
    ok(&b);
    assert_eq!(
        b.origin,
        Origin::Fresh,
        "an edited include must compile again"
    );
    assert_ne!(b.key, a.key);
    assert_ne!(b.output, a.output);
    std::fs::write(&inc, &original).unwrap();
    let again = c.compile_one(&r).unwrap();
    assert_eq!(again.origin, Origin::Hit);
    assert_eq!((again.key, &again.output), (a.key, &a.output));
    assert_eq!(c.compile_stats().unwrap().compiles, 2);
}

#[test]
fn a_batch_returns_every_permutation_matched_to_its_index() {
    let d = Daemon::start(&["--compile-jobs", "2"]);
    let c = d.client();
    let mut r = request("lit.frag", Language::Glsl, Stage::Fragment, Target::SpirV);
    r.permutations = (1..=4)
        .flat_map(|n| {
            [
                vec![format!("LIGHTS={n}")],
                vec![format!("LIGHTS={n}"), "FOG".into()],
            ]
        })
        .collect();
    let mut arrived = Vec::new();
    c.compile_each(&r, |res| arrived.push(res.index)).unwrap();
    let mut sorted = arrived.clone();
    sorted.sort();
    assert_eq!(sorted, (0..8).collect::<Vec<u16>>());
    let results = c.compile(&r).unwrap();
    assert!(results.iter().all(|x| x.origin == Origin::Hit));
    // Each result is its permutation's: the same as compiling that define set alone.
    for (i, defines) in r.permutations.iter().enumerate() {
        let mut one = r.clone();
        one.permutations = vec![defines.clone()];
        let alone = c.compile_one(&one).unwrap();
        assert_eq!(alone.key, results[i].key, "permutation {i}");
        assert_eq!(alone.output, results[i].output, "permutation {i}");
        spirv_val(&results[i].output, &format!("lit.frag permutation {i}"));
    }
    let distinct: std::collections::HashSet<_> = results.iter().map(|x| x.key).collect();
    assert_eq!(distinct.len(), 8);
    let s = c.compile_stats().unwrap();
    assert_eq!((s.compiles, s.jobs, s.queue_depth, s.running), (8, 2, 0, 0));
    assert!(s.p50_us > 0 && s.max_us >= s.p99_us);
    // The counters also appear in the compile namespace's listing.
    let ns = c.namespaces().unwrap();
    let compile = ns
        .iter()
        .find(|n| n.name == "compile")
        .expect("compile namespace");
    assert_eq!(compile.service, 4);
    assert!(
        compile
            .counters
            .iter()
            .any(|(k, v)| k == "compiles" && *v == 8)
    );
    assert!(
        compile
            .counters
            .iter()
            .any(|(k, v)| k == "entries" && *v == 8)
    );
}

#[test]
fn bad_requests_get_clear_failures() {
    let d = Daemon::start(&[]);
    let c = d.client();
    // naga does not read HLSL.
    let r = with_backend(
        request("shade.hlsl", Language::Hlsl, Stage::Fragment, Target::SpirV),
        Backend::Naga,
    );
    let res = c.compile_one(&r).unwrap();
    assert_eq!(res.status, ResultStatus::Failed);
    assert!(
        res.diagnostics[0].message.contains("no backend"),
        "{:?}",
        res.diagnostics
    );
    // A define that is not NAME or NAME=VALUE.
    let r = with_defines(
        request("lit.frag", Language::Glsl, Stage::Fragment, Target::SpirV),
        &["1X"],
    );
    let res = c.compile_one(&r).unwrap();
    assert_eq!(res.status, ResultStatus::Failed);
    // Over the input limit.
    let d2 = Daemon::start(&["--compile-max-input-kb", "1"]);
    let big = format!("#version 450\n//{}\nvoid main(){{}}\n", "x".repeat(2000));
    let r = CompileRequest::new(Language::Glsl, Stage::Fragment, Target::SpirV, big);
    let res = d2.client().compile_one(&r).unwrap();
    assert_eq!(res.status, ResultStatus::Failed);
    assert!(
        res.diagnostics[0].message.contains("exceed"),
        "{:?}",
        res.diagnostics
    );
}
