//! What changed between the training a checkpoint records and the training
//! a run would do, in the workflow's words: the records are the JSON of the
//! plan's training values (`exec::checkpoint`'s basis); the lines name
//! settings as a workflow writes them (`` `batch_size`: 8 → 4 ``), so this
//! module, like the checker, knows the parameters' names.

/// How the training a checkpoint was made by (`previous`, its recorded
/// basis) and this run's (`basis`) differ, in the workflow's words: one line
/// for each setting that changed (`` `batch_size`: 8 → 4 ``), and what
/// follows from them (the learning rates, the held-out images) only where no
/// setting explains it.
pub fn changes(previous: &str, basis: &str) -> Vec<String> {
    let (Ok(old), Ok(serde_json::Value::Object(new))) = (
        serde_json::from_str::<serde_json::Value>(previous),
        serde_json::from_str::<serde_json::Value>(basis),
    ) else {
        return vec!["the checkpoint's record cannot be read".into()];
    };
    let mut raw = Vec::new();
    // A record of an earlier version lacks `images`: a changed
    // `images_and_concepts` may then be other images or another split.
    let split_known = old.get("images").is_some();
    for (key, value) in &new {
        let label = match key.as_str() {
            "images" if !split_known => continue,
            // Nor `contents` (the images' bytes) or `split` (which set
            // holds each image), before the versions recording them.
            "contents" | "split" if old.get(key.as_str()).is_none() => continue,
            "images_and_concepts" if !split_known => "images_or_split",
            k => k,
        };
        differences(label, &old[key.as_str()], value, &mut raw);
    }
    let fraction = new
        .get("data")
        .and_then(|d| d.get("eval"))
        .is_some_and(|e| e.get("fraction").is_some());
    in_words(&raw, fraction, old.get("split").is_some())
}

/// Whether two records (as [`changes`] reads them) name the same training
/// and evaluation sources.
pub fn same_sources(previous: &str, basis: &str) -> bool {
    let (Ok(old), Ok(new)) = (
        serde_json::from_str::<serde_json::Value>(previous),
        serde_json::from_str::<serde_json::Value>(basis),
    ) else {
        return false;
    };
    ["train", "eval"]
        .iter()
        .all(|k| old["data"][k] == new["data"][k])
}

/// How the values a sweep's trial was done with (`trial.json`'s `basis`:
/// the template, the trial's values, the data settings and the images the
/// checker counted) and those this workflow gives it differ, in the
/// workflow's words, as [`changes`] says a checkpoint's.
pub fn trial_changes(before: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    // The record in a checkpoint's shape: the concepts' names and the
    // images under `data`, the images of each concept beside them.
    let as_basis = |v: &Value| {
        let dataset = &v["dataset"];
        let names: Vec<Value> = dataset["concepts"]
            .as_array()
            .map(|a| a.iter().map(|c| c[0].clone()).collect())
            .unwrap_or_default();
        let mut data = match &v["data"] {
            Value::Object(d) => d.clone(),
            _ => serde_json::Map::new(),
        };
        data.remove("unseen");
        if !dataset.is_null() {
            data.insert("concepts".into(), Value::Array(names));
            data.insert("images".into(), dataset["images"].clone());
            data.insert("per_concept".into(), dataset["concepts"].clone());
        }
        let mut record = serde_json::Map::new();
        for key in ["template", "hyper", "seed"] {
            record.insert(key.into(), v[key].clone());
        }
        record.insert("data".into(), Value::Object(data));
        record
    };
    let (old, new) = (Value::Object(as_basis(before)), as_basis(now));
    let mut raw = Vec::new();
    for (key, value) in &new {
        differences(key, &old[key.as_str()], value, &mut raw);
    }
    let fraction = new
        .get("data")
        .and_then(|d| d.get("eval"))
        .is_some_and(|e| e.get("fraction").is_some());
    in_words(&raw, fraction, false)
}

/// One difference between two records: the path of the value, old and new.
type Difference = (String, serde_json::Value, serde_json::Value);

/// How much a difference says by itself.
#[derive(Clone, PartialEq, Eq)]
enum Weight {
    /// A setting of the workflow, or the data it names.
    Setting,
    /// The template's recipe: follows from the template.
    Recipe,
    /// Follows from these settings (learning rates, counts, the split):
    /// said only when none of them changed.
    Follows(Vec<&'static str>),
}

/// What the lines depend on beyond the differences themselves.
struct Context<'a> {
    raw: &'a [Difference],
    /// The held-out images are a fraction of the training folder's, drawn
    /// from the seed (else a folder or list of their own).
    fraction: bool,
    /// The earlier record says which set held each image (`split`).
    sets_known: bool,
}

