//! JSON-RPC messages in the language server protocol's base framing
//! (`Content-Length: N\r\n\r\n` then N bytes of JSON), read from any byte
//! stream without trusting it.
//!
//! [`FrameReader::read_message`] never panics and always makes progress: every
//! call returns a message, the end of the input, or a [`FrameError`] after
//! consuming at least one byte. A frame whose header is unusable is skipped up
//! to the next `Content-Length:` (the reader resynchronises there), a body that
//! is not a JSON-RPC message becomes an error that says how to answer it
//! ([`FrameError::reply`]), and a declared length over [`MAX_CONTENT_LENGTH`]
//! is refused without reading the body into memory. No LSP types: `wfrun lsp`
//! (the binary) answers the messages.
//!
//! ```
//! use wfrun::rpc::{FrameReader, Message};
//! let input = b"Content-Length: 2\r\n\r\n[]Content-Length: 33\r\n\r\n{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}";
//! let mut frames = FrameReader::new(&input[..]);
//! let error = frames.read_message().unwrap_err();
//! assert_eq!(error.reply().unwrap()["error"]["code"], -32600);
//! assert!(matches!(frames.read_message(), Ok(Some(Message::Notification(n))) if n.method == "exit"));
//! assert!(matches!(frames.read_message(), Ok(None)));
//! ```

use std::fmt;
use std::io::{ErrorKind, Read};

pub use lsp_server::{Message, Notification, Request, RequestId, Response};
use serde_json::{json, Map, Value};

/// The largest body read: a longer declared length is an error and the reader
/// skips to the next frame.
pub const MAX_CONTENT_LENGTH: usize = 64 << 20;

/// A header line longer than this is not a header.
const MAX_HEADER_LINE: usize = 4096;

/// Where resynchronisation looks for the next frame (compared ignoring case).
const HEADER: &[u8] = b"content-length:";

/// How much is read from the input at a time (more when a body needs it).
const CHUNK: usize = 64 << 10;

/// How many places a body may be cut at (each tried with a parse).
const MAX_CUT_TRIES: u32 = 8;

/// JSON-RPC's code for a message that could not be read or parsed.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC's code for JSON that is not a valid request.
pub const INVALID_REQUEST: i32 = -32600;

/// Why the bytes read were not a message. Each holds what the log line and the
/// reply need; [`FrameError::reply`] is the JSON-RPC error response to send.
#[derive(Clone, Debug, PartialEq)]
pub enum FrameError {
    /// Bytes that are not a header (a missing header, a line that is not
    /// `Name: value`, a body longer than its declared length), skipped up to
    /// the next `Content-Length:` or the end of the input.
    NotAHeader { skipped: usize },
    /// A header block without `Content-Length`; skipped like `NotAHeader`.
    NoLength { skipped: usize },
    /// A `Content-Length` that is not a number; skipped like `NotAHeader`.
    BadLength { value: String, skipped: usize },
    /// A declared length over [`MAX_CONTENT_LENGTH`]; skipped like `NotAHeader`.
    TooLong { length: u64, skipped: usize },
    /// The input ended inside a frame: `missing` bytes of its body (0: in its
    /// header).
    Truncated { missing: usize },
    /// The declared length runs past the start of the next frame: the bytes
    /// before it were taken as the message and answered with an error (with
    /// the request's id when they held one).
    WrongLength {
        declared: usize,
        found: usize,
        id: Value,
    },
    /// The body is not JSON (or not UTF-8).
    Parse { error: String },
    /// JSON that is not a request, notification or response.
    Invalid { id: Value, reason: String },
    /// A malformed response from the client: logged, never answered.
    BadResponse { error: String },
    /// Reading the input failed; the reader reports the end of input next.
    Io { error: String },
}

impl FrameError {
    /// The JSON-RPC error code, or `None` for what is never answered (a
    /// client's malformed response, a failed read).
    pub fn code(&self) -> Option<i32> {
        match self {
            FrameError::Invalid { .. } => Some(INVALID_REQUEST),
            FrameError::BadResponse { .. } | FrameError::Io { .. } => None,
            _ => Some(PARSE_ERROR),
        }
    }

    /// The id to answer with: the request's when it could be read, else null.
    pub fn id(&self) -> Value {
        match self {
            FrameError::Invalid { id, .. } | FrameError::WrongLength { id, .. } => id.clone(),
            _ => Value::Null,
        }
    }

