//! The in-process backend: naga reads WGSL and GLSL (440+) and writes SPIR-V, MSL, HLSL and GLSL.
//!
//! Parse and validation errors become diagnostics mapped back through the include line map. Reflection comes
//! from the module: the resource bindings the entry point uses, and its workgroup size.

use naga::back::{glsl as glsl_out, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ImageClass, Module, ShaderStage, TypeInner};

use crate::{
    Binding, BindingKind, Compiled, Diagnostic, Job, Language, Outcome, Severity, Stage, Target,
};

/// The naga release this crate is built with (checked against Cargo.lock by a test): part of every key.
pub const NAGA_VERSION: &str = "25.0.1";

/// The compiler identity naga results carry and the key hashes.
pub fn identity() -> String {
    format!("naga {NAGA_VERSION}")
}

fn naga_stage(s: Stage) -> ShaderStage {
    match s {
        Stage::Vertex => ShaderStage::Vertex,
        Stage::Fragment => ShaderStage::Fragment,
        Stage::Compute => ShaderStage::Compute,
    }
}

fn diag(job: &Job, line: u32, column: u32, message: String) -> Diagnostic {
    let (file, line) = if line == 0 {
        (crate::include::SOURCE_NAME.to_string(), 0)
    } else {
        job.expanded.locate(line)
    };
    Diagnostic {
        severity: Severity::Error,
        file,
        line,
        column,
        message,
    }
}

/// Full error text: the error and its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The source text naga parses: for WGSL, which has no preprocessor, each define becomes a leading
/// `const NAME = VALUE;` (a bare `NAME` is `true`); the line map gets matching `<defines>` lines.
fn parse(job: &Job) -> Result<Module, Vec<Diagnostic>> {
    let text = &job.expanded.text;
    match job.language {
        Language::Wgsl => naga::front::wgsl::parse_str(text).map_err(|e| {
            let (l, c) = e
                .location(text)
                .map_or((0, 0), |l| (l.line_number, l.line_position));
            vec![diag(job, l, c, e.message().to_string())]
        }),
        Language::Glsl => {
            let mut options = naga::front::glsl::Options::from(naga_stage(job.stage));
            options.defines.extend(job.define_pairs());
            naga::front::glsl::Frontend::default()
                .parse(&options, text)
                .map_err(|errs| {
                    errs.errors
                        .iter()
                        .map(|e| {
                            let loc = e.meta.location(text);
                            let (l, c) = if e.meta.is_defined() {
                                (loc.line_number, loc.line_position)
                            } else {
                                (0, 0)
                            };
                            diag(job, l, c, e.kind.to_string())
                        })
                        .collect()
                })
        }
        Language::Hlsl => Err(vec![diag(
            job,
            0,
            0,
            "naga does not read HLSL; use the glslang backend".into(),
        )]),
    }
}

/// Prepends the WGSL define constants (see [`parse`]) to the job's expanded text and line map.
fn with_wgsl_defines(job: &Job) -> Job {
    let mut job = job.clone();
    if job.language != Language::Wgsl || job.defines.is_empty() {
        return job;
    }
    let pairs = job.define_pairs_raw();
    let ex = &mut job.expanded;
    let mut text = String::new();
    let file = ex.file_names.len() as u32;
    ex.file_names.push("<defines>".into());
    let mut lines = Vec::new();
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        let value = value.unwrap_or_else(|| "true".into());
        text.push_str(&format!("const {name} = {value};\n"));
        lines.push((file, i as u32 + 1));
    }
    text.push_str(&ex.text);
    lines.extend_from_slice(&ex.lines);
    ex.text = text;
    ex.lines = lines;
    job
}

impl Job {
    fn define_pairs_raw(&self) -> Vec<(String, Option<String>)> {
        self.defines
            .iter()
            .map(|d| match d.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (d.clone(), None),
            })
            .collect()
    }
}

