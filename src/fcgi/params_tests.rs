//! Tests of the name-value codec (STYLE rules 2 and 3): lengths and pairs
//! as literal bytes in both directions, every prefix and every two-way
//! split of a PARAMS stream, and a seeded pseudo-random search for inputs
//! that make a parser panic or lie about what it consumed.

use super::*;
use crate::fcgi::test_rng::XorShift;

// ---------------------------------------------------------------------
// Lengths.

/// Length bytes, the length they mean, and whether an encoder writes them
/// (it always picks the shortest form; a decoder takes either).
const LENGTHS: &[(&[u8], u32, bool)] = &[
    (&[0x00], 0, true),
    (&[0x01], 1, true),
    (&[0x05], 5, true),
    (&[0x7f], 127, true),
    (&[0x80, 0x00, 0x00, 0x80], 128, true),
    (&[0x80, 0x00, 0x00, 0xc8], 200, true),
    (&[0x80, 0x00, 0x00, 0xff], 255, true),
    (&[0x80, 0x00, 0x01, 0x00], 256, true),
    (&[0x80, 0x00, 0xff, 0xff], 65535, true),
    (&[0x80, 0x01, 0x00, 0x00], 65536, true),
    (&[0x81, 0x02, 0x03, 0x04], 0x0102_0304, true),
    (&[0xff, 0xff, 0xff, 0xff], 0x7fff_ffff, true),
    // The 4-byte form of small values: legal, never written.
    (&[0x80, 0x00, 0x00, 0x00], 0, false),
    (&[0x80, 0x00, 0x00, 0x05], 5, false),
    (&[0x80, 0x00, 0x00, 0x7f], 127, false),
];

#[test]
fn length_bytes_parse_to_length() {
    for &(bytes, len, _) in LENGTHS {
        assert_eq!(parse_len(bytes), Status::Complete(len, bytes.len()));
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0xff, 0x01]);
        assert_eq!(parse_len(&longer), Status::Complete(len, bytes.len()));
        for k in 0..bytes.len() {
            assert_eq!(parse_len(&bytes[..k]), Status::Partial, "{bytes:?}");
        }
    }
}

#[test]
fn length_encodes_to_bytes() {
    for &(bytes, len, shortest) in LENGTHS {
        if !shortest {
            continue;
        }
        let mut out = b"kept".to_vec();
        push_len(&mut out, len);
        assert_eq!(&out[..4], b"kept");
        assert_eq!(&out[4..], bytes, "{len}");
    }
}

#[test]
fn lengths_round_trip_across_the_boundaries() {
    let edges = [0, 1, 126, 127, 128, 129, 255, 256, 65535, 65536, MAX_LEN];
    for len in edges.into_iter().chain(edges.map(|n| MAX_LEN - n)) {
        let mut out = Vec::new();
        push_len(&mut out, len);
        assert_eq!(out.len(), if len < 128 { 1 } else { 4 }, "{len}");
        assert_eq!(parse_len(&out), Status::Complete(len, out.len()));
    }
}

// ---------------------------------------------------------------------
// Pairs.

/// Pair heads: bytes, then (name length, value length, bytes used).
const HEADS: &[(&[u8], (u32, u32), usize)] = &[
    (b"\x00\x00", (0, 0), 2),
    (b"\x0b\x03SERVER_PORT443", (11, 3), 2),
    (b"\x80\x00\x00\x80\x01", (128, 1), 5),
    (b"\x01\x80\x00\x00\xc8", (1, 200), 5),
    (b"\x80\x00\x00\x05\x80\x00\x00\x06", (5, 6), 8),
    (b"\xff\xff\xff\xff\xff\xff\xff\xff", (MAX_LEN, MAX_LEN), 8),
];

#[test]
fn pair_heads_parse_before_the_pair_arrives() {
    // The head is complete as soon as both lengths are there, however
    // far away the end of the pair is: that is what lets a caller refuse
    // a 2 GiB value before buffering any of it.
    for &(bytes, lens, used) in HEADS {
        assert_eq!(parse_pair_head(bytes), Status::Complete(lens, used));
        for k in 0..used {
            let got = parse_pair_head(&bytes[..k]);
            assert_eq!(got, Status::Partial, "{bytes:?} cut at {k}");
        }
    }
}

