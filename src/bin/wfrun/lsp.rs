//! `wfrun lsp`: a language server over stdio. The only module that knows LSP
//! types; the answers come from the library (`check_source`, `format`, `ide`)
//! and the messages from `wfrun::rpc`, which reads frames without trusting
//! them.
//!
//! Three threads: one reads standard input (a malformed frame or body is
//! logged on standard error in one line, answered with a JSON-RPC error, and
//! reading goes on), one writes standard output, and the message loop.
//! Documents are synchronised whole and indexed by line once per version, and
//! answers are serialised straight from their types by the thread that makes
//! them, so every answer costs time linear in the document. On every change the file is
//! checked without the file system (fast: typing never waits on a data
//! folder). On open and save those diagnostics are published at once too, and
//! a worker thread checks the file in full, data folders included; its result
//! is published only if the document has not changed meanwhile. `exit`, or
//! standard input closing, ends the process at once, whatever workers still
//! run: status 0 after `shutdown`, else 1.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wfrun::paths::ShowPath;

use crossbeam_channel::{Receiver, SendError, Sender};
use lsp_server::{ErrorCode, Message, Notification, Request, RequestId};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, DidSaveTextDocument, Exit,
    Notification as _, PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, DocumentSymbolRequest, FoldingRangeRequest, Formatting,
    GotoDefinition, HoverRequest, Initialize, InlayHintRequest, PrepareRenameRequest, References,
    Rename, Request as _, SemanticTokensFullRequest, Shutdown,
};
use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams,
    CodeActionProviderCapability, CompletionItem, CompletionItemKind, CompletionOptions,
    CompletionParams, CompletionResponse, Diagnostic, DiagnosticRelatedInformation,
    DiagnosticSeverity, DocumentFormattingParams, DocumentSymbol, DocumentSymbolParams,
    DocumentSymbolResponse, Documentation, GotoDefinitionParams, GotoDefinitionResponse, Hover,
    HoverContents, HoverParams, HoverProviderCapability, InitializeResult, Location, MarkupContent,
    MarkupKind, NumberOrString, OneOf, Position, PublishDiagnosticsParams, Range,
    ServerCapabilities, ServerInfo, SymbolKind, TextDocumentSyncCapability, TextDocumentSyncKind,
    TextEdit, Uri, WorkspaceEdit,
};
use lsp_types::{
    FoldingRange, FoldingRangeKind, FoldingRangeParams, FoldingRangeProviderCapability, InlayHint,
    InlayHintLabel, InlayHintParams, InlayHintTooltip, PrepareRenameResponse, ReferenceParams,
    RenameOptions, RenameParams, SemanticToken, SemanticTokenModifier, SemanticTokenType,
    SemanticTokens, SemanticTokensFullOptions, SemanticTokensLegend, SemanticTokensOptions,
    SemanticTokensParams, SemanticTokensResult, SemanticTokensServerCapabilities,
    TextDocumentPositionParams,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use wfrun::ide::CompletionKind;
use wfrun::rpc::FrameReader;

/// A version of a document's text with the byte offset of each line's start:
/// LSP positions (line, UTF-16 column) ↔ byte offsets in time proportional to
/// the line, not the document.
struct Text {
    string: String,
    line_starts: Vec<usize>,
}

impl Text {
    fn new(string: String) -> Text {
        // A line ends at `\n`, `\r\n` or a lone `\r`, as the protocol says
        // (wfrun itself refuses a lone `\r`, but a client counts it).
        let b = string.as_bytes();
        let mut line_starts = vec![0];
        line_starts.extend(
            memchr::memchr2_iter(b'\n', b'\r', b)
                .filter(|&i| b[i] == b'\n' || b.get(i + 1) != Some(&b'\n'))
                .map(|i| i + 1),
        );
        Text {
            string,
            line_starts,
        }
    }

    fn as_str(&self) -> &str {
        &self.string
    }

    /// The LSP position (line, UTF-16 column) of byte `offset`.
    fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.string.len());
        while !self.string.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column: usize = self.string[start..offset]
            .chars()
            .map(char::len_utf16)
            .sum();
        Position::new(line as u32, column as u32)
    }

    /// The byte offset of an LSP position (clamped to its line).
    fn offset(&self, pos: Position) -> usize {
        let Some(&start) = self.line_starts.get(pos.line as usize) else {
            return self.string.len();
        };
        let line_end = self
            .line_starts
            .get(pos.line as usize + 1)
            .map_or(self.string.len(), |next| next - 1);
        let mut units = 0;
        for (i, c) in self.string[start..line_end].char_indices() {
            if units >= pos.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        line_end
    }

    fn range(&self, start: usize, end: usize) -> Range {
        Range::new(self.position(start), self.position(end))
    }
}

