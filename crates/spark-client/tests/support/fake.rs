//! A scripted stand-in for sparkd on a temporary Unix socket, for tests that need frames the real daemon
//! does not send (events, streams cut short, messages it does not implement yet).
//!
//! It answers Hello itself, then hands every other request frame to the test's handler, which writes the
//! reply frames it wants. Connections are served concurrently; the handler runs for one frame at a time.
//!
//! Shared by the spark-client and sparkctl tests (`#[path]`), so it uses only std, tempfile and spark-proto.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;

use spark_client::spark_proto::control::{HELLO, HelloResponse};
use spark_client::spark_proto::{
    Frame, FrameHeader, HEADER_LEN, Message, PROTOCOL_VERSION, service,
};

pub struct FakeDaemon {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    thread: Option<JoinHandle<()>>,
}

/// The server side of one connection, as a handler sees it.
pub struct Peer {
    pub stream: UnixStream,
}

impl Peer {
    /// The next request frame, `None` at end of stream.
    pub fn read(&mut self) -> Option<Frame> {
        let mut hb = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut hb).ok()?;
        let h = FrameHeader::decode(&hb).expect("valid header from the client");
        let mut payload = vec![0u8; h.len as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(Frame::new(h.service, h.msg_type, payload.into()).expect("frame"))
    }

    /// Writes one frame; a client that already hung up is not the test's concern here.
    pub fn send_frame(&mut self, service: u16, msg_type: u16, payload: &[u8]) {
        let h = FrameHeader {
            len: payload.len() as u32,
            service,
            msg_type,
        };
        let _ = self.stream.write_all(&h.encode());
        let _ = self.stream.write_all(payload);
    }

    pub fn send<M: Message>(&mut self, service: u16, m: &M) {
        let f = m.to_frame(service).expect("a scripted reply fits a frame");
        self.send_frame(service, M::TYPE, &f.payload);
    }
}

impl FakeDaemon {
    /// Serves `connections` connections; `handle` gets each request frame after Hello.
    pub fn start(
        connections: usize,
        handle: impl FnMut(&mut Peer, Frame) + Send + 'static,
    ) -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let handle = std::sync::Arc::new(std::sync::Mutex::new(handle));
        let thread = std::thread::spawn(move || {
            // Each connection on its own thread: a client that reconnects while its old connection is
            // still open must get an answer.
            let mut served = Vec::new();
            for _ in 0..connections {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                let handle = handle.clone();
                served.push(std::thread::spawn(move || {
                    let mut peer = Peer { stream };
                    while let Some(f) = peer.read() {
                        if f.service == service::CONTROL && f.msg_type == HELLO {
                            peer.send(service::CONTROL, &hello_response());
                            continue;
                        }
                        let mut h = handle.lock().unwrap_or_else(|e| e.into_inner());
                        (*h)(&mut peer, f);
                    }
                }));
            }
            for t in served {
                let _ = t.join();
            }
        });
        FakeDaemon {
            socket,
            _dir: dir,
            thread: Some(thread),
        }
    }

    /// Waits for the served connections to end (the clients must be dropped first).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("fake daemon thread");
        }
    }
}

pub fn hello_response() -> HelloResponse {
    HelloResponse {
        protocol_version: PROTOCOL_VERSION,
        daemon_version: "fake".into(),
        daemon_pid: std::process::id(),
        services: vec![service::CONTROL, service::SHADER, service::ASSET],
        capabilities: vec!["pipeline".into(), "stream".into()],
    }
}
