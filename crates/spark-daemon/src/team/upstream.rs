//! The seam between the team tier and a shared store: [`Upstream`] (get a blob, put a blob), with one
//! implementation over OpenDAL ([`OpendalUpstream`]): Redis in every build, S3 with the `team-s3` feature;
//! GCS and Azure Blob are one more OpenDAL service each.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub type UpFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, UpstreamError>> + Send + 'a>>;

/// An upstream request that failed (not a miss: a miss is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

/// A shared blob store the team tier reads through and writes behind to.
pub trait Upstream: Send + Sync + 'static {
    /// The value under `key`, `None` if there is none.
    fn get<'a>(&'a self, key: &'a str) -> UpFuture<'a, Option<Bytes>>;
    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> UpFuture<'a, ()>;
    /// For logs and stats: the kind and address, never credentials.
    fn describe(&self) -> String;
}

/// An OpenDAL operator as an upstream.
pub struct OpendalUpstream {
    op: opendal::Operator,
    what: String,
}

impl OpendalUpstream {
    /// The upstream a URL names: `redis://host:port`, `rediss://…`, `redis+unix:///path.sock`,
    /// `unix:///path.sock`; `s3://bucket/prefix?endpoint=URL&region=R` with the `team-s3` feature.
    pub fn from_url(url: &str) -> Result<OpendalUpstream, UpstreamError> {
        let (scheme, _) = url
            .split_once("://")
            .ok_or_else(|| UpstreamError(format!("'{url}' is not a URL")))?;
        let op = match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => {
                // OpenDAL parses the endpoint as an HTTP URI, which refuses `unix:///path` (no authority):
                // give it a placeholder host; only the path is used for a Unix socket.
                let endpoint = match url.split_once(":///") {
                    Some((s @ ("redis+unix" | "unix"), path)) => format!("{s}://localhost/{path}"),
                    _ => url.to_string(),
                };
                let b = opendal::services::Redis::default().endpoint(&endpoint);
                opendal::Operator::new(b).map(|o| o.finish())
            }
            "s3" => return s3(url),
            other => return Err(UpstreamError(format!("no upstream for scheme '{other}'"))),
        }
        .map_err(|e| UpstreamError(format!("cannot set up upstream {url}: {e}")))?;
        Ok(OpendalUpstream {
            op,
            what: redact(url),
        })
    }
}

/// The URL without a password (`redis://user:secret@host` → `redis://user:…@host`).
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (cred, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:…@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(feature = "team-s3")]
fn s3(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    let rest = url.trim_start_matches("s3://");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, root) = path.split_once('/').unwrap_or((path, ""));
    let mut b = opendal::services::S3::default()
        .bucket(bucket)
        .root(&format!("/{root}"));
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("endpoint", v)) => b = b.endpoint(v),
            Some(("region", v)) => b = b.region(v),
            _ => {
                return Err(UpstreamError(format!(
                    "{url}: unknown S3 option '{kv}' (endpoint, region)"
                )));
            }
        }
    }
    let op = opendal::Operator::new(b)
        .map_err(|e| UpstreamError(format!("cannot set up upstream {url}: {e}")))?
        .finish();
    Ok(OpendalUpstream {
        op,
        what: format!("s3://{path}"),
    })
}

#[cfg(not(feature = "team-s3"))]
fn s3(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    Err(UpstreamError(format!(
        "{url}: this sparkd was built without S3 support; rebuild with `--features team-s3`"
    )))
}

impl Upstream for OpendalUpstream {
    fn get<'a>(&'a self, key: &'a str) -> UpFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            match self.op.read(key).await {
                Ok(buf) => Ok(Some(buf.to_bytes())),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(UpstreamError(e.to_string())),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> UpFuture<'a, ()> {
        Box::pin(async move {
            self.op
                .write(key, value)
                .await
                .map(|_| ())
                .map_err(|e| UpstreamError(e.to_string()))
        })
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("redis://u:hunter2@h:6379"), "redis://u:…@h:6379");
        assert_eq!(
            redact("redis+unix:///run/r.sock"),
            "redis+unix:///run/r.sock"
        );
    }
}