/// One open document: its text, the client's version of it, and a
/// generation bumped on every change or save, so that a full check finishing
/// late never overwrites newer diagnostics.
struct Doc {
    text: Arc<Text>,
    version: Option<i32>,
    generation: u64,
    /// This version checked without the file system (what its diagnostics
    /// came from): inlay hints are derived from it rather than checked again.
    checked: Option<Arc<wfrun::Checked>>,
}

#[derive(Default)]
struct Docs {
    open: HashMap<String, Doc>,
    generations: u64,
    /// Documents with a full check on a worker: one worker a document at
    /// most; a save meanwhile marks it in `again`, and the worker checks the
    /// newest text once more instead of another worker starting.
    checking: std::collections::HashSet<String>,
    again: std::collections::HashSet<String>,
    /// What each document's last full check counted of its data: inlay
    /// hints show steps and times with it while typing.
    counted: HashMap<String, wfrun::plan::DataFound>,
}

impl Docs {
    fn get(&self, uri: &Uri) -> Option<&Doc> {
        self.open.get(uri.as_str())
    }

    fn text(&self, uri: &Uri) -> Option<&Text> {
        self.get(uri).map(|d| &*d.text)
    }

    fn set(&mut self, uri: &Uri, text: Arc<Text>, version: Option<i32>) {
        self.generations += 1;
        let doc = Doc {
            text,
            version,
            generation: self.generations,
            checked: None,
        };
        self.open.insert(uri.as_str().to_string(), doc);
    }
}

/// Serves until `exit` or the end of standard input; the exit status.
pub fn serve() -> u8 {
    let (to_loop, messages) = crossbeam_channel::unbounded();
    let (out, bodies) = crossbeam_channel::unbounded();
    let replies = out.clone();
    std::thread::spawn(move || read_stdin(&to_loop, &replies));
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let (finished, written) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        write_stdout(&bodies, &stopped);
        let _ = finished.send(());
    });
    let status = serve_on(&messages, &out);
    drop(stop);
    // What is queued goes out; a client that stopped reading cannot hold the
    // process, nor can a worker still checking a data folder.
    let _ = written.recv_timeout(Duration::from_secs(1));
    status
}

/// Messages from standard input to the loop until it ends; what is not a
/// message is logged and answered here.
fn read_stdin(to_loop: &Sender<Message>, out: &Sender<String>) {
    let stdin = std::io::stdin();
    let mut frames = FrameReader::new(stdin.lock());
    loop {
        match frames.read_message() {
            Ok(Some(message)) => {
                if to_loop.send(message).is_err() {
                    return;
                }
            }
            // The client is gone: dropping `to_loop` ends the loop.
            Ok(None) => return,
            Err(e) => {
                errln!("wfrun lsp: {e}");
                if let Some(reply) = e.reply() {
                    let _ = out.send(reply.to_string());
                }
            }
        }
    }
}

/// Writes the messages' bodies, each in its frame, until told to stop, then
/// what is still queued.
fn write_stdout(bodies: &Receiver<String>, stop: &Receiver<()>) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let written = crossbeam_channel::select! {
            recv(bodies) -> body => match body {
                Ok(body) => write_frame(&mut out, &body),
                Err(_) => return,
            },
            recv(stop) -> _ => break,
        };
        if written.is_err() {
            return;
        }
    }
    for body in bodies.try_iter() {
        if write_frame(&mut out, &body).is_err() {
            return;
        }
    }
}

fn write_frame(out: &mut impl std::io::Write, body: &str) -> std::io::Result<()> {
    write!(out, "Content-Length: {}\r\n\r\n{body}", body.len())?;
    out.flush()
}

/// The LSP spec's exit status.
fn exit_status(shut_down: bool) -> u8 {
    if shut_down {
        0
    } else {
        1
    }
}

