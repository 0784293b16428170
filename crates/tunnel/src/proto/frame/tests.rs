//! Tests of the frame codec: exact bytes of every frame type, every decode error, and a
//! round-trip property over arbitrary frames.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// Encodes `frame`, checks the bytes against `hex`, and decodes them back to `frame`.
fn check(frame: Frame, hex: &str) {
    let mut buf = Vec::new();
    frame.encode(&mut buf);
    let hex: String = hex.split_whitespace().collect();
    assert_eq!(to_hex(&buf), hex, "encoding of {frame:?}");
    assert_eq!(Frame::decode(&Bytes::from(buf)), Ok(frame));
}

/// Decodes the bytes in `hex` and expects `error`.
fn check_err(hex: &str, error: FrameError) {
    let bytes = from_hex(hex);
    assert_eq!(
        Frame::decode(&Bytes::from(bytes)),
        Err(error),
        "decoding {hex}"
    );
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    let hex: String = hex.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("valid hex in the test"))
        .collect()
}

fn target(host: &str, port: u16) -> Target {
    Target::new(host, port).expect("a valid target in the test")
}

#[test]
fn every_frame_type_has_its_documented_bytes() {
    check(
        Frame::Dial {
            stream: StreamId(2),
            window: 0x0004_0000,
            target: target("10.0.0.1", 10250),
        },
        "01 01 00000002 00040000 280a 31302e302e302e31",
    );
    check(
        Frame::DialOk {
            stream: StreamId(2),
            window: 7,
        },
        "01 02 00000002 00000007",
    );
    check(
        Frame::DialErr {
            stream: StreamId(4),
            error: DialError::ConnectionRefused,
        },
        "01 03 00000004 02",
    );
    check(
        Frame::DialErr {
            stream: StreamId(4),
            error: DialError::failed("no route"),
        },
        "01 03 00000004 06 6e6f20726f757465",
    );
    check(
        Frame::Data {
            stream: StreamId(3),
            payload: Bytes::from_static(b"hi"),
        },
        "01 04 00000003 6869",
    );
    check(
        Frame::Fin {
            stream: StreamId(3),
        },
        "01 05 00000003",
    );
    check(
        Frame::Credit {
            stream: StreamId(3),
            increment: 65536,
        },
        "01 06 00000003 00010000",
    );
    check(
        Frame::Reset {
            stream: StreamId(5),
            code: ResetCode::Io,
        },
        "01 07 00000005 01",
    );
    check(
        Frame::Ping {
            payload: 0x0102_0304_0506_0708,
        },
        "01 08 00000000 0102030405060708",
    );
    check(
        Frame::Pong { payload: 9 },
        "01 09 00000000 0000000000000009",
    );
    check(
        Frame::GoAway {
            code: CloseCode::ProtocolError,
            reason: "bad".to_owned(),
        },
        "01 0a 00000000 01 626164",
    );
}

#[test]
fn every_dial_error_and_code_round_trips() {
    let errors = [
        DialError::NotAllowed,
        DialError::ConnectionRefused,
        DialError::Unreachable,
        DialError::TimedOut,
        DialError::TooManyStreams,
        DialError::failed(""),
    ];
    for (i, error) in errors.into_iter().enumerate() {
        check(
            Frame::DialErr {
                stream: StreamId(2),
                error,
            },
            &format!("01 03 00000002 {:02x}", i + 1),
        );
    }
    for (i, code) in [ResetCode::Cancelled, ResetCode::Io, ResetCode::DialTimeout]
        .into_iter()
        .enumerate()
    {
        check(
            Frame::Reset {
                stream: StreamId(1),
                code,
            },
            &format!("01 07 00000001 {i:02x}"),
        );
    }
    for (i, code) in [
        CloseCode::Normal,
        CloseCode::ProtocolError,
        CloseCode::TimedOut,
    ]
    .into_iter()
    .enumerate()
    {
        check(
            Frame::GoAway {
                code,
                reason: String::new(),
            },
            &format!("01 0a 00000000 {i:02x}"),
        );
    }
}