impl Context<'_> {
    fn changed(&self, p: &str) -> bool {
        self.raw
            .iter()
            .any(|(k, ..)| k == p || k.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
    }

    /// Whether the concepts' names changed, not only their order (a
    /// manifest's order of first appearance, which an image moved to
    /// another concept may change).
    fn concepts_renamed(&self) -> bool {
        let names = |v: &serde_json::Value| {
            let mut n: Vec<String> = v
                .as_array()
                .map(|a| a.iter().map(value).collect())
                .unwrap_or_default();
            n.sort();
            n
        };
        self.raw
            .iter()
            .any(|(k, old, new)| k == "data.concepts" && names(old) != names(new))
    }

    /// What changes which images train and which are held out.
    fn split(&self) -> Vec<&'static str> {
        let mut from = vec!["data.train", "data.eval", "data.images", "data.concepts"];
        if self.fraction {
            from.push("seed");
        }
        from
    }
}

fn in_words(raw: &[Difference], fraction: bool, sets_known: bool) -> Vec<String> {
    let context = Context {
        raw,
        fraction,
        sets_known,
    };
    let template = context.changed("template");
    // In the order a workflow writes them: the template, its parameters,
    // the seed, the data; then what follows from them.
    let rank = |path: &str| {
        [
            "template",
            "hyper",
            "seed",
            "data.train",
            "data.eval",
            "data.weights",
            "data.augment",
            "data",
        ]
        .iter()
        .position(|p| path == *p || path.starts_with(&format!("{p}.")))
        .unwrap_or(8)
    };
    let mut raw: Vec<&Difference> = raw.iter().collect();
    raw.sort_by_key(|(path, ..)| rank(path));
    raw.into_iter()
        .filter_map(|d| line(d, &context))
        .filter(|(w, _)| match w {
            Weight::Setting => true,
            Weight::Recipe => !template,
            Weight::Follows(from) => !from.iter().any(|p| context.changed(p)),
        })
        .map(|(_, l)| l)
        .collect()
}

/// A difference as a line, and how much it says by itself; `None` when
/// another line says it (the template's network, an angular setting of a
/// loss that changed kind).
fn line(d: &Difference, context: &Context) -> Option<(Weight, String)> {
    let changed = |p: &str| context.changed(p);
    let (path, old, new) = d;
    let was = |label: &str| format!("{label}: {} → {}", value(old), value(new));
    let named = |name: &str| was(&format!("`{name}`"));
    // The data settings, and the counts that follow from the data.
    let data = || {
        vec![
            "data.train",
            "data.eval",
            "data.images",
            "data.concepts",
            "data.train_images",
            "data.eval_images",
        ]
    };
    Some(match path.as_str() {
        "template" => (Weight::Setting, was("the template")),
        "architecture" | "hyper.architecture" | "hyper.image_sizes" => return None,
        "hyper.loss.kind" => {
            let logreg = |v: &serde_json::Value| match v.as_str() {
                Some("softmax") => Some("0"),
                Some("sigmoid") => Some("1"),
                _ => None,
            };
            match (logreg(old), logreg(new)) {
                (Some(a), Some(b)) => (Weight::Setting, format!("`logreg`: {a} → {b}")),
                _ => (Weight::Setting, was("the loss")),
            }
        }
        p if p.starts_with("hyper.loss.") => {
            if changed("hyper.loss.kind") {
                return None;
            }
            let name = match &p["hyper.loss.".len()..] {
                "scale" => "angular_scale",
                "margin" => "angular_margin",
                other => other,
            };
            (Weight::Setting, named(name))
        }
        "hyper.lr_decay" | "hyper.momentum" | "hyper.weight_decay" | "hyper.decayed"
        | "hyper.conv_init" => (
            Weight::Recipe,
            was(&format!(
                "the template's own `{}` (the checkpoint is from another version of wfrun)",
                &path["hyper.".len()..]
            )),
        ),
        // Left to the data (`dataset_size`) unless set: follows from it when
        // the data changed.
        "hyper.num_items_per_epoch" => (Weight::Follows(data()), named("num_items_per_epoch")),
        p if p.starts_with("hyper.") => (Weight::Setting, named(&p["hyper.".len()..])),
        "seed" => {
            let mut l = named("seed");
            if context.fraction && changed("images_and_concepts") {
                l.push_str(" (the held-out images are drawn from it)");
            }
            (Weight::Setting, l)
        }
        "data.train" => (Weight::Setting, named("train")),
        "data.eval" => (Weight::Setting, named("eval")),
        "data.weights" => {
            let path = |v: &serde_json::Value| match v.as_str() {
                Some(p) => format!("\"{p}\""),
                None => value(v),
            };
            (
                Weight::Setting,
                format!("`weights`: {} → {}", path(old), path(new)),
            )
        }
        "data.augment" => (
            Weight::Setting,
            format!("`augment`: {} → {}", augment(old), augment(new)),
        ),
        "data.concepts" => (Weight::Setting, concepts(old, new)),
        "data.images" => (Weight::Setting, was("the images of `train`")),
        // A sweep's record: the images the checker counted in each concept.
        p if p.starts_with("data.per_concept") => (
            Weight::Follows(vec!["data.train", "data.concepts", "data.images"]),
            "the images of each concept: the same concepts and count, spread otherwise".into(),
        ),
        // Every training image trains unless a fraction is held out.
        "data.train_images" => (
            Weight::Follows(vec!["data.train", "data.eval", "data.images"]),
            was("the images trained on"),
        ),
        // A fraction of the training folder's, or a folder of their own.
        "data.eval_images" => {
            let mut from = vec!["data.eval"];
            if context.fraction {
                from.extend(["data.train", "data.images"]);
            }
            (Weight::Follows(from), was("the held-out images"))
        }
        "epoch_learning_rates" => (
            Weight::Follows(vec!["template", "hyper"]),
            was("the learning rate of each epoch"),
        ),
        "items_per_epoch" => (
            Weight::Follows(vec!["template", "hyper", "data"]),
            was("the images an epoch"),
        ),
        "steps_per_epoch" => (
            Weight::Follows(vec!["template", "hyper", "data"]),
            was("the steps an epoch"),
        ),
        // Other files under the same counts: said unless a source or a
        // count changed (a fraction held out changes none of them).
        "images" => {
            let mut from = vec!["data.train", "data.images"];
            if context.concepts_renamed() {
                from.push("data.concepts");
            }
            if !context.fraction {
                from.extend(["data.eval", "data.eval_images"]);
            }
            (
                Weight::Follows(from),
                "the images or their concepts: the same count, other files (an image renamed, \
                 one added where another went, or one moved to another concept)"
                    .into(),
            )
        }
        // Which images are held out, when the images themselves are known
        // to be the same (the record says `images`) and when not.
        "images_and_concepts" => {
            if changed("images") {
                return None;
            }
            let line = match (context.sets_known, changed("split")) {
                // Held out as before: only the order the images are listed
                // in, which training's shuffles are drawn from.
                (true, false) => {
                    "the order the images are listed in: the same images and split, in \
                     another order (a manifest's lines reordered; each epoch's order is \
                     drawn from it)"
                }
                // A fraction drawn by the same seed from the same images:
                // only their order can have changed it.
                (true, true) if context.fraction && !changed("seed") => {
                    "which images are held out: the same images listed in another order (a \
                     manifest's lines reordered), from which the seed draws another split"
                }
                _ => "which images are held out: the same images, another split",
            };
            (Weight::Follows(context.split()), line.into())
        }
        // Said, where it matters, with `images_and_concepts`.
        "split" => return None,
        // The same names, other bytes: said unless the names changed.
        "contents" => {
            let mut from = data();
            from.extend(["images", "images_or_split"]);
            (
                Weight::Follows(from),
                "the images' contents: the same files, other bytes (an image edited or \
                 replaced under its name, images' names swapped, or one that can no longer be \
                 read)"
                    .into(),
            )
        }
        "images_or_split" => (
            Weight::Follows(context.split()),
            "the images, their concepts or which are held out: the same counts, other files \
             or another split"
                .into(),
        ),
        _ => (Weight::Setting, was(&format!("`{path}`"))),
    })
}

