//! Tests of the record codec (STYLE rules 2 and 3): literal bytes in both
//! directions, every prefix and every two-way split of a few request
//! streams written out byte by byte, and a seeded pseudo-random search for
//! inputs that make a parser panic or lie about what it consumed.

use super::super::params::Pairs;
use super::RecordType as Rt;
use super::*;
use crate::fcgi::test_rng::XorShift;

/// A record that owns its content, so that it can outlive the buffer it
/// was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    rtype: RecordType,
    request_id: u16,
    content: Vec<u8>,
}

impl From<&Record<'_>> for Owned {
    fn from(r: &Record<'_>) -> Owned {
        Owned {
            rtype: r.rtype,
            request_id: r.request_id,
            content: r.content.to_vec(),
        }
    }
}

const fn hdr(rtype: RecordType, id: u16, len: u16, pad: u8) -> Header {
    Header {
        rtype,
        request_id: id,
        content_length: len,
        padding_length: pad,
    }
}

const fn rec(rtype: RecordType, id: u16, content: &[u8]) -> Record<'_> {
    Record {
        rtype,
        request_id: id,
        content,
    }
}

/// The value and length of a `Complete` result; panics on anything else.
fn complete<T: std::fmt::Debug>(r: Result<Status<T>>) -> (T, usize) {
    match r {
        Ok(Status::Complete(v, n)) => (v, n),
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn is_partial<T>(r: &Result<Status<T>>) -> bool {
    matches!(r, Ok(Status::Partial))
}

/// Checks a big record without printing its content on failure.
fn assert_big(got: (Record<'_>, usize), want: Record<'_>, used: usize) {
    let (r, n) = got;
    assert_eq!(
        (r.rtype, r.request_id, n),
        (want.rtype, want.request_id, used)
    );
    assert_eq!(r.content.len(), want.content.len());
    assert!(r.content == want.content, "content differs");
}

// ---------------------------------------------------------------------
// Literal bytes, both directions.

/// Header bytes and the header they stand for. The last byte is reserved
/// and ignored.
const HEADERS: &[([u8; 8], Header)] = &[
    ([1, 1, 0, 1, 0, 8, 0, 0], hdr(Rt::BeginRequest, 1, 8, 0)),
    ([1, 2, 0, 1, 0, 0, 0, 0], hdr(Rt::AbortRequest, 1, 0, 0)),
    ([1, 3, 0, 1, 0, 8, 0, 0], hdr(Rt::EndRequest, 1, 8, 0)),
    ([1, 4, 0, 1, 0, 0x90, 0, 0], hdr(Rt::Params, 1, 144, 0)),
    ([1, 5, 0, 1, 0, 0x0b, 5, 0], hdr(Rt::Stdin, 1, 11, 5)),
    ([1, 6, 0, 1, 1, 0, 0, 0], hdr(Rt::Stdout, 1, 256, 0)),
    ([1, 7, 1, 2, 0, 0xff, 1, 0], hdr(Rt::Stderr, 0x0102, 255, 1)),
    ([1, 8, 0xff, 0xff, 0, 1, 7, 0], hdr(Rt::Data, 0xffff, 1, 7)),
    ([1, 9, 0, 0, 0, 0x30, 0, 0], hdr(Rt::GetValues, 0, 48, 0)),
    (
        [1, 10, 0, 0, 0, 0x28, 0, 0],
        hdr(Rt::GetValuesResult, 0, 40, 0),
    ),
    ([1, 11, 0, 0, 0, 8, 0, 0], hdr(Rt::UnknownType, 0, 8, 0)),
    ([1, 0, 0, 1, 0, 0, 0, 0], hdr(Rt::Other(0), 1, 0, 0)),
    ([1, 12, 0, 0, 0, 3, 13, 0], hdr(Rt::Other(12), 0, 3, 13)),
    (
        [1, 6, 0, 1, 0x7f, 0xff, 0, 0],
        hdr(Rt::Stdout, 1, 0x7fff, 0),
    ),
    ([1, 6, 0, 1, 0xff, 0xff, 1, 0], hdr(Rt::Stdout, 1, 65535, 1)),
    (
        [1, 0xff, 0x80, 0, 0xff, 0xff, 0xff, 0xff],
        hdr(Rt::Other(255), 0x8000, 65535, 255),
    ),
];

#[test]
fn header_bytes_parse_to_header() {
    for (bytes, want) in HEADERS {
        assert_eq!(complete(parse_header(bytes)), (*want, HEADER_LEN));
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"trailing");
        assert_eq!(complete(parse_header(&longer)), (*want, HEADER_LEN));
        for k in 0..HEADER_LEN {
            assert!(is_partial(&parse_header(&bytes[..k])), "{bytes:?}");
        }
    }
}

#[test]
fn header_encodes_to_bytes() {
    // The encoder chooses the padding itself, so only the rows whose
    // padding and reserved byte are what it would write can be checked.
    let mut checked = 0;
    for (bytes, h) in HEADERS {
        let pad = (8 - h.content_length % 8) % 8;
        if u16::from(h.padding_length) != pad || bytes[7] != 0 {
            continue;
        }
        let mut out = Vec::new();
        let got =
            push_header(&mut out, h.rtype, h.request_id, h.content_length);
        assert_eq!(out, bytes, "{h:?}");
        assert_eq!(got, h.padding_length);
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} rows checked");
}

#[test]
fn record_type_byte_round_trips() {
    let named = [
        (1, Rt::BeginRequest),
        (2, Rt::AbortRequest),
        (3, Rt::EndRequest),
        (4, Rt::Params),
        (5, Rt::Stdin),
        (6, Rt::Stdout),
        (7, Rt::Stderr),
        (8, Rt::Data),
        (9, Rt::GetValues),
        (10, Rt::GetValuesResult),
        (11, Rt::UnknownType),
    ];
    for (b, t) in named {
        assert_eq!(RecordType::from_u8(b), t);
        assert_eq!(t.as_u8(), b);
    }
    for b in 0..=255 {
        let t = RecordType::from_u8(b);
        assert_eq!(t.as_u8(), b);
        assert_eq!(matches!(t, Rt::Other(_)), !(1..=11).contains(&b), "{b}");
    }
}

/// An appender, the bytes it must write, and the record they parse to.
type RecordCase = (fn(&mut Vec<u8>), &'static [u8], Record<'static>);

const RECORDS: &[RecordCase] = &[
    (
        |o| push_record(o, Rt::Stdout, 1, b"hello"),
        b"\x01\x06\x00\x01\x00\x05\x03\x00hello\x00\x00\x00",
        rec(Rt::Stdout, 1, b"hello"),
    ),
    (
        |o| push_record(o, Rt::Stderr, 0x0102, b""),
        b"\x01\x07\x01\x02\x00\x00\x00\x00",
        rec(Rt::Stderr, 0x0102, b""),
    ),
    (
        |o| push_record(o, Rt::Stdout, 1, b"ABCDEFGH"),
        b"\x01\x06\x00\x01\x00\x08\x00\x00ABCDEFGH",
        rec(Rt::Stdout, 1, b"ABCDEFGH"),
    ),
    (
        |o| push_record(o, Rt::Stdout, 1, b"x"),
        b"\x01\x06\x00\x01\x00\x01\x07\x00x\x00\x00\x00\x00\x00\x00\x00",
        rec(Rt::Stdout, 1, b"x"),
    ),
    (
        |o| push_record(o, Rt::Stdout, 0xffff, b"123456789"),
        b"\x01\x06\xff\xff\x00\x09\x07\x00123456789\
          \x00\x00\x00\x00\x00\x00\x00",
        rec(Rt::Stdout, 0xffff, b"123456789"),
    ),
    (
        |o| push_record(o, Rt::GetValuesResult, 0, b"\x0e\x01FCGI_MAX_REQS4"),
        b"\x01\x0a\x00\x00\x00\x10\x00\x00\x0e\x01FCGI_MAX_REQS4",
        rec(Rt::GetValuesResult, 0, b"\x0e\x01FCGI_MAX_REQS4"),
    ),
    (
        |o| push_stream(o, Rt::Stdout, 1, b"abc"),
        b"\x01\x06\x00\x01\x00\x03\x05\x00abc\x00\x00\x00\x00\x00",
        rec(Rt::Stdout, 1, b"abc"),
    ),
    (
        |o| push_end_of_stream(o, Rt::Stdout, 1),
        b"\x01\x06\x00\x01\x00\x00\x00\x00",
        rec(Rt::Stdout, 1, b""),
    ),
    (
        |o| push_end_of_stream(o, Rt::Stderr, 0x0203),
        b"\x01\x07\x02\x03\x00\x00\x00\x00",
        rec(Rt::Stderr, 0x0203, b""),
    ),
    (
        |o| push_end_request(o, 1, 0, ProtocolStatus::RequestComplete),
        b"\x01\x03\x00\x01\x00\x08\x00\x00\
          \x00\x00\x00\x00\x00\x00\x00\x00",
        rec(Rt::EndRequest, 1, b"\x00\x00\x00\x00\x00\x00\x00\x00"),
    ),
    (
        |o| {
            push_end_request(
                o,
                0x0203,
                0x0102_0304,
                ProtocolStatus::CantMpxConn,
            )
        },
        b"\x01\x03\x02\x03\x00\x08\x00\x00\
          \x01\x02\x03\x04\x01\x00\x00\x00",
        rec(Rt::EndRequest, 0x0203, b"\x01\x02\x03\x04\x01\x00\x00\x00"),
    ),
    (
        |o| push_end_request(o, 1, u32::MAX, ProtocolStatus::Overloaded),
        b"\x01\x03\x00\x01\x00\x08\x00\x00\
          \xff\xff\xff\xff\x02\x00\x00\x00",
        rec(Rt::EndRequest, 1, b"\xff\xff\xff\xff\x02\x00\x00\x00"),
    ),
    (
        |o| push_end_request(o, 1, 255, ProtocolStatus::UnknownRole),
        b"\x01\x03\x00\x01\x00\x08\x00\x00\
          \x00\x00\x00\xff\x03\x00\x00\x00",
        rec(Rt::EndRequest, 1, b"\x00\x00\x00\xff\x03\x00\x00\x00"),
    ),
    (
        |o| push_unknown_type(o, 42),
        b"\x01\x0b\x00\x00\x00\x08\x00\x00\
          \x2a\x00\x00\x00\x00\x00\x00\x00",
        rec(Rt::UnknownType, 0, b"\x2a\x00\x00\x00\x00\x00\x00\x00"),
    ),
    (
        |o| push_unknown_type(o, 0xff),
        b"\x01\x0b\x00\x00\x00\x08\x00\x00\
          \xff\x00\x00\x00\x00\x00\x00\x00",
        rec(Rt::UnknownType, 0, b"\xff\x00\x00\x00\x00\x00\x00\x00"),
    ),
];

#[test]
fn records_encode_to_bytes() {
    for (push, bytes, want) in RECORDS {
        let mut out = Vec::new();
        push(&mut out);
        assert_eq!(out, *bytes, "{want:?}");
        // Appending keeps what was there.
        let mut out = b"kept".to_vec();
        push(&mut out);
        assert_eq!(&out[..4], b"kept");
        assert_eq!(&out[4..], *bytes, "{want:?}");
    }
}

#[test]
fn record_bytes_parse_to_record() {
    for (_, bytes, want) in RECORDS {
        assert_eq!(complete(parse_record(bytes)), (*want, bytes.len()));
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"\x01\x06\x00\x01");
        assert_eq!(complete(parse_record(&longer)), (*want, bytes.len()));
    }
}

#[test]
fn every_prefix_of_a_record_is_partial() {
    for (_, bytes, want) in RECORDS {
        for k in 0..bytes.len() {
            let got = parse_record(&bytes[..k]);
            assert!(is_partial(&got), "{want:?} cut at {k}: {got:?}");
        }
    }
}

#[test]
fn any_padding_is_accepted_and_skipped() {
    // Encoders pad to 8, but any padding is legal and its bytes mean
    // nothing (spec §3.3: "paddingData: Between 0 and 255 bytes of data,
    // which are ignored").
    let cases: &[(&[u8], &[u8])] = &[
        (b"\x01\x06\x00\x01\x00\x01\x00\x00x", b"x"),
        (b"\x01\x06\x00\x01\x00\x01\x02\x00x\xaa\xbb", b"x"),
        (b"\x01\x06\x00\x01\x00\x00\x03\x00\x01\x01\x01", b""),
    ];
    for (bytes, content) in cases {
        let want = rec(Rt::Stdout, 1, content);
        assert_eq!(complete(parse_record(bytes)), (want, bytes.len()));
        let cut = &bytes[..bytes.len() - 1];
        assert!(is_partial(&parse_record(cut)));
    }
    let mut big = b"\x01\x05\x00\x07\x00\x02\xff\x00hi".to_vec();
    big.resize(big.len() + 255, 0xee);
    assert_eq!(big.len(), 8 + 2 + 255);
    let want = rec(Rt::Stdin, 7, b"hi");
    assert_eq!(complete(parse_record(&big)), (want, big.len()));
    assert!(is_partial(&parse_record(&big[..big.len() - 1])));
}

#[test]
fn version_other_than_1_is_an_error() {
    for v in [0, 2, 3, 0x7f, 0x80, 0xff] {
        let bytes = [v, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let e = parse_header(&bytes).expect_err("bad version");
        assert!(e.to_string().contains("version"), "{e}");
        assert!(parse_header(&bytes[..HEADER_LEN]).is_err());
        assert!(parse_record(&bytes).is_err());
        assert!(parse_record(&bytes[..HEADER_LEN]).is_err());
        // Before the whole header is there nothing is judged.
        for k in 0..HEADER_LEN {
            assert!(is_partial(&parse_header(&bytes[..k])));
            assert!(is_partial(&parse_record(&bytes[..k])));
        }
    }
}

/// BEGIN_REQUEST bodies and what they mean: role (big-endian), then the
/// flags byte, then five reserved bytes that are ignored.
const BEGIN_BODIES: &[([u8; 8], Role, bool)] = &[
    ([0, 1, 0, 0, 0, 0, 0, 0], Role::Responder, false),
    ([0, 1, 1, 0, 0, 0, 0, 0], Role::Responder, true),
    ([0, 2, 0, 0, 0, 0, 0, 0], Role::Authorizer, false),
    ([0, 3, 1, 0, 0, 0, 0, 0], Role::Filter, true),
    ([0, 0, 0, 0, 0, 0, 0, 0], Role::Other(0), false),
    ([0, 4, 0, 0, 0, 0, 0, 0], Role::Other(4), false),
    ([1, 0, 0, 0, 0, 0, 0, 0], Role::Other(256), false),
    ([1, 1, 0, 0, 0, 0, 0, 0], Role::Other(257), false),
    ([0xff, 0xff, 0, 0, 0, 0, 0, 0], Role::Other(65535), false),
    // Only bit 0 of the flags is KEEP_CONN.
    ([0, 1, 0xfe, 0, 0, 0, 0, 0], Role::Responder, false),
    ([0, 1, 0xff, 0, 0, 0, 0, 0], Role::Responder, true),
    (
        [0, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff],
        Role::Responder,
        true,
    ),
];

#[test]
fn begin_request_bodies_parse() {
    for (body, role, keep_conn) in BEGIN_BODIES {
        let got = parse_begin_request(body).expect("8-byte body");
        assert_eq!(
            got,
            BeginRequest {
                role: *role,
                keep_conn: *keep_conn,
            },
            "{body:?}"
        );
    }
}

#[test]
fn begin_request_body_of_wrong_length_is_an_error() {
    let long = [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for n in [0, 1, 2, 7, 9, 16] {
        assert!(parse_begin_request(&long[..n]).is_err(), "{n} bytes");
    }
}

// ---------------------------------------------------------------------
// The 65535-byte limit and the padding rule.

/// `n` bytes that differ from their neighbours, so that a misplaced cut
/// shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn push_stream_of_65535_bytes_is_one_record() {
    let data = pattern(65535);
    let mut out = Vec::new();
    push_stream(&mut out, Rt::Stdout, 1, &data);
    assert_eq!(out[..8], [1, 6, 0, 1, 0xff, 0xff, 1, 0]);
    assert_eq!(out.len(), 8 + 65535 + 1);
    assert_eq!(out[out.len() - 1], 0);
    let want = rec(Rt::Stdout, 1, &data);
    assert_big(complete(parse_record(&out)), want, out.len());
}

#[test]
fn push_stream_of_65536_bytes_is_65535_then_1() {
    let data = pattern(65536);
    let mut out = Vec::new();
    push_stream(&mut out, Rt::Stdout, 1, &data);
    let first = 8 + 65535 + 1;
    assert_eq!(out.len(), first + 16);
    assert_eq!(out[..8], [1, 6, 0, 1, 0xff, 0xff, 1, 0]);
    assert_eq!(out[first..first + 8], [1, 6, 0, 1, 0, 1, 7, 0]);
    assert_eq!(out[first + 8], data[65535]);
    assert_eq!(out[first + 9..], [0; 7]);

    let a = rec(Rt::Stdout, 1, &data[..65535]);
    assert_big(complete(parse_record(&out)), a, first);
    let b = rec(Rt::Stdout, 1, &data[65535..]);
    assert_big(complete(parse_record(&out[first..])), b, 16);
}

#[test]
fn push_stream_splits_at_every_65535_bytes() {
    let data = pattern(2 * 65535 + 3);
    let mut out = Vec::new();
    push_stream(&mut out, Rt::Stderr, 9, &data);
    let (records, ends) = parse_all(&out);
    assert_eq!(ends.last(), Some(&out.len()));
    let lens: Vec<usize> = records.iter().map(|r| r.content.len()).collect();
    assert_eq!(lens, [65535, 65535, 3]);
    let joined: Vec<u8> =
        records.iter().flat_map(|r| r.content).copied().collect();
    assert!(joined == data, "content differs");
    assert!(records
        .iter()
        .all(|r| r.rtype == Rt::Stderr && r.request_id == 9));
}

#[test]
fn push_stream_of_nothing_writes_nothing() {
    let mut out = b"kept".to_vec();
    push_stream(&mut out, Rt::Stdout, 1, b"");
    assert_eq!(out, b"kept");
}

#[test]
fn push_record_cuts_content_at_65535() {
    let data = pattern(65536 + 10);
    let mut out = Vec::new();
    push_record(&mut out, Rt::Stdout, 1, &data);
    assert_eq!(out.len(), 8 + 65535 + 1);
    let want = rec(Rt::Stdout, 1, &data[..65535]);
    assert_big(complete(parse_record(&out)), want, out.len());
}

#[test]
fn push_record_pads_to_a_multiple_of_8() {
    let data = pattern(65535);
    for len in (0..=80).chain(65520..=65535) {
        let mut out = Vec::new();
        push_record(&mut out, Rt::Stdout, 1, &data[..len]);
        let pad = out.len() - HEADER_LEN - len;
        assert_eq!(out.len() % 8, 0, "len {len}");
        assert!(pad < 8, "len {len}");
        assert_eq!(usize::from(out[6]), pad, "len {len}");
        assert!(out[HEADER_LEN + len..].iter().all(|&b| b == 0));
    }
}

// ---------------------------------------------------------------------
// Request streams, written out byte by byte.

/// A request stream: the wire bytes in pieces (concatenated before use)
/// and the records it holds.
struct Fixture {
    name: &'static str,
    wire: &'static [&'static [u8]],
    records: &'static [Record<'static>],
}