#[test]
fn malformed_frames_are_typed_errors() {
    check_err("", FrameError::Truncated { len: 0 });
    check_err("01 04 000000", FrameError::Truncated { len: 5 });
    check_err(
        "02 05 00000001",
        FrameError::UnsupportedVersion { version: 2 },
    );
    check_err("01 00 00000001", FrameError::UnknownType { kind: 0 });
    check_err("01 0b 00000001", FrameError::UnknownType { kind: 0x0b });
    check_err("01 ff 00000000", FrameError::UnknownType { kind: 0xff });
    check_err(
        "01 08 00000001 0000000000000000",
        FrameError::SessionFrameOnStream {
            kind: 8,
            stream: StreamId(1),
        },
    );
    check_err(
        "01 04 00000000 00",
        FrameError::StreamFrameOnSession { kind: 4 },
    );
    check_err(
        "01 01 00000002 00000000 0050",
        FrameError::BadLength { kind: 1, len: 12 },
    );
    check_err(
        "01 01 00000002 00000000 0050 00",
        FrameError::InvalidHost { byte: 0 },
    );
    check_err(
        "01 01 00000002 00000000 0050 2f",
        FrameError::InvalidHost { byte: b'/' },
    );
    check_err("01 01 00000002 00000000 0000 61", FrameError::ZeroPort);
    check_err(
        "01 02 00000002 000000",
        FrameError::BadLength { kind: 2, len: 9 },
    );
    check_err(
        "01 02 00000002 0000000000",
        FrameError::BadLength { kind: 2, len: 11 },
    );
    check_err("01 03 00000002", FrameError::BadLength { kind: 3, len: 6 });
    check_err(
        "01 03 00000002 07",
        FrameError::UnknownDialError { code: 7 },
    );
    check_err(
        "01 03 00000002 01 61",
        FrameError::UnexpectedDetail { code: 1 },
    );
    check_err("01 03 00000002 06 ff", FrameError::ReasonNotUtf8);
    check_err(
        "01 04 00000002",
        FrameError::EmptyData {
            stream: StreamId(2),
        },
    );
    check_err(
        "01 05 00000002 00",
        FrameError::BadLength { kind: 5, len: 7 },
    );
    check_err(
        "01 06 00000002 00000000",
        FrameError::ZeroCredit {
            stream: StreamId(2),
        },
    );
    check_err(
        "01 07 00000002 03",
        FrameError::UnknownResetCode { code: 3 },
    );
    check_err("01 07 00000002", FrameError::BadLength { kind: 7, len: 6 });
    check_err(
        "01 09 00000000 00",
        FrameError::BadLength { kind: 9, len: 7 },
    );
    check_err("01 0a 00000000", FrameError::BadLength { kind: 10, len: 6 });
    check_err(
        "01 0a 00000000 03",
        FrameError::UnknownCloseCode { code: 3 },
    );
}