/// Compiles one job. Never panics on bad input (naga reports errors); the daemon still runs it where a panic
/// is caught, since a naga bug must not take the daemon down.
pub fn compile(job: &Job) -> Outcome {
    let job = &with_wgsl_defines(job);
    let module = match parse(job) {
        Ok(m) => m,
        Err(d) => return Outcome::Errors(d),
    };
    let info = match Validator::new(ValidationFlags::all(), Capabilities::all()).validate(&module) {
        Ok(i) => i,
        Err(e) => {
            let (l, c) = e
                .location(&job.expanded.text)
                .map_or((0, 0), |l| (l.line_number, l.line_position));
            return Outcome::Errors(vec![diag(job, l, c, chain(e.as_inner()))]);
        }
    };
    let stage = naga_stage(job.stage);
    let Some(ep_index) = module
        .entry_points
        .iter()
        .position(|ep| ep.stage == stage && ep.name == job.entry)
    else {
        let names: Vec<&str> = module
            .entry_points
            .iter()
            .filter(|e| e.stage == stage)
            .map(|e| e.name.as_str())
            .collect();
        return Outcome::Errors(vec![diag(
            job,
            0,
            0,
            format!(
                "no {} entry point named {:?} (found: {names:?})",
                job.stage.name(),
                job.entry
            ),
        )]);
    };
    let output = match write(job, &module, &info, stage) {
        Ok(o) => o,
        Err(e) => return Outcome::Errors(vec![diag(job, 0, 0, e)]),
    };
    let ep_info = info.get_entry_point(ep_index);
    let mut bindings: Vec<Binding> = module
        .global_variables
        .iter()
        .filter(|(h, _)| !ep_info[*h].is_empty())
        .filter_map(|(_, var)| {
            let rb = var.binding.as_ref()?;
            Some(Binding {
                set: rb.group,
                binding: rb.binding,
                kind: binding_kind(&module, var),
            })
        })
        .collect();
    bindings.sort();
    let ep = &module.entry_points[ep_index];
    let workgroup_size = if stage == ShaderStage::Compute {
        ep.workgroup_size
    } else {
        [0; 3]
    };
    Outcome::Compiled(Compiled {
        output,
        diagnostics: Vec::new(),
        bindings,
        workgroup_size,
    })
}

fn binding_kind(module: &Module, var: &naga::GlobalVariable) -> BindingKind {
    match var.space {
        AddressSpace::Uniform => BindingKind::UniformBuffer,
        AddressSpace::Storage { .. } => BindingKind::StorageBuffer,
        AddressSpace::Handle => match &module.types[var.ty].inner {
            TypeInner::Image {
                class: ImageClass::Storage { .. },
                ..
            } => BindingKind::StorageTexture,
            TypeInner::Image { .. } => BindingKind::SampledTexture,
            TypeInner::Sampler { .. } => BindingKind::Sampler,
            _ => BindingKind::Other,
        },
        _ => BindingKind::Other,
    }
}

