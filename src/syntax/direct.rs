//! The strict layer of `grammar/wf.pest` read directly from the bytes, for
//! files without a syntax error: the usual case, and most of the time of
//! checking a large file was pest's per-rule bookkeeping.
//!
//! It follows the grammar's PEG rules one for one: the same ordered choices,
//! the same greedy repetitions, and pest's implicit whitespace (`skip`)
//! wherever pest puts it, so the spans are pest's to the byte (a trailing
//! `skip` before an absent optional belongs to the rule, as in pest). It
//! never recovers: where pest would swallow a broken line (`bad_item`,
//! `bad_line`), or a literal is bad, it gives up, and the file is parsed by
//! pest, which says what is wrong. So its result, when it has one, is pest's
//! result; `fuzz` and the tests below compare the two on every input they
//! make.

use super::*;

/// Why a rule did not give a node.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// The rule does not match here (pest tries its next alternative).
    No,
    /// The file needs the recovery layer or holds a bad literal: pest's job.
    GiveUp,
}

type R<T> = Result<T, Stop>;

/// The file's syntax tree, or `None` where it needs pest (a syntax error, a
/// bad number or escape, nesting deeper than [`MAX_DEPTH`]).
pub(super) fn parse(source: SourceId, text: &str) -> Option<Module> {
    let mut p = Direct {
        text,
        bytes: text.as_bytes(),
        at: 0,
        source,
        depth: 0,
        open: Vec::new(),
    };
    p.file().ok()
}

