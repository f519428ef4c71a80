//! FastCGI 1.0 records (spec §3.3, §8): the 8-byte header, the bodies of
//! BEGIN_REQUEST, END_REQUEST and UNKNOWN_TYPE, and the splitting of a
//! stream into records of at most 65535 bytes. Bytes in, values out: no
//! I/O here.

use crate::error::{Error, Result};

/// The only protocol version (`FCGI_VERSION_1`).
pub const VERSION_1: u8 = 1;
/// Length of a record header (`FCGI_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;
/// Largest content of one record: the length field is 16 bits.
pub const MAX_CONTENT: usize = 65535;
/// Request id of management records (`FCGI_NULL_REQUEST_ID`).
pub const NULL_REQUEST_ID: u16 = 0;
/// `FCGI_KEEP_CONN`: the flag bit of BEGIN_REQUEST.
pub const KEEP_CONN: u8 = 1;

/// Outcome of parsing a prefix of a byte stream (httparse style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A value, and how many bytes of input it used.
    Complete(T, usize),
    /// More bytes are needed; nothing was used.
    Partial,
}

/// Record types of spec §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// `FCGI_BEGIN_REQUEST` (1)
    BeginRequest,
    /// `FCGI_ABORT_REQUEST` (2)
    AbortRequest,
    /// `FCGI_END_REQUEST` (3)
    EndRequest,
    /// `FCGI_PARAMS` (4)
    Params,
    /// `FCGI_STDIN` (5)
    Stdin,
    /// `FCGI_STDOUT` (6)
    Stdout,
    /// `FCGI_STDERR` (7)
    Stderr,
    /// `FCGI_DATA` (8)
    Data,
    /// `FCGI_GET_VALUES` (9)
    GetValues,
    /// `FCGI_GET_VALUES_RESULT` (10)
    GetValuesResult,
    /// `FCGI_UNKNOWN_TYPE` (11)
    UnknownType,
    /// Any other type byte.
    Other(u8),
}

impl RecordType {
    /// The type for a wire byte.
    pub fn from_u8(b: u8) -> RecordType {
        match b {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            other => RecordType::Other(other),
        }
    }

    /// The wire byte of this type.
    pub fn as_u8(self) -> u8 {
        match self {
            RecordType::BeginRequest => 1,
            RecordType::AbortRequest => 2,
            RecordType::EndRequest => 3,
            RecordType::Params => 4,
            RecordType::Stdin => 5,
            RecordType::Stdout => 6,
            RecordType::Stderr => 7,
            RecordType::Data => 8,
            RecordType::GetValues => 9,
            RecordType::GetValuesResult => 10,
            RecordType::UnknownType => 11,
            RecordType::Other(b) => b,
        }
    }
}

/// Roles of spec §6. Only the responder is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `FCGI_RESPONDER` (1): the CGI/1.1 role.
    Responder,
    /// `FCGI_AUTHORIZER` (2)
    Authorizer,
    /// `FCGI_FILTER` (3)
    Filter,
    /// Any other role number.
    Other(u16),
}

impl Role {
    /// The role for a wire number.
    pub fn from_u16(n: u16) -> Role {
        match n {
            1 => Role::Responder,
            2 => Role::Authorizer,
            3 => Role::Filter,
            other => Role::Other(other),
        }
    }
}

/// `protocolStatus` of END_REQUEST (spec §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE` (0)
    RequestComplete = 0,
    /// `FCGI_CANT_MPX_CONN` (1)
    CantMpxConn = 1,
    /// `FCGI_OVERLOADED` (2)
    Overloaded = 2,
    /// `FCGI_UNKNOWN_ROLE` (3)
    UnknownRole = 3,
}

/// A parsed record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The record type.
    pub rtype: RecordType,
    /// The request id (0 for management records).
    pub request_id: u16,
    /// Length of the content that follows the header.
    pub content_length: u16,
    /// Length of the padding after the content.
    pub padding_length: u8,
}

impl Header {
    /// Total bytes of the record: header, content and padding.
    pub fn record_len(&self) -> usize {
        HEADER_LEN
            + usize::from(self.content_length)
            + usize::from(self.padding_length)
    }
}

/// A complete record borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record type.
    pub rtype: RecordType,
    /// The request id.
    pub request_id: u16,
    /// The content, without padding.
    pub content: &'a [u8],
}

