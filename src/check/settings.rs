//! The top-level settings (`device`, `output`, `seed`, `base`), the base
//! model, and the `data` block.

use super::*;
use crate::paths::ShowPath;

impl Checker<'_> {
    pub(super) fn top_settings(
        &mut self,
        settings: &[&Setting],
        template: Option<&TemplateSpec>,
        name: &str,
    ) -> (Device, PathBuf, u64, Option<(PathBuf, Span)>) {
        let mut base = None;
        let mut device = Device::Cpu;
        let mut output = normalize(&self.base_dir.join("runs").join(name));
        let mut seed = 0u64;
        let mut seen = crate::spec::declare::Seen::default();
        for s in settings {
            let key = s.name.name.as_str();
            if TOP_SETTINGS.contains(&key)
                && seen_twice(&mut seen, &s.name, "set", self.diagnostics)
            {
                continue;
            }
            match key {
                "device" => {
                    if let Some(d) = self.device(&s.value) {
                        device = d;
                    }
                }
                "output" => match &s.value.kind {
                    ValueKind::Str(p) => output = self.resolve(p),
                    other => self.push(wrong(s, "a path in quotes", other)),
                },
                "base" => match &s.value.kind {
                    ValueKind::Str(p) => base = Some((self.resolve(p), s.value.span)),
                    ValueKind::Invalid => {}
                    other => self.push(wrong(
                        s,
                        "a path in quotes (a run folder or its `model.safetensors`)",
                        other,
                    )),
                },
                "seed" => match &s.value.kind {
                    ValueKind::Int(i) if *i >= 0 => seed = *i as u64,
                    ValueKind::Int(_) => self.push(
                        Diagnostic::error(
                            Code::OutOfRange,
                            s.value.span,
                            "`seed` cannot be negative",
                        )
                        .with_label("below 0")
                        .with_help("use a whole number from 0 up"),
                    ),
                    ValueKind::Invalid => {}
                    other => self.push(wrong(s, "a whole number", other)),
                },
                _ => {
                    let d = self.unknown_top(s, template);
                    self.push(d);
                }
            }
        }
        (device, output, seed, base)
    }

    /// Reads the base model's `model.json`. It is read even without
    /// file-system checks: like an import, it decides the template.
    pub(super) fn base_model(&mut self, path: &Path, span: Span) -> Option<BaseModel> {
        let (weights, meta_path) = if path.is_dir() {
            (path.join("model.safetensors"), path.join("model.json"))
        } else {
            (path.to_path_buf(), path.with_extension("json"))
        };
        let shown = path.shown();
        if !path.exists() {
            let help = fs::relative_help(self);
            self.push(
                Diagnostic::error(Code::PathNotFound, span, format!("the base model `{shown}` does not exist"))
                    .with_label("no such path")
                    .with_help(format!("name the folder of a finished run (it holds `model.safetensors` and `model.json`); {help}")),
            );
            return None;
        }
        let mut fail = |message: String, help: &str| {
            self.push(
                Diagnostic::error(Code::BaseModel, span, message)
                    .with_label("not a model wfrun trained")
                    .with_help(help.to_string()),
            );
        };
        // A file named directly must be the weights (`model.json`, a run's
        // embeddings or `/dev/null` would otherwise be read as them).
        if !path.is_dir() && path.extension().is_none_or(|e| e != "safetensors") {
            let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
            let help = match folder {
                Some(f) if f.join("model.safetensors").is_file() => format!(
                    "name the run's folder `{}` or its `{}`",
                    f.shown(),
                    f.join("model.safetensors").shown()
                ),
                _ => "name the folder of a finished run, or its `model.safetensors`".to_string(),
            };
            fail(format!("`{shown}` is not a model's weights"), &help);
            return None;
        }
        let named_weights =
            path.is_dir() || path.file_name().is_some_and(|n| n == "model.safetensors");
        if !weights.is_file() {
            let folder = weights.parent().unwrap_or(Path::new("."));
            let sweep = folder.join("sweep.json").is_file() || folder.join("best").exists();
            let stopped = folder.join("trial.json").is_file();
            let help = if sweep {
                format!(
                    "`{}` is a sweep's folder: its best trial is `{}`",
                    folder.shown(),
                    folder.join("best").shown()
                )
            } else if stopped {
                "a sweep's trial stopped early or diverged writes no model: use the sweep's `best`"
                    .to_string()
            } else {
                "a finished run's folder holds `model.safetensors`; was the run stopped before it finished? `--resume` finishes it".to_string()
            };
            fail(format!("`{}` does not exist", weights.shown()), &help);
            return None;
        }
        let text = match std::fs::read_to_string(&meta_path) {
            Ok(t) => t,
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "it is missing".to_string(),
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied (this user may not read it)".to_string()
                    }
                    _ => e.to_string(),
                };
                let help = if named_weights {
                    "a base model needs the `model.json` its run wrote beside it".to_string()
                } else {
                    // `RUN/embeddings.safetensors` and the like: not a model.
                    "name the folder of a finished run, or its `model.safetensors` (with the `model.json` its run wrote beside it)".to_string()
                };
                fail(format!("cannot read `{}`: {why}", meta_path.shown()), &help);
                return None;
            }
        };
        match ModelMeta::from_json(&text) {
            Ok(meta) => Some(BaseModel {
                weights,
                meta_path,
                meta,
            }),
            Err(e) => {
                fail(
                    format!("`{}` does not describe a model: {e}", meta_path.shown()),
                    "use the `model.json` a wfrun run wrote",
                );
                None
            }
        }
    }

    /// The template a base model was trained with: its own when this file or
    /// the prelude declares it, else the built-in one of its architecture.
    pub(super) fn base_template(&self, base: &BaseModel) -> Option<TemplateSpec> {
        self.template(&base.meta.template)
            .filter(|t| t.architecture == base.meta.architecture)
            .or_else(|| {
                self.builtin
                    .templates
                    .iter()
                    .find(|t| t.architecture == base.meta.architecture)
            })
            .cloned()
    }

    pub(super) fn unknown_top(&self, s: &Setting, template: Option<&TemplateSpec>) -> Diagnostic {
        let name = &s.name.name;
        let d = Diagnostic::error(
            Code::UnknownSetting,
            s.name.span,
            format!("unknown setting `{name}`"),
        )
        .with_label("not a top-level setting");
        if let Some(t) = template.filter(|t| t.param(name).is_some()) {
            return d.with_help(format!(
                "`{name}` is a hyperparameter of `{}`: set it inside `use {} {{ .. }}`",
                t.name, t.name
            ));
        }
        if self
            .builtin
            .templates
            .iter()
            .chain(&self.user)
            .any(|t| t.param(name).is_some())
        {
            return d.with_help(format!(
                "`{name}` is a hyperparameter: set it inside the `use TEMPLATE {{ .. }}` block"
            ));
        }
        if DATA_SETTINGS.contains(&name.as_str()) {
            return d.with_help(format!("`{name}` goes inside the `data {{ .. }}` block"));
        }
        if super::sweep::SWEEP_SETTINGS.iter().any(|(n, _)| n == name) {
            return d.with_help(format!("`{name}` goes inside a `sweep {{ .. }}` block"));
        }
        d.with_suggestion(s.name.span, did_you_mean(name, TOP_SETTINGS), || {
            format!("the top-level settings are {}", list(&TOP_SETTINGS))
        })
    }

    pub(super) fn device(&mut self, value: &Value) -> Option<Device> {
        let device = match &value.kind {
            ValueKind::Name(n) if n == "cpu" => Device::Cpu,
            ValueKind::Name(n) if n == "auto" => Device::Auto,
            ValueKind::Call { name, args } if name.name == "cuda" || name.name == "metal" => {
                let index = match args.as_slice() {
                    [Value {
                        kind: ValueKind::Int(i),
                        ..
                    }] if *i >= 0 => *i as usize,
                    _ => {
                        self.push(
                            Diagnostic::error(
                                Code::BadDevice,
                                value.span,
                                format!("`{}` takes one device index", name.name),
                            )
                            .with_label("expected one whole number from 0 up")
                            .with_help(format!(
                                "write `device = {}(0)` for the first device",
                                name.name
                            )),
                        );
                        return None;
                    }
                };
                if name.name == "cuda" {
                    Device::Cuda(index)
                } else {
                    Device::Metal(index)
                }
            }
            ValueKind::Invalid => return None,
            other => {
                let written = match other {
                    ValueKind::Name(n) => Some(n.as_str()),
                    ValueKind::Call { name, .. } => Some(name.name.as_str()),
                    ValueKind::Str(s) => Some(s.as_str()),
                    _ => None,
                };
                let suggestion = written
                    .and_then(|w| did_you_mean(w, ["cpu", "auto", "cuda", "metal"]))
                    .map(|x| match x {
                        "cuda" | "metal" => format!("{x}(0)"),
                        x => x.to_string(),
                    });
                self.push(
                    Diagnostic::error(
                        Code::BadDevice,
                        value.span,
                        format!("{} is not a device", other.describe()),
                    )
                    .with_label("unknown device")
                    .with_suggestion(value.span, suggestion.as_deref(), || {
                        "write `device = cpu`, `auto`, `cuda(N)` or `metal(N)`".to_string()
                    }),
                );
                return None;
            }
        };
        let missing = match device {
            Device::Cuda(_) if !cfg!(feature = "cuda") => Some(("CUDA", "cuda")),
            Device::Metal(_) if !cfg!(feature = "metal") => Some(("Metal", "metal")),
            _ => None,
        };
        if let Some((what, feature)) = missing {
            self.push(
                Diagnostic::error(Code::DeviceUnavailable, value.span, format!("this build of wfrun has no {what} support"))
                    .with_label(format!("needs the `{feature}` feature"))
                    .with_help(format!("build wfrun with `--features {feature}`, or use `device = cpu` (or `auto`, which falls back to the CPU)")),
            );
            return None;
        }
        Some(device)
    }

    pub(super) fn data(
        &mut self,
        d: &DataDecl,
        template: Option<&TemplateSpec>,
    ) -> Option<DataSpec> {
        let settings = self.block_settings(
            Some(&d.body),
            "a `data` block holds settings, not `param` declarations",
        );
        let mut train = None;
        let mut eval = Eval::Fraction(DEFAULT_EVAL_FRACTION);
        let mut weights = None;
        let mut unseen = None;
        let mut augment = crate::workflow::Augment::default();
        let mut seen = crate::spec::declare::Seen::default();
        // A setting reported as wrong keeps its default; the paths are still
        // worth checking, so the spec is returned all the same.
        for s in settings {
            let key = s.name.name.as_str();
            if seen_twice(&mut seen, &s.name, "set", self.diagnostics) {
                continue;
            }
            match key {
                "train" => train = self.image_source(s).or(train),
                "eval" => eval = self.eval_setting(s).unwrap_or(eval),
                "unseen" => unseen = self.image_source(s),
                "augment" => augment = self.augment_setting(s).unwrap_or(augment),
                "weights" => match &s.value.kind {
                    ValueKind::Str(p) => weights = Some(self.resolve(p)),
                    ValueKind::Invalid => {}
                    other => self.push(wrong(s, "a path in quotes (a safetensors file)", other)),
                },
                _ => {
                    let d = unknown_data_setting(s, template);
                    self.push(d);
                }
            }
        }
        if train.is_none() && !seen.contains("train") && !self.broken_within(Some(d.body.span)) {
            self.push(
                Diagnostic::error(Code::Missing, d.keyword, "the `data` block names no training images")
                    .with_label("`train` is missing")
                    .with_help("add `train = \"path/to/images\"` (one sub-folder per concept) or `train = manifest(\"images.csv\")`"),
            );
        }
        Some(DataSpec {
            train: train?,
            eval,
            weights,
            unseen,
            augment,
        })
    }

    /// `augment`: `crop_flip`, `crop` or `none`.
    fn augment_setting(&mut self, s: &Setting) -> Option<crate::workflow::Augment> {
        use crate::workflow::Augment;
        let names = Augment::NAMES.join("`, `");
        match &s.value.kind {
            ValueKind::Name(n) => Augment::from_name(n).or_else(|| {
                let suggestion = crate::suggest::did_you_mean(n, Augment::NAMES.iter().copied());
                self.push(
                    Diagnostic::error(
                        Code::WrongType,
                        s.value.span,
                        format!("`{n}` is not a way to augment images"),
                    )
                    .with_label("unknown augmentation")
                    .with_suggestion(s.value.span, suggestion, || {
                        format!("write `augment = ` one of `{names}`")
                    }),
                );
                None
            }),
            ValueKind::Invalid => None,
            other => {
                self.push(wrong(s, &format!("one of `{names}`"), other));
                None
            }
        }
    }

    /// `eval`: a held-out fraction, or images of their own.
    fn eval_setting(&mut self, s: &Setting) -> Option<Eval> {
        match &s.value.kind {
            ValueKind::Float(f) if *f > 0.0 && *f < 1.0 => Some(Eval::Fraction(*f)),
            ValueKind::Float(_) | ValueKind::Int(_) => {
                self.push(
                    Diagnostic::error(Code::OutOfRange, s.value.span, "a held-out fraction lies strictly between 0 and 1")
                        .with_label("not between 0 and 1")
                        .with_help("write e.g. `eval = 0.1` to hold out a tenth of each concept's images, or a folder `eval = \"path\"`"),
                );
                None
            }
            _ => self.image_source(s).map(Eval::Images),
        }
    }

    pub(super) fn image_source(&mut self, s: &Setting) -> Option<ImageSource> {
        match &s.value.kind {
            ValueKind::Str(p) => Some(ImageSource::Folder(self.resolve(p))),
            ValueKind::Call { name, args } if name.name == "manifest" => match args.as_slice() {
                [Value {
                    kind: ValueKind::Str(p),
                    ..
                }] => Some(ImageSource::Manifest(self.resolve(p))),
                _ => {
                    self.push(
                        Diagnostic::error(
                            Code::WrongType,
                            s.value.span,
                            "`manifest` takes one path in quotes",
                        )
                        .with_label("expected `manifest(\"file.csv\")`"),
                    );
                    None
                }
            },
            ValueKind::Invalid => None,
            other => {
                self.push(wrong(
                    s,
                    "a folder path in quotes or `manifest(\"file\")`",
                    other,
                ));
                None
            }
        }
    }
}

