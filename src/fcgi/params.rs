//! FastCGI name-value pairs (spec §3.4): lengths of one byte (0..=127) or
//! four bytes (high bit set, 31-bit value), then the name and value bytes.
//! Bytes in, values out: no I/O, no policy about which names mean what.

use super::record::Status;
use crate::error::{Error, Result};

/// Largest length the 4-byte form can carry.
pub const MAX_LEN: u32 = 0x7fff_ffff;

/// Parses one length from the start of `b`.
pub fn parse_len(b: &[u8]) -> Status<u32> {
    match b {
        [] => Status::Partial,
        [n, ..] if n & 0x80 == 0 => Status::Complete(u32::from(*n), 1),
        [b3, b2, b1, b0, ..] => {
            Status::Complete(u32::from_be_bytes([b3 & 0x7f, *b2, *b1, *b0]), 4)
        }
        _ => Status::Partial,
    }
}

/// The lengths that open a pair: name length, value length, and how many
/// bytes the two length fields took. Lets a caller check limits before the
/// pair itself has arrived, and so before anything is allocated for it.
pub fn parse_pair_head(b: &[u8]) -> Status<(u32, u32)> {
    let Status::Complete(name_len, n1) = parse_len(b) else {
        return Status::Partial;
    };
    let Status::Complete(value_len, n2) = parse_len(&b[n1..]) else {
        return Status::Partial;
    };
    Status::Complete((name_len, value_len), n1 + n2)
}

/// A name-value pair borrowed from the input.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Parses one whole pair from the start of `b`.
pub fn parse_pair(b: &[u8]) -> Status<Pair<'_>> {
    let Status::Complete((name_len, value_len), head) = parse_pair_head(b)
    else {
        return Status::Partial;
    };
    let name_end = head.checked_add(name_len as usize);
    let value_end = name_end.and_then(|n| n.checked_add(value_len as usize));
    match (name_end, value_end) {
        (Some(name_end), Some(value_end)) => {
            match (b.get(head..name_end), b.get(name_end..value_end)) {
                (Some(name), Some(value)) => {
                    Status::Complete((name, value), value_end)
                }
                _ => Status::Partial,
            }
        }
        _ => Status::Partial,
    }
}

/// Iterates over the pairs of a complete stream (such as a GET_VALUES body
/// or a whole PARAMS stream). A stream that ends inside a pair yields one
/// error and then stops.
pub struct Pairs<'a> {
    rest: &'a [u8],
}

impl<'a> Pairs<'a> {
    /// Pairs of `stream`.
    pub fn new(stream: &'a [u8]) -> Pairs<'a> {
        Pairs { rest: stream }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<Pair<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match parse_pair(self.rest) {
            Status::Complete(pair, used) => {
                self.rest = &self.rest[used..];
                Some(Ok(pair))
            }
            Status::Partial => {
                let left = self.rest.len();
                self.rest = &[];
                Some(Err(Error::protocol(format!(
                    "name-value stream ends inside a pair ({left} bytes left)"
                ))))
            }
        }
    }
}

/// Appends a length in the shortest form. Lengths above [`MAX_LEN`] cannot
/// be encoded; callers never have such a pair (a record stream holding one
/// would be 2 GiB).
pub fn push_len(out: &mut Vec<u8>, len: u32) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len.min(MAX_LEN) | 0x8000_0000).to_be_bytes());
    }
}

/// Appends one pair. Returns false, and appends nothing, if and only if a
/// length does not fit the 31-bit field.
pub fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> bool {
    let (Ok(n), Ok(v)) =
        (u32::try_from(name.len()), u32::try_from(value.len()))
    else {
        return false;
    };
    if n > MAX_LEN || v > MAX_LEN {
        return false;
    }
    push_len(out, n);
    push_len(out, v);
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    true
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
