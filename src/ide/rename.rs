//! Find references and rename, for the names a workflow file declares: its
//! own templates (`template NAME`, used by `use NAME` and `extends NAME`) and
//! its steps' aliases (`step KIND as NAME`). Built-in templates and step
//! kinds live in wfrun's prelude and cannot be renamed from a workflow.

use super::{within, FILE};
use crate::spec::Registry;
use crate::syntax::{Item, Module};

/// What kind of name a reference is to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    Template,
    StepAlias,
}

/// Every place a declared name is written in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct References {
    pub name: String,
    pub kind: Named,
    /// Byte ranges, the declaration first.
    pub places: Vec<(usize, usize)>,
}

/// The references of the name under byte `offset`: a template the file
/// declares, or a step alias. `None` over anything else (built-in names
/// included).
pub fn references(text: &str, offset: usize) -> Option<References> {
    let (module, _) = crate::syntax::parse(FILE, text);
    let (name, kind) = name_at(&module, offset)?;
    let mut places = Vec::new();
    match kind {
        Named::Template => {
            for item in &module.items {
                match item {
                    Item::Template(t) if t.name.name == name => {
                        places.insert(0, (t.name.span.start, t.name.span.end));
                    }
                    Item::Template(t) => {
                        if let Some(p) = t.parent.as_ref().filter(|p| p.name == name) {
                            places.push((p.span.start, p.span.end));
                        }
                    }
                    Item::Use(u) if u.template.name == name => {
                        places.push((u.template.span.start, u.template.span.end));
                    }
                    _ => {}
                }
            }
        }
        Named::StepAlias => {
            for item in &module.items {
                if let Item::Step(s) = item {
                    if let Some(a) = s.alias.as_ref().filter(|a| a.name == name) {
                        places.push((a.span.start, a.span.end));
                    }
                }
            }
        }
    }
    Some(References { name, kind, places })
}

/// The byte range of the renamable name under `offset`.
pub fn prepare_rename(text: &str, offset: usize) -> Option<(usize, usize)> {
    let r = references(text, offset)?;
    r.places
        .iter()
        .copied()
        .find(|&(s, e)| s <= offset && offset <= e)
}

/// The edits renaming the name under `offset` to `new_name`: one per place
/// it is written. An error says why it cannot be (not a name the file
/// declares, not an identifier, a name already taken).
pub fn rename(text: &str, offset: usize, new_name: &str) -> Result<Vec<(usize, usize)>, String> {
    let r = references(text, offset).ok_or_else(|| {
        "only the file's own templates and step aliases can be renamed here".to_string()
    })?;
    let valid = new_name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && new_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "`{new_name}` is not a name: letters, digits and `_`, not starting with a digit"
        ));
    }
    let (module, _) = crate::syntax::parse(FILE, text);
    let taken = match r.kind {
        Named::Template => {
            Registry::builtin().template(new_name).is_some()
                || module
                    .items
                    .iter()
                    .any(|i| matches!(i, Item::Template(t) if t.name.name == new_name))
        }
        Named::StepAlias => module.items.iter().any(|i| match i {
            Item::Step(s) => s.alias.as_ref().unwrap_or(&s.kind).name == new_name,
            _ => false,
        }),
    };
    if taken && new_name != r.name {
        return Err(format!("`{new_name}` is already the name of another one"));
    }
    Ok(r.places)
}

/// The declared name under `offset` and its kind.
fn name_at(module: &Module, offset: usize) -> Option<(String, Named)> {
    let declared = |name: &str| {
        module
            .items
            .iter()
            .any(|i| matches!(i, Item::Template(t) if t.name.name == name))
    };
    for item in &module.items {
        match item {
            Item::Template(t) if within(t.name.span, offset) => {
                return Some((t.name.name.clone(), Named::Template));
            }
            Item::Template(t) => {
                if let Some(p) = t.parent.as_ref().filter(|p| within(p.span, offset)) {
                    return declared(&p.name).then(|| (p.name.clone(), Named::Template));
                }
            }
            Item::Use(u) if within(u.template.span, offset) => {
                return declared(&u.template.name)
                    .then(|| (u.template.name.clone(), Named::Template));
            }
            Item::Step(s) => {
                if let Some(a) = s.alias.as_ref().filter(|a| within(a.span, offset)) {
                    return Some((a.name.clone(), Named::StepAlias));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "template Small extends Clarifai_ResNext {\n    param image_size { max = 64 }\n}\ntemplate Smaller extends Small {}\nuse Small { image_size = 32 }\ndata { train = \"x\" }\nstep clustering as coarse { k = 2 }\nstep clustering { k = 3 }\n";

    #[test]
    fn a_templates_references_and_its_rename() {
        let at = TEXT.find("use Small").unwrap() + 5;
        let r = references(TEXT, at).unwrap();
        assert_eq!(r.kind, Named::Template);
        let words: Vec<&str> = r.places.iter().map(|&(s, e)| &TEXT[s..e]).collect();
        assert_eq!(words, ["Small"; 3]);
        assert_eq!(
            r.places[0].0,
            TEXT.find("Small").unwrap(),
            "the declaration first"
        );
        assert_eq!(rename(TEXT, at, "Tiny").unwrap().len(), 3);
        assert!(rename(TEXT, at, "Smaller").is_err());
        assert!(rename(TEXT, at, "Clarifai_ResNext").is_err());
        assert!(rename(TEXT, at, "9lives").is_err());
        assert!(rename(TEXT, at, "").is_err());
    }

    #[test]
    fn aliases_rename_and_builtins_do_not() {
        let at = TEXT.find("coarse").unwrap() + 2;
        assert_eq!(prepare_rename(TEXT, at), Some((at - 2, at + 4)));
        assert_eq!(rename(TEXT, at, "fine").unwrap().len(), 1);
        assert!(
            rename(TEXT, at, "clustering").is_err(),
            "the other step's name"
        );
        let builtin = TEXT.find("Clarifai_ResNext").unwrap() + 3;
        assert!(references(TEXT, builtin).is_none());
        assert!(prepare_rename(TEXT, builtin).is_none());
    }
}