impl Fixture {
    fn bytes(&self) -> Vec<u8> {
        self.wire.concat()
    }
}

/// BEGIN_REQUEST body: responder, keep the connection.
const BEGIN_KEEP: &[u8] = b"\x00\x01\x01\x00\x00\x00\x00\x00";
/// BEGIN_REQUEST body: responder, close after the request.
const BEGIN_CLOSE: &[u8] = b"\x00\x01\x00\x00\x00\x00\x00\x00";

/// The first PARAMS record of the POST: it ends inside the 4-byte value
/// length of HTTP_USER_AGENT (two of its four bytes are here).
const POST_PARAMS_1: &[u8] = b"\
    \x0f\x19SCRIPT_FILENAME/srv/www/cgi-bin/form.cgi\
    \x0c\x00QUERY_STRING\
    \x0e\x04REQUEST_METHODPOST\
    \x0c\x21CONTENT_TYPEapplication/x-www-form-urlencoded\
    \x0e\x02CONTENT_LENGTH11\
    \x0f\x80\x00";

/// The second PARAMS record of the POST, starting with the rest of that
/// length (0x000000a3 = 163).
const POST_PARAMS_2: &[u8] = b"\
    \x00\xa3HTTP_USER_AGENTMozilla/5.0 (Linux; Android 14; Pixel 8 Pro \
    Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) \
    Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36\
    \x0f\x0cSERVER_SOFTWAREnginx/1.24.0\
    \x0b\x0bREMOTE_ADDR203.0.113.7";