/// A recorded value as the workflow writes it.
fn value(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "none".into(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), ..) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (.., Some(f)) => number(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(value).collect::<Vec<_>>().join(", "),
        Value::Object(o) => {
            // `eval`: a fraction or images of their own; a source: its path.
            if let Some(f) = o.get("fraction") {
                value(f)
            } else if let Some(images) = o.get("images") {
                value(images)
            } else if let Some(p) = o.get("path") {
                let shown = format!("\"{}\"", value(p));
                match o.get("kind").and_then(|k| k.as_str()) {
                    Some("manifest") => format!("{shown} (a list of images)"),
                    _ => shown,
                }
            } else {
                v.to_string()
            }
        }
    }
}

/// A number rounded to 6 significant digits, so that a value computed
/// twice does not show its last bits (0.30000000000000004 is 0.3).
fn number(f: f64) -> String {
    let r = format!("{f:.5e}").parse::<f64>().unwrap_or(f);
    // Small rates as workflows write them (7.8125e-5, not 0.000078125).
    if r != 0.0 && r.abs() < 1e-3 {
        format!("{r:e}")
    } else {
        r.to_string()
    }
}

/// `augment`, which a record leaves out when it is the default.
fn augment(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => crate::workflow::Augment::default().name().to_string(),
        other => value(other),
    }
}

/// The concepts found: which came and which went.
fn concepts(old: &serde_json::Value, new: &serde_json::Value) -> String {
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(value).collect())
            .unwrap_or_default()
    };
    let (old, new) = (names(old), names(new));
    let list = |names: Vec<&String>| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let came: Vec<&String> = new.iter().filter(|n| !old.contains(n)).collect();
    let went: Vec<&String> = old.iter().filter(|n| !new.contains(n)).collect();
    let mut parts = Vec::new();
    if !came.is_empty() {
        parts.push(format!("{} new", list(came)));
    }
    if !went.is_empty() {
        parts.push(format!("{} gone", list(went)));
    }
    if parts.is_empty() {
        parts.push(
            "the same names in another order (a manifest's concepts are numbered in the order \
             they first appear: its lines reordered, or an image moved to another concept)"
                .into(),
        );
    }
    format!("the concepts: {}", parts.join("; "))
}

