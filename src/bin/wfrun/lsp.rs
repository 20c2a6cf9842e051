//! `wfrun lsp`: a language server over stdio. The only module that knows LSP
//! types; the answers come from the library (`check_source`, `format`, `ide`).
//!
//! Documents are synchronised whole. On every change the file is checked
//! without the file system (fast: typing never waits on a data folder). On
//! open and save those diagnostics are published at once too, and a worker
//! thread checks the file in full, data folders included; its result is
//! published only if the document has not changed meanwhile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, DidSaveTextDocument,
    Notification as _, PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest,
    Request as _,
};
use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams,
    CodeActionProviderCapability, CompletionItem, CompletionItemKind, CompletionOptions,
    CompletionParams, CompletionResponse, Diagnostic, DiagnosticRelatedInformation,
    DiagnosticSeverity, DocumentFormattingParams, DocumentSymbol, DocumentSymbolParams,
    DocumentSymbolResponse, Documentation, GotoDefinitionParams, GotoDefinitionResponse, Hover,
    HoverContents, HoverParams, HoverProviderCapability, Location, MarkupContent, MarkupKind,
    NumberOrString, OneOf, Position, PublishDiagnosticsParams, Range, ServerCapabilities,
    SymbolKind, TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit, Uri, WorkspaceEdit,
};
use wfrun::ide::CompletionKind;

/// One open document: its text, the client's version of it, and a
/// generation bumped on every change or save, so that a full check finishing
/// late never overwrites newer diagnostics.
struct Doc {
    text: String,
    version: Option<i32>,
    generation: u64,
}

#[derive(Default)]
struct Docs {
    open: HashMap<String, Doc>,
    generations: u64,
}

impl Docs {
    fn get(&self, uri: &Uri) -> Option<&Doc> {
        self.open.get(uri.as_str())
    }

    fn text(&self, uri: &Uri) -> Option<&str> {
        self.get(uri).map(|d| d.text.as_str())
    }

    fn set(&mut self, uri: &Uri, text: String, version: Option<i32>) {
        self.generations += 1;
        let doc = Doc {
            text,
            version,
            generation: self.generations,
        };
        self.open.insert(uri.as_str().to_string(), doc);
    }
}