const USER_AGENT: &[u8] = b"Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro \
    Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) \
    Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36";

const POST_BODY: &[u8] = b"a=1&b=2&c=3";

/// nginx forwarding a form POST with `fastcgi_keep_conn on`: records
/// padded to 8 bytes, PARAMS in two records and a pair cut between them,
/// the empty PARAMS and STDIN records that end those streams.
const NGINX_POST: Fixture = Fixture {
    name: "nginx POST",
    wire: &[
        b"\x01\x01\x00\x01\x00\x08\x00\x00",
        BEGIN_KEEP,
        b"\x01\x04\x00\x01\x00\x90\x00\x00",
        POST_PARAMS_1,
        b"\x01\x04\x00\x01\x00\xe9\x07\x00",
        POST_PARAMS_2,
        &[0; 7],
        b"\x01\x04\x00\x01\x00\x00\x00\x00",
        b"\x01\x05\x00\x01\x00\x0b\x05\x00",
        POST_BODY,
        &[0; 5],
        b"\x01\x05\x00\x01\x00\x00\x00\x00",
    ],
    records: &[
        rec(Rt::BeginRequest, 1, BEGIN_KEEP),
        rec(Rt::Params, 1, POST_PARAMS_1),
        rec(Rt::Params, 1, POST_PARAMS_2),
        rec(Rt::Params, 1, b""),
        rec(Rt::Stdin, 1, POST_BODY),
        rec(Rt::Stdin, 1, b""),
    ],
};

