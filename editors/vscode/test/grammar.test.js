// Tokenises .wf text with the TextMate grammar through vscode-textmate and
// Oniguruma (the engine VS Code itself uses) and checks the scopes given.
// Run: `npm ci && npm test` in editors/vscode (.ci/run does).
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const oniguruma = require("vscode-oniguruma");
const textmate = require("vscode-textmate");

const root = path.resolve(__dirname, "..", "..", "..");

async function loadGrammar() {
  const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new textmate.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scope) => {
      if (scope !== "source.wf") return null;
      const file = path.join(__dirname, "..", "syntaxes", "wf.tmLanguage.json");
      return textmate.parseRawGrammar(fs.readFileSync(file, "utf8"), file);
    },
  });
  return registry.loadGrammar("source.wf");
}

// [text, scope] for every token of `text` (scopes other than the root joined by spaces).
function tokenize(grammar, text) {
  let state = textmate.INITIAL;
  const out = [];
  for (const line of text.split("\n")) {
    const result = grammar.tokenizeLine(line, state);
    for (const t of result.tokens) {
      const piece = line.slice(t.startIndex, t.endIndex);
      if (piece.trim() === "") continue;
      out.push([piece, t.scopes.slice(1).join(" ")]);
    }
    state = result.ruleStack;
  }
  return out;
}

function scopeOf(tokens, piece) {
  const found = tokens.find(([t]) => t === piece);
  assert.ok(found, `no token ${JSON.stringify(piece)} in ${JSON.stringify(tokens)}`);
  return found[1];
}

(async () => {
  const grammar = await loadGrammar();
  const sample = [
    "# a comment with use and 12 inside",
    "workflow pipeline",
    "template Small extends Clarifai_ResNext {",
    '    doc = """Narrower:',
    '    step = 3 is text here"""',
    "    param image_size: int | path { max = 64 }",
    "}",
    "use Small {",
    "    per_item_lrate = 7.8125e-05  # trailing",
    "    image_size     = 48",
    "}",
    'data { train = manifest("a \\"b\\".csv")  eval = 0.2 }',
    "device = cuda(0)",
    "seed = -3",
    "step visual_search as find { queries = eval  top_k = 5 }",
    "sweep { batch_size = range(16, 64, 16) }",
  ].join("\n");
  const tokens = tokenize(grammar, sample);
  const has = (piece, scope) =>
    assert.ok(scopeOf(tokens, piece).includes(scope), `${piece}: ${scopeOf(tokens, piece)} lacks ${scope}`);

  has("# a comment with use and 12 inside", "comment.line");
  has("workflow", "keyword.other.workflow");
  has("pipeline", "entity.name.namespace");
  has("template", "storage.type.template");
  has("Small", "entity.name.type.template");
  has("extends", "storage.modifier.extends");
  has("Clarifai_ResNext", "entity.other.inherited-class");
  has("doc", "variable.other.property");
  has('    step = 3 is text here', "string.quoted.triple");
  has("param", "storage.type.param");
  has("image_size", "variable.parameter");
  has("int | path", "support.type");
  has("use", "keyword.other.use");
  has("per_item_lrate", "variable.other.property");
  has("7.8125e-05", "constant.numeric");
  has("# trailing", "comment.line");
  has("data", "keyword.other.data");
  has("manifest", "support.function");
  has('\\"', "constant.character.escape");
  has("0.2", "constant.numeric");
  has("cuda", "support.function");
  has("-3", "constant.numeric");
  has("step", "keyword.other.step");
  has("visual_search", "entity.name.function.step");
  has("find", "variable.other.step-name");
  has("sweep", "keyword.other.sweep");
  has("range", "support.function");
  const lastEval = tokens.filter(([t]) => t === "eval").pop();
  assert.ok(lastEval[1].includes("constant.language"), `queries = eval: ${lastEval[1]}`);
  assert.ok(scopeOf(tokens, "eval").includes("variable.other.property"), "eval = 0.2 sets `eval`");
  has("=", "keyword.operator.assignment");

  // Every shipped workflow and the prelude: comments stay comments, and
  // nothing after a closed string is left inside one.
  const files = [path.join(root, "src", "spec", "prelude.wfp")];
  for (const f of fs.readdirSync(path.join(root, "workflows"))) {
    if (f.endsWith(".wf")) files.push(path.join(root, "workflows", f));
  }
  for (const file of files) {
    const text = fs.readFileSync(file, "utf8");
    const toks = tokenize(grammar, text);
    for (const [piece, scope] of toks) {
      if (piece.startsWith("#")) assert.ok(scope.includes("comment"), `${file}: ${piece} is ${scope}`);
    }
    // A statement's keyword (not a setting of the same name, such as `step = 16`).
    for (const line of text.split("\n")) {
      const m = /^\s*(workflow|use|step|template|step_kind|param)\s+[A-Za-z_]/.exec(line);
      if (!m) continue;
      const [first] = tokenize(grammar, line);
      assert.equal(first[0], m[1], `${file}: ${line}`);
      assert.ok(/keyword|storage/.test(first[1]), `${file}: ${line}: ${first[1]}`);
    }
    const last = toks[toks.length - 1];
    assert.ok(!last[1].includes("string"), `${file} ends inside a string: ${last}`);
  }
  console.log(`grammar: ${tokens.length} sample tokens and ${files.length} files tokenised as expected`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