fn capabilities() -> InitializeResult {
    InitializeResult {
        capabilities: ServerCapabilities {
            text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
            hover_provider: Some(HoverProviderCapability::Simple(true)),
            inlay_hint_provider: Some(OneOf::Left(true)),
            semantic_tokens_provider: Some(
                SemanticTokensServerCapabilities::SemanticTokensOptions(SemanticTokensOptions {
                    legend: SemanticTokensLegend {
                        token_types: wfrun::ide::TokenKind::LEGEND
                            .iter()
                            .map(|t| SemanticTokenType::new(t))
                            .collect(),
                        token_modifiers: wfrun::ide::MODIFIERS
                            .iter()
                            .map(|m| SemanticTokenModifier::new(m))
                            .collect(),
                    },
                    full: Some(SemanticTokensFullOptions::Bool(true)),
                    ..Default::default()
                }),
            ),
            folding_range_provider: Some(FoldingRangeProviderCapability::Simple(true)),
            references_provider: Some(OneOf::Left(true)),
            rename_provider: Some(OneOf::Right(RenameOptions {
                prepare_provider: Some(true),
                work_done_progress_options: Default::default(),
            })),
            completion_provider: Some(CompletionOptions {
                trigger_characters: Some(vec![" ".into(), "{".into(), "=".into()]),
                ..Default::default()
            }),
            document_formatting_provider: Some(OneOf::Left(true)),
            definition_provider: Some(OneOf::Left(true)),
            document_symbol_provider: Some(OneOf::Left(true)),
            code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
            ..Default::default()
        },
        server_info: Some(ServerInfo {
            name: "wfrun".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
    }
}

/// The message loop: answers in order, until `exit` or the end of input.
fn serve_on(messages: &Receiver<Message>, out: &Sender<String>) -> u8 {
    let docs = Arc::new(Mutex::new(Docs::default()));
    let (mut initialized, mut shut_down) = (false, false);
    for message in messages {
        let sent = match message {
            Message::Request(req) if req.method == Initialize::METHOD && !initialized => {
                initialized = true;
                let refresh = req
                    .params
                    .pointer("/capabilities/workspace/inlayHint/refreshSupport")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                REFRESH_HINTS.store(refresh, std::sync::atomic::Ordering::Relaxed);
                out.send(reply(&req.id, Ok(capabilities())))
            }
            Message::Request(req) if !initialized => {
                let message = format!("`{}` before `initialize`", req.method);
                out.send(error(&req.id, ErrorCode::ServerNotInitialized, message))
            }
            Message::Request(req) if req.method == Shutdown::METHOD => {
                shut_down = true;
                out.send(reply(&req.id, Ok(())))
            }
            Message::Request(req) if req.method == Initialize::METHOD => {
                let message = "a second `initialize`".to_string();
                out.send(error(&req.id, ErrorCode::InvalidRequest, message))
            }
            Message::Request(req) if shut_down => {
                let message = format!("`{}` after `shutdown`", req.method);
                out.send(error(&req.id, ErrorCode::InvalidRequest, message))
            }
            Message::Request(req) => {
                let docs = docs.lock().unwrap_or_else(|e| e.into_inner());
                out.send(answer(&docs, req))
            }
            Message::Notification(n) if n.method == Exit::METHOD => return exit_status(shut_down),
            Message::Notification(_) if shut_down || !initialized => Ok(()),
            Message::Notification(n) => notified(out, &docs, n),
            Message::Response(_) => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    // Standard input closed.
    exit_status(shut_down)
}

/// A document notification: diagnostics at once, and in full on a worker
/// after an open or a save.
fn notified(
    out: &Sender<String>,
    docs: &Arc<Mutex<Docs>>,
    n: Notification,
) -> Result<(), SendError<String>> {
    let mut guard = docs.lock().unwrap_or_else(|e| e.into_inner());
    let Some((uri, full)) = update(&mut guard, n) else {
        return Ok(());
    };
    let doc = guard
        .get(&uri)
        .map(|d| (Arc::clone(&d.text), d.version, d.generation));
    drop(guard);
    // At once, without the file system (closed: clear what was shown).
    let (found, version) = match &doc {
        Some((text, version, generation)) => {
            let checked = Arc::new(check(&uri, text, false));
            let found = diagnostics_of(&uri, text, &checked);
            let mut guard = lock(docs);
            if let Some(d) = guard.open.get_mut(uri.as_str()) {
                if d.generation == *generation {
                    d.checked = Some(checked);
                }
            }
            (found, *version)
        }
        None => (Vec::new(), None),
    };
    out.send(publish(uri.clone(), found, version))?;
    if full && doc.is_some() {
        full_check(out, docs, uri);
    }
    Ok(())
}

/// The documents, even after a thread panicked holding them.
fn lock(docs: &Mutex<Docs>) -> std::sync::MutexGuard<'_, Docs> {
    docs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks `uri` in full on a worker (data folders may be slow to walk),
/// publishing only if the document did not change meanwhile. At most one
/// worker a document: a request while one runs makes it check again after.
fn full_check(out: &Sender<String>, docs: &Arc<Mutex<Docs>>, uri: Uri) {
    let key = uri.as_str().to_string();
    {
        let mut guard = lock(docs);
        if !guard.checking.insert(key.clone()) {
            guard.again.insert(key);
            return;
        }
    }
    let docs = Arc::clone(docs);
    let out = out.clone();
    std::thread::spawn(move || loop {
        stall_for_tests();
        let current = lock(&docs)
            .get(&uri)
            .map(|d| (Arc::clone(&d.text), d.version, d.generation));
        if let Some((text, version, generation)) = current {
            let checked = check(&uri, &text, true);
            let found = diagnostics_of(&uri, &text, &checked);
            let counted = checked
                .workflow
                .as_ref()
                .map(|w| wfrun::plan::DataFound::counted(w.dataset.as_ref(), &w.data.eval));
            let mut guard = lock(&docs);
            if guard.get(&uri).map(|d| d.generation) == Some(generation) {
                // Sent under the lock: a newer change publishes after this.
                let _ = out.send(publish(uri.clone(), found, version));
                if let Some(counted) = counted {
                    let changed = guard.counted.get(&key) != Some(&counted);
                    guard.counted.insert(key.clone(), counted);
                    if changed && REFRESH_HINTS.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = out.send(refresh_hints());
                    }
                }
            }
        }
        let mut guard = lock(&docs);
        if !guard.again.remove(&key) {
            guard.checking.remove(&key);
            return;
        }
    });
}

/// Whether the client asks again for inlay hints when told to
/// (`workspace.inlayHint.refreshSupport`): after a full check counted the
/// data, the hints gain steps and times.
static REFRESH_HINTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A `workspace/inlayHint/refresh` request, serialised (its answer is ignored).
fn refresh_hints() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": format!("wfrun-refresh-{n}"),
        "method": "workspace/inlayHint/refresh",
    })
    .to_string()
}