struct Direct<'t> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
    source: SourceId,
    depth: usize,
    /// The items of the blocks still open, innermost last: a block's items
    /// leave in a vector of their exact number (a file holds thousands of
    /// blocks of two or three items, and growing each one's own vector
    /// left half of the syntax tree's memory unused).
    open: Vec<BlockItem>,
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'t> Direct<'t> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.source, start, end)
    }

    /// From the start of `first` (a span in the file) to the cursor.
    fn since(&self, first: Span) -> Span {
        Span::new(self.source, first.start, self.at)
    }

    /// pest's implicit `WHITESPACE*` between the tokens of a non-atomic rule.
    fn skip(&mut self) {
        let b = self.bytes;
        while let Some(&c) = b.get(self.at) {
            match c {
                b' ' | b'\t'..=b'\r' => self.at += 1,
                b'#' => {
                    self.at += 1;
                    self.at = memchr::memchr(b'\n', &b[self.at..]).map_or(b.len(), |n| self.at + n);
                }
                _ => break,
            }
        }
    }

    /// `hs*`: spaces and tabs, inside a setting.
    fn spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn byte(&mut self, c: u8) -> R<usize> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(self.at - 1)
        } else {
            Err(Stop::No)
        }
    }

    /// The word at the cursor (a `name`'s extent), without moving.
    fn word(&self) -> &'t str {
        let b = self.bytes;
        if !b.get(self.at).is_some_and(|&c| ident_start(c)) {
            return "";
        }
        let end = b[self.at..]
            .iter()
            .position(|&c| !ident_char(c))
            .map_or(b.len(), |n| self.at + n);
        &self.text[self.at..end]
    }

    fn name(&mut self) -> R<Ident> {
        let start = self.at;
        let len = self.word().len();
        if len == 0 {
            return Err(Stop::No);
        }
        self.at += len;
        Ok(Ident {
            name: self.text[start..self.at].to_string(),
            span: self.span(start, self.at),
        })
    }

    /// A keyword known to be the word at the cursor: its span.
    fn keyword(&mut self, word: &str) -> Span {
        let start = self.at;
        self.at += word.len();
        self.span(start, self.at)
    }

    /// `file = { SOI ~ (item | bad_item)* ~ EOI }`
    fn file(&mut self) -> R<Module> {
        let mut items = Vec::new();
        self.skip();
        while self.at < self.bytes.len() {
            items.push(self.item().map_err(|_| Stop::GiveUp)?);
            self.skip();
        }
        Ok(Module { items })
    }

    /// `item`: the declaration its first word names, else a setting (a
    /// keyword may name a setting: `step = 3`). Keywords need a word
    /// boundary, so at most one declaration can match a word.
    fn item(&mut self) -> R<Item> {
        let start = self.at;
        let word = self.word();
        let declared = match word {
            "step" => self.step_decl(word),
            "use" => self.use_decl(word),
            "data" => self.block_decl(word, false),
            "sweep" => self.block_decl(word, true),
            "template" => self.template_decl(word),
            "workflow" => self.workflow_decl(word),
            "step_kind" => self.step_kind_decl(word),
            _ => Err(Stop::No),
        };
        match declared {
            Err(Stop::No) => {
                self.at = start;
                self.setting().map(Item::Setting)
            }
            other => other,
        }
    }

    /// `workflow_decl = { kw_workflow ~ name }`
    fn workflow_decl(&mut self, word: &str) -> R<Item> {
        let keyword = self.keyword(word);
        self.skip();
        let name = self.name()?;
        Ok(Item::Workflow { keyword, name })
    }

    /// `use_decl = { kw_use ~ name ~ block? }`
    fn use_decl(&mut self, word: &str) -> R<Item> {
        let keyword = self.keyword(word);
        self.skip();
        let template = self.name()?;
        self.skip();
        let body = self.optional_block()?;
        Ok(Item::Use(UseDecl {
            keyword,
            template,
            body,
            span: self.since(keyword),
        }))
    }

    /// `data_decl = { kw_data ~ block }`, `sweep_decl = { kw_sweep ~ block }`
    fn block_decl(&mut self, word: &str, sweep: bool) -> R<Item> {
        let keyword = self.keyword(word);
        self.skip();
        let body = self.block()?;
        let span = self.since(keyword);
        Ok(if sweep {
            Item::Sweep(SweepDecl {
                keyword,
                body,
                span,
            })
        } else {
            Item::Data(DataDecl {
                keyword,
                body,
                span,
            })
        })
    }

    /// `step_decl = { kw_step ~ name ~ (kw_as ~ name)? ~ block? }`
    fn step_decl(&mut self, word: &str) -> R<Item> {
        let keyword = self.keyword(word);
        self.skip();
        let kind = self.name()?;
        self.skip();
        let alias = self.then_name("as")?;
        self.skip();
        let body = self.optional_block()?;
        Ok(Item::Step(StepDecl {
            keyword,
            kind,
            alias,
            body,
            span: self.since(keyword),
        }))
    }

    /// `template_decl = { kw_template ~ name ~ (kw_extends ~ name)? ~ block }`
    fn template_decl(&mut self, word: &str) -> R<Item> {
        let keyword = self.keyword(word);
        self.skip();
        let name = self.name()?;
        self.skip();
        let parent = self.then_name("extends")?;
        self.skip();
        let body = self.block()?;
        Ok(Item::Template(TemplateDecl {
            keyword,
            name,
            parent,
            body,
            span: self.since(keyword),
        }))
    }

    /// `step_kind_decl = { kw_step_kind ~ name ~ block }`
    fn step_kind_decl(&mut self, word: &str) -> R<Item> {
        let keyword = self.keyword(word);
        self.skip();
        let name = self.name()?;
        self.skip();
        let body = self.block()?;
        Ok(Item::StepKind(StepKindDecl {
            keyword,
            name,
            body,
            span: self.since(keyword),
        }))
    }

    /// `(kw ~ name)?`: the name after the keyword, or nothing consumed.
    fn then_name(&mut self, kw: &str) -> R<Option<Ident>> {
        if self.word() != kw {
            return Ok(None);
        }
        let start = self.at;
        self.at += kw.len();
        self.skip();
        match self.name() {
            Ok(n) => Ok(Some(n)),
            Err(_) => {
                self.at = start;
                Ok(None)
            }
        }
    }

    fn optional_block(&mut self) -> R<Option<Block>> {
        match self.block() {
            Ok(b) => Ok(Some(b)),
            Err(Stop::No) => Ok(None),
            Err(Stop::GiveUp) => Err(Stop::GiveUp),
        }
    }

    /// `block = { lbrace ~ (block_item | bad_line)* ~ rbrace }`. Past its
    /// `{` a block always matches in pest (a broken line is a `bad_line`, a
    /// block never closed is repaired first), so here anything but items and
    /// the closing `}` is pest's.
    fn block(&mut self) -> R<Block> {
        let start = self.byte(b'{')?;
        self.enter()?;
        let first = self.open.len();
        self.skip();
        loop {
            match self.peek() {
                Some(b'}') => break,
                None => return Err(Stop::GiveUp),
                Some(_) => {
                    let item = self.block_item().map_err(|_| Stop::GiveUp)?;
                    self.open.push(item);
                }
            }
            self.skip();
        }
        self.at += 1;
        self.depth -= 1;
        Ok(Block {
            items: self.open.split_off(first),
            span: self.span(start, self.at),
        })
    }

    /// One more level of blocks or calls, at most [`MAX_DEPTH`].
    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Stop::GiveUp);
        }
        Ok(())
    }

    /// `block_item = _{ param_decl | setting }`
    fn block_item(&mut self) -> R<BlockItem> {
        let start = self.at;
        if self.word() == "param" {
            match self.param_decl() {
                Err(Stop::No) => self.at = start,
                other => return other.map(|p| BlockItem::Param(Box::new(p))),
            }
        }
        self.setting().map(BlockItem::Setting)
    }

    /// `param_decl = { kw_param ~ name ~ (colon ~ type_expr)? ~ block? }`
    fn param_decl(&mut self) -> R<ParamDecl> {
        let keyword = self.keyword("param");
        self.skip();
        let name = self.name()?;
        self.skip();
        let mut ty = None;
        if self.peek() == Some(b':') {
            let before = self.at;
            self.at += 1;
            self.skip();
            match self.type_expr() {
                Ok(t) => ty = Some(t),
                Err(_) => self.at = before,
            }
        }
        self.skip();
        let body = self.optional_block()?;
        Ok(ParamDecl {
            keyword,
            name,
            ty,
            body,
            span: self.since(keyword),
        })
    }

    /// `type_expr = { name ~ ("|" ~ name)* }`
    fn type_expr(&mut self) -> R<TypeExpr> {
        let first = self.name()?;
        let start = first.span;
        let mut alternatives = vec![first];
        // pest skips after the first name whatever follows; the skip before
        // each further `"|" ~ name` is undone if that does not match.
        self.skip();
        let mut undo = self.at;
        loop {
            if self.byte(b'|').is_err() {
                self.at = undo;
                break;
            }
            self.skip();
            match self.name() {
                Ok(n) => alternatives.push(n),
                Err(_) => {
                    self.at = undo;
                    break;
                }
            }
            undo = self.at;
            self.skip();
        }
        Ok(TypeExpr {
            alternatives,
            span: self.since(start),
        })
    }

    /// `setting = ${ name ~ hs* ~ eq ~ hs* ~ value }`
    fn setting(&mut self) -> R<Setting> {
        let name = self.name()?;
        self.spaces();
        self.byte(b'=')?;
        self.spaces();
        let value = self.value()?;
        Ok(Setting {
            span: name.span.to(value.span),
            name,
            value,
        })
    }

    /// `value = { number | long_string | string | call | name }`
    fn value(&mut self) -> R<Value> {
        let start = self.at;
        let kind = match self.peek() {
            Some(b'-' | b'.' | b'0'..=b'9') => self.number()?,
            Some(b'"') => self.string()?,
            Some(c) if ident_start(c) => self.call_or_name()?,
            _ => return Err(Stop::No),
        };
        Ok(Value {
            kind,
            span: self.span(start, self.at),
        })
    }

    /// `number = @{ "-"? ~ (digit+ ~ ("." ~ digit*)? | "." ~ digit+) ~
    /// (^"e" ~ ("+" | "-")? ~ digit+)? ~ !ident_char }`
    fn number(&mut self) -> R<ValueKind> {
        let b = self.bytes;
        let start = self.at;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = start + usize::from(b[start] == b'-');
        let whole = digits(i);
        if whole > i {
            i = whole;
            if b.get(i) == Some(&b'.') {
                i = digits(i + 1);
            }
        } else if b.get(i) == Some(&b'.') && digits(i + 1) > i + 1 {
            i = digits(i + 1);
        } else {
            return Err(Stop::No);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if digits(j) > j {
                i = digits(j);
            }
        }
        if b.get(i).is_some_and(|&c| ident_char(c)) {
            return Err(Stop::No);
        }
        self.at = i;
        number_kind(&self.text[start..i]).ok_or(Stop::GiveUp)
    }

    /// `long_string | string`, in that order.
    fn string(&mut self) -> R<ValueKind> {
        let b = self.bytes;
        let start = self.at;
        if b[start..].starts_with(b"\"\"\"") {
            if let Some(n) = memchr::memmem::find(&b[start + 3..], b"\"\"\"") {
                self.at = start + 3 + n + 3;
                return Ok(ValueKind::Str(long_body(
                    &self.text[start + 3..start + 3 + n],
                )));
            }
        }
        // `string_body = @{ (!("\"" | "\\" | "\n") ~ ANY | "\\" ~ (!"\n" ~ ANY))* }`
        let mut i = start + 1;
        loop {
            match b.get(i) {
                Some(b'"') => break,
                Some(b'\n') | None => return Err(Stop::No),
                Some(b'\\') => match b.get(i + 1) {
                    Some(b'\n') | None => return Err(Stop::No),
                    Some(_) => i += 2,
                },
                Some(_) => i += 1,
            }
        }
        self.at = i + 1;
        unescape(&self.text[start + 1..i], |_, _, _| {})
            .map(ValueKind::Str)
            .ok_or(Stop::GiveUp)
    }

    /// `call = { name ~ "(" ~ hs* ~ (value ~ (hs* ~ "," ~ hs* ~ value)*)? ~
    /// hs* ~ rparen }`, else `name`.
    fn call_or_name(&mut self) -> R<ValueKind> {
        let name = self.name()?;
        if self.peek() != Some(b'(') {
            return Ok(ValueKind::Name(name.name));
        }
        let after_name = self.at;
        self.at += 1;
        self.enter()?;
        self.spaces();
        let mut args = Vec::new();
        let before = self.at;
        match self.value() {
            Ok(v) => {
                args.push(v);
                loop {
                    let before = self.at;
                    self.spaces();
                    if self.byte(b',').is_err() {
                        self.at = before;
                        break;
                    }
                    self.spaces();
                    match self.value() {
                        Ok(v) => args.push(v),
                        Err(Stop::No) => {
                            self.at = before;
                            break;
                        }
                        Err(Stop::GiveUp) => return Err(Stop::GiveUp),
                    }
                }
            }
            Err(Stop::No) => self.at = before,
            Err(Stop::GiveUp) => return Err(Stop::GiveUp),
        }
        self.spaces();
        self.depth -= 1;
        if self.byte(b')').is_err() {
            self.at = after_name;
            return Ok(ValueKind::Name(name.name));
        }
        Ok(ValueKind::Call {
            name: Box::new(name),
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct parser's tree is pest's, spans included, and it takes every
    /// file pest reads without a diagnostic.
    fn same_as_pest(text: &str) -> bool {
        let pest = parse_with_pest(SourceId(1), text, 1);
        let direct = parse(SourceId(1), text);
        match &direct {
            Some(m) => assert!(
                pest.1.is_empty() && *m == pest.0,
                "{text:?}\n{:#?}\n{:#?}",
                pest,
                m
            ),
            None => assert!(!pest.1.is_empty(), "gave up on a clean file: {text:?}"),
        }
        assert_eq!(parse_with_threads(SourceId(1), text, 1), pest, "{text:?}");
        direct.is_some()
    }

    #[test]
    fn shipped_and_prelude_files_read_as_pest_reads_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts = vec![crate::spec::PRELUDE.to_string()];
        for dir in ["workflows", "tests/fixtures", "examples"] {
            for file in crate::workflow_files(&root.join(dir)).unwrap_or_default() {
                texts.push(std::fs::read_to_string(file).unwrap());
            }
        }
        assert!(texts.len() > 5);
        let clean = texts.iter().filter(|t| same_as_pest(t)).count();
        assert!(clean >= 5, "{clean}");
        // Windows line ends, and tabs for indentation.
        let crlf = texts
            .iter()
            .filter(|t| same_as_pest(&t.replace('\n', "\r\n").replace("    ", "\t")))
            .count();
        assert_eq!(crlf, clean);
    }

    #[test]
    fn a_large_file_reads_as_pest_reads_it_in_pieces() {
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&format!(
                "# {i} }} {{ \"\ntemplate T{i} extends Clarifai_ResNext {{\n  doc = \"\"\"x\nuse y {{\"\"\"\n  param image_size {{ max = {} }}\n}}\nuse U\n\nstep clustering as c{i} {{ k = {i} }}\nseed = {i}\n",
                64 + i
            ));
        }
        assert!(text.len() > PARALLEL_MIN_BYTES * 2);
        let one = parse_with_threads(SourceId(1), &text, 1);
        let four = parse_with_threads(SourceId(1), &text, 4);
        assert!(one.1.is_empty() && one.0.items.len() == 12_000);
        assert!(one == four);
        assert!(one == parse_with_pest(SourceId(1), &text, 4));
        assert!(parse(SourceId(1), &text).is_some_and(|m| m == one.0));
    }

    #[test]
    fn tricky_files_read_as_pest_reads_them() {
        let clean = [
            "",
            "  # only a comment",
            "step = 3\ndata = 4\nuse = 5\nstep_kind = 6\nparam = 1",
            "use T\n# trailing comment\n\n\t\r\x0b\x0cstep x\n",
            "use T {}\nstep x as y\nstep z as\n  w { k = 1 }\nworkflow w # c\n",
            "template T extends U {\n param x: int | float  \n param y : path|eval {min=1}\n param z\n param param\n}\n",
            "template T extends U { param x: int |\n float # c\n }",
            "step_kind k { param a: int { default = 1 } }\nsweep { a = range(1, 2) }\n",
            "a = cuda(0)\nb = f( 1 , \"x\" ,g() )\nc = f()\nd = f(  )\ne = f(f(f(1)))",
            "a = \"\"\"x\n\"y\" {\"\"\"\nb = \"\"\nc = \"\\n\\t\\\"\\\\ é\"\nd = \"\"\"\"\"\"",
            "a = -.5e+3\nb = 1.\nc = 0.25E-2\nd = -7\ne = 1.e5\nf = .5",
            "a=1 b=2\tc = x\nd =\t\"#not a comment\" # a comment",
            "data { train = \"x\"  eval = 0.2 }  ",
            "workflow diverges\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 2\n  num_epochs = 3\n  init_epochs = 2\n  step_epochs = 1\n  logreg = 0\n  per_item_lrate = 1000.0\n}\ndata { train = \"images\"  eval = 0.25 }\nseed = 3\noutput = \"runs/diverges\"\n",
        ];
        for text in clean {
            assert!(same_as_pest(text), "gave up on {text:?}");
        }
        let broken = [
            "a = 1x",
            "a = 1e",
            "a = -",
            "a = .",
            "a = b c",
            "a = cuda (0)",
            "a = f(1 2)",
            "a = f(1,)",
            "a = f(",
            "a = \"abc\nb = 1",
            "a = \"\\q\"",
            "a = \"\"\"abc",
            "a = \"x\\",
            "a = 99999999999999999999999",
            "a = 1e999",
            "a : 1",
            "template T extends { }",
            "template T",
            "data",
            "use T { a = }",
            "use T { a = 1",
            "use T { param x: }",
            "step x { k = 1 } }",
            "}",
            "{ a = 1 }",
            "a = \"\"\"x\"\"\"\"",
            "step z as\n{ k = 1 }",
            "\u{feff}a = 1\n\u{feff}",
        ];
        for text in broken {
            assert!(!same_as_pest(text), "took {text:?}");
        }
        let deep = format!("a = {}1{}", "f(".repeat(40), ")".repeat(40));
        assert!(!same_as_pest(&deep));
        let deep = format!("use T {}{}", "{ param p ".repeat(40), "}".repeat(40));
        assert!(!same_as_pest(&deep));
    }
}
