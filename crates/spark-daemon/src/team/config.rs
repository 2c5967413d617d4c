//! A namespace's upstream settings, from `[namespaces.NAME.upstream]` in sparkd.toml.

use std::time::Duration;

use crate::config::file::UpstreamFile;

/// Default per-request timeout: short, because a local request may wait this long on a sick upstream.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Default upload queue length (blobs waiting to be written behind).
pub const DEFAULT_QUEUE: usize = 1024;

/// What a namespace does with its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Reads through and writes behind (a workstation that also publishes).
    ReadWrite,
    /// Reads through only (workstations, when CI publishes).
    ReadOnly,
    /// Configured but unused.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamConfig {
    pub namespace: String,
    pub url: String,
    pub policy: Policy,
    pub timeout: Duration,
    pub queue: usize,
}

/// URL schemes an upstream may have in this build.
pub fn known_schemes() -> &'static [&'static str] {
    &["redis", "rediss", "redis+unix", "unix", "s3"]
}

impl TeamConfig {
    /// Checks one `[namespaces.NAME.upstream]` table; errors say what to write instead.
    pub fn from_file(namespace: &str, u: &UpstreamFile) -> Result<TeamConfig, String> {
        let policy = match u.policy.as_deref().unwrap_or("read-write") {
            "read-write" => Policy::ReadWrite,
            "read-only" => Policy::ReadOnly,
            "off" => Policy::Off,
            other => {
                return Err(format!(
                    "namespaces.{namespace}.upstream.policy = '{other}': use read-write, read-only or off"
                ));
            }
        };
        let scheme = u.url.split_once("://").map(|(s, _)| s);
        if !scheme.is_some_and(|s| known_schemes().contains(&s)) {
            return Err(format!(
                "namespaces.{namespace}.upstream.url = '{}': expected one of {}://…",
                u.url,
                known_schemes().join("://, ")
            ));
        }
        let timeout = u.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        if timeout.is_zero() {
            return Err(format!(
                "namespaces.{namespace}.upstream.timeout_ms must be at least 1"
            ));
        }
        Ok(TeamConfig {
            namespace: namespace.to_string(),
            url: u.url.clone(),
            policy,
            timeout,
            queue: u.queue.map_or(DEFAULT_QUEUE, |q| q.max(1) as usize),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(url: &str, policy: Option<&str>) -> UpstreamFile {
        UpstreamFile {
            url: url.into(),
            policy: policy.map(str::to_string),
            timeout_ms: None,
            queue: None,
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let c = TeamConfig::from_file("shader", &up("redis+unix:///tmp/r.sock", None)).unwrap();
        assert_eq!(
            (c.policy, c.timeout, c.queue),
            (Policy::ReadWrite, DEFAULT_TIMEOUT, DEFAULT_QUEUE)
        );
        let c =
            TeamConfig::from_file("shader", &up("s3://bucket/prefix", Some("read-only"))).unwrap();
        assert_eq!(c.policy, Policy::ReadOnly);
        let e = TeamConfig::from_file("shader", &up("redis://h", Some("sometimes"))).unwrap_err();
        assert!(e.contains("read-write, read-only or off"), "{e}");
        let e = TeamConfig::from_file("asset", &up("ftp://h", None)).unwrap_err();
        assert!(
            e.contains("namespaces.asset.upstream.url") && e.contains("redis+unix://"),
            "{e}"
        );
    }
}
