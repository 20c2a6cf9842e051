//! Drives the real `wfrun lsp` process over stdio with a small JSON-RPC client:
//! diagnostics on open and on change (then cleared), hover, completion,
//! formatting, shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Client {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next_id: i64,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wfrun"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wfrun lsp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.parse().unwrap();
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                    return;
                }
            }
        });
        Client {
            child,
            stdin,
            incoming,
            next_id: 1,
        }
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and waits for its response's `result`.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let m = self.receive();
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{m}");
                return m["result"].clone();
            }
        }
    }

    fn receive(&mut self) -> Value {
        self.incoming
            .recv_timeout(Duration::from_secs(20))
            .expect("the server answers within 20 s")
    }

    /// The next diagnostics published for `version` of the document (other
    /// messages skipped: a full check of an earlier version may arrive late).
    fn diagnostics(&mut self, version: i64) -> Vec<Value> {
        loop {
            let m = self.receive();
            if m["method"] == "textDocument/publishDiagnostics" && m["params"]["version"] == version
            {
                return m["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }
}

const URI: &str = "file:///tmp/wfrun-lsp-test/pipeline.wf";

#[test]
fn an_editor_gets_diagnostics_hover_completion_and_formatting() {
    let mut c = Client::start();
    let init = c.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    let caps = &init["capabilities"];
    assert_eq!(caps["hoverProvider"], true);
    assert_eq!(caps["documentFormattingProvider"], true);
    assert_eq!(caps["definitionProvider"], true);
    assert_eq!(caps["codeActionProvider"], true);
    assert_eq!(caps["documentSymbolProvider"], true);
    c.notify("initialized", json!({}));

    // An off-step value: the diagnostic, its code, where it is and the fix.
    let broken = "use Clarifai_ResNext {\n    image_size = 1000\n    batch_size = 32\n}\ndata { train = \"images\" }\n";
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": URI, "languageId": "wf", "version": 1, "text": broken}}),
    );
    let found = c.diagnostics(1);
    let off = found
        .iter()
        .find(|d| d["code"] == "wf::off-step")
        .expect("off-step reported");
    assert_eq!(off["range"]["start"], json!({"line": 1, "character": 17}));
    assert!(
        off["message"].as_str().unwrap().contains("992 and 1008"),
        "{off}"
    );

    // A quick fix for it, anywhere on its line.
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": URI},
               "range": {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 0}},
               "context": {"diagnostics": []}}),
    );
    let titles: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["change to 992", "change to 1008"]);
    let edit = &actions[1]["edit"]["changes"][URI][0];
    assert_eq!(edit["newText"], "1008");
    assert_eq!(edit["range"]["start"], json!({"line": 1, "character": 17}));

    // The template's declaration, in the prelude written out for the editor.
    let target = c.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": URI}, "position": {"line": 0, "character": 6}}),
    );
    let path = target["uri"]
        .as_str()
        .unwrap()
        .strip_prefix("file://")
        .unwrap();
    let prelude = std::fs::read_to_string(path).unwrap();
    let line = prelude
        .lines()
        .nth(target["range"]["start"]["line"].as_u64().unwrap() as usize)
        .unwrap();
    assert!(line.starts_with("template Clarifai_ResNext"), "{line}");

    // Fixed while typing: the diagnostics clear (no file-system checks on change).
    let fixed = broken.replace("1000", "1008");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": fixed}]}),
    );
    assert_eq!(c.diagnostics(2), Vec::<Value>::new());

    // Hover over `batch_size`: its documentation and the resulting lrate.
    let hover = c.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": URI}, "position": {"line": 2, "character": 6}}),
    );
    let md = hover["contents"]["value"].as_str().unwrap();
    assert!(
        md.contains("Clarifai_ResNext.batch_size") && md.contains("lrate"),
        "{md}"
    );

    // Completion on the blank line inside `use`: parameters not yet written.
    let text = fixed.replace("    batch_size = 32\n", "    batch_size = 32\n    \n");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 3}, "contentChanges": [{"text": text}]}),
    );
    c.diagnostics(3);
    let items = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": URI}, "position": {"line": 3, "character": 4}}),
    );
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"logreg") && !labels.contains(&"batch_size"),
        "{labels:?}"
    );

    // Formatting: one edit with the canonical text.
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": URI}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    let new_text = edits[0]["newText"].as_str().unwrap();
    assert_eq!(new_text, wfrun::format::format_source(&text).unwrap());
    assert!(!new_text.contains("    \n"));

    // A 1,000-line file: diagnostics after a change, timed (recorded in BENCHMARKS.md).
    let mut big =
        String::from("use Clarifai_ResNext { image_size = 64 }\ndata { train = \"x\" }\n");
    for i in 0..998 {
        big.push_str(&format!(
            "step clustering as c{i} {{ k = {} }}\n",
            2 + i % 7
        ));
    }
    let started = Instant::now();
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 4}, "contentChanges": [{"text": big}]}),
    );
    c.diagnostics(4);
    eprintln!(
        "1,000-line file: diagnostics {:.1} ms after the change",
        started.elapsed().as_secs_f64() * 1e3
    );

    c.request("shutdown", Value::Null);
    c.notify("exit", Value::Null);
    let status = c.child.wait().unwrap();
    assert!(status.success(), "{status}");
}