/// Whole pairs: bytes, name, value.
const PAIRS: &[(&[u8], &[u8], &[u8])] = &[
    (b"\x00\x00", b"", b""),
    (b"\x0b\x03SERVER_PORT443", b"SERVER_PORT", b"443"),
    (b"\x0c\x00QUERY_STRING", b"QUERY_STRING", b""),
    (b"\x00\x03abc", b"", b"abc"),
    (b"\x05\x02HTTPSon", b"HTTPS", b"on"),
    (b"\x80\x00\x00\x05\x80\x00\x00\x02HTTPSon", b"HTTPS", b"on"),
];

#[test]
fn pair_bytes_parse_to_pair() {
    for &(bytes, name, value) in PAIRS {
        let want = Status::Complete((name, value), bytes.len());
        assert_eq!(parse_pair(bytes), want);
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"\x01\x01xy");
        assert_eq!(parse_pair(&longer), want);
        for k in 0..bytes.len() {
            let got = parse_pair(&bytes[..k]);
            assert_eq!(got, Status::Partial, "{bytes:?} cut at {k}");
        }
    }
}

#[test]
fn pairs_encode_to_bytes() {
    for &(bytes, name, value) in PAIRS {
        if bytes.len() != 2 + name.len() + value.len() {
            continue; // not the shortest form
        }
        let mut out = b"kept".to_vec();
        assert!(push_pair(&mut out, name, value));
        assert_eq!(&out[..4], b"kept");
        assert_eq!(&out[4..], bytes);
    }
}

#[test]
fn pairs_with_long_names_and_values_round_trip() {
    let size = |len: usize| if len < 128 { 1 } else { 4 };
    let name = vec![b'N'; 65536];
    let value = vec![b'v'; 65536];
    for (n, v) in [(0, 127), (127, 128), (128, 127), (128, 200), (65536, 3)] {
        let (name, value) = (&name[..n], &value[..v]);
        let mut out = Vec::new();
        assert!(push_pair(&mut out, name, value));
        let head = size(n) + size(v);
        assert_eq!(out.len(), head + n + v);
        let want = Status::Complete((n as u32, v as u32), head);
        assert_eq!(parse_pair_head(&out), want);
        let got = parse_pair(&out);
        assert!(got == Status::Complete((name, value), out.len()), "{n} {v}");
    }
}

#[test]
fn huge_lengths_are_partial_not_a_panic() {
    // 2 + 2^31 - 1 + 2^31 - 1 bytes cannot be in memory; the pair is
    // merely unfinished.
    let cases: &[&[u8]] = &[
        b"\xff\xff\xff\xff\xff\xff\xff\xffname",
        b"\x7f\xff\xff\xff\xffname",
        b"\xff\xff\xff\xff\x00",
    ];
    for &bytes in cases {
        assert_eq!(parse_pair(bytes), Status::Partial);
        let errors: Vec<_> = Pairs::new(bytes).collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].is_err());
    }
}

// ---------------------------------------------------------------------
// A PARAMS stream, written out byte by byte.

/// A cookie long enough to need the 4-byte length form.
const COOKIE: [u8; 200] = cookie();

