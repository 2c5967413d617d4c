//! Operator commands: `verify [NAMESPACE]` (every checksum, corrupt entries dropped) and
//! `trim NAMESPACE --to SIZE` (evict down to a size now).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use spark_client::Client;
use spark_client::spark_proto::operator::{
    Trim, TrimResponse, Verify, VerifyProgress, VerifyResponse,
};
use spark_client::spark_proto::service;

use crate::Failure;
use crate::output::human_bytes;

/// `sparkctl verify [NAMESPACE]`: each namespace in turn (all of them by default). Exit 0 even when corrupt
/// entries were found and dropped: the cache is consistent again; the report says what was lost.
pub fn verify(client: &Client, only: Option<&str>, json_out: bool) -> Result<(), Failure> {
    let names: Vec<String> = match only {
        Some(n) => vec![n.to_string()],
        None => client.namespaces()?.into_iter().map(|n| n.name).collect(),
    };
    let bar = !json_out && std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for name in &names {
        let r = verify_one(client, name, bar, json_out)?;
        if json_out {
            results.push(
                json!({"namespace": name, "checked": r.checked, "bytes": r.bytes,
                "corrupt": r.corrupt, "memory_only": r.memory_only}),
            );
        } else {
            let mem = if r.memory_only > 0 {
                format!(
                    " ({} in memory only, nothing on disk to check)",
                    r.memory_only
                )
            } else {
                String::new()
            };
            outln!(
                "{name}: {} entries checked ({}), {} corrupt{}{mem}",
                r.checked,
                human_bytes(r.bytes),
                r.corrupt,
                if r.corrupt > 0 { " and dropped" } else { "" }
            );
        }
    }
    if json_out {
        outln!("{}", json!({"namespaces": results}));
    }
    Ok(())
}

/// Runs one namespace's verify; meanwhile another thread shows its progress events (a bar on a terminal,
/// a plain line per event otherwise).
fn verify_one(
    client: &Client,
    name: &str,
    bar: bool,
    quiet: bool,
) -> Result<VerifyResponse, Failure> {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let progress = s.spawn(|| show_progress(client, name, bar, quiet, &done));
        let r = client.call::<Verify, VerifyResponse>(
            service::CONTROL,
            &Verify {
                namespace: name.to_string(),
            },
        );
        done.store(true, Ordering::SeqCst);
        let _ = progress.join();
        r.map_err(Failure::from)
    })
}

fn show_progress(client: &Client, name: &str, bar: bool, quiet: bool, done: &AtomicBool) {
    let pb = bar.then(|| {
        let pb = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{bar:40}] {pos}/{len} entries, {msg} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        pb.set_style(style);
        pb.set_prefix(name.to_string());
        pb
    });
    let mut last_line = 0u64;
    loop {
        let ev = client.next_event(Duration::from_millis(50));
        let p = match ev {
            Ok(Some(e)) => match e.decode::<VerifyProgress>(service::CONTROL) {
                Ok(Some(p)) if p.namespace == name => Some(p),
                _ => None,
            },
            Ok(None) => None,
            Err(_) => break,
        };
        if let Some(p) = p {
            if let Some(pb) = &pb {
                pb.set_length(p.total);
                pb.set_position(p.checked);
                pb.set_message(format!("{} corrupt", p.corrupt));
            } else if !quiet && (p.checked == p.total || p.checked >= last_line + p.total / 10) {
                // Plain lines for logs: about every tenth, and the end.
                last_line = p.checked;
                eprintln!(
                    "{name}: {}/{} entries checked, {} corrupt",
                    p.checked, p.total, p.corrupt
                );
            }
        } else if done.load(Ordering::SeqCst) {
            break;
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
}

/// `sparkctl trim NAMESPACE --to SIZE`.
pub fn trim(client: &Client, name: &str, to: &str, json_out: bool) -> Result<(), Failure> {
    let target = parse_size(to).map_err(Failure::Usage)?;
    let r: TrimResponse = client.call(
        service::CONTROL,
        &Trim {
            namespace: name.to_string(),
            target_bytes: target,
        },
    )?;
    if json_out {
        outln!(
            "{}",
            json!({"namespace": name, "evicted": r.evicted, "bytes_before": r.bytes_before,
                "bytes_after": r.bytes_after})
        );
    } else {
        outln!(
            "{name}: evicted {} entries, {} -> {}",
            r.evicted,
            human_bytes(r.bytes_before),
            human_bytes(r.bytes_after)
        );
    }
    Ok(())
}

/// `1048576`, `512K`, `64M`, `1.5G`, `2GiB`, `10GB`: binary units (K = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (try 512M, 10G or a number of bytes)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("'{s}': unknown unit '{u}' (use K, M, G or T)")),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3X").unwrap_err().contains("unknown unit"));
    }
}
