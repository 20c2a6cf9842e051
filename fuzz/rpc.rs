//! Target `rpc`: the language server's frame reader (`wfrun::rpc`) on
//! arbitrary bytes. It never panics, ends within one call per byte (each call
//! consumes input or reports its end), and every error is one log line with
//! a reply that is a JSON-RPC error (or none, for what is never answered).

use std::hash::{Hash, Hasher};

use super::{Outcome, Target};
use wfrun::rpc::FrameReader;

pub struct Rpc;

const TOKENS: [&str; 14] = [
    "Content-Length: ",
    "Content-Type: application/vscode-jsonrpc; charset=utf-8",
    "\r\n",
    "\r\n\r\n",
    "{",
    "}",
    "[]",
    "\"jsonrpc\": \"2.0\"",
    "\"id\": 1",
    "\"method\": \"textDocument/hover\"",
    "\"params\": {}",
    "\"result\": null",
    "99999999999999999999",
    "\u{feff}",
];

fn frame(body: &str) -> Vec<u8> {
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

impl Target for Rpc {
    fn name(&self) -> &'static str {
        "rpc"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let initialize =
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}"#;
        let open = r#"{"jsonrpc":"2.0","method":"textDocument/didOpen","params":{"textDocument":{"uri":"file:///a.wf","languageId":"wf","version":1,"text":"use Clarifai_ResNext {}\n"}}}"#;
        let hover = r#"{"jsonrpc":"2.0","id":2,"method":"textDocument/hover","params":{"textDocument":{"uri":"file:///a.wf"},"position":{"line":0,"character":5}}}"#;
        let mut all = frame(initialize);
        all.extend(frame(open));
        all.extend(frame(hover));
        vec![
            all,
            frame("{garbage!}"),
            frame("[]"),
            b"Content-Length: 5\r\n\r\n{}".to_vec(),
            frame(r#"{"jsonrpc":"2.0","id":3,"result":null}"#),
        ]
    }

    fn tokens(&self) -> Vec<&'static [u8]> {
        TOKENS.iter().map(|t| t.as_bytes()).collect()
    }

    fn run(&self, input: &[u8]) -> Outcome {
        let mut signature = std::collections::hash_map::DefaultHasher::new();
        let mut reader = FrameReader::new(input);
        let mut calls = 0;
        let failure = loop {
            calls += 1;
            if calls > input.len() + 2 {
                break Some(format!(
                    "{calls} reads of {} bytes: no progress",
                    input.len()
                ));
            }
            match reader.read_message() {
                Ok(None) => break None,
                Ok(Some(message)) => {
                    "message".hash(&mut signature);
                    std::mem::discriminant(&message).hash(&mut signature);
                }
                Err(e) => {
                    std::mem::discriminant(&e).hash(&mut signature);
                    let line = e.to_string();
                    if line.contains('\n') {
                        break Some(format!("an error of several lines: {line:?}"));
                    }
                    if let Some(reply) = e.reply() {
                        let code = reply["error"]["code"].as_i64();
                        if !matches!(code, Some(-32700 | -32600)) || reply["jsonrpc"] != "2.0" {
                            break Some(format!("not a JSON-RPC error reply: {reply}"));
                        }
                    }
                }
            }
        };
        Outcome {
            failure,
            signature: signature.finish(),
        }
    }
}