/// Serves until the client asks to shut down; the exit status.
pub fn serve() -> u8 {
    let (connection, threads) = Connection::stdio();
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![" ".into(), "{".into(), "=".into()]),
            ..Default::default()
        }),
        document_formatting_provider: Some(OneOf::Left(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        ..Default::default()
    };
    let Ok(caps) = serde_json::to_value(capabilities) else {
        return 2;
    };
    if connection.initialize(caps).is_err() {
        return 2;
    }
    let docs = Arc::new(Mutex::new(Docs::default()));
    for message in &connection.receiver {
        match message {
            Message::Request(req) => {
                if connection.handle_shutdown(&req).unwrap_or(true) {
                    break;
                }
                let response = {
                    let docs = docs.lock().unwrap_or_else(|e| e.into_inner());
                    answer(&docs, req)
                };
                if connection.sender.send(Message::Response(response)).is_err() {
                    break;
                }
            }
            Message::Notification(n) => {
                let mut guard = docs.lock().unwrap_or_else(|e| e.into_inner());
                let Some((uri, full)) = update(&mut guard, n) else {
                    continue;
                };
                let doc = guard
                    .get(&uri)
                    .map(|d| (d.text.clone(), d.version, d.generation));
                drop(guard);
                // At once, without the file system (closed: clear what was shown).
                let (found, version) = match &doc {
                    Some((text, version, _)) => (diagnostics(&uri, text, false), *version),
                    None => (Vec::new(), None),
                };
                if publish(&connection.sender, uri.clone(), found, version).is_err() {
                    break;
                }
                if let (true, Some((text, version, generation))) = (full, doc) {
                    // In full on a worker: data folders may be slow to walk.
                    let docs = Arc::clone(&docs);
                    let sender = connection.sender.clone();
                    std::thread::spawn(move || {
                        let found = diagnostics(&uri, &text, true);
                        let docs = docs.lock().unwrap_or_else(|e| e.into_inner());
                        if docs.get(&uri).map(|d| d.generation) == Some(generation) {
                            // Sent under the lock: a newer change publishes after this.
                            let _ = publish(&sender, uri, found, version);
                        }
                    });
                }
            }
            Message::Response(_) => {}
        }
    }
    drop(connection);
    match threads.join() {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn publish(
    sender: &crossbeam_channel::Sender<Message>,
    uri: Uri,
    diagnostics: Vec<Diagnostic>,
    version: Option<i32>,
) -> Result<(), crossbeam_channel::SendError<Message>> {
    let params = PublishDiagnosticsParams {
        diagnostics,
        uri,
        version,
    };
    let note = Notification::new(PublishDiagnostics::METHOD.into(), params);
    sender.send(Message::Notification(note))
}

/// Applies a document notification; returns the document to re-check and
/// whether to check it in full (with the file system).
fn update(docs: &mut Docs, n: Notification) -> Option<(Uri, bool)> {
    match n.method.as_str() {
        DidOpenTextDocument::METHOD => {
            let p: lsp_types::DidOpenTextDocumentParams = serde_json::from_value(n.params).ok()?;
            let version = Some(p.text_document.version);
            docs.set(&p.text_document.uri, p.text_document.text, version);
            Some((p.text_document.uri, true))
        }
        DidChangeTextDocument::METHOD => {
            let p: lsp_types::DidChangeTextDocumentParams =
                serde_json::from_value(n.params).ok()?;
            let text = p.content_changes.into_iter().last()?.text;
            let version = Some(p.text_document.version);
            docs.set(&p.text_document.uri, text, version);
            Some((p.text_document.uri, false))
        }
        DidSaveTextDocument::METHOD => {
            let p: lsp_types::DidSaveTextDocumentParams = serde_json::from_value(n.params).ok()?;
            let doc = docs.get(&p.text_document.uri)?;
            let (text, version) = (doc.text.clone(), doc.version);
            // A new generation: a full check still running for the old one is dropped.
            docs.set(&p.text_document.uri, text, version);
            Some((p.text_document.uri, true))
        }
        DidCloseTextDocument::METHOD => {
            let p: lsp_types::DidCloseTextDocumentParams = serde_json::from_value(n.params).ok()?;
            docs.open.remove(p.text_document.uri.as_str());
            Some((p.text_document.uri, false))
        }
        _ => None,
    }
}

fn answer(docs: &Docs, req: Request) -> Response {
    let id = req.id.clone();
    let result = match req.method.as_str() {
        HoverRequest::METHOD => serde_json::from_value::<HoverParams>(req.params)
            .ok()
            .and_then(|p| {
                let pos = p.text_document_position_params;
                let text = docs.text(&pos.text_document.uri)?;
                let md = wfrun::ide::hover(text, offset(text, pos.position))?;
                serde_json::to_value(Hover {
                    contents: HoverContents::Markup(markdown(md)),
                    range: None,
                })
                .ok()
            }),
        Completion::METHOD => serde_json::from_value::<CompletionParams>(req.params)
            .ok()
            .and_then(|p| {
                let pos = p.text_document_position;
                let text = docs.text(&pos.text_document.uri)?;
                let items: Vec<CompletionItem> =
                    wfrun::ide::completions(text, offset(text, pos.position))
                        .into_iter()
                        .map(completion_item)
                        .collect();
                serde_json::to_value(CompletionResponse::Array(items)).ok()
            }),
        Formatting::METHOD => serde_json::from_value::<DocumentFormattingParams>(req.params)
            .ok()
            .and_then(|p| {
                let text = docs.text(&p.text_document.uri)?;
                let edits = match wfrun::format::format_source(text) {
                    Ok(formatted) if formatted != text => vec![TextEdit {
                        range: Range::new(Position::new(0, 0), position(text, text.len())),
                        new_text: formatted,
                    }],
                    _ => Vec::new(),
                };
                serde_json::to_value(edits).ok()
            }),
        GotoDefinition::METHOD => serde_json::from_value::<GotoDefinitionParams>(req.params)
            .ok()
            .and_then(|p| {
                let pos = p.text_document_position_params;
                let text = docs.text(&pos.text_document.uri)?;
                let target = wfrun::ide::definition(text, offset(text, pos.position))?;
                let (uri, in_text) = if target.in_prelude {
                    (prelude_uri()?, wfrun::spec::PRELUDE)
                } else {
                    (pos.text_document.uri, text)
                };
                serde_json::to_value(GotoDefinitionResponse::Scalar(Location {
                    uri,
                    range: range(in_text, target.start, target.end),
                }))
                .ok()
            }),
        DocumentSymbolRequest::METHOD => serde_json::from_value::<DocumentSymbolParams>(req.params)
            .ok()
            .and_then(|p| {
                let text = docs.text(&p.text_document.uri)?;
                let symbols: Vec<DocumentSymbol> = wfrun::ide::symbols(text)
                    .into_iter()
                    .map(|s| document_symbol(text, s))
                    .collect();
                serde_json::to_value(DocumentSymbolResponse::Nested(symbols)).ok()
            }),
        CodeActionRequest::METHOD => serde_json::from_value::<CodeActionParams>(req.params)
            .ok()
            .and_then(|p| {
                let text = docs.text(&p.text_document.uri)?;
                let actions = code_actions(&p.text_document.uri, text, p.range);
                serde_json::to_value(actions).ok()
            }),
        _ => {
            return Response::new_err(
                id,
                lsp_server::ErrorCode::MethodNotFound as i32,
                format!("wfrun lsp does not answer `{}`", req.method),
            )
        }
    };
    Response::new_ok(id, result.unwrap_or(serde_json::Value::Null))
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

fn check(uri: &Uri, text: &str, full: bool) -> wfrun::Checked {
    let path = path_of(uri);
    let options = wfrun::CheckOptions {
        filesystem: full,
        base_dir: path.parent().map(PathBuf::from),
    };
    wfrun::check_source(&path.display().to_string(), text, &options)
}

fn diagnostics(uri: &Uri, text: &str, full: bool) -> Vec<Diagnostic> {
    let checked = check(uri, text, full);
    checked
        .diagnostics
        .iter()
        .filter(|d| d.span.source == checked.source)
        .map(|d| to_lsp(uri, text, checked.source, d))
        .collect()
}

fn to_lsp(uri: &Uri, text: &str, source: wfrun::SourceId, d: &wfrun::Diagnostic) -> Diagnostic {
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
                range: range(text, l.span.start, l.span.end),
            },
            message: l.message.clone(),
        })
        .collect();
    Diagnostic {
        range: range(text, d.span.start, d.span.end),
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
fn code_actions(uri: &Uri, text: &str, within: Range) -> Vec<CodeActionOrCommand> {
    let checked = check(uri, text, false);
    let from = offset(text, Position::new(within.start.line, 0));
    let to = offset(text, Position::new(within.end.line, u32::MAX));
    checked
        .diagnostics
        .iter()
        .filter(|d| d.span.source == checked.source && d.span.start <= to && from <= d.span.end)
        .flat_map(|d| {
            let shown = to_lsp(uri, text, checked.source, d);
            d.fixes.iter().enumerate().map(move |(i, fix)| {
                let edit = TextEdit {
                    range: range(text, fix.span.start, fix.span.end),
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
fn document_symbol(text: &str, s: wfrun::ide::Symbol) -> DocumentSymbol {
    use wfrun::ide::SymbolKind as K;
    DocumentSymbol {
        name: s.name,
        detail: (!s.detail.is_empty()).then_some(s.detail),
        kind: match s.kind {
            K::Workflow => SymbolKind::MODULE,
            K::Use => SymbolKind::OBJECT,
            K::Data => SymbolKind::NAMESPACE,
            K::Step => SymbolKind::FUNCTION,
            K::Template => SymbolKind::CLASS,
            K::StepKind => SymbolKind::INTERFACE,
            K::Param => SymbolKind::FIELD,
            K::Setting => SymbolKind::PROPERTY,
        },
        tags: None,
        deprecated: None,
        range: range(text, s.start, s.end),
        selection_range: range(text, s.name_start, s.name_end),
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

fn range(text: &str, start: usize, end: usize) -> Range {
    Range::new(position(text, start), position(text, end))
}

/// The LSP position (line, UTF-16 column) of byte `offset`.
fn position(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..line_start].matches('\n').count();
    let column: usize = text[line_start..offset].chars().map(char::len_utf16).sum();
    Position::new(line as u32, column as u32)
}

/// The byte offset of an LSP position (clamped to its line).
fn offset(text: &str, pos: Position) -> usize {
    let mut start = 0;
    for _ in 0..pos.line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let mut units = 0;
    for (i, c) in text[start..line_end].char_indices() {
        if units >= pos.character as usize {
            return start + i;
        }
        units += c.len_utf16();
    }
    line_end
}
