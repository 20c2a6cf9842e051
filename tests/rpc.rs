//! The language server's frame reader (`wfrun::rpc`) on malformed input:
//! each kind of bad frame gives its error and the frames after it still come
//! through; arbitrary bytes and mutated frames never panic nor loop.

use proptest::prelude::*;
use serde_json::{json, Value};
use wfrun::rpc::{FrameError, FrameReader, Message, MAX_CONTENT_LENGTH};

fn frame(body: &str) -> Vec<u8> {
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn request(id: i64, method: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"n": id}}).to_string()
}

/// Everything the reader gives for `input`, to the end; panics if it fails to
/// make progress (more calls than bytes).
fn read_all(input: &[u8]) -> Vec<Result<Message, FrameError>> {
    let mut frames = FrameReader::new(input);
    let mut out = Vec::new();
    for _ in 0..=input.len() + 1 {
        match frames.read_message() {
            Ok(None) => return out,
            Ok(Some(m)) => out.push(Ok(m)),
            Err(e) => {
                // The log line is one line; the reply is JSON-RPC.
                assert!(!e.to_string().contains('\n'), "{e}");
                if let Some(reply) = e.reply() {
                    assert_eq!(reply["jsonrpc"], "2.0");
                    let code = reply["error"]["code"].as_i64().unwrap();
                    assert!(code == -32700 || code == -32600, "{reply}");
                }
                out.push(Err(e))
            }
        }
    }
    panic!("the reader did not reach the end of {} bytes", input.len());
}

fn method(m: &Result<Message, FrameError>) -> Option<&str> {
    match m {
        Ok(Message::Request(r)) => Some(&r.method),
        Ok(Message::Notification(n)) => Some(&n.method),
        _ => None,
    }
}

/// `bad` then a request `after`: the errors' replies, then that request.
fn then_request(bad: &[u8]) -> Vec<Value> {
    let mut input = bad.to_vec();
    input.extend(frame(&request(9, "after")));
    let all = read_all(&input);
    let (last, errors) = all.split_last().unwrap();
    assert_eq!(method(last), Some("after"), "{all:?}");
    errors
        .iter()
        .map(|e| match e {
            Err(e) => e.reply().unwrap(),
            Ok(m) => panic!("a message from a bad frame: {m:?}"),
        })
        .collect()
}

fn code_and_id(reply: &Value) -> (i64, Value) {
    (
        reply["error"]["code"].as_i64().unwrap(),
        reply["id"].clone(),
    )
}

