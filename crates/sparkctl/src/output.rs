//! Human and JSON renderings shared by the commands.

use serde_json::{Value, json};
use spark_client::{CacheStats, NamespaceStats};

/// Bytes in the largest unit that keeps a whole number in front: 512 B, 4.0 KiB, 1.5 GiB.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// A cache service's stats as the namespace a daemon without the Namespaces message would have reported.
pub fn namespace_from_cache(name: &str, service: u16, s: &CacheStats) -> NamespaceStats {
    NamespaceStats {
        name: name.to_string(),
        service,
        counters: CacheStats::FIELDS
            .iter()
            .zip(s.values())
            .map(|(k, v)| ((*k).to_string(), v))
            .collect(),
    }
}

/// `{"name", "service", "counters": {name: value, …}}`, counters in the daemon's order.
pub fn namespace_json(ns: &NamespaceStats) -> Value {
    json!({"name": ns.name, "service": ns.service, "counters": counters_json(&ns.counters)})
}

pub fn counters_json(counters: &[(String, u64)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in counters {
        m.insert(k.clone(), json!(v));
    }
    Value::Object(m)
}

/// Counters whose values are byte counts, shown with [`human_bytes`]. A name is a size by convention:
/// `bytes_*`, `*_bytes` or `*_budget` (a budget of 0 means unbounded).
fn is_size(name: &str) -> bool {
    name.starts_with("bytes_") || name.ends_with("_bytes") || name.ends_with("_budget")
}

fn show(name: &str, v: u64) -> String {
    match v {
        0 if name.ends_with("_budget") => "unbounded".to_string(),
        v if is_size(name) => human_bytes(v),
        v => v.to_string(),
    }
}

/// The table for one namespace: the cache counters everyone knows are paired up as before (hits with
/// misses and the hit rate, usage with its budget); any other counter gets a line of its own, so a new
/// namespace or counter shows up without a sparkctl change.
pub fn namespace_table(ns: &NamespaceStats) -> String {
    let get = |k: &str| ns.counters.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let mut used: Vec<&str> = Vec::new();
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut pair = |a: &'static str, b: &'static str, fmt: &dyn Fn(u64, u64) -> String| {
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            used.extend([a, b]);
            Some(fmt(x, y))
        } else {
            None
        }
    };
    let entries = pair("entries", "entries_in_memory", &|e, m| {
        format!("{e} ({m} in memory)")
    });
    let hits = pair("hits", "misses", &|h, m| {
        let rate = match h + m {
            0 => String::new(),
            n => format!(" ({:.1}% hit rate)", 100.0 * h as f64 / n as f64),
        };
        format!("{h} / {m}{rate}")
    });
    let memory = pair("bytes_in_memory", "memory_budget", &|b, t| {
        format!("{} of {}", human_bytes(b), show("memory_budget", t))
    });
    let disk = pair("bytes_on_disk", "disk_budget", &|b, t| {
        format!("{} of {}", human_bytes(b), show("disk_budget", t))
    });
    for (label, v) in [("entries", entries), ("hits / misses", hits)] {
        if let Some(v) = v {
            lines.push((label.into(), v));
        }
    }
    if let Some(p) = get("puts") {
        used.push("puts");
        lines.push(("puts".into(), p.to_string()));
    }
    for (label, v) in [("memory", memory), ("disk", disk)] {
        if let Some(v) = v {
            lines.push((label.into(), v));
        }
    }
    for (k, v) in &ns.counters {
        if !used.contains(&k.as_str()) {
            lines.push((k.replace('_', " "), show(k, *v)));
        }
    }
    let mut out = match ns.service {
        0 => format!("{}\n", ns.name),
        s => format!("{} (service 0x{s:04x})\n", ns.name),
    };
    if lines.is_empty() {
        out.push_str("  (no counters)\n");
    }
    for (label, v) in lines {
        out.push_str(&format!("  {label:<16} {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_pick_the_unit_that_fits() {
        assert_eq!(human_bytes(15), "15 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
        assert_eq!(human_duration(3725), "1h 2m");
    }

    #[test]
    fn a_cache_namespace_reads_like_the_old_table() {
        let s = CacheStats {
            hits: 3,
            misses: 1,
            puts: 2,
            entries: 2,
            entries_in_memory: 1,
            bytes_in_memory: 4096,
            bytes_on_disk: 15,
            evictions: 0,
            corrupt_dropped: 0,
            memory_budget: 256 << 20,
            disk_budget: 0,
        };
        let t = namespace_table(&namespace_from_cache("shader", 2, &s));
        assert!(t.starts_with("shader (service 0x0002)\n"), "{t}");
        assert!(t.contains("entries          2 (1 in memory)"), "{t}");
        assert!(t.contains("hits / misses    3 / 1 (75.0% hit rate)"), "{t}");
        assert!(t.contains("memory           4.0 KiB of 256.0 MiB"), "{t}");
        assert!(t.contains("disk             15 B of unbounded"), "{t}");
        assert!(t.contains("corrupt dropped  0"), "{t}");
    }

    #[test]
    fn unknown_counters_get_their_own_lines() {
        let ns = NamespaceStats {
            name: "compile".into(),
            service: 0,
            counters: vec![("jobs".into(), 7), ("output_bytes".into(), 2048)],
        };
        let t = namespace_table(&ns);
        assert_eq!(
            t,
            "compile\n  jobs             7\n  output bytes     2.0 KiB\n"
        );
        let v = namespace_json(&ns);
        assert_eq!(v["counters"]["output_bytes"], 2048);
        assert_eq!(v["service"], 0);
    }
}
