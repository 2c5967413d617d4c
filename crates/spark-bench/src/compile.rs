//! Group 7, the Compile service, on two shaders: a toy (`lit.frag`, 32 lines with its include, ~0.1 ms in naga)
//! and a production-size one (`pbr.frag`, a forward PBR material with three includes, 362 lines). For each: a
//! warm hit from this (another) process against compiling in process with naga and against running
//! glslangValidator; the cold path through sparkd against naga called directly. Then a batch of 1,000
//! permutations (of the toy) per pool size, with the p99 of an unrelated shader-cache GET while it runs.
//!
//! The daemon's cold-path overhead is a fixed cost (the request and reply crossing the socket, the hop to a
//! compile thread and back): the toy shows it bare, the production-size shader shows it against a compile of
//! the size engines run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use spark_client::ShaderKey;
use spark_client::spark_proto::compile::{
    CompileRequest, IncludeFile, Language, ResultStatus, Stage, Target,
};
use spark_compile::include::IncludeSources;
use spark_compile::{Backend, Job, canonical_defines};

use crate::groups::Ctx;
use crate::procs::{Sparkd, SparkdSpec, which};
use crate::progress;
use crate::stats::percentile;

macro_rules! shader {
    ($path:literal) => {
        include_str!(concat!("../../spark-daemon/tests/shaders/", $path))
    };
}

/// One bench shader: its source, the include map it needs, and the defines of its warm and cold requests.
pub struct BenchShader {
    pub name: &'static str,
    source: &'static str,
    includes: &'static [(&'static str, &'static str)],
    warm_defines: &'static [&'static str],
    cold_defines: &'static [&'static str],
}

const TOY: BenchShader = BenchShader {
    name: "lit.frag (toy, 32 lines)",
    source: shader!("lit.frag"),
    includes: &[("common/lighting.glsl", shader!("common/lighting.glsl"))],
    warm_defines: &["LIGHTS=4", "FOG"],
    cold_defines: &["LIGHTS=3"],
};

const PBR: BenchShader = BenchShader {
    name: "pbr.frag (production-size, 362 lines)",
    source: shader!("pbr.frag"),
    includes: &[
        ("pbr/brdf.glsl", shader!("pbr/brdf.glsl")),
        ("pbr/lights.glsl", shader!("pbr/lights.glsl")),
        ("pbr/tonemap.glsl", shader!("pbr/tonemap.glsl")),
    ],
    warm_defines: &[
        "HAS_BASE_COLOR_MAP",
        "HAS_NORMAL_MAP",
        "HAS_METAL_ROUGH_MAP",
        "HAS_OCCLUSION_MAP",
        "HAS_EMISSIVE_MAP",
    ],
    cold_defines: &["HAS_BASE_COLOR_MAP", "HAS_NORMAL_MAP", "ALPHA_MASK"],
};

/// What one shader measured (microseconds are medians over the iterations).
pub struct ShaderBench {
    pub name: &'static str,
    pub warm_hit_us: f64,
    pub naga_us: f64,
    pub glslang_us: Option<f64>,
    pub cold_daemon_us: f64,
    pub cold_naga_us: f64,
}

/// What the compile group measured.
#[derive(Default)]
pub struct CompileBench {
    /// A Ping round trip on the same connection (median): the floor under any request, warm hits included.
    pub ping_us: f64,
    pub shaders: Vec<ShaderBench>,
    /// (pool size, permutations per second) for the 1,000-permutation batch.
    pub batch: Vec<(usize, f64)>,
    pub batch_size: usize,
    pub get_p99_idle_us: f64,
    pub get_p99_during_batch_us: f64,
}

fn request(s: &BenchShader, salt: &str, defines: &[&str]) -> CompileRequest {
    let mut r = CompileRequest::new(
        Language::Glsl,
        Stage::Fragment,
        Target::SpirV,
        format!("{}// {salt}\n", s.source),
    );
    r.include_map = s
        .includes
        .iter()
        .map(|(path, content)| IncludeFile {
            path: (*path).into(),
            content: (*content).into(),
        })
        .collect();
    r.permutations = vec![defines.iter().map(|d| d.to_string()).collect()];
    r
}

