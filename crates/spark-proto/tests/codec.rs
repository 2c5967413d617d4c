//! Codec round trips, error paths and a proptest that no input panics a decoder.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use spark_proto::cache::*;
use spark_proto::control::*;
use spark_proto::{ErrorResponse, Frame, FrameHeader, MAX_PAYLOAD, Message, ProtoError};

fn rt<M: Message + PartialEq + std::fmt::Debug>(m: M) {
    let f = m.to_frame(2).unwrap();
    let back = Frame::decode_exact(&f.to_bytes()).unwrap();
    assert_eq!(back, f);
    assert_eq!(M::decode(&back.payload).unwrap(), m);
}

#[test]
fn every_message_round_trips() {
    rt(Ping {
        data: Bytes::from_static(b"x"),
    });
    rt(Pong { data: Bytes::new() });
    rt(Version);
    rt(VersionResponse {
        protocol_version: 1,
        daemon_version: "9.9.9".into(),
    });
    rt(Shutdown);
    rt(ShutdownAck);
    rt(spark_proto::control::Stats);
    rt(StatsResponse {
        uptime_secs: 5,
        protocol_version: 1,
        services: vec![1, 2, 3],
        current_connections: 1,
        total_connections: 9,
    });
    rt(Hello {
        protocol_version: 1,
        flags: 0,
        pid: 1,
        client_name: "ünïcode".into(),
    });
    rt(HelloResponse {
        protocol_version: 1,
        daemon_version: "v".into(),
        daemon_pid: 3,
        services: vec![1],
        capabilities: vec!["a".into(), "".into()],
    });
    rt(RegisterSponsor { pid: 77 });
    rt(RegisterSponsorAck { sponsors: 2 });
    rt(ErrorResponse {
        code: 999,
        message: "future code".into(),
    });
    let sk = ShaderKey {
        source_hash: u64::MAX,
        target: 255,
        stage: 0,
    };
    let ak = AssetKey {
        path: "a/b/c.png".repeat(100),
        platform: 7,
    };
    rt(Get { key: sk });
    rt(Get { key: ak.clone() });
    rt(Put {
        key: sk,
        data: Bytes::from_static(b"blob"),
    });
    rt(Put {
        key: ak.clone(),
        data: Bytes::new(),
    });
    rt(PutStream {
        key: ak.clone(),
        total_len: 1 << 40,
    });
    rt(Exists { key: ak });
    rt(GetResponse {
        status: GetStatus::Miss,
    });
    rt(GetResponse {
        status: GetStatus::Inline(Bytes::from_static(b"zz")),
    });
    rt(GetResponse {
        status: GetStatus::Streamed { total_len: 99 },
    });
    rt(PutResponse { stored: true });
    rt(StreamChunk {
        data: Bytes::from_static(b"chunk"),
    });
    rt(StreamEnd {
        checksum: u128::MAX - 5,
    });
    rt(ExistsResponse {
        exists: false,
        size: 0,
    });
    rt(Clear);
    rt(ClearResponse { removed: 3 });
    rt(CacheStats {
        hits: 1,
        disk_budget: 2,
        ..Default::default()
    });
    rt(Invalidate { path: "p".into() });
    rt(InvalidateResponse { dropped: 256 });
    rt(Namespaces);
    rt(NamespacesResponse::default());
    rt(NamespacesResponse {
        namespaces: vec![
            NamespaceStats {
                name: "shader".into(),
                service: 2,
                counters: vec![("hits".into(), u64::MAX), ("".into(), 0)],
            },
            NamespaceStats {
                name: "http-cas".into(),
                service: 0,
                counters: vec![],
            },
        ],
    });
    rt(EventsLost { dropped: 1 });
}

#[test]
fn namespaces_response_ignores_trailing_bytes() {
    let m = NamespacesResponse {
        namespaces: vec![NamespaceStats {
            name: "asset".into(),
            service: 3,
            counters: vec![("puts".into(), 7)],
        }],
    };
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out.extend_from_slice(b"later fields");
    assert_eq!(NamespacesResponse::decode(&out.freeze()).unwrap(), m);
    // A count larger than the payload holds is truncation, not a large allocation.
    assert_eq!(
        NamespacesResponse::decode(&Bytes::from_static(&[0xff, 0xff, 0, 0])),
        Err(ProtoError::Truncated)
    );
}