const GET_PARAMS: &[u8] = b"\
    \x0e\x03REQUEST_METHODGET\
    \x0c\x06QUERY_STRINGq=fcgi\
    \x0b\x10SCRIPT_NAME/cgi-bin/env.cgi\
    \x09\x0bHTTP_HOSTexample.org";

/// A GET from a server that does not pad: 90 bytes of PARAMS with no
/// padding after them, then the two empty records.
const UNPADDED_GET: Fixture = Fixture {
    name: "unpadded GET",
    wire: &[
        b"\x01\x01\x00\x01\x00\x08\x00\x00",
        BEGIN_CLOSE,
        b"\x01\x04\x00\x01\x00\x5a\x00\x00",
        GET_PARAMS,
        b"\x01\x04\x00\x01\x00\x00\x00\x00",
        b"\x01\x05\x00\x01\x00\x00\x00\x00",
    ],
    records: &[
        rec(Rt::BeginRequest, 1, BEGIN_CLOSE),
        rec(Rt::Params, 1, GET_PARAMS),
        rec(Rt::Params, 1, b""),
        rec(Rt::Stdin, 1, b""),
    ],
};

const GET_VALUES: &[u8] = b"\
    \x0e\x00FCGI_MAX_CONNS\
    \x0d\x00FCGI_MAX_REQS\
    \x0f\x00FCGI_MPXS_CONNS";