fn job(r: &CompileRequest) -> Job {
    Job {
        language: r.language,
        stage: r.stage,
        target: r.target,
        backend: Backend::Naga,
        flags: r.flags,
        spirv_version: r.spirv_version,
        entry: r.entry.clone(),
        defines: canonical_defines(&r.permutations[0]).expect("valid defines"),
        expanded: IncludeSources::new(&r.include_dirs, &r.include_map)
            .expand(&r.source, 1 << 20)
            .expect("the bench shader expands"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_us(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

pub fn run(cx: &Ctx) -> Result<Option<CompileBench>> {
    if !cx.a.wants("compile") {
        return Ok(None);
    }
    let mut b = CompileBench::default();
    let d = Sparkd::start(&cx.spec)?;
    let c = d.client()?;
    let iters = if cx.a.smoke { 5 } else { 200 };
    b.ping_us = median(
        (0..iters)
            .map(|_| c.ping().map(|t| t.as_secs_f64() * 1e6))
            .collect::<Result<Vec<_>, _>>()?,
    );
    for s in [&TOY, &PBR] {
        b.shaders.push(one_shader(cx, &c, s)?);
    }
    drop(c);
    drop(d);
    batches(cx, &mut b)?;
    Ok(Some(b))
}

/// Warm hits, naga in process, glslangValidator and the cold path, for one shader.
fn one_shader(cx: &Ctx, c: &spark_client::Client, s: &BenchShader) -> Result<ShaderBench> {
    let iters = if cx.a.smoke { 5 } else { 200 };
    let cold = if cx.a.smoke { 3 } else { 40 };
    progress(&format!(
        "compile {}: warm hits vs naga in process vs glslangValidator",
        s.name
    ));
    let warm = request(s, "warm", s.warm_defines);
    if c.compile_one(&warm)?.status != ResultStatus::Ok {
        bail!("the bench shader {} does not compile", s.name);
    }
    let mut hits = Vec::new();
    for _ in 0..iters {
        hits.push(time_us(|| {
            c.compile_one(&warm).map(|_| ()).map_err(Into::into)
        })?);
    }
    let j = job(&warm);
    let naga_us = median(
        (0..iters.min(100))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(spark_compile::naga_backend::compile(&j));
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    );
    let glslang_us = glslang(&j, s.warm_defines, cold)?;
    progress(&format!(
        "compile {}: cold path through sparkd vs naga direct",
        s.name
    ));
    let mut via = Vec::new();
    let mut direct = Vec::new();
    for i in 0..cold {
        let r = request(
            s,
            &format!("cold {i} {}", std::process::id()),
            s.cold_defines,
        );
        let j = job(&r);
        direct.push(time_us(|| {
            std::hint::black_box(spark_compile::naga_backend::compile(&j));
            Ok(())
        })?);
        via.push(time_us(|| {
            c.compile_one(&r).map(|_| ()).map_err(Into::into)
        })?);
    }
    Ok(ShaderBench {
        name: s.name,
        warm_hit_us: median(hits),
        naga_us,
        glslang_us,
        cold_daemon_us: median(via),
        cold_naga_us: median(direct),
    })
}

/// glslangValidator on the expanded source, as a build system would run it; `None` when it is not installed.
fn glslang(j: &Job, defines: &[&str], n: usize) -> Result<Option<f64>> {
    let Some(bin) = which("glslangValidator") else {
        eprintln!(
            "!!! spark-bench: glslangValidator not found (Debian glslang-tools): that ratio is SKIPPED"
        );
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.frag");
    std::fs::write(&input, &j.expanded.text)?;
    let out = dir.path().join("out.spv");
    let mut times = Vec::new();
    for _ in 0..n {
        times.push(time_us(|| {
            let st = std::process::Command::new(&bin)
                .args(["-V", "-S", "frag"])
                .args(defines.iter().map(|d| format!("-D{d}")))
                .arg("-o")
                .arg(&out)
                .arg(&input)
                .stdout(std::process::Stdio::null())
                .status()?;
            if !st.success() {
                bail!("glslangValidator failed on the bench shader");
            }
            Ok(())
        })?);
    }
    Ok(Some(median(times)))
}

/// The batch of N permutations per pool size (1 .. cores), with an unrelated GET loop during the last one.
fn batches(cx: &Ctx, b: &mut CompileBench) -> Result<()> {
    let n = if cx.a.smoke { 20 } else { 1000 };
    b.batch_size = n;
    let cores = crate::report::cores();
    for jobs in 1..=cores.max(1) {
        progress(&format!(
            "compile: {n}-permutation batch, --compile-jobs {jobs}"
        ));
        let mut extra = cx.spec.extra_args.to_vec();
        extra.extend(["--compile-jobs".to_string(), jobs.to_string()]);
        let d = Sparkd::start(&SparkdSpec {
            extra_args: &extra,
            ..cx.spec
        })?;
        let mut r = request(&TOY, &format!("batch {jobs}"), &[]);
        r.permutations = (0..n)
            .map(|i| vec![format!("LIGHTS={}", 1 + i % 4), format!("VARIANT={i}")])
            .collect();
        let last = jobs == cores.max(1);
        let getter = last.then(|| get_loop(&d)).transpose()?;
        if let Some(g) = &getter {
            std::thread::sleep(Duration::from_millis(300));
            b.get_p99_idle_us = g.p99_so_far();
        }
        let c = d.client()?;
        let t = Instant::now();
        let res = c.compile(&r)?;
        let secs = t.elapsed().as_secs_f64();
        if res.iter().any(|x| x.status != ResultStatus::Ok) {
            bail!("a batch permutation failed");
        }
        b.batch.push((jobs, n as f64 / secs));
        if let Some(g) = getter {
            b.get_p99_during_batch_us = g.finish()?;
        }
    }
    Ok(())
}

struct GetLoop {
    stop: Arc<AtomicBool>,
    lat: Arc<std::sync::Mutex<Vec<f64>>>,
    handle: std::thread::JoinHandle<Result<()>>,
}

impl GetLoop {
    fn p99_so_far(&self) -> f64 {
        let v = std::mem::take(&mut *self.lat.lock().unwrap_or_else(|e| e.into_inner()));
        percentile(&v, 0.99)
    }
    fn finish(self) -> Result<f64> {
        self.stop.store(true, Ordering::Relaxed);
        let GetLoop { lat, handle, .. } = self;
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("GET loop panicked"))??;
        let v = std::mem::take(&mut *lat.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(percentile(&v, 0.99))
    }
}

/// An editor's cache GETs (4 KiB, one client) in a loop, 1 ms apart.
fn get_loop(d: &Sparkd) -> Result<GetLoop> {
    let c = d.client()?;
    let key = ShaderKey {
        source_hash: 42,
        target: 1,
        stage: 1,
    };
    c.shader()
        .put(&key, &vec![7u8; 4096])
        .context("put for the GET loop")?;
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, l) = (stop.clone(), lat.clone());
    let handle = std::thread::spawn(move || -> Result<()> {
        while !s.load(Ordering::Relaxed) {
            let t = Instant::now();
            c.shader()
                .get(&key)?
                .context("the GET loop's key vanished")?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            l.lock().unwrap_or_else(|e| e.into_inner()).push(us);
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    Ok(GetLoop { stop, lat, handle })
}

pub fn print(b: &CompileBench) {
    println!();
    println!("compile (GLSL fragment shaders with includes, naga unless noted; medians):");
    println!(
        "  ping round trip (the floor under any request)  {:.1} us",
        b.ping_us
    );
    for s in &b.shaders {
        println!("  {}", s.name);
        println!(
            "    warm hit from another process  {:>10.1} us",
            s.warm_hit_us
        );
        println!("    naga in process                {:>10.1} us", s.naga_us);
        match s.glslang_us {
            Some(g) => println!("    glslangValidator (a process)   {g:>10.1} us"),
            None => println!("    glslangValidator               SKIPPED (not installed)"),
        }
        println!(
            "    cold: via sparkd {:.1} us, naga direct {:.1} us (overhead {:.1} us)",
            s.cold_daemon_us,
            s.cold_naga_us,
            s.cold_daemon_us - s.cold_naga_us
        );
    }
    for (jobs, rate) in &b.batch {
        println!(
            "  batch of {} (toy): --compile-jobs {jobs}: {rate:.0} permutations/s",
            b.batch_size
        );
    }
    println!(
        "  unrelated 4 KiB GET p99: idle {:.0} us, during the batch {:.0} us",
        b.get_p99_idle_us, b.get_p99_during_batch_us
    );
}

pub fn json(b: &CompileBench) -> Value {
    json!({
        "ping_us": b.ping_us,
        "shaders": b.shaders.iter().map(|s| json!({
            "name": s.name, "warm_hit_us": s.warm_hit_us, "naga_us": s.naga_us, "glslang_us": s.glslang_us,
            "cold_daemon_us": s.cold_daemon_us, "cold_naga_us": s.cold_naga_us,
        })).collect::<Vec<_>>(),
        "batch_size": b.batch_size,
        "batch": b.batch.iter().map(|(j, r)| json!({"jobs": j, "permutations_per_s": r})).collect::<Vec<_>>(),
        "get_p99_idle_us": b.get_p99_idle_us, "get_p99_during_batch_us": b.get_p99_during_batch_us,
    })
}
