//! What an editor asks about a `.wf` file, answered without any editor
//! protocol: the documentation under the cursor and what may be typed there.
//! `wfrun lsp` (the binary's only module that knows LSP) translates these.

mod complete;
mod hints;
mod outline;
mod rename;
mod tokens;

use crate::diagnostic::Diagnostic;
use crate::source::SourceId;
use crate::spec::{fmt_float, DefaultValue, ParamSpec, Registry, TemplateSpec};
use crate::syntax::{Block, BlockItem, Item, Module, Setting, ValueKind};

/// The id the edited file's spans carry (the prelude's is `SourceId::PRELUDE`).
pub use complete::{completions, Completion, CompletionKind};
pub use hints::{hints_of, inlay_hints, Hint};
pub use outline::{symbols, Symbol, SymbolKind};
pub use rename::{prepare_rename, references, rename, Named, References};
pub use tokens::{
    folding_ranges, semantic_tokens, Fold, Token, TokenKind, DECLARATION, DEFAULT_LIBRARY,
    MODIFIERS,
};

const FILE: SourceId = SourceId(1);

/// Markdown documentation of a parameter: type, range, default, its text.
pub fn param_markdown(owner: &str, p: &ParamSpec) -> String {
    let default = p
        .default
        .as_ref()
        .map_or("none".to_string(), |d| match &d.value {
            DefaultValue::Derived(x) => format!("{} ({})", x.name(), x.describe()),
            v => v.to_string(),
        });
    format!(
        "**{owner}.{}**: `{}`\n\nrange: {} · default: {default}\n\n{}",
        p.name,
        p.ty,
        p.range_text(),
        squash(&p.doc)
    )
}

