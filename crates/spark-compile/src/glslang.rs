//! `glslangValidator` (Debian `glslang-tools`): its command line and its output, for GLSL and HLSL to SPIR-V.
//!
//! The daemon runs it as a subprocess (a crash or hang there is a failed job, never a dead daemon); this
//! module only says what to run and reads what it printed, so it is testable without the tool.

use crate::{Diagnostic, Job, Language, Severity, Stage};

/// The executable's name, looked up on `PATH` unless the daemon is told another path.
pub const PROGRAM: &str = "glslangValidator";
/// The Debian package that provides it, for error messages.
pub const PACKAGE: &str = "glslang-tools";

/// The input file's name inside the job's temporary directory (glslang wants a stage extension).
pub fn input_name(job: &Job) -> &'static str {
    match (job.language, job.stage) {
        (Language::Hlsl, _) => "input.hlsl",
        (_, Stage::Vertex) => "input.vert",
        (_, Stage::Fragment) => "input.frag",
        (_, Stage::Compute) => "input.comp",
    }
}

/// Arguments for compiling `input` to `output`.
pub fn args(job: &Job, input: &str, output: &str) -> Vec<String> {
    let mut a = vec!["-V".to_string(), "-S".into(), job.stage.name().into()];
    if job.language == Language::Hlsl {
        // A bare `-D` means "the input is HLSL" to glslangValidator.
        a.push("-D".into());
        a.push("-e".into());
        a.push(job.entry.clone());
    }
    if job.spirv_version != 0 {
        a.push("--target-env".into());
        a.push(format!(
            "spirv{}.{}",
            job.spirv_version >> 8,
            job.spirv_version & 0xff
        ));
    }
    if job.flags & spark_proto::compile::FLAG_DEBUG != 0 {
        a.push("-g".into());
    }
    for d in &job.defines {
        a.push(format!("-D{d}"));
    }
    a.extend(["-o".into(), output.into(), input.into()]);
    a
}

/// Reads glslang's stdout: lines `ERROR: <file>:<line>: message` and `WARNING: …`, mapped back through the
/// include line map. Summary lines (`1 compilation errors. No code generated.`) are dropped when a located
/// error exists.
pub fn parse_output(job: &Job, text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for line in text.lines() {
        let (severity, rest) = if let Some(r) = line.strip_prefix("ERROR: ") {
            (Severity::Error, r)
        } else if let Some(r) = line.strip_prefix("WARNING: ") {
            (Severity::Warning, r)
        } else {
            continue;
        };
        out.push(locate(job, severity, rest));
    }
    if out.iter().any(|d| d.line != 0) {
        out.retain(|d| d.line != 0);
    }
    out
}

fn locate(job: &Job, severity: Severity, rest: &str) -> Diagnostic {
    // `<file>:<line>: message`: the file is our temporary input (or glslang's `0:` string number).
    let mut parts = rest.splitn(3, ':');
    let (file, line, msg) = (parts.next(), parts.next(), parts.next());
    if let (Some(_), Some(l), Some(m)) = (file, line, msg)
        && let Ok(l) = l.trim().parse::<u32>()
    {
        let (file, line) = job.expanded.locate(l);
        return Diagnostic {
            severity,
            file,
            line,
            column: 0,
            message: m.trim().to_string(),
        };
    }
    Diagnostic {
        severity,
        file: crate::include::SOURCE_NAME.into(),
        line: 0,
        column: 0,
        message: rest.trim().to_string(),
    }
}

/// The compiler identity from `glslangValidator --version`'s output: `glslangValidator <version>`.
pub fn identity_from_version_output(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains("Glslang Version"))?;
    let v = line.split_once(':')?.1.trim();
    Some(format!("{PROGRAM} {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::include::IncludeSources;
    use crate::{Backend, Target};
    use spark_proto::compile::IncludeFile;

    fn job() -> Job {
        let map = vec![IncludeFile {
            path: "l.glsl".into(),
            content: "a\nb\n".into(),
        }];
        Job {
            language: Language::Glsl,
            stage: Stage::Fragment,
            target: Target::SpirV,
            backend: Backend::Glslang,
            flags: 1,
            spirv_version: 0x0103,
            entry: "main".into(),
            defines: vec!["A=1".into()],
            expanded: IncludeSources::new(&[], &map)
                .expand("#version 450\n#include \"l.glsl\"\nc\n", 1 << 20)
                .unwrap(),
        }
    }

    #[test]
    fn arguments() {
        assert_eq!(
            args(&job(), "in.frag", "out.spv"),
            [
                "-V",
                "-S",
                "frag",
                "--target-env",
                "spirv1.3",
                "-g",
                "-DA=1",
                "-o",
                "out.spv",
                "in.frag"
            ]
        );
    }

    #[test]
    fn errors_map_to_the_included_file() {
        let out = "/tmp/x/input.frag\nERROR: /tmp/x/input.frag:3: 'b' : undeclared identifier\n\
                   ERROR: 1 compilation errors.  No code generated.\n";
        let d = parse_output(&job(), out);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].file.as_str(), d[0].line), ("l.glsl", 2));
        assert!(d[0].message.contains("undeclared"));
    }

    #[test]
    fn identity() {
        let v = "Glslang Version: 11:12.0.0\nESSL Version: OpenGL ES GLSL 3.20 glslang Khronos. 12.0.0\n";
        assert_eq!(
            identity_from_version_output(v).as_deref(),
            Some("glslangValidator 11:12.0.0")
        );
    }
}
