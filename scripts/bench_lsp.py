#!/usr/bin/env python3
"""Times `wfrun lsp` on one large generated document, over stdio.

    python3 scripts/bench_lsp.py [--lines 100000] [--wfrun target/release/wfrun]

The document is a `use`, a `data` block, then steps of four lines each, not
formatted (`k=3`); every eighth step sets `k = 0` (out of range: one
diagnostic) and every 64th step holds a broken line (a syntax error). The
formatter refuses a file with syntax errors, so formatting is timed on the same
document without its broken lines (sent as a change first). Prints one line per request: the time from
sending it to the first byte of its answer (for didOpen and didChange: of the
first publishDiagnostics), so the client's own JSON parsing is not counted.
Standard library only.
"""

import argparse
import json
import subprocess
import threading
import queue
import time


def document(lines, broken=True):
    out = ["workflow big", "use Clarifai_ResNext {", "    image_size = 64", "}",
           'data { train = "images" }']
    i = 0
    while len(out) + 4 <= lines:
        k = 0 if i % 8 == 0 else 2 + i % 7
        out.append(f"step clustering as c{i} {{")
        out.append(f"    k={k}")
        out.append("    inits 3" if broken and i % 64 == 0 else "    inits   = 2")
        out.append("}")
        i += 1
    out += ["# end"] * (lines - len(out))
    return "\n".join(out) + "\n"


class Server:
    def __init__(self, exe):
        self.p = subprocess.Popen([exe, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.q = queue.Queue()
        self.next_id = 1
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        out = self.p.stdout
        while True:
            length = None
            first = None
            while True:
                line = out.readline()
                if not line:
                    return
                first = first or time.perf_counter()
                line = line.strip()
                if not line:
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = out.read(length)
            self.q.put((first, json.loads(body), len(body)))

    def send(self, msg):
        body = json.dumps(msg).encode()
        self.p.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.p.stdin.flush()

    def request(self, method, params):
        rid = self.next_id
        self.next_id += 1
        start = time.perf_counter()
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        while True:
            at, m, size = self.q.get(timeout=600)
            if m.get("id") == rid:
                return at - start, m, size

    def notify(self, method, params):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_diagnostics(self, start):
        while True:
            at, m, size = self.q.get(timeout=600)
            if m.get("method") == "textDocument/publishDiagnostics":
                return at - start, m, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100000)
    ap.add_argument("--wfrun", default="target/release/wfrun")
    args = ap.parse_args()
    text = document(args.lines)
    uri = "file:///tmp/wfrun-bench-lsp/big.wf"
    s = Server(args.wfrun)
    s.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    s.notify("initialized", {})
    print(f"{args.lines} lines, {len(text)} bytes")
    start = time.perf_counter()
    s.notify("textDocument/didOpen",
             {"textDocument": {"uri": uri, "languageId": "wf", "version": 1, "text": text}})
    took, m, size = s.wait_diagnostics(start)
    found = len(m['params']['diagnostics'])
    print(f"didOpen → diagnostics: {took * 1e3:.0f} ms ({found} diagnostics, {size} bytes)")
    doc = {"textDocument": {"uri": uri}}
    mid = args.lines // 2
    cases = [
        ("documentSymbol", "textDocument/documentSymbol", doc),
        ("hover", "textDocument/hover",
         {**doc, "position": {"line": mid - mid % 4 + 5, "character": 5}}),
        ("completion", "textDocument/completion",
         {**doc, "position": {"line": mid - mid % 4 + 7, "character": 4}}),
        ("codeAction", "textDocument/codeAction",
         {**doc, "range": {"start": {"line": 5, "character": 0},
                           "end": {"line": 6, "character": 0}},
          "context": {"diagnostics": []}}),
    ]
    for name, method, params in cases:
        took, m, size = s.request(method, params)
        result = m.get("result")
        items = len(result) if isinstance(result, list) else ("null" if result is None else 1)
        print(f"{name}: {took * 1e3:.0f} ms ({items} items, {size} bytes)")
    start = time.perf_counter()
    s.notify("textDocument/didChange",
             {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": text + "\n"}]})
    took, _, _ = s.wait_diagnostics(start)
    print(f"didChange → diagnostics: {took * 1e3:.0f} ms")
    clean = document(args.lines, broken=False)
    s.notify("textDocument/didChange",
             {"textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": clean}]})
    s.wait_diagnostics(time.perf_counter())
    took, m, size = s.request("textDocument/formatting",
                              {**doc, "options": {"tabSize": 4, "insertSpaces": True}})
    print(f"formatting (without the broken lines): {took * 1e3:.0f} ms ({size} bytes)")
    s.request("shutdown", None)
    s.notify("exit", None)
    s.p.wait(timeout=10)


if __name__ == "__main__":
    main()
