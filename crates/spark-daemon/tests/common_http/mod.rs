//! Test support for the HTTP front: a daemon with `--http`, a minimal HTTP/1.1 client over std sockets (one
//! request per connection), and a Prometheus text-format parser that checks what it reads.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use spark_testkit::Daemon;

/// A daemon serving HTTP on a free loopback port, and its token.
pub struct HttpDaemon {
    pub d: Daemon,
    pub addr: SocketAddr,
    pub token: String,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl HttpDaemon {
    pub fn start(extra: &[&str]) -> HttpDaemon {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let a = addr.to_string();
        let mut args = vec!["--http", a.as_str()];
        args.extend_from_slice(extra);
        let d = Daemon::start(&args);
        let mut name = d.socket.file_name().unwrap().to_os_string();
        name.push(".token");
        let token = std::fs::read_to_string(d.socket.with_file_name(name))
            .expect("the token file beside the socket")
            .trim()
            .to_string();
        HttpDaemon { d, addr, token }
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A request with the token as a Bearer header.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        request(
            self.addr,
            method,
            path,
            &[("Authorization", &self.bearer())],
            body,
        )
    }

    pub fn get_text(&self, path: &str) -> String {
        let r = self.call("GET", path, b"");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.text()
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the HTTP front");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// Writes a request head (with Content-Length, Connection: close).
pub fn write_head(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)], len: u64) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" || len > 0 {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
}

/// Reads a response's status line and headers.
pub fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header line");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = connect(addr);
    write_head(&mut s, method, path, headers, body.len() as u64);
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let mut body = Vec::new();
    if method != "HEAD" {
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        if chunked {
            read_chunked(&mut r, &mut body);
        } else {
            r.read_to_end(&mut body).unwrap();
        }
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn read_chunked(r: &mut impl BufRead, out: &mut Vec<u8>) {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let n = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        if n == 0 {
            return;
        }
        let start = out.len();
        out.resize(start + n, 0);
        r.read_exact(&mut out[start..]).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
    }
}

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: every sample, and each family's type.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; panics if there is not exactly one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let m: Vec<_> = self.matching(name, labels).collect();
        assert_eq!(m.len(), 1, "samples {name}{labels:?}: {m:?}");
        m[0].value
    }

    /// The value, or 0 when there is no such sample yet.
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

fn is_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses the Prometheus text format (0.0.4) strictly: HELP/TYPE lines, names, quoted and escaped label
/// values, float values; every sample must belong to a family with a TYPE; a histogram's buckets must be
/// cumulative and end in `+Inf` equal to its `_count`.
pub fn parse_prometheus(text: &str) -> Result<Scrape, String> {
    let mut out = Scrape::default();
    for (i, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            match (p.next(), p.next(), p.next()) {
                (Some("HELP"), Some(n), _) if is_metric_name(n) => {}
                (Some("TYPE"), Some(n), Some(t)) if is_metric_name(n) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err("unknown type"));
                    }
                    if out.types.insert(n.to_string(), t.to_string()).is_some() {
                        return Err(err("second TYPE for a family"));
                    }
                }
                _ => return Err(err("bad comment line")),
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(err("no value")),
        };
        if !is_metric_name(name) {
            return Err(err("bad metric name"));
        }
        let (labels, rest) = parse_labels(rest).map_err(|m| err(&m))?;
        let mut parts = rest.split_whitespace();
        let value = match parts.next() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some("NaN") => f64::NAN,
            Some(v) => v.parse().map_err(|_| err("bad value"))?,
            None => return Err(err("no value")),
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_families(&out)?;
    Ok(out)
}

/// The `{k="v",…}` after a metric name (if any), and the rest of the line.
fn parse_labels(rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let err = |m: &str| m.to_string();
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            let Some((start, c)) = chars.next() else {
                return Err(err("unterminated labels"));
            };
            if c == '}' {
                end = start;
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = body[start..]
                .find('=')
                .ok_or_else(|| err("label without '='"))?
                + start;
            let key = &body[start..eq];
            if !is_metric_name(key) {
                return Err(err("bad label name"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(err("label value not quoted"));
            }
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, '\\')) => v.push('\\'),
                        Some((_, '"')) => v.push('"'),
                        _ => return Err(err("bad escape")),
                    },
                    Some((_, '"')) => break,
                    Some((_, '\n')) | None => return Err(err("unterminated label value")),
                    Some((_, c)) => v.push(c),
                }
            }
            labels.insert(key.to_string(), v);
        }
        &body[end + 1..]
    } else {
        rest
    };
    Ok((labels, rest))
}

fn family_of<'a>(s: &'a Sample, types: &BTreeMap<String, String>) -> Option<(&'a str, &'a str)> {
    if types.contains_key(&s.name) {
        return Some((&s.name, ""));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = s.name.strip_suffix(suffix)
            && types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
        {
            return Some((base, suffix));
        }
    }
    None
}

fn check_families(s: &Scrape) -> Result<(), String> {
    // Histogram series: labels without `le` → (buckets in order, count).
    type Series = BTreeMap<String, (Vec<(f64, f64)>, Option<f64>)>;
    let mut hist: Series = BTreeMap::new();
    for x in &s.samples {
        let Some((base, suffix)) = family_of(x, &s.types) else {
            return Err(format!("sample {} has no TYPE line", x.name));
        };
        if s.types[base] == "counter" && (x.value < 0.0 || !x.name.ends_with("_total")) {
            return Err(format!("counter {} must be named *_total and >= 0", x.name));
        }
        if s.types[base] != "histogram" {
            continue;
        }
        let mut l = x.labels.clone();
        let le = l.remove("le");
        let id = format!("{base}{l:?}");
        let e = hist.entry(id).or_default();
        match (suffix, le) {
            ("_bucket", Some(le)) => {
                let b = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("bad le {le}"))?
                };
                e.0.push((b, x.value));
            }
            ("_bucket", None) => return Err(format!("{} without le", x.name)),
            ("_count", _) => e.1 = Some(x.value),
            _ => {}
        }
    }
    for (id, (buckets, count)) in hist {
        if !buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            return Err(format!("{id}: buckets not increasing and cumulative"));
        }
        match buckets.last() {
            Some((b, n)) if b.is_infinite() && Some(*n) == count => {}
            _ => return Err(format!("{id}: no +Inf bucket equal to _count")),
        }
    }
    Ok(())
}