/// In debug builds, `WFRUN_LSP_STALL_FULL_CHECK_MS` holds every full check
/// back that long, standing in for a data folder on a file system that does
/// not answer (the tests of `exit` and of a client that disappears
/// mid-check). Release builds have no such hook.
fn stall_for_tests() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("WFRUN_LSP_STALL_FULL_CHECK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// A `publishDiagnostics` notification, serialised.
fn publish(uri: Uri, diagnostics: Vec<Diagnostic>, version: Option<i32>) -> String {
    #[derive(Serialize)]
    struct Note {
        jsonrpc: &'static str,
        method: &'static str,
        params: PublishDiagnosticsParams,
    }
    let note = Note {
        jsonrpc: "2.0",
        method: PublishDiagnostics::METHOD,
        params: PublishDiagnosticsParams {
            diagnostics,
            uri,
            version,
        },
    };
    serde_json::to_string(&note).unwrap_or_default()
}

/// A response, serialised straight from its typed result (no JSON tree in
/// between: an outline of 100,000 symbols is 16 MB); parameters that did not
/// parse are the error instead.
fn reply<T: Serialize>(id: &RequestId, result: Result<T, String>) -> String {
    #[derive(Serialize)]
    struct Reply<'a, T> {
        jsonrpc: &'static str,
        id: &'a RequestId,
        result: T,
    }
    match result {
        Ok(result) => serde_json::to_string(&Reply {
            jsonrpc: "2.0",
            id,
            result,
        })
        .unwrap_or_else(|e| error(id, ErrorCode::InternalError, e.to_string())),
        Err(message) => error(id, ErrorCode::InvalidParams, message),
    }
}

fn error(id: &RequestId, code: ErrorCode, message: String) -> String {
    let error = serde_json::json!({"code": code as i32, "message": message});
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string()
}

/// Applies a document notification; returns the document to re-check and
/// whether to check it in full (with the file system).
fn update(docs: &mut Docs, n: Notification) -> Option<(Uri, bool)> {
    match n.method.as_str() {
        DidOpenTextDocument::METHOD => {
            let p: lsp_types::DidOpenTextDocumentParams = serde_json::from_value(n.params).ok()?;
            let version = Some(p.text_document.version);
            let text = Arc::new(Text::new(p.text_document.text));
            docs.set(&p.text_document.uri, text, version);
            Some((p.text_document.uri, true))
        }
        DidChangeTextDocument::METHOD => {
            let p: lsp_types::DidChangeTextDocumentParams =
                serde_json::from_value(n.params).ok()?;
            let text = Arc::new(Text::new(p.content_changes.into_iter().last()?.text));
            let version = Some(p.text_document.version);
            docs.set(&p.text_document.uri, text, version);
            Some((p.text_document.uri, false))
        }
        DidSaveTextDocument::METHOD => {
            let p: lsp_types::DidSaveTextDocumentParams = serde_json::from_value(n.params).ok()?;
            let doc = docs.get(&p.text_document.uri)?;
            let (text, version) = (Arc::clone(&doc.text), doc.version);
            // A new generation: a full check still running for the old one is dropped.
            docs.set(&p.text_document.uri, text, version);
            Some((p.text_document.uri, true))
        }
        DidCloseTextDocument::METHOD => {
            let p: lsp_types::DidCloseTextDocumentParams = serde_json::from_value(n.params).ok()?;
            docs.open.remove(p.text_document.uri.as_str());
            docs.counted.remove(p.text_document.uri.as_str());
            Some((p.text_document.uri, false))
        }
        _ => None,
    }
}