/// Management and odd records: GET_VALUES on id 0, a request on id 2 that
/// is aborted at once, and a record of unknown type 12 whose 13 bytes of
/// padding are junk.
const MANAGEMENT: Fixture = Fixture {
    name: "management",
    wire: &[
        b"\x01\x09\x00\x00\x00\x30\x00\x00",
        GET_VALUES,
        b"\x01\x01\x00\x02\x00\x08\x00\x00",
        BEGIN_KEEP,
        b"\x01\x02\x00\x02\x00\x00\x00\x00",
        b"\x01\x0c\x00\x00\x00\x03\x0d\x00",
        b"xyz",
        &[0xa5; 13],
    ],
    records: &[
        rec(Rt::GetValues, 0, GET_VALUES),
        rec(Rt::BeginRequest, 2, BEGIN_KEEP),
        rec(Rt::AbortRequest, 2, b""),
        rec(Rt::Other(12), 0, b"xyz"),
    ],
};

const FIXTURES: &[Fixture] = &[NGINX_POST, UNPADDED_GET, MANAGEMENT];

/// Parses records from the start of `b` until one is incomplete; returns
/// them and the offset at which each ends. Panics on an error.
fn parse_all(b: &[u8]) -> (Vec<Record<'_>>, Vec<usize>) {
    let mut records = Vec::new();
    let mut ends = Vec::new();
    let mut at = 0;
    loop {
        match parse_record(&b[at..]) {
            Ok(Status::Complete(r, n)) => {
                assert!(n >= HEADER_LEN && n <= b.len() - at);
                at += n;
                records.push(r);
                ends.push(at);
            }
            Ok(Status::Partial) => return (records, ends),
            Err(e) => panic!("error at offset {at}: {e}"),
        }
    }
}