#[test]
fn length_bounds_are_checked_before_anything_else() {
    // One byte too long fails on length alone, whatever the rest says.
    let mut huge = vec![0u8; MAX_FRAME_LEN + 1];
    huge[0] = 9;
    assert_eq!(
        Frame::decode(&Bytes::from(huge)),
        Err(FrameError::TooLong {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
    // The largest data frame is fine, and its payload is a slice of the message.
    let mut largest = vec![0x42u8; MAX_FRAME_LEN];
    largest[..HEADER_LEN].copy_from_slice(&[1, 4, 0, 0, 0, 1]);
    let message = Bytes::from(largest);
    let Ok(Frame::Data { payload, .. }) = Frame::decode(&message) else {
        panic!("the largest data frame decodes");
    };
    assert_eq!(payload.len(), MAX_DATA_PAYLOAD);
    assert_eq!(payload.as_ptr(), message[HEADER_LEN..].as_ptr());

    let mut long_host = from_hex("01 01 00000002 00000000 0050");
    long_host.extend(std::iter::repeat_n(b'a', MAX_HOST_LEN + 1));
    check_err(&to_hex(&long_host), FrameError::HostTooLong { len: 256 });
    let mut long_reason = from_hex("01 0a 00000000 00");
    long_reason.extend(std::iter::repeat_n(b'a', MAX_REASON_LEN + 1));
    check_err(
        &to_hex(&long_reason),
        FrameError::ReasonTooLong { len: 256 },
    );
}

#[test]
fn long_reasons_are_cut_at_a_character_boundary() {
    let detail = "é".repeat(200);
    let DialError::Failed { detail: cut } = DialError::failed(&detail) else {
        panic!("failed() builds Failed");
    };
    assert_eq!(cut.len(), 254);
    let mut buf = Vec::new();
    Frame::GoAway {
        code: CloseCode::Normal,
        reason: detail,
    }
    .encode(&mut buf);
    assert_eq!(buf.len(), HEADER_LEN + 1 + 254);
    assert!(Frame::decode(&Bytes::from(buf)).is_ok());
}

#[test]
fn targets_validate_and_print_like_addresses() {
    assert_eq!(target("10.0.0.1", 10250).to_string(), "10.0.0.1:10250");
    assert_eq!(target("fd00::1", 10250).to_string(), "[fd00::1]:10250");
    assert_eq!(
        target("node-a.example", 80).to_string(),
        "node-a.example:80"
    );
    assert_eq!(Target::new("", 80), Err(FrameError::EmptyHost));
    assert_eq!(Target::new("a", 0), Err(FrameError::ZeroPort));
    assert_eq!(
        Target::new("[::1]", 80),
        Err(FrameError::InvalidHost { byte: b'[' })
    );
    assert_eq!(
        Target::new("a".repeat(256), 80),
        Err(FrameError::HostTooLong { len: 256 })
    );
}

#[test]
fn stream_ids_have_the_opener_parity() {
    assert_eq!(StreamId(1).opener(), Role::Agent);
    assert_eq!(StreamId(2).opener(), Role::Server);
    assert_eq!(Role::Server.peer(), Role::Agent);
    assert_eq!(Role::Agent.first_stream(), 1);
    assert_eq!(Role::Server.first_stream(), 2);
}

fn arb_stream() -> impl Strategy<Value = StreamId> {
    (1u32..).prop_map(StreamId)
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let host = "[a-z0-9.:-]{1,40}";
    prop_oneof![
        (arb_stream(), any::<u32>(), host, 1u16..).prop_map(|(stream, window, host, port)| {
            Frame::Dial {
                stream,
                window,
                target: Target::new(host, port).expect("the strategy makes valid hosts"),
            }
        }),
        (arb_stream(), any::<u32>()).prop_map(|(stream, window)| Frame::DialOk { stream, window }),
        (arb_stream(), ".{0,80}").prop_map(|(stream, detail)| Frame::DialErr {
            stream,
            error: DialError::failed(detail)
        }),
        (
            arb_stream(),
            proptest::collection::vec(any::<u8>(), 1..2000)
        )
            .prop_map(|(stream, data)| Frame::Data {
                stream,
                payload: Bytes::from(data)
            }),
        arb_stream().prop_map(|stream| Frame::Fin { stream }),
        (arb_stream(), 1u32..).prop_map(|(stream, increment)| Frame::Credit { stream, increment }),
        arb_stream().prop_map(|stream| Frame::Reset {
            stream,
            code: ResetCode::Cancelled
        }),
        any::<u64>().prop_map(|payload| Frame::Ping { payload }),
        any::<u64>().prop_map(|payload| Frame::Pong { payload }),
        ".{0,60}".prop_map(|reason| Frame::GoAway {
            code: CloseCode::Normal,
            reason
        }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip(frame in arb_frame()) {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        prop_assert!(buf.len() <= MAX_FRAME_LEN);
        prop_assert_eq!(Frame::decode(&Bytes::from(buf)), Ok(frame));
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        crate::fuzzing::frame(&bytes);
    }
}