/// A request's answer, serialised.
fn answer(docs: &Docs, req: Request) -> String {
    let Request { id, method, params } = req;
    match method.as_str() {
        HoverRequest::METHOD => reply(&id, parse(params).map(|p| hover(docs, p))),
        Completion::METHOD => reply(&id, parse(params).map(|p| complete(docs, p))),
        Formatting::METHOD => reply(&id, parse(params).map(|p| format(docs, p))),
        GotoDefinition::METHOD => reply(&id, parse(params).map(|p| definition(docs, p))),
        DocumentSymbolRequest::METHOD => reply(&id, parse(params).map(|p| outline(docs, p))),
        CodeActionRequest::METHOD => reply(&id, parse(params).map(|p| actions(docs, p))),
        InlayHintRequest::METHOD => reply(&id, parse(params).map(|p| inlay_hints(docs, p))),
        SemanticTokensFullRequest::METHOD => {
            reply(&id, parse(params).map(|p| semantic_tokens(docs, p)))
        }
        FoldingRangeRequest::METHOD => reply(&id, parse(params).map(|p| folding(docs, p))),
        References::METHOD => reply(&id, parse(params).map(|p| references(docs, p))),
        PrepareRenameRequest::METHOD => reply(&id, parse(params).map(|p| prepare_rename(docs, p))),
        Rename::METHOD => match parse(params).map(|p| rename(docs, p)) {
            Ok(Err(message)) => error(&id, ErrorCode::RequestFailed, message),
            other => reply(&id, other.map(Result::ok)),
        },
        _ => error(
            &id,
            ErrorCode::MethodNotFound,
            format!("wfrun lsp does not answer `{method}`"),
        ),
    }
}

fn parse<P: DeserializeOwned>(params: Value) -> Result<P, String> {
    serde_json::from_value(params).map_err(|e| format!("invalid parameters: {e}"))
}

fn hover(docs: &Docs, p: HoverParams) -> Option<Hover> {
    let pos = p.text_document_position_params;
    let text = docs.text(&pos.text_document.uri)?;
    let md = wfrun::ide::hover_on(text.as_str(), text.offset(pos.position), &machine())?;
    Some(Hover {
        contents: HoverContents::Markup(markdown(md)),
        range: None,
    })
}

fn complete(docs: &Docs, p: CompletionParams) -> Option<CompletionResponse> {
    let pos = p.text_document_position;
    let text = docs.text(&pos.text_document.uri)?;
    let items = wfrun::ide::completions(text.as_str(), text.offset(pos.position))
        .into_iter()
        .map(completion_item)
        .collect();
    Some(CompletionResponse::Array(items))
}

fn format(docs: &Docs, p: DocumentFormattingParams) -> Option<Vec<TextEdit>> {
    let text = docs.text(&p.text_document.uri)?;
    Some(match wfrun::format::format_source(text.as_str()) {
        Ok(formatted) if formatted != text.as_str() => vec![TextEdit {
            range: text.range(0, text.as_str().len()),
            new_text: formatted,
        }],
        _ => Vec::new(),
    })
}

fn definition(docs: &Docs, p: GotoDefinitionParams) -> Option<GotoDefinitionResponse> {
    let pos = p.text_document_position_params;
    let text = docs.text(&pos.text_document.uri)?;
    let target = wfrun::ide::definition(text.as_str(), text.offset(pos.position))?;
    let (uri, range) = if target.in_prelude {
        let prelude = Text::new(wfrun::spec::PRELUDE.to_string());
        (prelude_uri()?, prelude.range(target.start, target.end))
    } else {
        (pos.text_document.uri, text.range(target.start, target.end))
    };
    Some(GotoDefinitionResponse::Scalar(Location { uri, range }))
}

