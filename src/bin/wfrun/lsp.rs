//! `wfrun lsp`: a language server over stdio. The only module that knows LSP
//! types; the answers come from the library (`check_source`, `format`, `ide`).
//!
//! Documents are synchronised whole. On every change the file is checked
//! without the file system (fast: typing never waits on a data folder); on
//! open and save it is checked in full, data folders included.

use std::collections::HashMap;
use std::path::PathBuf;

use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, DidSaveTextDocument,
    Notification as _, PublishDiagnostics,
};
use lsp_types::request::{Completion, Formatting, HoverRequest, Request as _};
use lsp_types::{
    CompletionItem, CompletionItemKind, CompletionOptions, CompletionParams, CompletionResponse,
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, DocumentFormattingParams,
    Documentation, Hover, HoverContents, HoverParams, HoverProviderCapability, Location,
    MarkupContent, MarkupKind, NumberOrString, Position, PublishDiagnosticsParams, Range,
    ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit, Uri,
};
use wfrun::ide::CompletionKind;

/// Serves until the client asks to shut down; the exit status.
pub fn serve() -> u8 {
    let (connection, threads) = Connection::stdio();
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![" ".into(), "{".into()]),
            ..Default::default()
        }),
        document_formatting_provider: Some(lsp_types::OneOf::Left(true)),
        ..Default::default()
    };
    let Ok(caps) = serde_json::to_value(capabilities) else {
        return 2;
    };
    if connection.initialize(caps).is_err() {
        return 2;
    }
    let mut docs: HashMap<String, String> = HashMap::new();
    for message in &connection.receiver {
        match message {
            Message::Request(req) => {
                if connection.handle_shutdown(&req).unwrap_or(true) {
                    break;
                }
                let response = answer(&docs, req);
                if connection.sender.send(Message::Response(response)).is_err() {
                    break;
                }
            }
            Message::Notification(n) => {
                if let Some((uri, full)) = update(&mut docs, n) {
                    let found = match docs.get(uri.as_str()) {
                        Some(text) => diagnostics(&uri, text, full),
                        None => Vec::new(), // closed: clear what was shown
                    };
                    let params = PublishDiagnosticsParams {
                        diagnostics: found,
                        uri,
                        version: None,
                    };
                    let note = Notification::new(PublishDiagnostics::METHOD.into(), params);
                    if connection.sender.send(Message::Notification(note)).is_err() {
                        break;
                    }
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

/// Applies a document notification; returns the document to re-check and
/// whether to check it in full (with the file system).
fn update(docs: &mut HashMap<String, String>, n: Notification) -> Option<(Uri, bool)> {
    match n.method.as_str() {
        DidOpenTextDocument::METHOD => {
            let p: lsp_types::DidOpenTextDocumentParams = serde_json::from_value(n.params).ok()?;
            docs.insert(
                p.text_document.uri.as_str().to_string(),
                p.text_document.text,
            );
            Some((p.text_document.uri, true))
        }
        DidChangeTextDocument::METHOD => {
            let p: lsp_types::DidChangeTextDocumentParams =
                serde_json::from_value(n.params).ok()?;
            let text = p.content_changes.into_iter().last()?.text;
            docs.insert(p.text_document.uri.as_str().to_string(), text);
            Some((p.text_document.uri, false))
        }
        DidSaveTextDocument::METHOD => {
            let p: lsp_types::DidSaveTextDocumentParams = serde_json::from_value(n.params).ok()?;
            Some((p.text_document.uri, true))
        }
        DidCloseTextDocument::METHOD => {
            let p: lsp_types::DidCloseTextDocumentParams = serde_json::from_value(n.params).ok()?;
            docs.remove(p.text_document.uri.as_str());
            // Checking the now empty text clears what was shown for it.
            Some((p.text_document.uri, false))
        }
        _ => None,
    }
}

fn answer(docs: &HashMap<String, String>, req: Request) -> Response {
    let id = req.id.clone();
    let result = match req.method.as_str() {
        HoverRequest::METHOD => serde_json::from_value::<HoverParams>(req.params)
            .ok()
            .and_then(|p| {
                let pos = p.text_document_position_params;
                let text = docs.get(pos.text_document.uri.as_str())?;
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
                let text = docs.get(pos.text_document.uri.as_str())?;
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
                let text = docs.get(p.text_document.uri.as_str())?;
                let edits = match wfrun::format::format_source(text) {
                    Ok(formatted) if formatted != *text => vec![TextEdit {
                        range: Range::new(Position::new(0, 0), position(text, text.len())),
                        new_text: formatted,
                    }],
                    _ => Vec::new(),
                };
                serde_json::to_value(edits).ok()
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

fn diagnostics(uri: &Uri, text: &str, full: bool) -> Vec<Diagnostic> {
    let path = path_of(uri);
    let options = wfrun::CheckOptions {
        filesystem: full,
        base_dir: path.parent().map(PathBuf::from),
    };
    let checked = wfrun::check_source(&path.display().to_string(), text, &options);
    checked
        .diagnostics
        .iter()
        .filter(|d| d.span.source == checked.source)
        .map(|d| {
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
                .filter(|l| l.span.source == checked.source)
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
        })
        .collect()
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