pub(super) fn data_decl_of(module: &Module) -> Option<&DataDecl> {
    module.items.iter().find_map(|i| match i {
        Item::Data(d) => Some(d),
        _ => None,
    })
}

/// Spans of the data block's settings, by name, for file-system diagnostics.
pub(super) fn data_decl_spans(d: Option<&DataDecl>) -> HashMap<String, Span> {
    d.map(|d| {
        d.body
            .settings()
            .map(|s| (s.name.name.clone(), s.value.span))
            .collect()
    })
    .unwrap_or_default()
}

pub(super) fn wrong(s: &Setting, expected: &str, found: &ValueKind) -> Diagnostic {
    let d = Diagnostic::error(
        Code::WrongType,
        s.value.span,
        format!(
            "`{}` expects {expected}, found {}",
            s.name.name,
            found.describe()
        ),
    )
    .with_label(format!("expected {expected}"));
    match found {
        ValueKind::Name(n) if expected.contains("path") => d.with_help(format!(
            "write paths in quotes: `{} = \"{n}\"`",
            s.name.name
        )),
        _ => d,
    }
}

/// A setting the `data` block does not know: a hyperparameter written here,
/// or a misspelling.
fn unknown_data_setting(s: &Setting, template: Option<&TemplateSpec>) -> Diagnostic {
    let key = s.name.name.as_str();
    let d = Diagnostic::error(
        Code::UnknownSetting,
        s.name.span,
        format!("unknown data setting `{key}`"),
    )
    .with_label("not a data setting");
    if template.is_some_and(|t| t.param(key).is_some()) {
        d.with_help(format!(
            "`{key}` is a hyperparameter: set it inside the `use` block"
        ))
    } else {
        d.with_suggestion(s.name.span, did_you_mean(key, DATA_SETTINGS), || {
            format!("the data settings are {}", list(&DATA_SETTINGS))
        })
    }
}
