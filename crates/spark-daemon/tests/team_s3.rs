//! The team tier on S3: two daemons share a blob through a real S3-compatible server (moto's, from PyPI:
//! `pip install 'moto[server]'`), on loopback, started and stopped by PID here; a blob overwritten with garbage
//! on the server is refused. Needs sparkd built with `--features team-s3`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spark_proto::cache::ShaderKey;
use spark_testkit::Daemon;

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(method: &str, url: &str, body: &[u8]) -> bool {
    let script = "import sys, urllib.request\n\
        r = urllib.request.Request(sys.argv[2], data=sys.stdin.buffer.read() or None, method=sys.argv[1])\n\
        urllib.request.urlopen(r, timeout=5)\n";
    let mut c = Command::new("python3")
        .args(["-c", script, method, url])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(body).unwrap();
    c.wait().is_ok_and(|s| s.success())
}

/// Runs Python with `s3`, a boto3 client of the moto server (boto3 comes with moto); returns stdout.
fn boto3(port: u16, code: &str) -> String {
    let script = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test')\n{code}\n"
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn start_moto() -> Option<Moto> {
    if !cfg!(feature = "team-s3") {
        eprintln!(
            "SKIPPED: the S3 upstream test needs sparkd built with --features team-s3 \
             (scripts/test.d/team-s3.sh runs it)"
        );
        return None;
    }
    let ok = Command::new("moto_server")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: moto_server missing: install it with `python3 -m pip install 'moto[server]'`"
        );
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto { child, port };
    let t = Instant::now();
    while !http("PUT", &format!("http://127.0.0.1:{port}/spark-team"), b"") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(m)
}

fn daemon(m: &Moto) -> Daemon {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("sparkd.toml");
    let cfg = format!(
        "[namespaces.shader.upstream]\nurl = \"s3://spark-team/cache?endpoint=http://127.0.0.1:{}&region=us-east-1\"\ntimeout_ms = 2000\n",
        m.port
    );
    std::fs::write(&path, cfg).unwrap();
    Daemon::start_with_env(
        &["--config", path.to_str().unwrap()],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
}

fn counter(d: &Daemon, name: &str) -> u64 {
    let spaces = d.client().namespaces().unwrap();
    let ns = spaces.into_iter().find(|n| n.name == "shader").unwrap();
    ns.counters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap()
}

#[test]
fn two_daemons_share_a_blob_through_s3_and_garbage_is_refused() {
    let Some(m) = start_moto() else { return };
    let (a, b) = (daemon(&m), daemon(&m));
    let k = |i| ShaderKey {
        source_hash: i,
        target: 3,
        stage: 0,
    };
    a.client().shader().put(&k(1), b"through s3").unwrap();
    a.client().shader().put(&k(2), b"to be damaged").unwrap();
    let t = Instant::now();
    while counter(&a, "uploads") < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "uploads never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        b.client().shader().get(&k(1)).unwrap().as_deref(),
        Some(&b"through s3"[..])
    );
    assert_eq!(counter(&b, "upstream_hits"), 1);
    // The objects are where docs/storage.md says; overwrite key 2's with bytes that are not an envelope.
    let keys = boto3(
        m.port,
        "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='spark-team')['Contents']))",
    );
    let k2 = "cache/spark/v1/shader/02000000000000000300";
    assert!(keys.lines().any(|l| l == k2), "{keys}");
    boto3(
        m.port,
        &format!(
            "s3.put_object(Bucket='spark-team', Key='{k2}', Body=b'garbage, not a SparkDaemon blob')"
        ),
    );
    assert!(b.client().shader().get(&k(2)).unwrap().is_none());
    assert_eq!(counter(&b, "upstream_rejected"), 1);
}
