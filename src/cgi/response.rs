//! The CGI response header block (RFC 3875 §6): header lines ended by LF
//! or CRLF, then an empty line. Bytes in, a parsed head out; no I/O.
//!
//! The status follows §6.3: a `Status:` header gives it; else a
//! `Location:` gives 302 (a client redirect, §6.2.3); else 200.

use super::super::fcgi::record::Status;

/// Largest header block accepted from a program.
pub const MAX_HEAD: usize = 64 * 1024;

/// A parsed header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The HTTP status code the response will have.
    pub status: u16,
    /// True if and only if a `Status:` header was present.
    pub has_status: bool,
    /// The `Location:` value, if any.
    pub location: Option<String>,
    /// The header lines other than `Status:` (name, value).
    pub headers: Vec<(String, String)>,
}

/// Why a header block is not valid CGI output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// A line is not `Name: value` (the line, cut short).
    BadLine(String),
    /// `Status:` is not a three-digit code from 100 to 999.
    BadStatus(String),
    /// No empty line within [`MAX_HEAD`] bytes.
    TooLong,
    /// The block has no header at all.
    Empty,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::BadLine(l) => write!(f, "malformed header line {l:?}"),
            HeadError::BadStatus(s) => write!(f, "bad Status header {s:?}"),
            HeadError::TooLong => {
                write!(f, "header block longer than {MAX_HEAD} bytes")
            }
            HeadError::Empty => write!(f, "empty header block"),
        }
    }
}

/// Parses the header block at the start of `b`. `Complete(head, n)`: the
/// body starts at `b[n..]`.
pub fn parse_head(b: &[u8]) -> Result<Status<Head>, HeadError> {
    let mut pos = 0;
    let mut head = Head {
        status: 200,
        has_status: false,
        location: None,
        headers: Vec::new(),
    };
    loop {
        let Some(nl) = b[pos..].iter().position(|&c| c == b'\n') else {
            return if b.len() > MAX_HEAD {
                Err(HeadError::TooLong)
            } else {
                Ok(Status::Partial)
            };
        };
        let end = pos + nl;
        if end + 1 > MAX_HEAD {
            return Err(HeadError::TooLong);
        }
        let line = &b[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = end + 1;
        if line.is_empty() {
            if head.headers.is_empty() && !head.has_status {
                return Err(HeadError::Empty);
            }
            if !head.has_status && head.location.is_some() {
                head.status = 302;
            }
            return Ok(Status::Complete(head, pos));
        }
        let text = String::from_utf8_lossy(line);
        let cut = || text.chars().take(80).collect::<String>();
        let Some((name, value)) = text.split_once(':') else {
            return Err(HeadError::BadLine(cut()));
        };
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(HeadError::BadLine(cut()));
        }
        let value = value.trim_matches([' ', '\t']).to_string();
        if name.eq_ignore_ascii_case("status") {
            head.status = parse_status(&value)
                .ok_or_else(|| HeadError::BadStatus(value.clone()))?;
            head.has_status = true;
        } else {
            if name.eq_ignore_ascii_case("location") {
                head.location = Some(value.clone());
            }
            head.headers.push((name.to_string(), value));
        }
    }
}

fn parse_status(v: &str) -> Option<u16> {
    let code = v.get(..3)?;
    let rest = &v[3..];
    if !code.bytes().all(|c| c.is_ascii_digit())
        || !(rest.is_empty() || rest.starts_with(' '))
    {
        return None;
    }
    code.parse().ok().filter(|c| (100..=999).contains(c))
}

/// True if and only if `c` may appear in a header name (RFC 9110 token).
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &[u8]) -> (Head, usize) {
        match parse_head(b) {
            Ok(Status::Complete(h, n)) => (h, n),
            other => panic!("{other:?} for {b:?}"),
        }
    }

    #[test]
    fn status_rules_of_rfc3875() {
        let table: &[(&[u8], u16, usize)] = &[
            (b"Content-Type: text/plain\n\nbody", 200, 26),
            (b"Content-Type: text/plain\r\n\r\nbody", 200, 28),
            (b"Status: 404 Not Found\r\n\r\n", 404, 25),
            (b"Status: 201\n\n", 201, 13),
            (b"Location: http://x/\n\n", 302, 21),
            (b"Location: /local\n\n", 302, 18),
            (b"Status: 301 Moved\nLocation: /a\n\n", 301, 32),
            (b"status:500 oops\n\n", 500, 17),
        ];
        for (input, status, offset) in table {
            let (h, n) = complete(input);
            assert_eq!((h.status, n), (*status, *offset), "{input:?}");
        }
    }

    #[test]
    fn every_prefix_is_partial_never_an_error() {
        let full = b"Status: 200 OK\r\nContent-Type: text/html\r\n\r\n<p>";
        for cut in 0..43 {
            assert_eq!(parse_head(&full[..cut]), Ok(Status::Partial), "{cut}");
        }
        assert_eq!(complete(full).1, 43);
    }

    #[test]
    fn rejects_what_is_not_a_header_block() {
        let bad: &[(&[u8], HeadError)] = &[
            (b"hello world\n\n", HeadError::BadLine("hello world".into())),
            (b"Bad Name: x\n\n", HeadError::BadLine("Bad Name: x".into())),
            (b"Status: abc\n\n", HeadError::BadStatus("abc".into())),
            (b"Status: 2000\n\n", HeadError::BadStatus("2000".into())),
            (b"Status: 099\n\n", HeadError::BadStatus("099".into())),
            (b"\n\nbody", HeadError::Empty),
            (b"\r\n", HeadError::Empty),
        ];
        for (input, err) in bad {
            assert_eq!(parse_head(input), Err(err.clone()), "{input:?}");
        }
        let long = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse_head(&long), Err(HeadError::TooLong));
    }
}
