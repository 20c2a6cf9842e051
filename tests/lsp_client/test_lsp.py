"""`wfrun lsp` driven by pytest-lsp, a real LSP client (pygls), announcing
Visual Studio Code's capabilities; pytest-lsp also checks that every answer
is valid for those capabilities.

Run: `WFRUN=target/debug/wfrun python -m pytest tests/lsp_client` (`.ci/run`
does, after `cargo test` built the binary).
"""

import asyncio
import os
import pathlib

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

ROOT = pathlib.Path(__file__).resolve().parents[2]
WFRUN = os.environ.get("WFRUN", str(ROOT / "target" / "debug" / "wfrun"))
# No cached measurement of this machine: the cost hints use wfrun's fallback
# figures, the same on every machine.
os.environ["WFRUN_CACHE_DIR"] = str(ROOT / "target" / "lsp-client-cache")


# What the server announced, for the tests that decode with its legend.
SERVER_CAPABILITIES = []


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[WFRUN, "lsp"]))
async def client(lsp_client: LanguageClient, tmp_path):
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=tmp_path.as_uri(),
    )
    result = await lsp_client.initialize_session(params)
    caps = result.capabilities
    SERVER_CAPABILITIES[:] = [caps]
    assert caps.hover_provider and caps.definition_provider
    assert caps.document_symbol_provider and caps.code_action_provider
    assert caps.document_formatting_provider and caps.completion_provider
    yield
    await lsp_client.shutdown_session()


def workspace(tmp_path: pathlib.Path) -> pathlib.Path:
    """A data folder of two concepts (the checker counts files, it does not decode them)."""
    for concept in ["cat", "dog"]:
        (tmp_path / "images" / concept).mkdir(parents=True)
        for i in range(40):
            (tmp_path / "images" / concept / f"{i}.png").write_bytes(b"")
    return tmp_path / "pipeline.wf"


BROKEN = """\
workflow pipeline
use Clarifai_ResNext {
    image_size = 1000
    batch_size = 32
    bacth_size = 16
}
data { train = "images" }
step clustering { k = 2 }
"""


def open_doc(client: LanguageClient, path: pathlib.Path, text: str) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="wf", version=1, text=text
            )
        )
    )
    return uri


def change(client: LanguageClient, uri: str, version: int, text: str):
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


async def published(client: LanguageClient, uri: str, until) -> list:
    """The diagnostics shown for `uri` once they satisfy `until` (within 20 s)."""
    for _ in range(400):
        found = client.diagnostics.get(uri)
        if found is not None and until(found):
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"no diagnostics as expected; last: {client.diagnostics.get(uri)}")


def codes(found) -> set:
    return {d.code for d in found}


@pytest.mark.asyncio
async def test_diagnostics_appear_and_clear(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), BROKEN)
    found = await published(client, uri, lambda f: "wf::off-step" in codes(f))
    off = next(d for d in found if d.code == "wf::off-step")
    assert off.range.start == types.Position(line=2, character=17)
    assert "992 and 1008" in off.message
    assert off.severity == types.DiagnosticSeverity.Error
    assert "wf::unknown-param" in codes(found)

    # (At 1008 px a batch of 32 would not fit in memory: `wf::memory`.)
    fixed = BROKEN.replace("1000", "128").replace("    bacth_size = 16\n", "")
    change(client, uri, 2, fixed)
    await published(client, uri, lambda f: len(f) == 0)


@pytest.mark.asyncio
async def test_data_folders_are_checked_off_the_typing_path(client: LanguageClient, tmp_path):
    # The folder does not exist: only the full check (on a worker) can tell.
    text = BROKEN.replace('"images"', '"missing"')
    uri = open_doc(client, workspace(tmp_path), text)
    found = await published(client, uri, lambda f: "wf::path-not-found" in codes(f))
    missing = next(d for d in found if d.code == "wf::path-not-found")
    assert missing.range.start.line == 6


