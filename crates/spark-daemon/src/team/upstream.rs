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
    /// `unix:///path.sock`; `s3://bucket/prefix?endpoint=URL&region=R` with the `team-s3` feature;
    /// `gs://bucket/prefix?credential_path=FILE&endpoint=URL` with `team-gcs`;
    /// `azblob://container/prefix?endpoint=URL&account_name=NAME` with `team-azblob` (the account key or a SAS
    /// token comes from `SPARK_AZBLOB_ACCOUNT_KEY` / `SPARK_AZBLOB_SAS_TOKEN`, never from the config file).
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
            "gs" | "gcs" => return gcs(url),
            "azblob" => return azblob(url),
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

/// A bucket URL's parts: the bucket (or container), the root (`/prefix`) and the `key=value` options.
pub(crate) type BucketUrl<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);

/// A bucket URL, `scheme://bucket/prefix?key=value&…`, as its bucket, root (`/prefix`) and options. An
/// option not in `allowed` is an error naming the ones that are.
pub(crate) fn bucket_url<'a>(
    url: &'a str,
    allowed: &[&str],
) -> Result<BucketUrl<'a>, UpstreamError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, root) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(UpstreamError(format!(
            "{url}: no bucket or container named"
        )));
    }
    let mut opts = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some((k, v)) if allowed.contains(&k) => opts.push((k, v)),
            _ => {
                return Err(UpstreamError(format!(
                    "{url}: unknown option '{kv}' (known: {})",
                    allowed.join(", ")
                )));
            }
        }
    }
    Ok((bucket, format!("/{root}"), opts))
}

#[cfg(any(feature = "team-s3", feature = "team-gcs", feature = "team-azblob"))]
fn finish<B: opendal::Builder>(
    url: &str,
    b: B,
    what: String,
) -> Result<OpendalUpstream, UpstreamError> {
    let op = opendal::Operator::new(b)
        .map_err(|e| UpstreamError(format!("cannot set up upstream {url}: {e}")))?
        .finish();
    Ok(OpendalUpstream { op, what })
}

#[cfg(feature = "team-s3")]
fn s3(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    let (bucket, root, opts) = bucket_url(url, &["endpoint", "region"])?;
    let mut b = opendal::services::S3::default().bucket(bucket).root(&root);
    for (k, v) in opts {
        b = match k {
            "endpoint" => b.endpoint(v),
            _ => b.region(v),
        };
    }
    finish(url, b, format!("s3://{bucket}{root}"))
}

#[cfg(feature = "team-gcs")]
fn gcs(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    let (bucket, root, opts) = bucket_url(url, &["credential_path", "endpoint"])?;
    let mut b = opendal::services::Gcs::default().bucket(bucket).root(&root);
    for (k, v) in opts {
        b = match k {
            "credential_path" => b.credential_path(v),
            _ => b.endpoint(v),
        };
    }
    finish(url, b, format!("gs://{bucket}{root}"))
}

#[cfg(feature = "team-azblob")]
fn azblob(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    let (container, root, opts) = bucket_url(url, &["endpoint", "account_name"])?;
    let mut b = opendal::services::Azblob::default()
        .container(container)
        .root(&root);
    for (k, v) in opts {
        b = match k {
            "endpoint" => b.endpoint(v),
            _ => b.account_name(v),
        };
    }
    // Secrets stay out of the config file (which --print-config shows).
    if let Ok(key) = std::env::var("SPARK_AZBLOB_ACCOUNT_KEY") {
        b = b.account_key(&key);
    }
    if let Ok(sas) = std::env::var("SPARK_AZBLOB_SAS_TOKEN") {
        b = b.sas_token(&sas);
    }
    finish(url, b, format!("azblob://{container}{root}"))
}

/// An upstream of a kind this build leaves out: a clear error naming the feature to build with.
#[allow(dead_code)]
fn not_built(url: &str, kind: &str, feature: &str) -> Result<OpendalUpstream, UpstreamError> {
    // The options are still checked, so a typo is reported even by a build without the backend.
    Err(UpstreamError(format!(
        "{url}: this sparkd was built without {kind} support; rebuild with `--features {feature}`"
    )))
}

#[cfg(not(feature = "team-s3"))]
fn s3(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    bucket_url(url, &["endpoint", "region"])?;
    not_built(url, "S3", "team-s3")
}

#[cfg(not(feature = "team-gcs"))]
fn gcs(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    bucket_url(url, &["credential_path", "endpoint"])?;
    not_built(url, "Google Cloud Storage", "team-gcs")
}

#[cfg(not(feature = "team-azblob"))]
fn azblob(url: &str) -> Result<OpendalUpstream, UpstreamError> {
    bucket_url(url, &["endpoint", "account_name"])?;
    not_built(url, "Azure Blob", "team-azblob")
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
    use super::{OpendalUpstream, bucket_url, redact};

    #[test]
    fn bucket_urls_split_into_bucket_root_and_known_options() {
        let (b, root, opts) = bucket_url(
            "s3://cache/team/v1?endpoint=http://127.0.0.1:9000&region=eu",
            &["endpoint", "region"],
        )
        .unwrap();
        assert_eq!((b, root.as_str()), ("cache", "/team/v1"));
        assert_eq!(
            opts,
            vec![("endpoint", "http://127.0.0.1:9000"), ("region", "eu")]
        );
        let (b, root, opts) = bucket_url("gs://studio-cache", &["credential_path"]).unwrap();
        assert_eq!((b, root.as_str(), opts.len()), ("studio-cache", "/", 0));
        let e =
            bucket_url("azblob://c/p?acount_name=x", &["endpoint", "account_name"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown option 'acount_name=x' (known: endpoint, account_name)"),
            "{e}"
        );
        assert!(bucket_url("s3:///x", &[]).is_err(), "no bucket");
    }

    #[test]
    fn every_cloud_scheme_is_recognised_and_a_missing_backend_names_its_feature() {
        for (url, feature) in [
            (
                "s3://b/p?region=eu-west-1&endpoint=http://127.0.0.1:9",
                "team-s3",
            ),
            ("gs://b/p?endpoint=http://127.0.0.1:9", "team-gcs"),
            (
                "azblob://c/p?account_name=studio&endpoint=http://127.0.0.1:9/studio",
                "team-azblob",
            ),
        ] {
            match OpendalUpstream::from_url(url) {
                // Built with the backend: configured (nothing is contacted until a request).
                Ok(_) => {}
                Err(e) => assert!(e.to_string().contains(feature), "{url}: {e}"),
            }
        }
        let e = OpendalUpstream::from_url("ftp://x/y").err().unwrap();
        assert!(
            e.to_string().contains("no upstream for scheme 'ftp'"),
            "{e}"
        );
        let e = OpendalUpstream::from_url("gs://b/p?regon=x").err().unwrap();
        assert!(e.to_string().contains("unknown option"), "{e}");
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("redis://u:hunter2@h:6379"), "redis://u:…@h:6379");
        assert_eq!(
            redact("redis+unix:///run/r.sock"),
            "redis+unix:///run/r.sock"
        );
    }
}