/// A `"""` documentation string as one paragraph per blank-line-separated block.
fn squash(doc: &str) -> String {
    doc.split("\n\n")
        .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The templates the file can use: the built-in ones and its own.
fn templates(module: &Module) -> Vec<TemplateSpec> {
    let builtin = Registry::builtin();
    let mut quiet: Vec<Diagnostic> = Vec::new();
    let mut all = builtin.templates.clone();
    all.extend(crate::spec::declare::user_templates(
        module, builtin, &mut quiet,
    ));
    all
}

fn within(span: crate::source::Span, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

/// What the file's `use` block costs at its settings (when it checks),
/// as a paragraph for a hover.
fn cost_markdown(text: &str, machine: &crate::cost::Machine) -> String {
    use crate::cost::{bytes_text, count_text, duration_text};
    let options = crate::CheckOptions {
        filesystem: false,
        base_dir: None,
        machine: Some(machine.clone()),
        listings: None,
    };
    let checked = crate::check_source("hover.wf", text, &options);
    let Some(c) = checked.plan().and_then(|p| p.cost) else {
        return String::new();
    };
    let n = &c.counts;
    let mut md = format!(
        "\n\n**Cost at these settings** ({} px, batch {}): {} parameters, {} multiply-adds per image trained; peak memory {} training, {} embedding",
        n.image_size,
        c.batch_size,
        count_text(n.params as f64),
        count_text(n.macs_train as f64),
        bytes_text(c.train_peak_bytes as f64),
        bytes_text(c.embed_peak_bytes as f64)
    );
    if let Some(t) = &c.times {
        md.push_str(&format!(
            "; {} a training step, {} an image embedded (from {})",
            duration_text(t.step_s),
            duration_text(t.embed_image_s),
            t.source
        ));
    }
    md.push('.');
    md
}

/// The number a setting of `block` gives `name`, if written.
fn written_number(block: Option<&Block>, name: &str) -> Option<f64> {
    block?
        .settings()
        .find(|s| s.name.name == name)
        .and_then(|s| match s.value.kind {
            ValueKind::Int(i) => Some(i as f64),
            ValueKind::Float(f) => Some(f),
            _ => None,
        })
}

/// Markdown for what is under byte `offset` of `text`: a template, a step
/// kind, or a parameter (hovering `batch_size` or `per_item_lrate` also shows
/// the resulting `lrate`). `None` over anything else.
pub fn hover(text: &str, offset: usize) -> Option<String> {
    hover_on(text, offset, &crate::cost::Machine::this_machine())
}

/// [`hover`], costs estimated for `machine`: hovering the template of a
/// `use` block shows what it costs at the block's settings.
pub fn hover_on(text: &str, offset: usize, machine: &crate::cost::Machine) -> Option<String> {
    let (module, _) = crate::syntax::parse(FILE, text);
    let registry = Registry::builtin();
    let templates = templates(&module);
    let template = |name: &str| templates.iter().find(|t| t.name == name);
    for item in &module.items {
        match item {
            Item::Use(u) if within(u.span, offset) => {
                let t = template(&u.template.name)?;
                if within(u.template.span, offset) {
                    return Some(format!(
                        "**{}** ({})\n\n{}{}",
                        t.name,
                        t.architecture.name(),
                        squash(&t.doc),
                        cost_markdown(text, machine)
                    ));
                }
                let s = setting_at(u.body.as_ref(), offset)?;
                let p = t.param(&s.name.name)?;
                let mut md = param_markdown(&t.name, p);
                if matches!(&*p.name, "batch_size" | "per_item_lrate") {
                    let value = |name: &str| {
                        written_number(u.body.as_ref(), name).or_else(|| {
                            t.param(name)
                                .and_then(|q| match q.default.as_ref().map(|d| &d.value) {
                                    Some(DefaultValue::Value(crate::spec::ParamValue::Num(n))) => {
                                        Some(n.as_f64())
                                    }
                                    _ => None,
                                })
                        })
                    };
                    if let (Some(b), Some(r)) = (value("batch_size"), value("per_item_lrate")) {
                        md.push_str(&format!(
                            "\n\n`lrate = batch_size × per_item_lrate = {} × {} = {}`",
                            b as i64,
                            fmt_float(r),
                            fmt_float(b * r)
                        ));
                    }
                }
                return Some(md);
            }
            Item::Step(s) if within(s.span, offset) => {
                let kind = registry.step_kind(&s.kind.name)?;
                if within(s.kind.span, offset) {
                    return Some(format!("**step {}**\n\n{}", kind.name, squash(&kind.doc)));
                }
                let setting = setting_at(s.body.as_ref(), offset)?;
                let p = kind.param(&setting.name.name)?;
                return Some(param_markdown(&kind.name, p));
            }
            Item::Sweep(d) if within(d.keyword, offset) => {
                let ways: Vec<&str> = crate::sweep::GENERATORS.iter().map(|(_, d)| *d).collect();
                let settings: Vec<String> = crate::sweep::SETTINGS
                    .iter()
                    .map(|(n, d)| format!("- `{n}`: {d}"))
                    .collect();
                return Some(format!(
                    "**sweep**: hyperparameter values to try, one run per trial, ranked by an objective\n\n{}\n\n{}",
                    ways.join("\n\n"),
                    settings.join("\n")
                ));
            }
            Item::Sweep(d) if within(d.body.span, offset) => {
                let s = setting_at(Some(&d.body), offset)?;
                let name = s.name.name.as_str();
                if let Some((_, doc)) = crate::check::sweep::SWEEP_SETTINGS
                    .iter()
                    .find(|(n, _)| *n == name)
                {
                    let mut md = format!("**sweep.{name}**\n\n{doc}");
                    if name == "objective" {
                        md.push_str("\n\nmetrics:");
                        for (m, _, _, up, doc) in crate::sweep::Metric::ALL {
                            let better = if up { "higher" } else { "lower" };
                            md.push_str(&format!("\n- `{m}`: {doc} ({better} is better)"));
                        }
                    }
                    return Some(md);
                }
                let used = module.items.iter().find_map(|i| match i {
                    Item::Use(u) => Some(u),
                    _ => None,
                })?;
                let t = template(&used.template.name)?;
                let p = t.param(name)?;
                let ways: Vec<&str> = crate::check::sweep::GENERATORS
                    .iter()
                    .map(|(_, d)| *d)
                    .collect();
                return Some(format!(
                    "{}\n\nswept: each trial takes one of its values; {}",
                    param_markdown(&t.name, p),
                    ways.join("; ")
                ));
            }
            Item::Data(d) if within(d.body.span, offset) => {
                let s = setting_at(Some(&d.body), offset)?;
                let (name, doc) = complete::DATA_SETTINGS
                    .iter()
                    .find(|(name, _)| *name == s.name.name)?;
                return Some(format!("**data.{name}**\n\n{doc}"));
            }
            Item::Template(t) if within(t.span, offset) => {
                let parent = t.parent.as_ref()?;
                if within(parent.span, offset) {
                    let p = template(&parent.name)?;
                    return Some(format!(
                        "**{}** ({})\n\n{}",
                        p.name,
                        p.architecture.name(),
                        squash(&p.doc)
                    ));
                }
                return None;
            }
            _ => {}
        }
    }
    None
}

fn setting_at(block: Option<&Block>, offset: usize) -> Option<&Setting> {
    block?.settings().find(|s| within(s.name.span, offset))
}

/// Where something is declared: a byte range of the file itself, or of the
/// prelude (`crate::spec::PRELUDE`, wfrun's built-in templates and steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub in_prelude: bool,
    pub start: usize,
    pub end: usize,
}

impl Target {
    fn of(span: crate::source::Span) -> Target {
        Target {
            in_prelude: span.source == SourceId::PRELUDE,
            start: span.start,
            end: span.end,
        }
    }
}

/// Where the name under byte `offset` is declared: a template used or
/// extended, a step kind, or a parameter set in a `use` or `step` block,
/// swept in a `sweep` block or narrowed by a template.
pub fn definition(text: &str, offset: usize) -> Option<Target> {
    let (module, _) = crate::syntax::parse(FILE, text);
    let registry = Registry::builtin();
    let templates = templates(&module);
    let template = |name: &str| templates.iter().find(|t| t.name == name);
    let param_in = |block: Option<&Block>, params: &dyn Fn(&str) -> Option<Target>| {
        block?
            .settings()
            .find(|s| within(s.name.span, offset))
            .and_then(|s| params(&s.name.name))
    };
    for item in &module.items {
        match item {
            Item::Use(u) if within(u.span, offset) => {
                let t = template(&u.template.name)?;
                if within(u.template.span, offset) {
                    return Some(Target::of(t.span));
                }
                return param_in(u.body.as_ref(), &|n| t.param(n).map(|p| Target::of(p.span)));
            }
            Item::Step(s) if within(s.span, offset) => {
                let kind = registry.step_kind(&s.kind.name)?;
                if within(s.kind.span, offset) {
                    return Some(Target::of(kind.span));
                }
                return param_in(s.body.as_ref(), &|n| {
                    kind.param(n).map(|p| Target::of(p.span))
                });
            }
            // A swept parameter: its declaration in the template `use` names.
            Item::Sweep(d) if within(d.body.span, offset) => {
                let used = module.items.iter().find_map(|i| match i {
                    Item::Use(u) => Some(u),
                    _ => None,
                })?;
                let t = template(&used.template.name)?;
                return param_in(Some(&d.body), &|n| t.param(n).map(|p| Target::of(p.span)));
            }
            Item::Template(t) if within(t.span, offset) => {
                let parent = template(&t.parent.as_ref()?.name)?;
                if t.parent.as_ref().is_some_and(|p| within(p.span, offset)) {
                    return Some(Target::of(parent.span));
                }
                // A narrowed parameter: the parent's declaration.
                return t.body.items.iter().find_map(|i| match i {
                    BlockItem::Param(p) if within(p.name.span, offset) => {
                        parent.param(&p.name.name).map(|q| Target::of(q.span))
                    }
                    _ => None,
                });
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "use Clarifai_ResNext {\n    batch_size = 32\n    \n}\ndata { train = \"x\" }\nstep clustering { k = 4 }\n";

    #[test]
    fn hover_documents_data_settings() {
        let text = "use Clarifai_ResNext { }\ndata { train = \"a\"  unseen = \"b\" }\n";
        let md = hover(text, text.find("unseen").unwrap() + 2).unwrap();
        assert!(md.starts_with("**data.unseen**"), "{md}");
        assert!(md.contains("never trained on"), "{md}");
    }

    #[test]
    fn hover_documents_params_with_the_derived_learning_rate() {
        let at = TEXT.find("batch_size").unwrap() + 2;
        let md = hover(TEXT, at).unwrap();
        assert!(md.contains("Clarifai_ResNext.batch_size"), "{md}");
        assert!(md.contains("1 to 128"), "{md}");
        assert!(
            md.contains("lrate = batch_size × per_item_lrate = 32 × 7.8125e-05 = 0.0025"),
            "{md}"
        );
        let md = hover(TEXT, TEXT.find("ResNext").unwrap()).unwrap();
        assert!(md.contains("resnext50_32x4d"), "{md}");
        let md = hover(TEXT, TEXT.find("k = 4").unwrap()).unwrap();
        assert!(md.contains("clustering.k"), "{md}");
        let md = hover(TEXT, TEXT.find("train").unwrap()).unwrap();
        assert!(md.starts_with("**data.train**"), "{md}");
    }

    #[test]
    fn a_sweep_block_is_completed_and_documented() {
        let text = "use Clarifai_ResNext { batch_size = 32 }\ndata { train = \"x\" }\nsweep {\n    image_size = range(32, 64, 16)\n    \n}\n";
        let at = text.find("    \n}").unwrap() + 4;
        let labels: Vec<String> = completions(text, at).into_iter().map(|c| c.label).collect();
        assert!(labels.contains(&"per_item_lrate".to_string()), "{labels:?}");
        assert!(
            labels.contains(&"objective".to_string()) && labels.contains(&"trials".to_string())
        );
        assert!(
            !labels.contains(&"batch_size".to_string())
                && !labels.contains(&"image_size".to_string()),
            "set in `use`, or swept already: {labels:?}"
        );
        let with = |line: &str| {
            let t = text.replace("    \n}", &format!("    {line}\n}}"));
            let at = t.find(line).unwrap() + line.len();
            completions(&t, at)
                .into_iter()
                .map(|c| c.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            with("num_epochs = "),
            ["range(1, 200, 1)", "values(65)"],
            "filled from the parameter's range and default"
        );
        let rates = with("per_item_lrate = ");
        assert_eq!(
            rates[0], "log_range(7.8125e-06, 7.8125e-04, 3)",
            "{rates:?}"
        );
        let objectives = with("objective = ");
        assert!(objectives.contains(&"maximize(map_at_r)".to_string()));
        assert!(objectives.contains(&"minimize(train_loss)".to_string()));
        let md = hover(text, text.find("image_size").unwrap() + 2).unwrap();
        assert!(
            md.contains("Clarifai_ResNext.image_size") && md.contains("swept"),
            "{md}"
        );
        let t = text.replace("    \n}", "    objective = maximize(nmi)\n}");
        let md = hover(&t, t.find("objective").unwrap() + 2).unwrap();
        assert!(
            md.starts_with("**sweep.objective**") && md.contains("`unseen_ami`"),
            "{md}"
        );
    }

    #[test]
    fn completion_offers_what_fits_where_the_cursor_is() {
        // Inside `use`: the template's parameters not yet written.
        let at = TEXT.find("    \n}").unwrap() + 4;
        let labels: Vec<String> = completions(TEXT, at).into_iter().map(|c| c.label).collect();
        assert!(
            labels.contains(&"image_size".to_string()) && labels.contains(&"logreg".to_string())
        );
        assert!(
            !labels.contains(&"batch_size".to_string()),
            "already written"
        );
        assert!(
            !labels.contains(&"angular_scale".to_string()),
            "another template's"
        );
        // After `use `: templates; after `step `: step kinds.
        let t = "use Cla";
        let labels: Vec<String> = completions(t, t.len())
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert!(labels.contains(&"Clarifai_ResNext".to_string()));
        let t = "step ";
        let labels: Vec<String> = completions(t, t.len())
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["classifier_head", "clustering", "visual_search"]);
        // In a step block: its parameters.
        let at = TEXT.find("k = 4").unwrap();
        let labels: Vec<String> = completions(TEXT, at).into_iter().map(|c| c.label).collect();
        assert!(labels.contains(&"inits".to_string()) && !labels.contains(&"k".to_string()));
        // `device = `: devices.
        let t = "device = ";
        assert_eq!(completions(t, t.len())[0].label, "cpu");
        // A parameter with keyword values: its keywords.
        let t = "step visual_search { queries = ";
        let labels: Vec<String> = completions(t, t.len())
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["eval", "train"]);
        let t = "step visual_search { top_k = ";
        assert!(
            completions(t, t.len()).is_empty(),
            "numbers: nothing to offer"
        );
    }

    #[test]
    fn definitions_lead_to_declarations_in_the_file_and_the_prelude() {
        let prelude = crate::spec::PRELUDE;
        // A built-in template: its declaration in the prelude.
        let d = definition(TEXT, TEXT.find("ResNext").unwrap()).unwrap();
        assert!(d.in_prelude);
        assert_eq!(&prelude[d.start..d.end], "Clarifai_ResNext");
        // A hyperparameter set in `use`: its `param` in the prelude.
        let d = definition(TEXT, TEXT.find("batch_size").unwrap()).unwrap();
        assert!(d.in_prelude);
        assert_eq!(&prelude[d.start..d.end], "batch_size");
        assert!(
            prelude[..d.start].rfind("template").unwrap()
                > prelude.find("Clarifai_ResNext").unwrap()
        );
        // A step kind and its parameter.
        let d = definition(TEXT, TEXT.find("clustering").unwrap()).unwrap();
        assert_eq!(&prelude[d.start..d.end], "clustering");
        let d = definition(TEXT, TEXT.find("k = 4").unwrap()).unwrap();
        assert_eq!(&prelude[d.start..d.end], "k");
        // A template of the file itself, used and extended.
        let t = "template Small extends Clarifai_ResNext {\n    param image_size { max = 64 }\n}\nuse Small { image_size = 48 }\n";
        let d = definition(t, t.rfind("Small").unwrap()).unwrap();
        assert!(!d.in_prelude);
        assert_eq!((d.start, d.end), (9, 14));
        let d = definition(t, t.find("Clarifai").unwrap()).unwrap();
        assert!(d.in_prelude);
        let d = definition(t, t.find("image_size").unwrap()).unwrap();
        assert!(d.in_prelude, "a narrowed parameter leads to its parent's");
        assert_eq!(definition(TEXT, TEXT.find("train").unwrap()), None);
        // A swept parameter: where the same parameter set in `use` leads.
        let swept = format!("{t}sweep {{\n    image_size = values(32, 48)\n}}\n");
        let d = definition(&swept, swept.rfind("image_size").unwrap()).unwrap();
        let used = definition(&swept, swept.find("image_size = 48").unwrap()).unwrap();
        assert_eq!(d, used);
        assert_eq!(&prelude[d.start..d.end], "image_size");
    }

    #[test]
    fn nothing_is_completed_in_a_comment() {
        let text = "# The quickstart \nuse Clarifai_ResNext {\n    batch_size = 8  # a small b\n    doc = \"a # b\n}\n";
        assert!(completions(text, 5).is_empty());
        let in_line_comment = text.find("small b").unwrap() + 6;
        assert!(completions(text, in_line_comment).is_empty());
        // Before the comment on the same line, and after a `#` in a string, there is.
        let line = text.find("    batch_size").unwrap() + 4;
        assert!(!completions(text, line).is_empty());
        let in_comment = |t: &str| crate::format::in_comment(t, t.len());
        assert!(!in_comment("    doc = \"a # b"));
        assert!(in_comment("    doc = \"a \\\" b\" # c"));
        assert!(!in_comment("    doc = \"a \\\" # b"));
        assert!(!in_comment("    doc = \"\"\"a\n# b"));
    }

    #[test]
    fn the_outline_lists_statements_with_their_settings() {
        let found = symbols(TEXT);
        let names: Vec<(&str, SymbolKind)> =
            found.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            names,
            [
                ("Clarifai_ResNext", SymbolKind::Use),
                ("data", SymbolKind::Data),
                ("clustering", SymbolKind::Step)
            ]
        );
        let setting = &found[0].children[0];
        assert_eq!(
            (setting.name.as_str(), setting.detail.as_str()),
            ("batch_size", "32")
        );
        assert_eq!(&TEXT[setting.name_start..setting.name_end], "batch_size");
        assert_eq!(found[1].children[0].detail, "\"x\"");
        assert!(found
            .iter()
            .all(|s| s.start <= s.name_start && s.name_end <= s.end));
    }
}