/// A reader's loop: append what arrived, take every complete record, keep
/// the rest for the next read.
#[derive(Default)]
struct Incremental {
    buf: Vec<u8>,
    records: Vec<Owned>,
}

impl Incremental {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let mut used = 0;
        while let Status::Complete(r, n) =
            parse_record(&self.buf[used..]).expect("valid stream")
        {
            self.records.push(Owned::from(&r));
            used += n;
        }
        self.buf.drain(..used);
    }
}

fn owned(records: &[Record<'_>]) -> Vec<Owned> {
    records.iter().map(Owned::from).collect()
}

#[test]
fn fixtures_parse_to_their_records() {
    for f in FIXTURES {
        let bytes = f.bytes();
        let (records, ends) = parse_all(&bytes);
        assert_eq!(records, f.records, "{}", f.name);
        assert_eq!(ends.last(), Some(&bytes.len()), "{}", f.name);
    }
}

#[test]
fn every_prefix_of_a_fixture_gives_the_records_before_the_cut() {
    for f in FIXTURES {
        let bytes = f.bytes();
        let (_, ends) = parse_all(&bytes);
        for k in 0..=bytes.len() {
            let (records, got_ends) = parse_all(&bytes[..k]);
            let whole = ends.iter().filter(|&&e| e <= k).count();
            assert_eq!(records, f.records[..whole], "{} cut at {k}", f.name);
            assert_eq!(got_ends, ends[..whole], "{} cut at {k}", f.name);
        }
    }
}

#[test]
fn every_two_way_split_of_a_fixture_gives_the_same_records() {
    for f in FIXTURES {
        let bytes = f.bytes();
        let want = owned(f.records);
        for split in 0..=bytes.len() {
            let mut r = Incremental::default();
            r.feed(&bytes[..split]);
            r.feed(&bytes[split..]);
            assert_eq!(r.records, want, "{} split at {split}", f.name);
            assert!(r.buf.is_empty(), "{} split at {split}", f.name);
        }
    }
}

#[test]
fn a_fixture_fed_one_byte_at_a_time_gives_the_same_records() {
    for f in FIXTURES {
        let mut r = Incremental::default();
        for b in f.bytes() {
            r.feed(&[b]);
        }
        assert_eq!(r.records, owned(f.records), "{}", f.name);
        assert!(r.buf.is_empty());
    }
}

#[test]
fn fixture_begin_request_bodies_parse() {
    let keep = parse_begin_request(BEGIN_KEEP).expect("valid body");
    assert_eq!(keep.role, Role::Responder);
    assert!(keep.keep_conn);
    let close = parse_begin_request(BEGIN_CLOSE).expect("valid body");
    assert_eq!(close.role, Role::Responder);
    assert!(!close.keep_conn);
}

#[test]
fn nginx_params_split_over_two_records_decode_whole() {
    let bytes = NGINX_POST.bytes();
    let (records, _) = parse_all(&bytes);
    let stream: Vec<u8> = records
        .iter()
        .filter(|r| r.rtype == Rt::Params)
        .flat_map(|r| r.content)
        .copied()
        .collect();
    let pairs: Vec<(&[u8], &[u8])> = Pairs::new(&stream)
        .collect::<Result<_>>()
        .expect("whole stream");
    let want: &[(&[u8], &[u8])] = &[
        (b"SCRIPT_FILENAME", b"/srv/www/cgi-bin/form.cgi"),
        (b"QUERY_STRING", b""),
        (b"REQUEST_METHOD", b"POST"),
        (b"CONTENT_TYPE", b"application/x-www-form-urlencoded"),
        (b"CONTENT_LENGTH", b"11"),
        (b"HTTP_USER_AGENT", USER_AGENT),
        (b"SERVER_SOFTWARE", b"nginx/1.24.0"),
        (b"REMOTE_ADDR", b"203.0.113.7"),
    ];
    assert_eq!(pairs, want);
    // Neither record alone holds the user agent pair.
    assert!(Pairs::new(POST_PARAMS_1).any(|p| p.is_err()));
    assert!(Pairs::new(POST_PARAMS_2).any(|p| p.is_err()));
}

// ---------------------------------------------------------------------
// No input makes a parser panic.

/// Byte values at the edges of what the parsers here decide on.
const EDGES: &[u8] = &[0x00, 0x01, 0x07, 0x08, 0x7f, 0x80, 0xfe, 0xff];

/// Up to 299 bytes; half the time shaped like a record header (version 1,
/// and often lengths that fit or nearly fit what follows) so that the
/// deeper paths are reached.
fn record_input(rng: &mut XorShift) -> Vec<u8> {
    let len = rng.below(300);
    let mut b: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    if b.len() >= HEADER_LEN && rng.below(2) == 0 {
        b[0] = VERSION_1;
        if rng.below(2) == 0 {
            let room = b.len() - HEADER_LEN;
            let content = rng.below(room + 2);
            let pad = rng.below(room.saturating_sub(content) + 2).min(255);
            b[4..6].copy_from_slice(&(content as u16).to_be_bytes());
            b[6] = pad as u8;
        }
    }
    b
}

/// How each parser answered, to show the search reached every outcome.
#[derive(Default, Debug)]
struct Outcomes {
    complete: usize,
    partial: usize,
    error: usize,
}

/// Runs every parser on `b` and checks what each says against the bytes.
fn check_record_parsers(b: &[u8], seen: &mut Outcomes) {
    let header = parse_header(b);
    match &header {
        Ok(Status::Complete(h, n)) => {
            assert_eq!(*n, HEADER_LEN);
            assert_eq!(b[0], VERSION_1);
            assert_eq!(h.rtype.as_u8(), b[1]);
            assert_eq!(h.request_id.to_be_bytes(), b[2..4]);
            assert_eq!(h.content_length.to_be_bytes(), b[4..6]);
            assert_eq!(h.padding_length, b[6]);
        }
        Ok(Status::Partial) => assert!(b.len() < HEADER_LEN),
        Err(_) => assert!(b.len() >= HEADER_LEN && b[0] != VERSION_1),
    }

    match parse_record(b) {
        Ok(Status::Complete(r, n)) => {
            seen.complete += 1;
            let Ok(Status::Complete(h, _)) = header else {
                panic!("record without a header: {header:?}");
            };
            let len = usize::from(h.content_length);
            assert!(n >= HEADER_LEN && n <= b.len());
            assert_eq!(n, h.record_len());
            assert_eq!((r.rtype, r.request_id), (h.rtype, h.request_id));
            assert_eq!(r.content, &b[HEADER_LEN..HEADER_LEN + len]);
            // The same record from exactly its bytes; one fewer is not
            // enough.
            assert_eq!(complete(parse_record(&b[..n])), (r, n));
            assert!(is_partial(&parse_record(&b[..n - 1])));
            let _ = parse_begin_request(r.content);
        }
        Ok(Status::Partial) => {
            seen.partial += 1;
            match header {
                Ok(Status::Complete(h, _)) => {
                    assert!(b.len() < h.record_len());
                }
                Ok(Status::Partial) => {}
                Err(e) => panic!("record Partial, header Err: {e}"),
            }
        }
        Err(_) => {
            seen.error += 1;
            assert!(header.is_err());
        }
    }

    assert_eq!(parse_begin_request(b).is_ok(), b.len() == 8);
}

#[test]
fn no_input_makes_record_parsers_panic() {
    let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15, EDGES);
    let mut seen = Outcomes::default();
    for i in 0..20_000 {
        let b = record_input(&mut rng);
        let r = std::panic::catch_unwind(|| {
            let mut s = Outcomes::default();
            check_record_parsers(&b, &mut s);
            s
        });
        match r {
            Ok(s) => {
                seen.complete += s.complete;
                seen.partial += s.partial;
                seen.error += s.error;
            }
            Err(_) => panic!("input {i} failed: {b:02x?}"),
        }
    }
    assert!(seen.complete > 1000, "{seen:?}");
    assert!(seen.partial > 1000, "{seen:?}");
    assert!(seen.error > 1000, "{seen:?}");
}

#[test]
fn random_records_round_trip() {
    let mut rng = XorShift::new(0x2545_f491_4f6c_dd1d, EDGES);
    for _ in 0..5_000 {
        let rtype = RecordType::from_u8(rng.byte());
        let id = rng.next_u64() as u16;
        let content: Vec<u8> =
            (0..rng.below(300)).map(|_| rng.byte()).collect();
        let mut out = Vec::new();
        push_record(&mut out, rtype, id, &content);
        assert_eq!(out.len() % 8, 0);
        let want = rec(rtype, id, &content);
        assert_eq!(complete(parse_record(&out)), (want, out.len()));
    }
}
