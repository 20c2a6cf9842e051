// Starts `wfrun lsp` for .wf files. Everything the editor shows (diagnostics,
// hover, completion, quick fixes, outline, formatting) comes from the server.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("wfrun").get("path") || "wfrun";
  const server = { command, args: ["lsp"] };
  client = new LanguageClient(
    "wfrun",
    "wfrun",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "wf" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
