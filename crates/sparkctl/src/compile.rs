//! `sparkctl compile`: one shader, or a batch of permutations from a JSON file, through the daemon.
//!
//! Batch file (paths relative to the JSON file):
//!
//! ```text
//! { "file": "lit.frag", "stage": "frag", "lang": "glsl", "target": "spirv", "entry": "main",
//!   "include_dirs": ["common"], "defines": ["QUALITY=2"], "output_dir": "out",
//!   "permutations": [ {"name": "lit_fog", "defines": ["FOG"]}, {"name": "lit", "defines": []} ] }
//! ```
//!
//! Each permutation's defines are added to the file-wide ones; its output is `output_dir/NAME.EXT`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use spark_client::spark_proto::compile::{
    Backend, CompileRequest, CompileResult, FLAG_DEBUG, Language, ResultStatus, Stage, Target,
};
use spark_client::{Client, CompileStats};

use crate::Failure;
use crate::args::CompileArgs;

fn usage(m: impl Into<String>) -> Failure {
    Failure::Local(m.into())
}

fn ext(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

fn language(explicit: Option<&str>, file: &Path) -> Result<Language, Failure> {
    let name = explicit
        .map(str::to_string)
        .unwrap_or_else(|| match ext(file).as_str() {
            "wgsl" => "wgsl".into(),
            "hlsl" => "hlsl".into(),
            _ => "glsl".into(),
        });
    Language::parse(&name)
        .ok_or_else(|| usage(format!("unknown language {name:?} (glsl, wgsl, hlsl)")))
}

fn stage(explicit: Option<&str>, file: &Path) -> Result<Stage, Failure> {
    let name = match explicit {
        Some(s) => s.to_string(),
        None => ext(file),
    };
    Stage::parse(&name).ok_or_else(|| {
        usage(format!(
            "cannot tell the stage of {} (--stage vert, frag or comp)",
            file.display()
        ))
    })
}

fn target_ext(t: Target) -> &'static str {
    match t {
        Target::SpirV => "spv",
        Target::Msl => "metal",
        Target::Hlsl => "hlsl",
        Target::Glsl => "glsl",
    }
}

fn spirv_version(s: Option<&str>) -> Result<u16, Failure> {
    let Some(s) = s else { return Ok(0) };
    let bad = || {
        usage(format!(
            "--spirv-version {s}: expected MAJOR.MINOR, e.g. 1.3"
        ))
    };
    let (a, b) = s.split_once('.').ok_or_else(bad)?;
    let (a, b): (u8, u8) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    Ok(u16::from(a) << 8 | u16::from(b))
}

/// Absolute, so the daemon (another working directory) finds it.
fn absolute(p: &Path) -> Result<String, Failure> {
    std::path::absolute(p)
        .map(|a| a.to_string_lossy().into_owned())
        .map_err(|e| Failure::Local(format!("{}: {e}", p.display())))
}

struct Base {
    req: CompileRequest,
    file: PathBuf,
}

fn base(
    file: &Path,
    lang: Option<&str>,
    stage_name: Option<&str>,
    target: &str,
    includes: &[PathBuf],
) -> Result<Base, Failure> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| Failure::Local(format!("{}: {e}", file.display())))?;
    let target = Target::parse(target).ok_or_else(|| {
        usage(format!(
            "unknown target {target:?} (spirv, msl, hlsl, glsl)"
        ))
    })?;
    let mut req = CompileRequest::new(
        language(lang, file)?,
        stage(stage_name, file)?,
        target,
        source,
    );
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    req.include_dirs.push(absolute(dir)?);
    for i in includes {
        req.include_dirs.push(absolute(i)?);
    }
    Ok(Base {
        req,
        file: file.to_path_buf(),
    })
}

/// Prints a result's diagnostics like a compiler, naming the source file instead of `<source>`.
fn print_diagnostics(r: &CompileResult, file: &Path) {
    for d in &r.diagnostics {
        let mut d = d.clone();
        if d.file == "<source>" {
            d.file = file.display().to_string();
        }
        eprintln!("{d}");
    }
}

fn origin(r: &CompileResult) -> &'static str {
    match r.origin {
        spark_client::Origin::Fresh => "compiled",
        spark_client::Origin::Hit => "cache hit",
        spark_client::Origin::Joined => "joined a compile in flight",
    }
}

fn result_json(r: &CompileResult, name: &str, out: Option<&Path>) -> Value {
    json!({
        "name": name, "index": r.index,
        "status": match r.status { ResultStatus::Ok => "ok", ResultStatus::CompileError => "error", ResultStatus::Failed => "failed" },
        "origin": origin(r), "compiler": r.compiler, "key": r.key_hex(), "entry": r.entry, "bytes": r.output.len(),
        "output": out.map(|p| p.display().to_string()),
        "workgroup_size": r.workgroup_size,
        "bindings": r.bindings.iter().map(|b| json!({"set": b.set, "binding": b.binding, "kind": b.kind.name()})).collect::<Vec<_>>(),
        "diagnostics": r.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
    })
}

