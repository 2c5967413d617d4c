//! Precedence and `--print-config`: flags over environment over file over defaults.

use std::collections::HashMap;
use std::path::Path;

use super::*;

fn run(
    args: &[&str],
    env: &[(&str, &str)],
    file: Option<&str>,
) -> Result<(Resolved, tempfile::TempDir), ResolveError> {
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Never the real user's file: the default path points into the temp dir.
    env.insert("XDG_CONFIG_HOME".into(), dir.path().display().to_string());
    if let Some(text) = file {
        let p = dir.path().join("spark").join("sparkd.toml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    let mut argv: Vec<OsString> = vec!["sparkd".into(), "--memory-only".into()];
    argv.extend(args.iter().map(OsString::from));
    let r = resolve_with_env(argv, |k| env.get(k).cloned())?;
    Ok((r, dir))
}

fn file_line(r: &Resolved, line: usize) -> Source {
    Source::File {
        path: r.file.as_ref().unwrap().path.clone(),
        line,
    }
}

const FILE: &str = "\
[compile]
jobs = 3
timeout_secs = 9
glslang = \"/opt/glslangValidator\"

[watch]
settle_ms = 77
";

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let (r, _d) = run(
        &["--compile-jobs", "5"],
        &[
            ("SPARKD_COMPILE_JOBS", "4"),
            ("SPARKD_COMPILE_TIMEOUT", "8"),
        ],
        Some(FILE),
    )
    .unwrap();
    assert_eq!(r.args.compile_jobs, Some(5));
    assert_eq!(r.source("compile_jobs"), Source::Flag);
    assert_eq!(r.args.compile_timeout, 8);
    assert_eq!(
        r.source("compile_timeout"),
        Source::Env("SPARKD_COMPILE_TIMEOUT".into())
    );
    assert_eq!(r.args.watch_settle_ms, 77);
    assert_eq!(r.source("watch_settle_ms"), file_line(&r, 7));
    assert_eq!(r.args.glslang, Path::new("/opt/glslangValidator"));
    assert_eq!(r.args.watch_grace_secs, 60);
    assert_eq!(r.source("watch_grace_secs"), Source::Default);
}

#[test]
fn per_namespace_pairs_merge_by_namespace() {
    let file = "[namespaces.shader]\nmemory_share = 50\ndisk_budget_mb = 10\n[namespaces.asset]\nmemory_share = 20\n";
    let (r, _d) = run(&["--memory-share", "shader=60"], &[], Some(file)).unwrap();
    let c = Config::from_args(&r.args).unwrap();
    let mb = |n: &str| c.namespace(n).unwrap().store.memory_budget / (1024 * 1024);
    // 512 MiB budget: shader's flag (60%) wins over its file value, asset keeps the file's 20%.
    assert_eq!((mb("shader"), mb("asset")), (307, 102));
    assert_eq!(r.pair_source("memory_share", "shader"), Source::Flag);
    assert_eq!(r.pair_source("memory_share", "asset"), file_line(&r, 5));
    assert_eq!(c.namespace("shader").unwrap().store.disk_budget, 10 << 20);
}

#[test]
fn a_flag_beats_a_conflicting_file_value() {
    // --memory-only (on every run() command line) and a file cache_root: clap alone would refuse the pair.
    let (r, _d) = run(&[], &[], Some("cache_root = \"/tmp/x\"\n")).unwrap();
    assert!(r.args.memory_only && r.args.cache_root.is_none());
}

#[test]
fn bad_values_name_their_file_line_or_variable() {
    let e = run(&[], &[], Some("[store]\n\ndurability = \"slow\"\n"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("sparkd.toml:3") && e.contains("--durability=slow"),
        "{e}"
    );
    let e = run(&[], &[("SPARKD_PACK_MB", "lots")], None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("env SPARKD_PACK_MB"), "{e}");
    let e = run(&[], &[("SPARKD_EXIT_WITH_SPONSORS", "maybe")], None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected true or false"), "{e}");
}

#[test]
fn an_explicit_config_file_must_exist() {
    let e = run(&["--config", "/nonexistent/sparkd.toml"], &[], None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/sparkd.toml"), "{e}");
}

#[test]
fn print_config_shows_every_value_and_its_source() {
    let file = format!(
        "{FILE}\n[http]\nlisten = \"127.0.0.1:8080\"\n[collab]\nnats_url = \"nats://127.0.0.1:4222\"\n"
    );
    let (r, _d) = run(
        &["--compile-jobs", "5"],
        &[("RUST_LOG", "debug")],
        Some(&file),
    )
    .unwrap();
    let c = Config::from_args(&r.args).unwrap();
    let out = r.report(&c);
    let row = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no row {key} in\n{out}"))
            .to_string()
    };
    assert!(row("compile.jobs").contains("= 5") && row("compile.jobs").ends_with("# flag"));
    assert!(row("log_level").contains("\"debug\"") && row("log_level").contains("env RUST_LOG"));
    assert!(row("watch.settle_ms").contains("sparkd.toml:7"), "{out}");
    assert!(row("store.pack_mb").contains("= 64") && row("store.pack_mb").ends_with("# default"));
    assert!(
        row("namespaces.shader.memory_budget_mb").contains("even split"),
        "{out}"
    );
    assert!(row("http.listen").contains("127.0.0.1:8080"), "{out}");
    assert!(row("collab.nats_url").contains("sparkd.toml:12"), "{out}");
    // Every setting flag appears once.
    for arg in Args::command().get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_SETTINGS.contains(&id) || matches!(arg.get_action(), ArgAction::Append) {
            continue;
        }
        let key = file::KEYS
            .iter()
            .find(|(_, a)| *a == id)
            .map(|(k, _)| k.to_string());
        let key = key.unwrap_or_else(|| format!("--{}", arg.get_long().unwrap()));
        row(&key);
    }
}