/// Parses a record header from the start of `b`. The only error is a
/// version byte other than 1, after which nothing on the connection can be
/// trusted.
pub fn parse_header(b: &[u8]) -> Result<Status<Header>> {
    let Some(h) = b.get(..HEADER_LEN) else {
        return Ok(Status::Partial);
    };
    if h[0] != VERSION_1 {
        return Err(Error::protocol(format!(
            "record with version {} (only version 1 exists)",
            h[0]
        )));
    }
    Ok(Status::Complete(
        Header {
            rtype: RecordType::from_u8(h[1]),
            request_id: u16::from_be_bytes([h[2], h[3]]),
            content_length: u16::from_be_bytes([h[4], h[5]]),
            padding_length: h[6],
        },
        HEADER_LEN,
    ))
}

/// Parses one whole record (header, content, padding) from the start of
/// `b`; `Partial` until all of it is there.
pub fn parse_record(b: &[u8]) -> Result<Status<Record<'_>>> {
    let h = match parse_header(b)? {
        Status::Complete(h, _) => h,
        Status::Partial => return Ok(Status::Partial),
    };
    let end = HEADER_LEN + usize::from(h.content_length);
    let total = h.record_len();
    match (b.get(HEADER_LEN..end), b.len() >= total) {
        (Some(content), true) => Ok(Status::Complete(
            Record {
                rtype: h.rtype,
                request_id: h.request_id,
                content,
            },
            total,
        )),
        _ => Ok(Status::Partial),
    }
}

/// The body of BEGIN_REQUEST (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequest {
    /// The role the server asks for.
    pub role: Role,
    /// True if and only if `FCGI_KEEP_CONN` is set.
    pub keep_conn: bool,
}

/// Parses a BEGIN_REQUEST body; it must be exactly 8 bytes.
pub fn parse_begin_request(content: &[u8]) -> Result<BeginRequest> {
    match content {
        [r1, r0, flags, _, _, _, _, _] => Ok(BeginRequest {
            role: Role::from_u16(u16::from_be_bytes([*r1, *r0])),
            keep_conn: flags & KEEP_CONN != 0,
        }),
        _ => Err(Error::protocol(format!(
            "BEGIN_REQUEST body of {} bytes (must be 8)",
            content.len()
        ))),
    }
}

/// Appends the 8-byte header of a record with `len` bytes of content and
/// the padding that rounds it up to a multiple of 8 (spec §3.3
/// recommends 8-byte alignment). Returns the padding length.
fn push_header(out: &mut Vec<u8>, rtype: RecordType, id: u16, len: u16) -> u8 {
    let padding = (8 - (len % 8) as u8) % 8;
    let [i1, i0] = id.to_be_bytes();
    let [l1, l0] = len.to_be_bytes();
    out.extend_from_slice(&[
        VERSION_1,
        rtype.as_u8(),
        i1,
        i0,
        l1,
        l0,
        padding,
        0,
    ]);
    padding
}

/// Appends one record carrying `content` (at most 65535 bytes: longer
/// content is cut at the limit, so use [`push_stream`] for streams).
pub fn push_record(
    out: &mut Vec<u8>,
    rtype: RecordType,
    id: u16,
    content: &[u8],
) {
    let content = &content[..content.len().min(MAX_CONTENT)];
    // The cut above makes this conversion exact.
    let len = u16::try_from(content.len()).unwrap_or(u16::MAX);
    let padding = push_header(out, rtype, id, len);
    out.extend_from_slice(content);
    out.resize(out.len() + usize::from(padding), 0);
}

/// Appends `data` as stream records of at most 65535 bytes each. Empty
/// `data` appends nothing: the empty record that ends a stream is written
/// by [`push_end_of_stream`].
pub fn push_stream(
    out: &mut Vec<u8>,
    rtype: RecordType,
    id: u16,
    data: &[u8],
) {
    for chunk in data.chunks(MAX_CONTENT) {
        push_record(out, rtype, id, chunk);
    }
}

/// Appends the empty record that ends a stream (spec §3.3).
pub fn push_end_of_stream(out: &mut Vec<u8>, rtype: RecordType, id: u16) {
    push_record(out, rtype, id, &[]);
}

/// Appends an END_REQUEST record (spec §5.5).
pub fn push_end_request(
    out: &mut Vec<u8>,
    id: u16,
    app_status: u32,
    status: ProtocolStatus,
) {
    let [a3, a2, a1, a0] = app_status.to_be_bytes();
    let body = [a3, a2, a1, a0, status as u8, 0, 0, 0];
    push_record(out, RecordType::EndRequest, id, &body);
}

/// Appends an UNKNOWN_TYPE record naming `unknown` (spec §4.2).
pub fn push_unknown_type(out: &mut Vec<u8>, unknown: u8) {
    let body = [unknown, 0, 0, 0, 0, 0, 0, 0];
    push_record(out, RecordType::UnknownType, NULL_REQUEST_ID, &body);
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
