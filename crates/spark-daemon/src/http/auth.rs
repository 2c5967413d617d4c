//! The HTTP front's token: loopback TCP is reachable by every local user (unlike the 0600 socket), so every
//! request must carry the user's secret. It is created at first start in a 0600 file beside the socket and
//! accepted as `Authorization: Bearer TOKEN`, as HTTP Basic with the token as password (any user name: ccache
//! and other tools that only take a URL send `http://:TOKEN@host/...`), or, on the dashboard's own routes only,
//! as `?token=TOKEN` (a browser's EventSource cannot set headers).

#[cfg(unix)]
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use anyhow::Context;
use anyhow::bail;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// Random bytes in a new token (hex-encoded in the file: 64 characters).
#[cfg(unix)]
const TOKEN_BYTES: usize = 32;

/// The token file of the daemon whose socket is `socket`: `<socket>.token`, in the socket's directory.
pub fn token_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".token");
    socket.with_file_name(name)
}

/// The secret every HTTP request must present.
#[derive(Clone)]
pub struct Token {
    secret: String,
    path: PathBuf,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", self.path.display())
    }
}

impl Token {
    /// Reads the token file, or creates it (mode 0600, exclusively) with a new random secret. A file that is
    /// not ours, is readable by others, or is not a regular file is refused: the secret would not be secret.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Token> {
        match read_existing(path)? {
            Some(secret) => Ok(Token {
                secret,
                path: path.into(),
            }),
            None => create(path),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `offered` is the token, in time independent of where they differ.
    fn matches(&self, offered: &[u8]) -> bool {
        let want = self.secret.as_bytes();
        if offered.len() != want.len() {
            return false;
        }
        offered.iter().zip(want).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }

    /// Whether a request carries the token: a Bearer or Basic `Authorization` header, or (when
    /// `query_allowed`) a `token=` query parameter.
    pub fn admits(&self, headers: &HeaderMap, query: Option<&str>, query_allowed: bool) -> bool {
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let v = v.as_bytes();
            if let Some(t) = strip_scheme(v, b"bearer ") {
                return self.matches(t.trim_ascii());
            }
            if let Some(b) = strip_scheme(v, b"basic ") {
                let Ok(plain) = base64::engine::general_purpose::STANDARD.decode(b.trim_ascii())
                else {
                    return false;
                };
                // user:password; the user name is ignored.
                return match plain.iter().position(|&c| c == b':') {
                    Some(i) => self.matches(&plain[i + 1..]),
                    None => false,
                };
            }
            return false;
        }
        query_allowed
            && query.is_some_and(|q| {
                q.split('&')
                    .filter_map(|kv| kv.strip_prefix("token="))
                    .any(|t| self.matches(t.as_bytes()))
            })
    }

    /// The 401 answer: says how to authenticate and where the token is, never what it is.
    pub fn refusal(&self) -> Response {
        let body = format!(
            "401 Unauthorized: this sparkd HTTP endpoint needs your token. Send 'Authorization: Bearer TOKEN', or \
             HTTP Basic with the token as password (e.g. http://:TOKEN@host:port/...). The token is in {} \
             (readable only by the user running sparkd).\n",
            self.path.display()
        );
        let mut r = (StatusCode::UNAUTHORIZED, body).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sparkd\", charset=\"UTF-8\""),
        );
        r
    }
}

fn strip_scheme<'a>(v: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    (v.len() >= scheme.len() && v[..scheme.len()].eq_ignore_ascii_case(scheme))
        .then(|| &v[scheme.len()..])
}

#[cfg(unix)]
fn read_existing(path: &Path) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !meta.file_type().is_file() {
        bail!(
            "the HTTP token path {} is not a regular file; remove it and start sparkd again",
            path.display()
        );
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        bail!(
            "the HTTP token file {} belongs to another user; remove it and start sparkd again",
            path.display()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "the HTTP token file {} is readable by other users (mode {:o}); run `chmod 600 {}` or remove it \
             (a new token is made at the next start)",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .with_context(|| format!("cannot read the HTTP token file {}", path.display()))?;
    let s = s.trim().to_string();
    if s.len() < 32 || !s.bytes().all(|c| c.is_ascii_alphanumeric()) {
        bail!(
            "the HTTP token file {} does not hold a token (at least 32 letters or digits); remove it and start \
             sparkd again to make a new one",
            path.display()
        );
    }
    Ok(Some(s))
}

#[cfg(unix)]
fn create(path: &Path) -> anyhow::Result<Token> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("cannot read random bytes for the HTTP token from /dev/urandom")?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .with_context(|| format!("cannot create the HTTP token file {}", path.display()))?;
    f.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write the HTTP token file {}", path.display()))?;
    tracing::info!("created the HTTP token file {}", path.display());
    Ok(Token {
        secret,
        path: path.into(),
    })
}

/// The token file must be readable by its owner only; on Windows that takes an owner-only ACL, which is not
/// written yet, so the HTTP front refuses to start there rather than leave the secret readable.
#[cfg(not(unix))]
fn read_existing(_: &Path) -> anyhow::Result<Option<String>> {
    bail!(
        "the HTTP front (--http) is not available on Windows yet: its token file would need an owner-only \
         ACL, which is not implemented; start sparkd without --http"
    )
}

#[cfg(not(unix))]
fn create(path: &Path) -> anyhow::Result<Token> {
    read_existing(path).map(|_| unreachable!("read_existing always refuses on this platform"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            secret: "a".repeat(64),
            path: "/x/sparkd.sock.token".into(),
        }
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_basic_and_query_tokens() {
        let t = token();
        let good = "a".repeat(64);
        assert!(t.admits(&headers(&format!("Bearer {good}")), None, false));
        assert!(t.admits(&headers(&format!("bearer  {good} ")), None, false));
        assert!(!t.admits(&headers("Bearer aaaa"), None, false));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{good}"));
        assert!(t.admits(&headers(&format!("Basic {basic}")), None, false));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("me:{good}"));
        assert!(t.admits(&headers(&format!("Basic {basic}")), None, false));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{good}:"));
        assert!(!t.admits(&headers(&format!("Basic {basic}")), None, false));
        assert!(!t.admits(&headers("Basic !!!"), None, false));
        let q = format!("x=1&token={good}");
        assert!(t.admits(&HeaderMap::new(), Some(&q), true));
        assert!(
            !t.admits(&HeaderMap::new(), Some(&q), false),
            "query only where allowed"
        );
        assert!(!t.admits(&HeaderMap::new(), None, true));
    }

    #[test]
    fn the_file_is_made_0600_once_and_a_loose_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = token_path(&dir.path().join("sparkd.sock"));
        assert!(p.ends_with("sparkd.sock.token"));
        let a = Token::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Token::load_or_create(&p).unwrap();
        assert_eq!(a.secret, b.secret, "the second start reads the same token");
        assert_eq!(a.secret.len(), 64);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load_or_create(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