fn outline(docs: &Docs, p: DocumentSymbolParams) -> Option<DocumentSymbolResponse> {
    let text = docs.text(&p.text_document.uri)?;
    let symbols = wfrun::ide::symbols(text.as_str())
        .into_iter()
        .map(|s| document_symbol(text, s))
        .collect();
    Some(DocumentSymbolResponse::Nested(symbols))
}

fn actions(docs: &Docs, p: CodeActionParams) -> Option<Vec<CodeActionOrCommand>> {
    let text = docs.text(&p.text_document.uri)?;
    Some(code_actions(&p.text_document.uri, text, p.range))
}

/// The checker's options for `uri`: relative paths from its folder, this
/// machine's costs, the file system read only in full checks.
fn options_for(uri: &Uri, full: bool) -> (PathBuf, wfrun::CheckOptions) {
    let path = path_of(uri);
    let options = wfrun::CheckOptions {
        filesystem: full,
        base_dir: path.parent().map(PathBuf::from),
        machine: Some(machine()),
        // Each check sees the folders as they are now.
        listings: None,
    };
    (path, options)
}

fn inlay_hints(docs: &Docs, p: InlayHintParams) -> Option<Vec<InlayHint>> {
    let uri = &p.text_document.uri;
    let text = docs.text(uri)?;
    let counted = docs.counted.get(uri.as_str());
    let (from, to) = (text.offset(p.range.start), text.offset(p.range.end));
    let hints = match docs.get(uri).and_then(|d| d.checked.as_ref()) {
        Some(checked) => wfrun::ide::hints_of(checked, counted),
        None => {
            let (path, options) = options_for(uri, false);
            wfrun::ide::inlay_hints(text.as_str(), &path.shown().to_string(), &options, counted)
        }
    };
    Some(
        hints
            .into_iter()
            .filter(|h| from <= h.offset && h.offset <= to)
            .map(|h| InlayHint {
                position: text.position(h.offset),
                label: InlayHintLabel::String(h.label),
                kind: None,
                text_edits: None,
                tooltip: Some(InlayHintTooltip::String(h.tooltip)),
                padding_left: Some(true),
                padding_right: None,
                data: None,
            })
            .collect(),
    )
}

fn semantic_tokens(docs: &Docs, p: SemanticTokensParams) -> Option<SemanticTokensResult> {
    let text = docs.text(&p.text_document.uri)?;
    let string = text.as_str();
    let mut data = Vec::new();
    // One pass over the text, tokens in order: the UTF-16 column of each
    // token's start counted on from the previous token's end, so a long
    // line costs its length once, not once per token.
    let (mut at, mut line, mut column) = (0usize, 0u32, 0u32);
    let (mut last_line, mut last_column) = (0u32, 0u32);
    let utf16 = |s: &str| s.chars().map(char::len_utf16).sum::<usize>() as u32;
    for t in wfrun::ide::semantic_tokens(string) {
        if t.start < at || t.end > string.len() || t.start >= t.end {
            continue;
        }
        let gap = &string[at..t.start];
        match gap.rfind('\n') {
            Some(n) => {
                line += gap.matches('\n').count() as u32;
                column = utf16(&gap[n + 1..]);
            }
            None => column += utf16(gap),
        }
        let length = utf16(&string[t.start..t.end]);
        let delta_line = line - last_line;
        let delta_start = if delta_line == 0 {
            column - last_column
        } else {
            column
        };
        data.push(SemanticToken {
            delta_line,
            delta_start,
            length,
            token_type: t.kind.index(),
            token_modifiers_bitset: t.modifiers,
        });
        (last_line, last_column) = (line, column);
        column += length;
        at = t.end;
    }
    Some(SemanticTokensResult::Tokens(SemanticTokens {
        result_id: None,
        data,
    }))
}

fn folding(docs: &Docs, p: FoldingRangeParams) -> Option<Vec<FoldingRange>> {
    let text = docs.text(&p.text_document.uri)?;
    let ranges = wfrun::ide::folding_ranges(text.as_str())
        .into_iter()
        .filter_map(|f| {
            let start = text.position(f.start).line;
            let end = text.position(f.end).line;
            // A block folds to its `{`, keeping the line of its `}` in view.
            let end = if f.comment {
                end
            } else {
                end.saturating_sub(1)
            };
            (end > start).then_some(FoldingRange {
                start_line: start,
                start_character: None,
                end_line: end,
                end_character: None,
                kind: Some(if f.comment {
                    FoldingRangeKind::Comment
                } else {
                    FoldingRangeKind::Region
                }),
                collapsed_text: None,
            })
        })
        .collect();
    Some(ranges)
}