@pytest.mark.asyncio
async def test_quick_fixes_repair_the_file(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), BROKEN)
    await published(client, uri, lambda f: "wf::off-step" in codes(f))
    text = BROKEN
    # Anywhere on a line: the fixes of its diagnostics (1000 is as far from 992 as from 1008).
    for line, expect in [(2, "change to 992"), (4, "change to `batch_size`")]:
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(
                    start=types.Position(line=line, character=6),
                    end=types.Position(line=line, character=6),
                ),
                context=types.CodeActionContext(diagnostics=[]),
            )
        )
        titles = [a.title for a in actions]
        assert expect in titles, titles
        action = next(a for a in actions if a.title == expect)
        assert action.kind == types.CodeActionKind.QuickFix and action.is_preferred
        (edit,) = action.edit.changes[uri]
        lines = text.split("\n")
        row = lines[edit.range.start.line]
        lines[edit.range.start.line] = (
            row[: edit.range.start.character] + edit.new_text + row[edit.range.end.character :]
        )
        text = "\n".join(lines)
    # `bacth_size` became `batch_size`: now written twice, the next thing to fix.
    assert "image_size = 992" in text and "bacth_size" not in text
    change(client, uri, 2, text)
    found = await published(client, uri, lambda f: "wf::off-step" not in codes(f))
    assert codes(found) == {"wf::duplicate"}, found


@pytest.mark.asyncio
async def test_hover_documents_parameters_and_templates(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), BROKEN)
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=3, character=6),
        )
    )
    md = hover.contents.value
    assert "Clarifai_ResNext.batch_size" in md and "1 to 128" in md
    assert "lrate = batch_size × per_item_lrate = 32 × 7.8125e-05 = 0.0025" in md
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=1, character=8),
        )
    )
    assert "resnext50_32x4d" in hover.contents.value


@pytest.mark.asyncio
async def test_completion_offers_what_fits(client: LanguageClient, tmp_path):
    text = BROKEN.replace("    batch_size = 32\n", "    batch_size = 32\n    \n") + (
        "step visual_search { queries = "
    )
    uri = open_doc(client, workspace(tmp_path), text)

    async def labels(line, character):
        result = await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
            )
        )
        items = result.items if isinstance(result, types.CompletionList) else result
        return {i.label: i for i in items}

    inside_use = await labels(4, 4)
    assert "logreg" in inside_use and "batch_size" not in inside_use
    assert "angular_margin" not in inside_use, "another template's parameter"
    assert "0 to 1" in inside_use["logreg"].detail
    values = await labels(9, len("step visual_search { queries = "))
    assert set(values) == {"eval", "train"}


@pytest.mark.asyncio
async def test_formatting_gives_the_canonical_text(client: LanguageClient, tmp_path):
    messy = "workflow   pipeline\nuse Clarifai_ResNext {\n  image_size=64\n      batch_size = 32 # small\n}\n\n\n\ndata {train = \"images\"}\n"
    uri = open_doc(client, workspace(tmp_path), messy)
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            options=types.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    (edit,) = edits
    assert edit.new_text == (
        "workflow pipeline\n"
        "use Clarifai_ResNext {\n"
        "    image_size = 64\n"
        "    batch_size = 32  # small\n"
        "}\n"
        "\n"
        "data { train = \"images\" }\n"
    ), edit.new_text


@pytest.mark.asyncio
async def test_definition_leads_into_the_prelude(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), BROKEN)

    async def where(line, character):
        return await client.text_document_definition_async(
            types.DefinitionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
            )
        )

    def text_at(location) -> str:
        path = pathlib.Path(location.uri.removeprefix("file://"))
        line = path.read_text().split("\n")[location.range.start.line]
        return line[location.range.start.character : location.range.end.character]

    template = await where(1, 8)
    assert template.uri.endswith("prelude.wf") and text_at(template) == "Clarifai_ResNext"
    param = await where(3, 6)
    assert text_at(param) == "batch_size"
    assert param.range.start.line > template.range.start.line
    kind = await where(7, 7)
    assert text_at(kind) == "clustering"