const fn cookie() -> [u8; 200] {
    let mut c = [0; 200];
    let mut i = 0;
    while i < c.len() {
        c[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    c
}

/// The stream in pieces (concatenated before use): a 1-byte-length pair,
/// an empty value, a 200-byte value, a name length in the 4-byte form of
/// a small number, and an empty pair at the end.
const STREAM: &[&[u8]] = &[
    b"\x0b\x03SERVER_PORT443",
    b"\x0c\x00QUERY_STRING",
    b"\x0b\x80\x00\x00\xc8HTTP_COOKIE",
    &COOKIE,
    b"\x80\x00\x00\x0b\x0bSERVER_NAMEexample.org",
    b"\x05\x02HTTPSon",
    b"\x00\x00",
];

/// The pairs of [`STREAM`], in order.
const STREAM_PAIRS: &[Pair<'static>] = &[
    (b"SERVER_PORT", b"443"),
    (b"QUERY_STRING", b""),
    (b"HTTP_COOKIE", &COOKIE),
    (b"SERVER_NAME", b"example.org"),
    (b"HTTPS", b"on"),
    (b"", b""),
];

/// Where each pair of [`STREAM`] ends.
fn pair_ends(stream: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0;
    while let Status::Complete(_, n) = parse_pair(&stream[at..]) {
        at += n;
        ends.push(at);
    }
    ends
}

#[test]
fn stream_iterates_to_its_pairs() {
    let stream = STREAM.concat();
    let pairs: Vec<Pair<'_>> = Pairs::new(&stream)
        .collect::<Result<_>>()
        .expect("whole stream");
    assert_eq!(pairs, STREAM_PAIRS);
    assert_eq!(pairs[2].1.len(), 200);
    assert_eq!(pair_ends(&stream).last(), Some(&stream.len()));
    assert!(Pairs::new(&[]).next().is_none());
}

#[test]
fn every_prefix_of_the_stream_gives_the_pairs_then_one_error() {
    let stream = STREAM.concat();
    let ends = pair_ends(&stream);
    for k in 0..=stream.len() {
        let mut it = Pairs::new(&stream[..k]);
        let whole = ends.iter().filter(|&&e| e <= k).count();
        for want in &STREAM_PAIRS[..whole] {
            let got = it.next().expect("a pair").expect("a whole pair");
            assert_eq!(got, *want, "cut at {k}");
        }
        if k != 0 && !ends.contains(&k) {
            let got = it.next().expect("an error");
            assert!(got.is_err(), "cut at {k}: {got:?}");
        }
        assert!(it.next().is_none(), "cut at {k}");
        assert!(it.next().is_none(), "cut at {k}");
    }
}

/// A reader's loop over PARAMS content arriving in pieces: take every
/// whole pair, keep the rest for the next piece.
#[derive(Default)]
struct Incremental {
    buf: Vec<u8>,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Incremental {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let mut used = 0;
        while let Status::Complete((n, v), len) = parse_pair(&self.buf[used..])
        {
            self.pairs.push((n.to_vec(), v.to_vec()));
            used += len;
        }
        self.buf.drain(..used);
    }
}

fn owned(pairs: &[Pair<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

#[test]
fn every_two_way_split_of_the_stream_gives_the_same_pairs() {
    let stream = STREAM.concat();
    let want = owned(STREAM_PAIRS);
    for split in 0..=stream.len() {
        let mut r = Incremental::default();
        r.feed(&stream[..split]);
        r.feed(&stream[split..]);
        assert_eq!(r.pairs, want, "split at {split}");
        assert!(r.buf.is_empty(), "split at {split}");
    }
}

#[test]
fn the_stream_fed_one_byte_at_a_time_gives_the_same_pairs() {
    let mut r = Incremental::default();
    for b in STREAM.concat() {
        r.feed(&[b]);
    }
    assert_eq!(r.pairs, owned(STREAM_PAIRS));
    assert!(r.buf.is_empty());
}

#[test]
fn the_stream_re_encodes_in_shortest_form() {
    let mut out = Vec::new();
    for (name, value) in STREAM_PAIRS {
        assert!(push_pair(&mut out, name, value));
    }
    // Only SERVER_NAME's 4-byte name length shrinks, by 3 bytes.
    let stream = STREAM.concat();
    assert_eq!(out.len(), stream.len() - 3);
    let pairs: Vec<Pair<'_>> = Pairs::new(&out)
        .collect::<Result<_>>()
        .expect("whole stream");
    assert_eq!(pairs, STREAM_PAIRS);
}

// ---------------------------------------------------------------------
// No input makes a parser panic.

/// Byte values at the edges of what the parsers here decide on.
const EDGES: &[u8] = &[0x00, 0x01, 0x02, 0x05, 0x7f, 0x80, 0xfe, 0xff];

/// Up to about 300 bytes. Half the time well-formed pairs (lengths in
/// either form), cut short half of those times; otherwise pieces that look
/// like parts of pairs: short lengths, 4-byte lengths small and huge, and
/// runs of bytes.
fn params_input(rng: &mut XorShift) -> Vec<u8> {
    let target = rng.below(300);
    let mut b = Vec::with_capacity(target + 16);
    if rng.below(2) == 0 {
        while b.len() < target {
            // Now and then a value long enough for the 4-byte form.
            let longest = if rng.below(4) == 0 { 200 } else { 12 };
            let lens = [rng.below(12), rng.below(longest)];
            for len in lens {
                if len < 128 && rng.below(4) != 0 {
                    b.push(len as u8);
                } else {
                    let four = len as u32 | 0x8000_0000;
                    b.extend_from_slice(&four.to_be_bytes());
                }
            }
            let body = lens[0] + lens[1];
            b.extend((0..body).map(|_| rng.byte()));
        }
        if rng.below(2) == 0 {
            b.truncate(rng.below(b.len() + 1));
        }
        return b;
    }
    while b.len() < target {
        match rng.below(5) {
            0 => b.push(rng.byte()),
            1 => b.push(rng.below(8) as u8),
            2 => b.extend_from_slice(&[0x80, 0, 0, rng.below(16) as u8]),
            3 => {
                let huge = rng.next_u64() as u32 | 0x8000_0000;
                b.extend_from_slice(&huge.to_be_bytes());
            }
            _ => {
                for _ in 0..rng.below(16) {
                    b.push(rng.next_u64() as u8);
                }
            }
        }
    }
    b.truncate(target);
    b
}

/// What the iterator met, to show the search reached every outcome.
#[derive(Default, Debug)]
struct Outcomes {
    /// Whole pairs.
    pairs: usize,
    /// Non-empty inputs that ended exactly after a pair.
    clean_ends: usize,
    /// Inputs that ended inside a pair.
    errors: usize,
}

/// Runs every parser on `b` and checks what each says against the bytes.
fn check_params_parsers(b: &[u8], seen: &mut Outcomes) {
    match parse_len(b) {
        Status::Complete(len, 1) => {
            assert!(len < 0x80);
            assert_eq!(u32::from(b[0]), len);
        }
        Status::Complete(len, 4) => {
            assert!(b[0] & 0x80 != 0 && len <= MAX_LEN);
            assert_eq!(
                len | 0x8000_0000,
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            );
        }
        Status::Complete(len, n) => panic!("length {len} in {n} bytes"),
        Status::Partial => {
            assert!(b.is_empty() || (b[0] & 0x80 != 0 && b.len() < 4));
        }
    }

    let head = parse_pair_head(b);
    if let Status::Complete((name_len, value_len), used) = head {
        assert!(used <= b.len() && [2, 5, 8].contains(&used));
        let Status::Complete(n, k) = parse_len(b) else {
            panic!("head without a name length");
        };
        assert_eq!(parse_len(&b[k..]), Status::Complete(value_len, used - k));
        assert_eq!(n, name_len);
    }

    match parse_pair(b) {
        Status::Complete((name, value), used) => {
            let Status::Complete((n, v), h) = head else {
                panic!("pair without a head");
            };
            assert_eq!((name.len(), value.len()), (n as usize, v as usize));
            assert_eq!(used, h + name.len() + value.len());
            assert!(used <= b.len());
            assert_eq!(name, &b[h..h + name.len()]);
            assert_eq!(value, &b[h + name.len()..used]);
            // The shortest form is never longer, and says the same.
            let mut out = Vec::new();
            assert!(push_pair(&mut out, name, value));
            assert!(out.len() <= used);
            let again = Status::Complete((name, value), out.len());
            assert_eq!(parse_pair(&out), again);
        }
        Status::Partial => {
            if let Status::Complete((n, v), h) = head {
                let end = h as u64 + u64::from(n) + u64::from(v);
                assert!(end > b.len() as u64);
            }
        }
    }

    // The iterator agrees with parse_pair step by step, and ends with one
    // error if and only if bytes are left over.
    let mut it = Pairs::new(b);
    let mut at = 0;
    while let Status::Complete(pair, n) = parse_pair(&b[at..]) {
        let got = it.next().expect("a pair").expect("a whole pair");
        assert_eq!(got, pair);
        seen.pairs += 1;
        at += n;
    }
    if at < b.len() {
        assert!(it.next().expect("an error").is_err());
        seen.errors += 1;
    } else if !b.is_empty() {
        seen.clean_ends += 1;
    }
    assert!(it.next().is_none());
    assert!(it.next().is_none());
}

#[test]
fn no_input_makes_params_parsers_panic() {
    let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15, EDGES);
    let mut seen = Outcomes::default();
    for i in 0..20_000 {
        let b = params_input(&mut rng);
        let r = std::panic::catch_unwind(|| {
            let mut s = Outcomes::default();
            check_params_parsers(&b, &mut s);
            s
        });
        match r {
            Ok(s) => {
                seen.pairs += s.pairs;
                seen.clean_ends += s.clean_ends;
                seen.errors += s.errors;
            }
            Err(_) => panic!("input {i} failed: {b:02x?}"),
        }
    }
    assert!(seen.pairs > 10_000, "{seen:?}");
    assert!(seen.clean_ends > 100, "{seen:?}");
    assert!(seen.errors > 1_000, "{seen:?}");
}

#[test]
fn random_lengths_round_trip() {
    let mut rng = XorShift::new(0x2545_f491_4f6c_dd1d, EDGES);
    for _ in 0..20_000 {
        // Shifting by a random amount spreads lengths over every size.
        let len = (rng.next_u64() as u32 >> rng.below(32)) & MAX_LEN;
        let mut out = Vec::new();
        push_len(&mut out, len);
        assert_eq!(out.len(), if len < 128 { 1 } else { 4 });
        assert_eq!(parse_len(&out), Status::Complete(len, out.len()));
    }
}