#[test]
fn well_formed_frames_in_any_case_and_line_ending() {
    let mut input = frame(&request(1, "a"));
    input.extend(b"\r\n"); // a stray line break between frames
    let body = r#"{"jsonrpc":"2.0","method":"b"}"#;
    input.extend(
        format!(
            "content-length:{}\nContent-Type: application/vscode-jsonrpc; charset=utf-8\n\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    input.extend(frame(r#"{"jsonrpc":"2.0","id":"x","result":null}"#));
    // A body larger than what is read at a time.
    let large = json!({"jsonrpc": "2.0", "method": "large", "params": "x".repeat(300_000)});
    input.extend(frame(&large.to_string()));
    let all = read_all(&input);
    assert_eq!(method(&all[0]), Some("a"));
    assert_eq!(method(&all[1]), Some("b"));
    assert!(matches!(&all[2], Ok(Message::Response(_))), "{all:?}");
    assert_eq!(method(&all[3]), Some("large"));
    assert_eq!(all.len(), 4);
}

#[test]
fn a_body_that_is_not_json_is_a_parse_error() {
    let replies = then_request(b"Content-Length: 10\r\n\r\n{garbage!}");
    assert_eq!(code_and_id(&replies[0]), (-32700, Value::Null));
    assert_eq!(replies.len(), 1);
}

#[test]
fn json_that_is_not_a_message_is_an_invalid_request() {
    for (body, id) in [
        ("[]", Value::Null),
        ("[1, 2]", Value::Null),
        ("42", Value::Null),
        (r#"{"jsonrpc":"2.0","id":5}"#, json!(5)),
        (r#"{"jsonrpc":"2.0","id":"q","method":7}"#, json!("q")),
        (r#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#, json!(1.5)),
        (
            r#"{"jsonrpc":"2.0","id":3000000000,"method":"m"}"#,
            json!(3000000000u64),
        ),
        (r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#, Value::Null),
    ] {
        let replies = then_request(&frame(body));
        assert_eq!(code_and_id(&replies[0]), (-32600, id), "{body}");
        assert_eq!(replies.len(), 1, "{body}");
    }
}

#[test]
fn a_malformed_response_is_not_answered() {
    let all = read_all(&frame(r#"{"jsonrpc":"2.0","id":{},"result":1}"#));
    assert!(
        matches!(&all[..], [Err(e)] if e.reply().is_none()),
        "{all:?}"
    );
}

#[test]
fn a_length_too_short_or_too_long_loses_only_its_own_frame() {
    let body = request(3, "wrong");
    // Too short: the rest of the body is skipped up to the next header.
    let short = format!("Content-Length: 5\r\n\r\n{body}");
    let replies = then_request(short.as_bytes());
    assert_eq!(code_and_id(&replies[0]), (-32700, Value::Null));
    assert!(replies.iter().all(|r| r["error"]["code"] == -32700));
    // Too long: cut at the next header, answered with the request's id.
    for extra in [1, 10, 1000] {
        let long = format!("Content-Length: {}\r\n\r\n{body}", body.len() + extra);
        let replies = then_request(long.as_bytes());
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(code_and_id(&replies[0]), (-32700, json!(3)));
    }
}

#[test]
fn a_length_over_the_limit_is_refused_without_reading_it() {
    for length in [
        (MAX_CONTENT_LENGTH + 1).to_string(),
        "99999999999999999999999999".to_string(),
    ] {
        let huge = format!("Content-Length: {length}\r\n\r\n{}", request(4, "huge"));
        let replies = then_request(huge.as_bytes());
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(code_and_id(&replies[0]), (-32700, Value::Null));
        let message = replies[0]["error"]["message"].as_str().unwrap();
        assert!(message.contains("over the limit"), "{message}");
        // A length past what a machine word holds is not said as a number
        // it is not.
        if length.len() > 20 {
            assert!(
                message.contains(&format!("{} or more bytes", usize::MAX)),
                "{message}"
            );
        } else {
            assert!(message.contains(&format!("of {length} bytes")), "{message}");
        }
    }
}

#[test]
fn unusable_headers_are_skipped_to_the_next_frame() {
    for bad in [
        // No header at all: a bare body.
        request(5, "bare"),
        // No Content-Length.
        format!("Content-Type: x\r\n\r\n{}", request(5, "untyped")),
        // Not a number.
        format!("Content-Length: ten\r\n\r\n{}", request(5, "ten")),
        format!("Content-Length: -3\r\n\r\n{}", request(5, "minus")),
        // Not a header line.
        format!("Hello there\r\n\r\n{}", request(5, "hello")),
        // A header line far too long.
        format!("X-Pad: {}\r\n\r\n", "a".repeat(100_000)),
        // Binary junk.
        String::from_utf8_lossy(&[0, 159, 146, 150, 255, 10, 13, 10]).into_owned(),
    ] {
        let replies = then_request(bad.as_bytes());
        assert!(!replies.is_empty(), "{bad:?}");
        assert!(
            replies
                .iter()
                .all(|r| code_and_id(r) == (-32700, Value::Null)),
            "{replies:?}"
        );
    }
}

#[test]
fn a_body_that_is_not_utf8_is_a_parse_error() {
    let mut bad = b"Content-Length: 4\r\n\r\n\"\xff\xfe\"".to_vec();
    bad.extend(frame(&request(2, "x")));
    let all = read_all(&bad);
    assert!(matches!(&all[0], Err(FrameError::Parse { .. })), "{all:?}");
    assert_eq!(method(&all[1]), Some("x"));
}

#[test]
fn input_ending_inside_a_frame_is_one_error_then_the_end() {
    for cut in [
        &b"Content-Length: 20\r\n\r\n{\"jsonrpc\""[..],
        b"Content-Length: 20\r\n",
        b"Content-Len",
    ] {
        let all = read_all(cut);
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].is_err());
    }
}

/// A frame reader over a reader that yields one byte at a time (as a slow
/// pipe might): the same messages and errors as over the whole input.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn bytes_arriving_one_at_a_time_read_the_same() {
    let body = request(3, "wrong");
    let mut input = frame(&request(1, "a"));
    input.extend(format!("Content-Length: {}\r\n\r\n{body}", body.len() + 40).as_bytes());
    input.extend(b"Content-Length: 10\r\n\r\n{garbage!}");
    input.extend(frame(&request(2, "b")));
    let mut frames = FrameReader::new(Trickle(&input));
    let mut seen = Vec::new();
    while let Some(m) = frames.read_message().transpose() {
        seen.push(m);
    }
    let whole = read_all(&input);
    assert_eq!(format!("{seen:?}"), format!("{whole:?}"));
    assert_eq!(method(&seen[0]), Some("a"));
    assert!(matches!(seen[1], Err(FrameError::WrongLength { .. })));
    assert!(matches!(seen[2], Err(FrameError::Parse { .. })));
    assert_eq!(method(&seen[3]), Some("b"));
}

const PIECES: &[&str] = &[
    "Content-Length: ",
    "content-length:",
    "Content-Type: x",
    "0",
    "2",
    "17",
    "99999999999999999999",
    "\r\n",
    "\n",
    "\r",
    ": ",
    "{",
    "}",
    "[]",
    "\"",
    r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#,
    r#"{"jsonrpc":"2.0","method":"n"}"#,
    r#""id":"#,
    "\u{e9}",
    "\0",
];

fn bodies() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        (0i64..1000, "[a-z/]{1,12}", "[ -~]{0,40}").prop_map(|(id, method, text)| {
            if id % 3 == 0 {
                json!({"jsonrpc": "2.0", "method": method, "params": {"text": text}}).to_string()
            } else {
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": [text]}).to_string()
            }
        }),
        1..8,
    )
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Delete(usize),
    Insert(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes: no panic, the end is reached, every error is one line.
    #[test]
    fn arbitrary_bytes_never_panic_nor_loop(input in prop::collection::vec(any::<u8>(), 0..600)) {
        read_all(&input);
    }

    /// Pieces of frames in any order: no panic, the end is reached.
    #[test]
    fn pieces_of_frames_never_panic_nor_loop(
        pieces in prop::collection::vec(prop::sample::select(PIECES), 0..60),
    ) {
        read_all(pieces.concat().as_bytes());
    }

    /// Frames with junk between them: each frame still comes through.
    #[test]
    fn frames_survive_junk_between_them(
        bodies in bodies(),
        junk in prop::collection::vec("[ -~\r\n]{0,30}", 8),
    ) {
        let mut input = Vec::new();
        for (body, junk) in bodies.iter().zip(&junk) {
            // Junk that is itself a header would change the next frame.
            prop_assume!(!junk.to_ascii_lowercase().contains("content-length:"));
            input.extend(junk.as_bytes());
            input.extend(frame(body));
        }
        let messages: Vec<String> = read_all(&input)
            .iter()
            .filter_map(|m| method(m).map(str::to_string))
            .collect();
        let sent: Vec<String> = bodies
            .iter()
            .map(|b| serde_json::from_str::<Value>(b).unwrap()["method"].as_str().unwrap().to_string())
            .collect();
        prop_assert_eq!(messages, sent);
    }

    /// One byte of one frame changed, deleted or inserted: the frames before
    /// it and all but the next one after it come through unchanged.
    #[test]
    fn a_mutated_frame_costs_at_most_the_next(
        bodies in bodies(),
        which in any::<usize>(),
        change in mutation(),
    ) {
        let frames: Vec<Vec<u8>> = bodies.iter().map(|b| frame(b)).collect();
        let k = which % frames.len();
        let mut input = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let mut f = f.clone();
            if i == k {
                match change {
                    Mutation::Set(at, b) => { let at = at % f.len(); f[at] = b; }
                    Mutation::Delete(at) => { let at = at % f.len(); f.remove(at); }
                    Mutation::Insert(at, b) => { let at = at % (f.len() + 1); f.insert(at, b); }
                }
            }
            input.extend(f);
        }
        let read: Vec<String> = read_all(&input)
            .iter()
            .filter_map(|m| m.as_ref().ok().map(|m| serde_json::to_string(m).unwrap()))
            .collect();
        let sent: Vec<String> = frames
            .iter()
            .map(|f| serde_json::to_string(&read_all(f)[0].as_ref().unwrap()).unwrap())
            .collect();
        prop_assert!(read.len() >= k, "{read:?}");
        prop_assert_eq!(&read[..k], &sent[..k]);
        let after = &sent[(k + 2).min(sent.len())..];
        prop_assert!(read.ends_with(after), "{:?} does not end with {:?}", read, after);
    }
}