@pytest.mark.asyncio
async def test_document_symbols_outline_the_file(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), BROKEN)
    symbols = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    assert [(s.name, s.kind) for s in symbols] == [
        ("pipeline", types.SymbolKind.Module),
        ("Clarifai_ResNext", types.SymbolKind.Object),
        ("data", types.SymbolKind.Namespace),
        ("clustering", types.SymbolKind.Function),
    ]
    assert [c.name for c in symbols[1].children] == ["image_size", "batch_size", "bacth_size"]
    assert symbols[1].children[0].detail == "1000"


@pytest.mark.asyncio
async def test_half_typed_input_never_breaks_the_server(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), "")
    await published(client, uri, lambda f: True)
    # Type the file character by character, asking for completion and hover on the way.
    for n in range(1, len(BROKEN) + 1, 7):
        text = BROKEN[:n]
        change(client, uri, n + 1, text)
        lines = text.split("\n")
        position = types.Position(line=len(lines) - 1, character=len(lines[-1]))
        await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=position
            )
        )
        await client.text_document_hover_async(
            types.HoverParams(text_document=types.TextDocumentIdentifier(uri=uri), position=position)
        )
    change(client, uri, 1000, BROKEN)
    found = await published(client, uri, lambda f: "wf::off-step" in codes(f))
    assert found


SWEEP = """\
use Clarifai_InceptionBatchNorm { num_epochs = 4  init_epochs = 2  logreg = 0 }
data { train = "images" }
sweep {
    image_size = range(40, 88, 16)
    objective  = maximize(map_at_r)
}
"""


@pytest.mark.asyncio
async def test_a_sweep_is_checked_completed_and_documented(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), SWEEP)
    # The bad low bound is an error at its own span, with its nearest values as fixes.
    found = await published(client, uri, lambda f: "wf::off-step" in codes(f))
    off = next(d for d in found if d.code == "wf::off-step")
    assert off.range.start == types.Position(line=3, character=23)
    assert off.range.end == types.Position(line=3, character=25)
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=off.range,
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    assert {"change to 32", "change to 48"} <= {a.title for a in actions}
    # Fixed, the sweep checks clean.
    change(client, uri, 2, SWEEP.replace("range(40, 88, 16)", "range(32, 80, 16)"))
    await published(client, uri, lambda f: len(f) == 0)

    result = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=4, character=len("    objective  = ")),
        )
    )
    items = result.items if isinstance(result, types.CompletionList) else result
    labels = {i.label for i in items}
    assert {"maximize(map_at_r)", "minimize(train_loss)", "maximize(unseen_nmi)"} <= labels
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=2, character=2),
        )
    )
    assert "**sweep**" in hover.contents.value and "`repeats`" in hover.contents.value
    symbols = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    assert [s.name for s in symbols] == ["Clarifai_InceptionBatchNorm", "data", "sweep"]


COSTED = """\
workflow pipeline
template Small extends Clarifai_ResNext {
    param image_size { max = 64  default = 64 }
}
use Small {
    image_size = 64
    batch_size = 32
    num_epochs = 4
    init_epochs = 2
    step_epochs = 1
}
data { train = "images"  eval = 0.25 }
step clustering as coarse { k = 2 }
"""


async def hints(client: LanguageClient, uri: str, until) -> list:
    """The inlay hints of the whole document once they satisfy `until` (within 20 s)."""
    for _ in range(400):
        found = await client.text_document_inlay_hint_async(
            types.InlayHintParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(
                    start=types.Position(line=0, character=0),
                    end=types.Position(line=100, character=0),
                ),
            )
        )
        labels = [(h.position.line, h.label) for h in found or []]
        if until(labels):
            return labels
        await asyncio.sleep(0.05)
    pytest.fail(f"no inlay hints as expected; last: {labels}")


