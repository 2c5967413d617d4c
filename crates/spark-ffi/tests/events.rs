//! spark_poll_event as C calls it, against a scripted fake daemon (the real one sends no events yet). Its
//! own test binary: the connection is process-wide.

#[path = "../../spark-client/tests/support/fake.rs"]
mod fake;

use std::ffi::{CStr, CString};
use std::ptr::null_mut;

use fake::FakeDaemon;
use spark_client::spark_proto::control::{self, EVENTS_LOST, EventsLost, Pong};
use spark_client::spark_proto::{Message, service};
use sparkdaemon::*;

fn last_error() -> String {
    // SAFETY: spark_last_error always returns a valid NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(spark_last_error()) }
        .to_string_lossy()
        .into_owned()
}

struct Polled {
    status: SparkStatus,
    service: u16,
    msg_type: u16,
    len: usize,
    payload: Vec<u8>,
}

fn poll(timeout_ms: u32, buf_len: usize) -> Polled {
    let mut buf = vec![0u8; buf_len];
    let (mut service, mut msg_type, mut len) = (0u16, 0u16, usize::MAX);
    let ptr = if buf_len == 0 {
        null_mut()
    } else {
        buf.as_mut_ptr()
    };
    // SAFETY: every out-pointer is a live local; `ptr` is NULL with length 0 or `buf_len` writable bytes.
    let status = unsafe {
        spark_poll_event(
            timeout_ms,
            &mut service,
            &mut msg_type,
            ptr,
            buf_len,
            &mut len,
        )
    };
    let payload = if status == SparkStatus::Ok {
        buf[..len].to_vec()
    } else {
        Vec::new()
    };
    Polled {
        status,
        service,
        msg_type,
        len,
        payload,
    }
}

#[test]
fn events_are_polled_in_order_and_a_short_buffer_loses_nothing() {
    let d = FakeDaemon::start(1, |p, f| {
        if f.msg_type == control::PING {
            p.send_frame(service::ASSET, 0x8100, b"textures/rock.png");
            p.send(service::CONTROL, &EventsLost { dropped: 5 });
            let ping = control::Ping::decode(&f.payload).unwrap();
            p.send(service::CONTROL, &Pong { data: ping.data });
        }
    });
    // Before any connection: no daemon, said as for every other call.
    assert_eq!(poll(0, 64).status, SparkStatus::NotConnected);
    let sock = CString::new(d.socket.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; NULL is allowed for rtt_us.
    unsafe {
        assert_eq!(
            spark_connect(sock.as_ptr()),
            SparkStatus::Ok,
            "{}",
            last_error()
        );
        assert_eq!(spark_ping(null_mut()), SparkStatus::Ok, "{}", last_error());
    }

    // Size query: nothing copied, the event stays for the next call.
    let p = poll(0, 0);
    assert_eq!(p.status, SparkStatus::BufferTooSmall);
    assert_eq!((p.service, p.msg_type, p.len), (service::ASSET, 0x8100, 17));
    assert!(last_error().contains("17 bytes"), "{}", last_error());
    let p = poll(0, 4);
    assert_eq!((p.status, p.len), (SparkStatus::BufferTooSmall, 17));
    let p = poll(0, 64);
    assert_eq!(p.status, SparkStatus::Ok);
    assert_eq!(p.payload, b"textures/rock.png");

    // EventsLost comes through like any other event.
    let p = poll(0, 64);
    assert_eq!(p.status, SparkStatus::Ok);
    assert_eq!((p.service, p.msg_type), (service::CONTROL, EVENTS_LOST));
    assert_eq!(p.payload, 5u64.to_le_bytes());

    let t = std::time::Instant::now();
    assert_eq!(poll(30, 64).status, SparkStatus::NoEvent);
    assert!(t.elapsed() >= std::time::Duration::from_millis(30));

    // Caller mistakes are statuses, not crashes.
    let mut len = 0usize;
    // SAFETY: NULLs are what is being tested; `len` is a live local.
    let st = unsafe { spark_poll_event(0, null_mut(), null_mut(), null_mut(), 0, &mut len) };
    assert_eq!(st, SparkStatus::InvalidArgument);
    let (mut s, mut t) = (0u16, 0u16);
    // SAFETY: as above; a NULL buffer with a length must be refused before anything is written.
    let st = unsafe { spark_poll_event(0, &mut s, &mut t, null_mut(), 8, &mut len) };
    assert_eq!(st, SparkStatus::InvalidArgument);
    spark_shutdown();
    assert_eq!(poll(0, 64).status, SparkStatus::NotConnected);
    d.join();
}