/// Writes a successful result; returns whether it succeeded.
fn finish(
    r: &CompileResult,
    name: &str,
    file: &Path,
    out: &Path,
    json_out: bool,
) -> Result<bool, Failure> {
    print_diagnostics(r, file);
    let ok = r.status == ResultStatus::Ok;
    if ok {
        std::fs::write(out, &r.output)
            .map_err(|e| Failure::Local(format!("{}: {e}", out.display())))?;
    }
    if json_out {
        outln!("{}", result_json(r, name, ok.then_some(out)));
    } else if ok {
        outln!(
            "{name}: {} bytes to {} ({}, {})",
            r.output.len(),
            out.display(),
            origin(r),
            r.compiler
        );
    }
    Ok(ok)
}

pub fn run(client: &Client, a: &CompileArgs, json_out: bool) -> Result<(), Failure> {
    if let Some(batch) = &a.batch {
        return run_batch(client, a, batch, json_out);
    }
    let file = a
        .file
        .as_deref()
        .ok_or_else(|| usage("a FILE or --batch is needed"))?;
    let mut b = base(
        file,
        a.lang.as_deref(),
        a.stage.as_deref(),
        &a.target,
        &a.include,
    )?;
    b.req.backend = Backend::parse(&a.backend).ok_or_else(|| {
        usage(format!(
            "unknown backend {:?} (auto, naga, glslang)",
            a.backend
        ))
    })?;
    b.req.entry = a.entry.clone();
    b.req.flags = if a.debug { FLAG_DEBUG } else { 0 };
    b.req.spirv_version = spirv_version(a.spirv_version.as_deref())?;
    b.req.permutations = vec![a.define.clone()];
    let out = a.output.clone().unwrap_or_else(|| {
        file.with_extension(format!("{}.{}", ext(file), target_ext(b.req.target)))
    });
    let r = client.compile_one(&b.req)?;
    let name = file.display().to_string();
    if finish(&r, &name, &b.file, &out, json_out)? {
        Ok(())
    } else {
        Err(Failure::CompileFailed)
    }
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn run_batch(client: &Client, a: &CompileArgs, path: &Path, json_out: bool) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Local(format!("{}: {e}", path.display())))?;
    let spec: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Local(format!("{}: {e}", path.display())))?;
    let root = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = root.join(
        spec["file"]
            .as_str()
            .ok_or_else(|| usage(format!("{}: \"file\" is missing", path.display())))?,
    );
    let includes: Vec<PathBuf> = strings(&spec, "include_dirs")
        .iter()
        .map(|d| root.join(d))
        .collect();
    let target = spec["target"].as_str().unwrap_or("spirv");
    let mut b = base(
        &file,
        spec["lang"].as_str(),
        spec["stage"].as_str(),
        target,
        &includes,
    )?;
    if let Some(e) = spec["entry"].as_str() {
        b.req.entry = e.to_string();
    }
    if let Some(be) = spec["backend"].as_str() {
        b.req.backend =
            Backend::parse(be).ok_or_else(|| usage(format!("unknown backend {be:?}")))?;
    }
    let common = strings(&spec, "defines");
    let perms = spec["permutations"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            usage(format!(
                "{}: \"permutations\" must be a non-empty list",
                path.display()
            ))
        })?;
    let names: Vec<String> = perms
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p["name"]
                .as_str()
                .map_or_else(|| format!("permutation{i}"), str::to_string)
        })
        .collect();
    b.req.permutations = perms
        .iter()
        .map(|p| {
            common
                .iter()
                .cloned()
                .chain(strings(p, "defines"))
                .collect()
        })
        .collect();
    let out_dir = a
        .output
        .clone()
        .unwrap_or_else(|| root.join(spec["output_dir"].as_str().unwrap_or(".")));
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| Failure::Local(format!("{}: {e}", out_dir.display())))?;
    let ext = target_ext(b.req.target);
    let mut failed = 0usize;
    let mut local: Option<Failure> = None;
    client.compile_each(&b.req, |r| {
        let name = &names[r.index as usize];
        let out = out_dir.join(format!("{name}.{ext}"));
        match finish(&r, name, &b.file, &out, json_out) {
            Ok(true) => {}
            Ok(false) => {
                if !json_out {
                    eprintln!("{name}: failed");
                }
                failed += 1;
            }
            Err(e) => local = Some(e),
        }
    })?;
    if let Some(e) = local {
        return Err(e);
    }
    if !json_out {
        outln!(
            "{} of {} permutations compiled",
            names.len() - failed,
            names.len()
        );
    }
    if failed > 0 {
        Err(Failure::CompileFailed)
    } else {
        Ok(())
    }
}

pub fn stats(client: &Client, json_out: bool) -> Result<(), Failure> {
    let s: CompileStats = client.compile_stats()?;
    if json_out {
        let m: serde_json::Map<String, Value> = CompileStats::FIELDS
            .iter()
            .zip(s.values())
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        outln!("{}", Value::Object(m));
    } else {
        for (k, v) in CompileStats::FIELDS.iter().zip(s.values()) {
            outln!("{k:<16} {v}");
        }
    }
    Ok(())
}