    /// The error response to send, if any.
    pub fn reply(&self) -> Option<Value> {
        let code = self.code()?;
        Some(json!({
            "jsonrpc": "2.0",
            "id": self.id(),
            "error": {"code": code, "message": self.to_string()},
        }))
    }
}

impl fmt::Display for FrameError {
    /// One line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NotAHeader { skipped } => write!(
                f,
                "skipped {skipped} bytes that are not a `Content-Length` header"
            ),
            FrameError::NoLength { skipped } => write!(
                f,
                "a header without `Content-Length`: skipped {skipped} bytes"
            ),
            FrameError::BadLength { value, skipped } => write!(
                f,
                "`Content-Length: {}` is not a length: skipped {skipped} bytes",
                value.escape_debug()
            ),
            // (A length past `usize` is kept as its largest value.)
            FrameError::TooLong { length, skipped } => write!(
                f,
                "a message of {length}{} bytes is over the limit of {MAX_CONTENT_LENGTH}: skipped {skipped} bytes",
                if *length >= usize::MAX as u64 { " or more" } else { "" }
            ),
            FrameError::Truncated { missing: 0 } => {
                write!(f, "the input ended inside a message's header")
            }
            FrameError::Truncated { missing } => {
                write!(f, "the input ended {missing} bytes short of a whole message")
            }
            FrameError::WrongLength {
                declared, found, ..
            } => write!(
                f,
                "`Content-Length: {declared}` runs into the next message, {found} bytes after the header"
            ),
            FrameError::Parse { error } => write!(f, "the message is not JSON: {error}"),
            FrameError::Invalid { reason, .. } => write!(f, "not a JSON-RPC message: {reason}"),
            FrameError::BadResponse { error } => write!(f, "a malformed response: {error}"),
            FrameError::Io { error } => write!(f, "reading the input failed: {error}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Messages read from a byte stream, one frame at a time, with its own buffer
/// (so that it can look ahead for the next header without losing it).
pub struct FrameReader<R> {
    input: R,
    buf: Vec<u8>,
    /// Consumed bytes at the front of `buf`.
    start: usize,
    eof: bool,
}

/// What the header block said.
enum Header {
    Length(usize),
    End,
}

impl<R: Read> FrameReader<R> {
    pub fn new(input: R) -> FrameReader<R> {
        FrameReader {
            input,
            buf: Vec::new(),
            start: 0,
            eof: false,
        }
    }

    /// The next message, `Ok(None)` at the end of the input, or what was
    /// wrong with the bytes consumed (reading goes on after them).
    pub fn read_message(&mut self) -> Result<Option<Message>, FrameError> {
        let length = match self.header()? {
            Header::End => return Ok(None),
            Header::Length(n) => n,
        };
        self.body(length)
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Reads more input; false at its end (or after a failed read, which is
    /// returned once).
    fn fill(&mut self, want: usize) -> Result<bool, FrameError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let have = self.buf.len();
        // Room for what is wanted without reallocating, zeroed a chunk at a time.
        self.buf.reserve(want.min(MAX_CONTENT_LENGTH));
        self.buf.resize(have + CHUNK, 0);
        loop {
            match self.input.read(&mut self.buf[have..]) {
                Ok(0) => {
                    self.buf.truncate(have);
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.truncate(have + n);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(have);
                    self.eof = true;
                    return Err(FrameError::Io {
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    /// The header block; leaves the reader at the body.
    fn header(&mut self) -> Result<Header, FrameError> {
        let mut length: Option<usize> = None;
        let mut seen_header = false;
        let mut skipped = 0;
        loop {
            let Some(line_len) = self.line()? else {
                // The end of the input inside a header block (or before one).
                let rest = self.pending().len();
                self.consume(rest);
                return match (seen_header, rest) {
                    (false, 0) => Ok(Header::End),
                    (false, _) => Err(FrameError::NotAHeader { skipped: rest }),
                    (true, _) => Err(FrameError::Truncated { missing: 0 }),
                };
            };
            let line = &self.pending()[..line_len];
            if !line.ends_with(b"\n") {
                // Too long to be a header.
                return Err(FrameError::NotAHeader {
                    skipped: skipped + self.resync(1),
                });
            }
            let content = trim_line_end(line);
            if content.is_empty() {
                self.consume(line_len);
                skipped += line_len;
                if !seen_header {
                    // A stray line break between frames.
                    continue;
                }
                return match length {
                    Some(n) if n <= MAX_CONTENT_LENGTH => Ok(Header::Length(n)),
                    Some(n) => Err(FrameError::TooLong {
                        length: n as u64,
                        skipped: skipped + self.resync(0),
                    }),
                    None => Err(FrameError::NoLength {
                        skipped: skipped + self.resync(0),
                    }),
                };
            }
            // A header inside the line: junk before it (a body sent without
            // a header, say) ends there.
            let embedded = find_header(content, 1).is_some();
            match parse_header(content).filter(|_| !embedded) {
                Some((name, value)) if name.eq_ignore_ascii_case(b"content-length") => {
                    match parse_length(value) {
                        Some(n) => length = Some(n),
                        None => {
                            let value = String::from_utf8_lossy(value).into_owned();
                            return Err(FrameError::BadLength {
                                value,
                                skipped: skipped + self.resync(1),
                            });
                        }
                    }
                }
                Some(_) => {}
                None => {
                    return Err(FrameError::NotAHeader {
                        skipped: skipped + self.resync(1),
                    })
                }
            }
            seen_header = true;
            self.consume(line_len);
            skipped += line_len;
        }
    }

    /// The length of the next line with its line break, or of what is
    /// pending when that is too long to be a header line (it has no line
    /// break then); `None` at the end of the input.
    fn line(&mut self) -> Result<Option<usize>, FrameError> {
        let mut searched = 0;
        loop {
            let pending = self.pending();
            if let Some(i) = pending[searched..].iter().position(|&b| b == b'\n') {
                return Ok(Some(searched + i + 1));
            }
            if pending.len() > MAX_HEADER_LINE {
                return Ok(Some(pending.len()));
            }
            searched = pending.len();
            if !self.fill(CHUNK)? {
                return Ok(None);
            }
        }
    }

    /// Skips to the next `Content-Length:` at least `from` bytes ahead (or to
    /// the end of the input); the number of bytes skipped.
    fn resync(&mut self, from: usize) -> usize {
        let mut skipped = 0;
        let mut from = from;
        loop {
            let pending = self.pending();
            if let Some(i) = find_header(pending, from) {
                self.consume(i);
                return skipped + i;
            }
            // Keep a tail that may be the start of a header cut by the read.
            let keep = (HEADER.len() - 1).min(pending.len().saturating_sub(from));
            let drop = pending.len() - keep;
            self.consume(drop);
            skipped += drop;
            from = 0;
            match self.fill(CHUNK) {
                Ok(true) => {}
                // The end (or a failed read, reported as the end next time).
                Ok(false) | Err(_) => {
                    let rest = self.pending().len();
                    self.consume(rest);
                    return skipped + rest;
                }
            }
        }
    }

    /// A body of `length` bytes as a message.
    fn body(&mut self, length: usize) -> Result<Option<Message>, FrameError> {
        let mut searched = 0;
        let mut tries = MAX_CUT_TRIES;
        while self.pending().len() < length {
            // A declared length that runs into the next frame: stop at it
            // rather than wait for bytes that may never come.
            let pending = self.pending().len();
            if let Some(at) = self.next_frame_within(searched, pending, &mut tries) {
                return Err(self.cut_short(length, at));
            }
            searched = self.pending().len().saturating_sub(HEADER.len() - 1);
            if !self.fill(length - self.pending().len())? {
                let missing = length - self.pending().len();
                let rest = self.pending().len();
                self.consume(rest);
                return Err(FrameError::Truncated { missing });
            }
        }
        let parsed = parse_message(&self.pending()[..length]);
        if parsed.is_err() {
            // A body that does not parse and holds the start of a header
            // (one that runs past its end too): its length was wrong, the
            // next frame starts there.
            let within = self.pending().len().min(length + HEADER.len() - 1);
            if let Some(at) = find_header(&self.pending()[..within], 1) {
                return Err(self.cut_short(length, at));
            }
        }
        self.consume(length);
        parsed.map(Some)
    }

    /// Where a next frame starts inside the first `within` bytes of a body
    /// still arriving: a `Content-Length:` after one whole JSON object (the
    /// declared length was too long; a proper prefix of a well-formed body is
    /// never a whole object). Each candidate costs a parse, so a frame gets
    /// `tries`.
    fn next_frame_within(&self, from: usize, within: usize, tries: &mut u32) -> Option<usize> {
        let pending = &self.pending()[..within];
        let mut from = from.max(1);
        while let Some(at) = find_header(pending, from) {
            from = at + 1;
            if !pending[..at].trim_ascii_end().ends_with(b"}") || *tries == 0 {
                continue;
            }
            *tries -= 1;
            if serde_json::from_slice::<Value>(&pending[..at]).is_ok() {
                return Some(at);
            }
        }
        None
    }

    /// The error for a body cut at `at` bytes; consumes them.
    fn cut_short(&mut self, declared: usize, at: usize) -> FrameError {
        let id = serde_json::from_slice::<Value>(&self.pending()[..at])
            .ok()
            .and_then(|v| v.get("id").cloned())
            .filter(|id| id.is_number() || id.is_string())
            .unwrap_or(Value::Null);
        self.consume(at);
        FrameError::WrongLength {
            declared,
            found: at,
            id,
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `Name: value` with a name of letters, digits and dashes.
fn parse_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-';
    (!name.is_empty() && name.iter().all(is_token)).then_some((name, value.trim_ascii()))
}

/// A decimal length; one over `MAX_CONTENT_LENGTH` is kept (as `usize::MAX`
/// when it does not fit) so that it is refused as too long.
fn parse_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: usize = 0;
    for &d in value {
        n = n.saturating_mul(10).saturating_add(usize::from(d - b'0'));
    }
    Some(n)
}

/// The offset of the first `Content-Length:` (any case) at or after `from`.
fn find_header(bytes: &[u8], from: usize) -> Option<usize> {
    if from >= bytes.len() {
        return None;
    }
    bytes[from..]
        .windows(HEADER.len())
        .position(|w| w.eq_ignore_ascii_case(HEADER))
        .map(|i| from + i)
}

/// A body as a message: a request (an integer or string id and a method), a
/// notification (a method, no id) or a response (an id with a result or an
/// error).
pub fn parse_message(body: &[u8]) -> Result<Message, FrameError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| FrameError::Parse {
        error: e.to_string(),
    })?;
    let mut map = match value {
        Value::Object(map) => map,
        Value::Array(_) => {
            return Err(FrameError::Invalid {
                id: Value::Null,
                reason: "an array (the protocol has no batches)".into(),
            })
        }
        other => {
            return Err(FrameError::Invalid {
                id: Value::Null,
                reason: format!("a {}, not an object", kind(&other)),
            })
        }
    };
    let id = map.remove("id");
    // The id to answer an invalid message with: echoed when it is one.
    let echo = id
        .clone()
        .filter(|id| id.is_number() || id.is_string())
        .unwrap_or(Value::Null);
    match map.remove("method") {
        Some(Value::String(method)) => {
            let params = map.remove("params").unwrap_or(Value::Null);
            let Some(id) = id else {
                return Ok(Message::Notification(Notification { method, params }));
            };
            match request_id(&id) {
                Some(id) => Ok(Message::Request(Request { id, method, params })),
                None => Err(FrameError::Invalid {
                    id: echo,
                    reason: format!(
                        "the id of `{}` is {}, not a 32-bit integer or a string",
                        method.escape_debug(),
                        kind(&id)
                    ),
                }),
            }
        }
        Some(other) => Err(FrameError::Invalid {
            id: echo,
            reason: format!("the method is {}, not a string", kind(&other)),
        }),
        None if map.contains_key("result") || map.contains_key("error") => {
            response(id, map).map(Message::Response)
        }
        None => Err(FrameError::Invalid {
            id: echo,
            reason: "no method".into(),
        }),
    }
}

fn response(id: Option<Value>, mut map: Map<String, Value>) -> Result<Response, FrameError> {
    map.insert("id".into(), id.unwrap_or(Value::Null));
    serde_json::from_value(Value::Object(map)).map_err(|e| FrameError::BadResponse {
        error: e.to_string(),
    })
}

fn request_id(id: &Value) -> Option<RequestId> {
    match id {
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(RequestId::from),
        Value::String(s) => Some(RequestId::from(s.clone())),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