fn write(
    job: &Job,
    module: &Module,
    info: &naga::valid::ModuleInfo,
    stage: ShaderStage,
) -> Result<Vec<u8>, String> {
    match job.target {
        Target::SpirV => {
            let mut flags = spv::WriterFlags::LABEL_VARYINGS;
            if job.language == Language::Wgsl {
                // WGSL's clip space has y up; Vulkan's has y down.
                flags |= spv::WriterFlags::ADJUST_COORDINATE_SPACE;
            }
            if job.flags & spark_proto::compile::FLAG_DEBUG != 0 {
                flags |= spv::WriterFlags::DEBUG;
            }
            let lang_version = match job.spirv_version {
                0 => (1, 0),
                v => ((v >> 8) as u8, (v & 0xff) as u8),
            };
            let options = spv::Options {
                lang_version,
                flags,
                ..spv::Options::default()
            };
            let pipeline = spv::PipelineOptions {
                shader_stage: stage,
                entry_point: job.entry.clone(),
            };
            let words = spv::write_vec(module, info, &options, Some(&pipeline))
                .map_err(|e| format!("SPIR-V output: {}", chain(&e)))?;
            Ok(words.iter().flat_map(|w| w.to_le_bytes()).collect())
        }
        Target::Msl => {
            let (text, _) = msl::write_string(
                module,
                info,
                &msl::Options::default(),
                &msl::PipelineOptions::default(),
            )
            .map_err(|e| format!("MSL output: {}", chain(&e)))?;
            Ok(text.into_bytes())
        }
        Target::Hlsl => {
            let mut text = String::new();
            let options = hlsl::Options::default();
            hlsl::Writer::new(&mut text, &options)
                .write(module, info, None)
                .map_err(|e| format!("HLSL output: {}", chain(&e)))?;
            Ok(text.into_bytes())
        }
        Target::Glsl => {
            let mut text = String::new();
            let options = glsl_out::Options {
                version: glsl_out::Version::Desktop(450),
                ..glsl_out::Options::default()
            };
            let pipeline = glsl_out::PipelineOptions {
                shader_stage: stage,
                entry_point: job.entry.clone(),
                multiview: None,
            };
            glsl_out::Writer::new(
                &mut text,
                module,
                info,
                &options,
                &pipeline,
                naga::proc::BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write().map(|_| ()))
            .map_err(|e| format!("GLSL output: {}", chain(&e)))?;
            Ok(text.into_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::include::IncludeSources;
    use crate::{Backend, canonical_defines};

    fn job(language: Language, stage: Stage, target: Target, src: &str, defines: &[&str]) -> Job {
        let defines: Vec<String> = defines.iter().map(|s| s.to_string()).collect();
        Job {
            language,
            stage,
            target,
            backend: Backend::Naga,
            flags: 0,
            spirv_version: 0,
            entry: "main".into(),
            defines: canonical_defines(&defines).unwrap(),
            expanded: IncludeSources::default().expand(src, 1 << 20).unwrap(),
        }
    }

    const COMPUTE: &str = "@group(0) @binding(1) var<storage, read_write> data: array<u32>;\n\
        @compute @workgroup_size(8, 4, 1)\nfn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
        data[id.x] = data[id.x] * SCALE;\n}\n";

    #[test]
    fn wgsl_compute_to_every_target_with_reflection() {
        for target in Target::ALL {
            let j = job(
                Language::Wgsl,
                Stage::Compute,
                *target,
                COMPUTE,
                &["SCALE=2u"],
            );
            let Outcome::Compiled(c) = compile(&j) else {
                panic!("{target:?}: {:?}", compile(&j));
            };
            assert!(!c.output.is_empty());
            assert_eq!(c.workgroup_size, [8, 4, 1]);
            assert_eq!(
                c.bindings,
                vec![Binding {
                    set: 0,
                    binding: 1,
                    kind: BindingKind::StorageBuffer
                }]
            );
        }
        let j = job(
            Language::Wgsl,
            Stage::Compute,
            Target::SpirV,
            COMPUTE,
            &["SCALE=2u"],
        );
        let Outcome::Compiled(c) = compile(&j) else {
            panic!()
        };
        assert_eq!(&c.output[..4], &0x0723_0203u32.to_le_bytes());
    }

    #[test]
    fn glsl_errors_point_at_the_line() {
        let src = "#version 450\nlayout(location=0) out vec4 o;\nvoid main() {\n  o = vec4(undefined_thing);\n}\n";
        let Outcome::Errors(d) = compile(&job(
            Language::Glsl,
            Stage::Fragment,
            Target::SpirV,
            src,
            &[],
        )) else {
            panic!("compiled")
        };
        assert_eq!(d[0].file, "<source>");
        assert_eq!(d[0].line, 4, "{d:?}");
    }

    #[test]
    fn missing_entry_point_is_an_error() {
        let mut j = job(
            Language::Wgsl,
            Stage::Compute,
            Target::SpirV,
            COMPUTE,
            &["SCALE=1u"],
        );
        j.entry = "nope".into();
        let Outcome::Errors(d) = compile(&j) else {
            panic!()
        };
        assert!(d[0].message.contains("nope"), "{d:?}");
    }

    #[test]
    fn naga_version_matches_the_lock_file() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        assert!(
            lock.contains(&format!("name = \"naga\"\nversion = \"{NAGA_VERSION}\"")),
            "update NAGA_VERSION: it is part of every cache key"
        );
    }
}