fn differences(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<Difference>,
) {
    use serde_json::Value;
    // An image source or `eval` is one value, whatever its shape.
    let whole = matches!(
        path,
        "data.train" | "data.eval" | "data.weights" | "data.per_concept"
    );
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if !whole => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (x, y) = (&a.get(k), &b.get(k));
                differences(
                    &format!("{path}.{k}"),
                    x.unwrap_or(&Value::Null),
                    y.unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push((path.to_string(), a.clone(), b.clone())),
        _ => {}
    }
}

/// Which images differ between the list a checkpoint records of those it
/// trained on (`previous`) and this run's (`now`; both
/// `exec::checkpoint::image_list`'s JSON: path, concepts, digest of the
/// bytes), one line each for images added, gone, moved (the same bytes under
/// another path), edited or replaced under their name, and put in another
/// concept, naming up to five of each.
pub fn image_changes(previous: &str, now: &str) -> Vec<String> {
    type Listed = (String, Vec<String>, Option<String>);
    let (Ok(mut before), Ok(after)) = (
        serde_json::from_str::<Vec<Listed>>(previous),
        serde_json::from_str::<Vec<Listed>>(now),
    ) else {
        return Vec::new();
    };
    use std::collections::{BTreeMap, HashMap};
    // A folder moved whole (the workflow's folder with its data beside it,
    // or the data's folder renamed) is said once, and its images are then
    // compared under their new names.
    let mut folder = None;
    // The names the images had, for those said as gone or moved.
    let mut was_named: HashMap<String, String> = HashMap::new();
    if let Some((from, to)) = moved_folder(&before, &after) {
        let mut n = 0;
        for l in &mut before {
            if let Some(rest) = l.0.strip_prefix(from.as_str()) {
                let renamed = format!("{to}{rest}");
                was_named.insert(renamed.clone(), std::mem::replace(&mut l.0, renamed));
                n += 1;
            }
        }
        // Heads of `..` alone: the workflow's folder moved, not the data
        // (named absolutely, which the basis compares: unchanged), or the
        // data setting changed with it, which is said as the setting.
        let upward = |head: &str| head.split(['/', '\\']).all(|c| c.is_empty() || c == "..");
        if !(upward(&from) && upward(&to)) {
            let images = if n == 1 { "image" } else { "images" };
            folder = Some(format!(
                "{n} {images} under `{}` now under `{}`",
                shown(&from),
                shown(&to)
            ));
        }
    }
    let named = |l: &Listed| shown(was_named.get(&l.0).unwrap_or(&l.0));
    let old: BTreeMap<&str, &Listed> = before.iter().map(|l| (l.0.as_str(), l)).collect();
    let new: BTreeMap<&str, &Listed> = after.iter().map(|l| (l.0.as_str(), l)).collect();
    let mut added: Vec<&Listed> = after
        .iter()
        .filter(|l| !old.contains_key(l.0.as_str()))
        .collect();
    let gone: Vec<&Listed> = before
        .iter()
        .filter(|l| !new.contains_key(l.0.as_str()))
        .collect();
    // An image gone whose bytes are those of one added was moved.
    let mut by_bytes: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, l) in added.iter().enumerate() {
        if let Some(d) = &l.2 {
            by_bytes.entry(d.as_str()).or_default().push(i);
        }
    }
    let mut moved = Vec::new();
    let mut taken = vec![false; added.len()];
    let mut still_gone = Vec::new();
    for g in gone {
        // Of several images with these bytes, the one of the same file name.
        let to =
            g.2.as_deref()
                .and_then(|d| by_bytes.get_mut(d))
                .and_then(|v| {
                    let same = v
                        .iter()
                        .position(|&i| file_name(&added[i].0) == file_name(&g.0));
                    same.map(|k| v.remove(k)).or_else(|| v.pop())
                });
        match to {
            Some(i) => {
                taken[i] = true;
                let to = added[i];
                let mut line = format!("`{}` → `{}`", named(g), shown(&to.0));
                if g.1 != to.1 {
                    line.push_str(&format!(" ({} → {})", g.1.join(", "), to.1.join(", ")));
                }
                moved.push(line);
            }
            None => still_gone.push(g),
        }
    }
    let mut i = 0;
    added.retain(|_| {
        i += 1;
        !taken[i - 1]
    });
    let added: Vec<String> = added.iter().map(|l| format!("`{}`", shown(&l.0))).collect();
    // The bytes each name held before, of images whose bytes are no longer
    // under their name (gone, or other bytes now): an image now holding
    // them was moved over another (names swapped, rotated, or one moved
    // onto another's name).
    let mut left: HashMap<&str, Vec<&Listed>> = HashMap::new();
    for l in &still_gone {
        if let Some(d) = &l.2 {
            left.entry(d.as_str()).or_default().push(l);
        }
    }
    for (name, was) in &old {
        if let (Some(a), Some(b)) = (&was.2, new.get(name).and_then(|l| l.2.as_ref())) {
            if a != b {
                left.entry(a.as_str()).or_default().push(was);
            }
        }
    }
    let mut moved_over = std::collections::HashSet::new();
    let (mut edited, mut unreadable, mut readable) = (Vec::new(), Vec::new(), Vec::new());
    let mut regrouped = Vec::new();
    for (name, was) in &old {
        let Some(is) = new.get(name) else { continue };
        let from = match (&was.2, &is.2) {
            (Some(a), Some(b)) if a != b => left
                .get_mut(b.as_str())
                .and_then(|v| v.iter().position(|l| l.0 != *name).map(|k| v.remove(k))),
            _ => None,
        };
        if let Some(from) = from {
            moved_over.insert(from.0.as_str());
            let mut line = format!(
                "`{}` → `{}` (replacing the image there)",
                named(from),
                shown(name)
            );
            if from.1 != is.1 {
                line.push_str(&format!(" ({} → {})", from.1.join(", "), is.1.join(", ")));
            }
            moved.push(line);
            continue;
        }
        let name = shown(name);
        match (&was.2, &is.2) {
            (Some(a), Some(b)) if a != b => edited.push(format!("`{name}`")),
            (Some(_), None) => unreadable.push(format!("`{name}`")),
            (None, Some(_)) => readable.push(format!("`{name}`")),
            _ => {}
        }
        if was.1 != is.1 {
            regrouped.push(format!(
                "`{name}` ({} → {})",
                was.1.join(", "),
                is.1.join(", ")
            ));
        }
    }
    let line = |what: &str, names: &[String]| {
        let n = names.len();
        let mut l = format!("{n} {} {what}: ", if n == 1 { "image" } else { "images" });
        l.push_str(&names.iter().take(5).cloned().collect::<Vec<_>>().join(", "));
        if n > 5 {
            l.push_str(&format!(" and {} more", n - 5));
        }
        l
    };
    let still_gone: Vec<String> = still_gone
        .iter()
        .filter(|g| !moved_over.contains(g.0.as_str()))
        .map(|g| format!("`{}`", named(g)))
        .collect();
    let each = [
        ("added", added),
        ("gone", still_gone),
        ("moved", moved),
        ("edited or replaced under the same name", edited),
        (
            "can no longer be read (permissions, a broken link, not a file)",
            unreadable,
        ),
        ("can be read now, not before", readable),
        ("now in another concept", regrouped),
    ]
    .into_iter()
    .filter(|(_, names)| !names.is_empty())
    .map(|(what, names)| line(what, &names));
    folder.into_iter().chain(each).collect()
}