@pytest.mark.asyncio
async def test_inlay_hints_show_derived_values_and_follow_the_batch_size(
    client: LanguageClient, tmp_path
):
    uri = open_doc(client, workspace(tmp_path), COSTED)
    # 80 images, a quarter held out: 60 to train. The steps need the full
    # check's count of the data folder, which comes on a worker.
    found = await hints(client, uri, lambda hs: any("steps an epoch" in l for _, l in hs))
    assert (6, "lrate 0.0025") in found
    assert (6, "2 steps an epoch, 8 in all") in found
    assert (7, "epochs 1–2: 0.0025, 3: 2.5e-04, 4: 2.5e-05") in found
    cost = [l for line, l in found if line == 10 and l.startswith("≈")]
    assert cost and "a step" in cost[0] and "in all" in cost[0] and "peak" in cost[0], found
    # Typing a new batch size: the hints follow at once, the count kept.
    change(client, uri, 2, COSTED.replace("batch_size = 32", "batch_size = 16"))
    found = await hints(client, uri, lambda hs: (6, "lrate 0.00125") in hs)
    assert (6, "4 steps an epoch, 16 in all") in found
    assert [l for line, l in found if line == 10] != cost


@pytest.mark.asyncio
async def test_semantic_tokens_and_folding_ranges(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), COSTED)
    result = await client.text_document_semantic_tokens_full_async(
        types.SemanticTokensParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    caps = SERVER_CAPABILITIES[0].semantic_tokens_provider.legend
    lines = COSTED.splitlines()
    line = col = 0
    tokens = {}
    data = result.data
    for i in range(0, len(data), 5):
        dl, dc, length, kind, mods = data[i : i + 5]
        line += dl
        col = dc if dl else col + dc
        word = lines[line][col : col + length]
        modifiers = {m for b, m in enumerate(caps.token_modifiers) if mods & (1 << b)}
        tokens.setdefault(word, (caps.token_types[kind], modifiers))
    assert tokens["workflow"] == ("keyword", set())
    assert tokens["Clarifai_ResNext"] == ("type", {"defaultLibrary"})
    assert tokens["Small"] == ("type", {"declaration"})
    assert tokens["image_size"][0] == "property"
    assert tokens["coarse"] == ("variable", {"declaration"})
    assert tokens["clustering"] == ("function", {"defaultLibrary"})
    assert tokens["64"] == ("number", set())
    assert tokens['"images"'] == ("string", set())
    folds = await client.text_document_folding_range_async(
        types.FoldingRangeParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    spans = {(f.start_line, f.end_line) for f in folds}
    assert (1, 2) in spans and (4, 9) in spans, spans


@pytest.mark.asyncio
async def test_references_and_rename_of_the_files_own_names(client: LanguageClient, tmp_path):
    uri = open_doc(client, workspace(tmp_path), COSTED)
    at = types.Position(line=4, character=5)  # `use Small`
    refs = await client.text_document_references_async(
        types.ReferenceParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=at,
            context=types.ReferenceContext(include_declaration=True),
        )
    )
    assert sorted(r.range.start.line for r in refs) == [1, 4]
    ready = await client.text_document_prepare_rename_async(
        types.PrepareRenameParams(text_document=types.TextDocumentIdentifier(uri=uri), position=at)
    )
    assert ready is not None
    edit = await client.text_document_rename_async(
        types.RenameParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=at, new_name="Tiny"
        )
    )
    edits = edit.changes[uri]
    assert len(edits) == 2 and all(e.new_text == "Tiny" for e in edits)
    # The step alias renames; a built-in template does not.
    alias = types.Position(line=12, character=22)
    edit = await client.text_document_rename_async(
        types.RenameParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=alias, new_name="fine"
        )
    )
    assert len(edit.changes[uri]) == 1
    builtin = types.Position(line=1, character=30)
    ready = await client.text_document_prepare_rename_async(
        types.PrepareRenameParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=builtin
        )
    )
    assert ready is None
    with pytest.raises(Exception, match="renamed"):
        await client.text_document_rename_async(
            types.RenameParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=builtin,
                new_name="Other",
            )
        )