#[test]
fn oversize_header_is_rejected_without_allocating() {
    let h = FrameHeader {
        len: u32::MAX,
        service: 1,
        msg_type: 1,
    }
    .encode();
    let mut buf = BytesMut::from(&h[..]);
    let cap_before = buf.capacity();
    assert!(matches!(
        Frame::decode_from(&mut buf),
        Err(ProtoError::FrameTooLarge { .. })
    ));
    assert_eq!(
        buf.capacity(),
        cap_before,
        "nothing reserved for the announced size"
    );
    let ok = FrameHeader {
        len: MAX_PAYLOAD as u32,
        service: 1,
        msg_type: 1,
    }
    .encode();
    assert!(FrameHeader::decode(&ok).is_ok());
    assert!(Frame::new(1, 1, Bytes::from(vec![0u8; MAX_PAYLOAD + 1])).is_err());
}

#[test]
fn truncated_frames_wait_or_fail() {
    let f = Ping {
        data: Bytes::from_static(b"hello"),
    }
    .to_frame(1)
    .unwrap()
    .to_bytes();
    for cut in 0..f.len() {
        let mut buf = BytesMut::from(&f[..cut]);
        assert_eq!(
            Frame::decode_from(&mut buf).unwrap(),
            None,
            "cut at {cut} needs more bytes"
        );
        assert_eq!(buf.len(), cut, "an incomplete frame is not consumed");
        assert!(Frame::decode_exact(&f[..cut]).is_err());
    }
    // Two frames back to back decode one at a time.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&f);
    buf.extend_from_slice(&f);
    assert!(Frame::decode_from(&mut buf).unwrap().is_some());
    assert!(Frame::decode_from(&mut buf).unwrap().is_some());
    assert!(buf.is_empty());
}

#[test]
fn payload_errors_are_typed() {
    assert_eq!(
        Get::<ShaderKey>::decode(&Bytes::from_static(&[1, 2, 3])),
        Err(ProtoError::Truncated)
    );
    assert_eq!(
        Get::<ShaderKey>::decode(&Bytes::from(vec![0u8; 11])),
        Err(ProtoError::TrailingBytes)
    );
    assert_eq!(
        Invalidate::decode(&Bytes::from_static(&[2, 0, 0xff, 0xfe])),
        Err(ProtoError::InvalidUtf8)
    );
    assert!(matches!(
        GetResponse::decode(&Bytes::from_static(&[9])),
        Err(ProtoError::InvalidValue(_))
    ));
    assert_eq!(
        Version::decode(&Bytes::from_static(&[0])),
        Err(ProtoError::TrailingBytes)
    );
    // A list count larger than the payload cannot allocate.
    assert_eq!(
        StatsResponse::decode(&Bytes::from_static(&[
            0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff
        ])),
        Err(ProtoError::Truncated)
    );
}

fn decode_all(p: &Bytes) {
    let _ = Ping::decode(p);
    let _ = VersionResponse::decode(p);
    let _ = StatsResponse::decode(p);
    let _ = Hello::decode(p);
    let _ = HelloResponse::decode(p);
    let _ = RegisterSponsor::decode(p);
    let _ = ErrorResponse::decode(p);
    let _ = Get::<ShaderKey>::decode(p);
    let _ = Get::<AssetKey>::decode(p);
    let _ = Put::<ShaderKey>::decode(p);
    let _ = Put::<AssetKey>::decode(p);
    let _ = PutStream::<AssetKey>::decode(p);
    let _ = PutStream::<ShaderKey>::decode(p);
    let _ = Exists::<AssetKey>::decode(p);
    let _ = GetResponse::decode(p);
    let _ = PutResponse::decode(p);
    let _ = StreamEnd::decode(p);
    let _ = ExistsResponse::decode(p);
    let _ = ClearResponse::decode(p);
    let _ = CacheStats::decode(p);
    let _ = Invalidate::decode(p);
    let _ = InvalidateResponse::decode(p);
    let _ = RegisterSponsorAck::decode(p);
    let _ = NamespacesResponse::decode(p);
    let _ = EventsLost::decode(p);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(f)) = Frame::decode_from(&mut buf) {
            decode_all(&f.payload);
        }
        decode_all(&Bytes::from(data));
    }

    #[test]
    fn asset_keys_round_trip(path in "\\PC{0,64}", platform in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let m = Put { key: AssetKey { path, platform }, data: Bytes::from(data) };
        let f = m.to_frame(3).unwrap();
        prop_assert_eq!(Put::<AssetKey>::decode(&Frame::decode_exact(&f.to_bytes()).unwrap().payload).unwrap(), m);
    }
}