/// An image list's path as a message shows it: control characters (a
/// terminal's escape sequences, line breaks) written as escapes.
fn shown(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The last component of an image list's path.
fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The folder whose images all lie under another since `before` (both
/// `image_changes`' lists): the heads, each ending in a separator, of the
/// paths of images gone and added with the same bytes and the same tail of
/// whole path components, taken when at least two images show it and no
/// image is left under the old head.
fn moved_folder(
    before: &[(String, Vec<String>, Option<String>)],
    after: &[(String, Vec<String>, Option<String>)],
) -> Option<(String, String)> {
    use std::collections::{HashMap, HashSet};
    let old: HashSet<&str> = before.iter().map(|l| l.0.as_str()).collect();
    let new: HashSet<&str> = after.iter().map(|l| l.0.as_str()).collect();
    let mut added: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in after.iter().filter(|l| !old.contains(l.0.as_str())) {
        if let Some(d) = &l.2 {
            added.entry(d.as_str()).or_default().push(&l.0);
        }
    }
    let mut heads: HashMap<(&str, &str), usize> = HashMap::new();
    for l in before.iter().filter(|l| !new.contains(l.0.as_str())) {
        let Some(to) = l.2.as_deref().and_then(|d| added.get(d)) else {
            continue;
        };
        for to in to {
            if let Some(pair) = heads_of(&l.0, to) {
                *heads.entry(pair).or_default() += 1;
            }
        }
    }
    let ((from, to), n) = heads
        .into_iter()
        .max_by(|(a, n), (b, m)| n.cmp(m).then_with(|| b.cmp(a)))?;
    // (The new head may lie under the old: `../` → `../../`.)
    let left = after
        .iter()
        .any(|l| l.0.starts_with(from) && !l.0.starts_with(to));
    (n >= 2 && !left).then(|| (from.to_string(), to.to_string()))
}

/// The heads of two paths that end in the same whole components: each up
/// to and including the separator where their common tail begins.
fn heads_of<'a>(from: &'a str, to: &'a str) -> Option<(&'a str, &'a str)> {
    let (a, b) = (from.as_bytes(), to.as_bytes());
    let mut n = 0;
    while n < a.len() && n < b.len() && a[a.len() - 1 - n] == b[b.len() - 1 - n] {
        n += 1;
    }
    let tail = &a[a.len() - n..];
    let cut = tail.iter().position(|&c| c == b'/' || c == b'\\')?;
    let keep = n - cut - 1;
    (keep > 0).then(|| (&from[..a.len() - keep], &to[..b.len() - keep]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_that_changed_are_named() {
        let list = |rows: &[(&str, &str, Option<&str>)]| {
            let rows: Vec<(String, Vec<String>, Option<String>)> = rows
                .iter()
                .map(|(p, c, d)| (p.to_string(), vec![c.to_string()], d.map(String::from)))
                .collect();
            serde_json::to_string(&rows).unwrap()
        };
        let before = list(&[
            ("a/1.png", "a", Some("01")),
            ("a/2.png", "a", Some("02")),
            ("b/3.png", "b", Some("03")),
            ("b/4.png", "b", None),
            ("b/5.png", "b", Some("05")),
        ]);
        assert!(image_changes(&before, &before).is_empty());
        let after = list(&[
            ("a/1.png", "a", Some("01")),
            ("a/2.png", "a", Some("22")),
            ("b/3.png", "a", Some("03")),
            ("b/4.png", "b", Some("04")),
            ("c/5.png", "c", Some("05")),
            ("c/6.png", "c", Some("06")),
        ]);
        assert_eq!(
            image_changes(&before, &after),
            [
                "1 image added: `c/6.png`",
                "1 image moved: `b/5.png` → `c/5.png` (b → c)",
                "1 image edited or replaced under the same name: `a/2.png`",
                "1 image can be read now, not before: `b/4.png`",
                "1 image now in another concept: `b/3.png` (b → a)",
            ]
        );
        // Six gone: five named, the rest counted.
        let many: Vec<(String, &str, Option<&str>)> =
            (0..7).map(|i| (format!("x/{i}.png"), "x", None)).collect();
        let many: Vec<(&str, &str, Option<&str>)> =
            many.iter().map(|(p, c, d)| (p.as_str(), *c, *d)).collect();
        let one = list(&many[..1]);
        assert_eq!(
            image_changes(&list(&many), &one),
            ["6 images gone: `x/1.png`, `x/2.png`, `x/3.png`, `x/4.png`, `x/5.png` and 1 more"]
        );
        // A record that cannot be read adds nothing.
        assert!(image_changes("not json", &one).is_empty());
        // The data's folder moved whole, one image edited in it and one
        // overwritten by another's bytes: the folder said once, then only
        // those two, under their new names.
        let before = list(&[
            ("/p/data/a/1.png", "a", Some("01")),
            ("/p/data/a/2.png", "a", Some("02")),
            ("/p/data/b/3.png", "b", Some("03")),
            ("/p/data/b/4.png", "b", Some("04")),
        ]);
        let after = list(&[
            ("/q/data/a/1.png", "a", Some("01")),
            ("/q/data/a/2.png", "a", Some("01")),
            ("/q/data/b/3.png", "b", Some("03")),
            ("/q/data/b/4.png", "b", Some("44")),
        ]);
        assert_eq!(
            image_changes(&before, &after),
            [
                "4 images under `/p/` now under `/q/`",
                "2 images edited or replaced under the same name: `/q/data/a/2.png`, \
                 `/q/data/b/4.png`",
            ]
        );
        // One image of a folder moved to another of the same file name is
        // that image moved, not its folder, and to another concept; one
        // that cannot be read now is said so, its name's control characters
        // escaped.
        let before = list(&[
            ("a/1.png", "a", Some("01")),
            ("a/2.png", "a", Some("02")),
            ("a/\u{1b}[31m.png", "a", Some("03")),
        ]);
        let after = list(&[
            ("b/1.png", "b", Some("01")),
            ("a/2.png", "a", None),
            ("a/\u{1b}[31m.png", "a", Some("33")),
        ]);
        assert_eq!(
            image_changes(&before, &after),
            [
                "1 image moved: `a/1.png` → `b/1.png` (a → b)",
                "1 image edited or replaced under the same name: `a/\\u{1b}[31m.png`",
                "1 image can no longer be read (permissions, a broken link, not a file): \
                 `a/2.png`",
            ]
        );
        // The workflow's folder moved deeper, its data named absolutely:
        // the list (named relative to it) shows the same images under
        // more `..`, which is not said; the edit is, under its new name.
        let before = list(&[
            ("../../data/a/1.png", "a", Some("01")),
            ("../../data/a/2.png", "a", Some("02")),
            ("../../data/b/3.png", "b", Some("03")),
        ]);
        let after = list(&[
            ("../../../data/a/1.png", "a", Some("01")),
            ("../../../data/a/2.png", "a", Some("22")),
            ("../../../data/b/3.png", "b", Some("03")),
        ]);
        assert_eq!(
            image_changes(&before, &after),
            ["1 image edited or replaced under the same name: `../../../data/a/2.png`"]
        );
        // Two names swapped, and one image moved over another's name (its
        // own gone, the other's bytes gone): moves, not edits.
        let before = list(&[
            ("a/1.png", "a", Some("01")),
            ("a/2.png", "a", Some("02")),
            ("a/3.png", "a", Some("03")),
            ("b/4.png", "b", Some("04")),
            ("b/5.png", "b", Some("05")),
        ]);
        let after = list(&[
            ("a/1.png", "a", Some("02")),
            ("a/2.png", "a", Some("01")),
            ("a/3.png", "a", Some("03")),
            ("b/4.png", "b", Some("44")),
            ("b/5.png", "b", Some("03")),
        ]);
        // `a/3.png` still holds its bytes: `b/5.png` holding them too is an
        // edit (a copy), not a move.
        assert_eq!(
            image_changes(&before, &after),
            [
                "2 images moved: `a/2.png` → `a/1.png` (replacing the image there), \
                 `a/1.png` → `a/2.png` (replacing the image there)",
                "2 images edited or replaced under the same name: `b/4.png`, `b/5.png`",
            ]
        );
        let after = list(&[
            ("a/1.png", "a", Some("02")),
            ("a/2.png", "a", Some("03")),
            ("a/3.png", "a", Some("01")),
            ("b/4.png", "b", Some("05")),
        ]);
        assert_eq!(
            image_changes(&before, &after),
            [
                "4 images moved: `a/2.png` → `a/1.png` (replacing the image there), \
                 `a/3.png` → `a/2.png` (replacing the image there), `a/1.png` → `a/3.png` \
                 (replacing the image there), `b/5.png` → `b/4.png` (replacing the image there)",
            ]
        );
    }

    #[test]
    fn only_what_training_depends_on_counts_as_a_change() {
        let mut out = Vec::new();
        let old = serde_json::json!({"num_epochs": 4, "loss": {"loss": "softmax"}});
        let new = serde_json::json!({"num_epochs": 2, "loss": {"loss": "softmax"}});
        differences("hyper", &old, &new, &mut out);
        assert_eq!(in_words(&out, true, true), ["`num_epochs`: 4 → 2"]);
    }

    /// A record as `basis` writes it, with `edit` applied.
    fn record(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::json!({
            "template": "Clarifai_InceptionBatchNorm",
            "architecture": "bn_inception",
            "hyper": {"batch_size": 8, "per_item_lrate": 7.8125e-5, "momentum": 0.9,
                      "loss": {"kind": "softmax"}},
            "seed": 3,
            "data": {"train": {"kind": "folder", "path": "images"}, "eval": {"fraction": 0.25},
                     "weights": null, "concepts": ["a", "b", "c"], "images": 24,
                     "train_images": 18, "eval_images": 6},
            "epoch_learning_rates": [0.000625, 0.0000625],
            "items_per_epoch": 16,
            "steps_per_epoch": 2,
            "images_and_concepts": "0123456789abcdef",
            "images": "fedcba9876543210",
        });
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn a_refusal_names_settings_in_the_workflows_words() {
        let base = record(|_| {});
        assert!(changes(&base, &base).is_empty());
        // A setting: its line alone, not the learning rates it changes.
        let batch = record(|v| {
            v["hyper"]["batch_size"] = 4.into();
            v["hyper"]["per_item_lrate"] = 0.000078125.into();
            v["epoch_learning_rates"] = serde_json::json!([0.0003125, 0.00003125]);
        });
        assert_eq!(changes(&base, &batch), ["`batch_size`: 8 → 4"]);
        // The seed draws another split: said as the seed, not as data.
        let seed = record(|v| {
            v["seed"] = 4.into();
            v["images_and_concepts"] = "1111111111111111".into();
        });
        assert_eq!(
            changes(&base, &seed),
            ["`seed`: 3 → 4 (the held-out images are drawn from it)"]
        );
        // The same counts, other files: said as such, with any setting.
        let moved = record(|v| {
            v["hyper"]["batch_size"] = 4.into();
            v["images_and_concepts"] = "1111111111111111".into();
            v["images"] = "2222222222222222".into();
        });
        let lines = changes(&base, &moved);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].starts_with("the images or their concepts: the same count, other files"));
        // A manifest's image moved to another concept may reorder the
        // concepts (their order of first appearance): both are said.
        let reordered = record(|v| {
            v["data"]["concepts"] = serde_json::json!(["b", "a", "c"]);
            v["images_and_concepts"] = "1111111111111111".into();
            v["images"] = "2222222222222222".into();
        });
        let lines = changes(&base, &reordered);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("the concepts: the same names in another order (a manifest's"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("one moved to another concept"),
            "{lines:?}"
        );
        // Sources and fractions as the workflow writes them; a float's
        // last bits are not shown; concepts as names that came and went.
        let data = record(|v| {
            v["data"]["eval"] = serde_json::json!({"images": {"kind": "folder", "path": "held"}});
            v["data"]["concepts"] = serde_json::json!(["a", "b", "d"]);
            v["hyper"]["per_item_lrate"] = (0.1f64 + 0.2).into();
        });
        assert_eq!(
            changes(&base, &data),
            [
                "`per_item_lrate`: 7.8125e-5 → 0.3",
                "`eval`: 0.25 → \"held\"",
                "the concepts: `d` new; `c` gone",
            ]
        );
        // A record from before `images` was kept cannot tell files from
        // the split.
        let older = base.replace(",\"images\":\"fedcba9876543210\"", "");
        assert!(older.len() < base.len());
        let split = record(|v| v["images_and_concepts"] = "1111111111111111".into());
        assert_eq!(
            changes(&older, &split),
            ["the images, their concepts or which are held out: the same counts, other files or another split"]
        );
        assert_eq!(
            changes("not json", &base),
            ["the checkpoint's record cannot be read"]
        );
        // A record saying which set held each image: the same split in
        // another order (a manifest's lines reordered) is said as the
        // order; with a fraction held out, the order draws another split.
        let sets = |v: &mut serde_json::Value| v["split"] = "aaaaaaaaaaaaaaaa".into();
        let ordered = record(sets);
        let reordered = record(|v| {
            sets(v);
            v["images_and_concepts"] = "1111111111111111".into();
        });
        let lines = changes(&ordered, &reordered);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("the order the images are listed in: the same images and split"),
            "{lines:?}"
        );
        let redrawn = record(|v| {
            v["split"] = "bbbbbbbbbbbbbbbb".into();
            v["images_and_concepts"] = "1111111111111111".into();
        });
        assert_eq!(
            changes(&ordered, &redrawn),
            [
                "which images are held out: the same images listed in another order (a manifest's \
              lines reordered), from which the seed draws another split"
            ]
        );
        // The same with another seed: said as the seed.
        let reseeded = record(|v| {
            v["seed"] = 4.into();
            v["split"] = "bbbbbbbbbbbbbbbb".into();
            v["images_and_concepts"] = "1111111111111111".into();
        });
        assert_eq!(
            changes(&ordered, &reseeded),
            ["`seed`: 3 → 4 (the held-out images are drawn from it)"]
        );
        // Checkpoints of earlier versions record no `split`: as before.
        assert_eq!(
            changes(&base, &redrawn),
            ["which images are held out: the same images, another split"]
        );
        // Other files under another fraction held out: the fraction does not
        // explain them, so both are said; more images explain themselves.
        let renamed = record(|v| {
            v["data"]["eval"] = serde_json::json!({"fraction": 0.2});
            v["data"]["eval_images"] = 5.into();
            v["data"]["train_images"] = 19.into();
            v["hyper"]["num_items_per_epoch"] = 19.into();
            v["images_and_concepts"] = "1111111111111111".into();
            v["images"] = "2222222222222222".into();
        });
        let lines = changes(&base, &renamed);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], "`eval`: 0.25 → 0.2");
        assert!(
            lines[1].starts_with("the images or their concepts"),
            "{lines:?}"
        );
        // Held-out images of their own: one more there is said as their
        // count, not also as other files, and the seed draws nothing.
        let own = |v: &mut serde_json::Value| {
            v["data"]["eval"] = serde_json::json!({"images": {"kind": "folder", "path": "held"}});
        };
        let base = record(own);
        let more = record(|v| {
            own(v);
            v["data"]["eval_images"] = 7.into();
            v["images_and_concepts"] = "1111111111111111".into();
            v["images"] = "2222222222222222".into();
        });
        assert_eq!(changes(&base, &more), ["the held-out images: 6 → 7"]);
        let moved = record(|v| {
            own(v);
            v["data"]["images"] = 23.into();
            v["data"]["train_images"] = 17.into();
            v["data"]["eval_images"] = 7.into();
            v["seed"] = 4.into();
            v["images_and_concepts"] = "1111111111111111".into();
            v["images"] = "2222222222222222".into();
        });
        assert_eq!(
            changes(&base, &moved),
            [
                "`seed`: 3 → 4",
                "the held-out images: 6 → 7",
                "the images of `train`: 24 → 23"
            ]
        );
        // `logreg` as written.
        let sigmoid = record(|v| v["hyper"]["loss"]["kind"] = "sigmoid".into());
        assert_eq!(changes(&record(|_| {}), &sigmoid), ["`logreg`: 0 → 1"]);
    }
}