fn references(docs: &Docs, p: ReferenceParams) -> Option<Vec<Location>> {
    let pos = p.text_document_position;
    let text = docs.text(&pos.text_document.uri)?;
    let r = wfrun::ide::references(text.as_str(), text.offset(pos.position))?;
    let skip = usize::from(!p.context.include_declaration);
    Some(
        r.places
            .into_iter()
            .skip(skip)
            .map(|(s, e)| Location {
                uri: pos.text_document.uri.clone(),
                range: text.range(s, e),
            })
            .collect(),
    )
}

fn prepare_rename(docs: &Docs, p: TextDocumentPositionParams) -> Option<PrepareRenameResponse> {
    let text = docs.text(&p.text_document.uri)?;
    let (s, e) = wfrun::ide::prepare_rename(text.as_str(), text.offset(p.position))?;
    Some(PrepareRenameResponse::Range(text.range(s, e)))
}

fn rename(docs: &Docs, p: RenameParams) -> Result<WorkspaceEdit, String> {
    let pos = p.text_document_position;
    let text = docs
        .text(&pos.text_document.uri)
        .ok_or("the document is not open")?;
    let places = wfrun::ide::rename(text.as_str(), text.offset(pos.position), &p.new_name)?;
    let edits = places
        .into_iter()
        .map(|(s, e)| TextEdit {
            range: text.range(s, e),
            new_text: p.new_name.clone(),
        })
        .collect();
    Ok(WorkspaceEdit {
        changes: Some(HashMap::from([(pos.text_document.uri, edits)])),
        ..Default::default()
    })
}

fn markdown(value: String) -> MarkupContent {
    MarkupContent {
        kind: MarkupKind::Markdown,
        value,
    }
}

fn completion_item(c: wfrun::ide::Completion) -> CompletionItem {
    CompletionItem {
        label: c.label,
        kind: Some(match c.kind {
            CompletionKind::Template => CompletionItemKind::CLASS,
            CompletionKind::StepKind => CompletionItemKind::FUNCTION,
            CompletionKind::Param => CompletionItemKind::FIELD,
            CompletionKind::Setting => CompletionItemKind::PROPERTY,
            CompletionKind::Value => CompletionItemKind::VALUE,
        }),
        detail: Some(c.detail),
        documentation: (!c.documentation.is_empty())
            .then(|| Documentation::MarkupContent(markdown(c.documentation))),
        insert_text: Some(c.insert),
        ..Default::default()
    }
}

/// A `file://` URI's path (percent escapes decoded).
fn path_of(uri: &Uri) -> PathBuf {
    let s = uri.as_str();
    let raw = s.strip_prefix("file://").unwrap_or(s);
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&raw[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// This machine's memory and throughput, read once for the server's life
/// (`Machine::this_machine` keeps them).
fn machine() -> wfrun::cost::Machine {
    wfrun::cost::Machine::this_machine()
}

fn check(uri: &Uri, text: &Text, full: bool) -> wfrun::Checked {
    let (path, options) = options_for(uri, full);
    wfrun::check_source(&path.shown().to_string(), text.as_str(), &options)
}

fn diagnostics_of(uri: &Uri, text: &Text, checked: &wfrun::Checked) -> Vec<Diagnostic> {
    checked
        .diagnostics
        .iter()
        .filter(|d| d.span.source == checked.source)
        .map(|d| to_lsp(uri, text, checked.source, d))
        .collect()
}

fn to_lsp(uri: &Uri, text: &Text, source: wfrun::SourceId, d: &wfrun::Diagnostic) -> Diagnostic {
    let mut message = d.message.clone();
    if let Some(label) = &d.label {
        message.push_str(&format!(" ({label})"));
    }
    if let Some(help) = &d.help {
        message.push_str(&format!("\nhelp: {help}"));
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .related
        .iter()
        .filter(|l| l.span.source == source)
        .map(|l| DiagnosticRelatedInformation {
            location: Location {
                uri: uri.clone(),
                range: text.range(l.span.start, l.span.end),
            },
            message: l.message.clone(),
        })
        .collect();
    Diagnostic {
        range: text.range(d.span.start, d.span.end),
        severity: Some(if d.is_error() {
            DiagnosticSeverity::ERROR
        } else {
            DiagnosticSeverity::WARNING
        }),
        code: Some(NumberOrString::String(d.code.as_str().to_string())),
        source: Some("wfrun".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}

/// Quick fixes for the diagnostics on the lines of `within`: each fix the
/// checker offers, the first of each diagnostic preferred.
fn code_actions(uri: &Uri, text: &Text, within: Range) -> Vec<CodeActionOrCommand> {
    let checked = check(uri, text, false);
    let from = text.offset(Position::new(within.start.line, 0));
    let to = text.offset(Position::new(within.end.line, u32::MAX));
    checked
        .diagnostics
        .iter()
        .filter(|d| d.span.source == checked.source && d.span.start <= to && from <= d.span.end)
        .flat_map(|d| {
            let shown = to_lsp(uri, text, checked.source, d);
            d.fixes.iter().enumerate().map(move |(i, fix)| {
                let edit = TextEdit {
                    range: text.range(fix.span.start, fix.span.end),
                    new_text: fix.replacement.clone(),
                };
                CodeActionOrCommand::CodeAction(CodeAction {
                    title: fix.title.clone(),
                    kind: Some(CodeActionKind::QUICKFIX),
                    diagnostics: Some(vec![shown.clone()]),
                    edit: Some(WorkspaceEdit {
                        changes: Some([(uri.clone(), vec![edit])].into_iter().collect()),
                        ..Default::default()
                    }),
                    is_preferred: Some(i == 0),
                    ..Default::default()
                })
            })
        })
        .collect()
}

#[allow(deprecated)] // `DocumentSymbol::deprecated` must still be written
fn document_symbol(text: &Text, s: wfrun::ide::Symbol) -> DocumentSymbol {
    use wfrun::ide::SymbolKind as K;
    DocumentSymbol {
        name: s.name,
        detail: (!s.detail.is_empty()).then_some(s.detail),
        kind: match s.kind {
            K::Workflow => SymbolKind::MODULE,
            K::Use => SymbolKind::OBJECT,
            K::Data => SymbolKind::NAMESPACE,
            K::Sweep => SymbolKind::ARRAY,
            K::Step => SymbolKind::FUNCTION,
            K::Template => SymbolKind::CLASS,
            K::StepKind => SymbolKind::INTERFACE,
            K::Param => SymbolKind::FIELD,
            K::Setting => SymbolKind::PROPERTY,
        },
        tags: None,
        deprecated: None,
        range: text.range(s.start, s.end),
        selection_range: text.range(s.name_start, s.name_end),
        children: (!s.children.is_empty()).then(|| {
            s.children
                .into_iter()
                .map(|c| document_symbol(text, c))
                .collect()
        }),
    }
}

/// A file holding the prelude (wfrun's built-in templates and steps), written
/// once per server under the temporary folder so editors can open it.
fn prelude_uri() -> Option<Uri> {
    static URI: OnceLock<Option<Uri>> = OnceLock::new();
    URI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "wfrun-{}-{}",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let path = dir.join("prelude.wf");
        std::fs::write(&path, wfrun::spec::PRELUDE).ok()?;
        file_uri(&path)
    })
    .clone()
}

/// The `file://` URI of an absolute path (bytes outside the unreserved set escaped).
fn file_uri(path: &std::path::Path) -> Option<Uri> {
    let mut s = String::from("file://");
    for b in path.to_str()?.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units_and_clamp() {
        let text = Text::new("a\r\nzé𝄞x\n\nlast".into());
        let at = |line, character| text.offset(Position::new(line, character));
        // Line 1 is `zé𝄞x`: `𝄞` is two UTF-16 units and four bytes.
        assert_eq!(at(1, 0), 3);
        assert_eq!(at(1, 2), 6);
        assert_eq!(at(1, 4), 10);
        assert_eq!(at(1, 99), 11);
        assert_eq!(at(2, 5), 12);
        assert_eq!(at(9, 0), text.as_str().len());
        for offset in [0, 1, 3, 6, 10, 11, 12, 13, 17] {
            assert_eq!(text.offset(text.position(offset)), offset, "{offset}");
        }
        assert_eq!(text.position(10), Position::new(1, 4));
        // Inside a character: its start; past the end: the end.
        assert_eq!(text.position(7), Position::new(1, 2));
        assert_eq!(text.position(100), Position::new(3, 4));
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line_as_the_protocol_says() {
        let text = Text::new("workflow t\ruse Nope {}\r\ndata\n".into());
        // `Nope` is on line 1 for a client, characters 4 to 8.
        assert_eq!(text.position(15), Position::new(1, 4));
        assert_eq!(text.offset(Position::new(1, 4)), 15);
        assert_eq!(text.position(text.as_str().len()), Position::new(3, 0));
        assert_eq!(text.offset(Position::new(2, 2)), 26);
    }
}
