//! From resolved parameters to typed ones ([`crate::hyper`]): the one place
//! that reads a parameter by name after the prelude's checks. Every name read
//! here is in `Architecture::required_params` or `StepKindId::required_params`,
//! which a test keeps the prelude declaring with the kinds read.

use std::path::PathBuf;

use crate::hyper::{
    ClusteringParams, Count, Grid, HeadParams, Hyper, Index, Loss, Queries, SearchParams,
    StepParams,
};
use crate::spec::{Architecture, Derived, Num, ParamValue, StepKindId, TemplateSpec};
use crate::workflow::{Resolved, ResolvedParam};

/// Resolved parameters, read by name.
struct Lookup<'a> {
    params: &'a [ResolvedParam],
    seed: u64,
}

impl Lookup<'_> {
    fn get(&self, name: &str) -> Result<&Resolved, String> {
        self.params
            .iter()
            .find(|p| &*p.name == name)
            .map(|p| &p.value)
            .ok_or_else(|| format!("`{name}` is not given"))
    }

    fn num(&self, name: &str) -> Result<Num, String> {
        match self.get(name)? {
            Resolved::Value(ParamValue::Num(n)) => Ok(*n),
            Resolved::Derived(Derived::Seed) => Ok(Num::Int(self.seed as i64)),
            other => Err(format!("`{name}` is not a number ({other:?})")),
        }
    }

    fn float(&self, name: &str) -> Result<f64, String> {
        let x = self.num(name)?.as_f64();
        if x.is_finite() {
            Ok(x)
        } else {
            Err(format!("`{name}` = {x} is not a finite number"))
        }
    }

    fn u64(&self, name: &str) -> Result<u64, String> {
        match self.num(name)? {
            Num::Int(i) => u64::try_from(i).map_err(|_| format!("`{name}` = {i} is negative")),
            Num::Float(x) => Err(format!("`{name}` = {x} is not a whole number")),
        }
    }

    fn usize(&self, name: &str) -> Result<usize, String> {
        let n = self.u64(name)?;
        usize::try_from(n).map_err(|_| format!("`{name}` = {n} is too large for this machine"))
    }

    /// A positive count.
    fn positive(&self, name: &str) -> Result<usize, String> {
        match self.usize(name)? {
            0 => Err(format!("`{name}` is 0")),
            n => Ok(n),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, String> {
        match self.u64(name)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(format!("`{name}` = {n} is neither 0 nor 1")),
        }
    }

    fn count(&self, name: &str) -> Result<Count, String> {
        match self.get(name)? {
            Resolved::Derived(d @ (Derived::DatasetSize | Derived::NumConcepts)) => {
                Ok(Count::Derived(*d))
            }
            _ => Ok(Count::Value(self.u64(name)?)),
        }
    }

    fn keyword_or_path(&self, name: &str) -> Result<Result<&str, &str>, String> {
        match self.get(name)? {
            Resolved::Value(ParamValue::Keyword(k)) => Ok(Ok(k)),
            Resolved::Value(ParamValue::Path(p)) => Ok(Err(p)),
            other => Err(format!("`{name}` is not a keyword or a path ({other:?})")),
        }
    }
}

/// A template's hyperparameters, typed.
pub(crate) fn hyper(t: &TemplateSpec, params: &[ResolvedParam]) -> Result<Hyper, String> {
    let architecture = t.architecture;
    let p = Lookup { params, seed: 0 };
    let loss = match architecture {
        Architecture::Resnet101AngularMargin => Loss::AngularMargin {
            scale: p.float("angular_scale")?,
            margin: p.float("angular_margin")?,
            embeddings_size: p.positive("embeddings_size")?,
        },
        Architecture::BnInception | Architecture::Resnext50 => {
            if p.flag("logreg")? {
                Loss::Sigmoid
            } else {
                Loss::Softmax
            }
        }
    };
    let (weight_decay, decayed, conv_init) = architecture.recipe();
    Ok(Hyper {
        architecture,
        image_size: p.positive("image_size")?,
        batch_size: p.positive("batch_size")?,
        num_epochs: p.u64("num_epochs")?,
        init_epochs: p.u64("init_epochs")?,
        step_epochs: p.u64("step_epochs")?,
        per_item_lrate: p.float("per_item_lrate")?,
        lr_decay: t.lr_decay,
        momentum: crate::spec::MOMENTUM,
        weight_decay,
        decayed,
        conv_init,
        num_items_per_epoch: p.count("num_items_per_epoch")?,
        loss,
        image_sizes: grid(t, "image_size")?,
    })
}

/// An integer parameter's grid, from its declaration.
fn grid(t: &TemplateSpec, name: &str) -> Result<Grid, String> {
    let spec = t
        .param(name)
        .ok_or_else(|| format!("the template declares no `{name}`"))?;
    let whole = |n: &Option<crate::spec::Declared<Num>>| match n.as_ref().map(|d| d.value) {
        Some(Num::Int(i)) => u64::try_from(i).ok(),
        _ => None,
    };
    Ok(Grid {
        min: whole(&spec.min).unwrap_or(1),
        step: whole(&spec.step).unwrap_or(1).max(1),
        max: whole(&spec.max),
    })
}

/// A step's parameters, typed; `resolve` makes a path absolute.
pub(crate) fn step_params(
    kind: StepKindId,
    params: &[ResolvedParam],
    seed: u64,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<StepParams, String> {
    let p = Lookup { params, seed };
    Ok(match kind {
        StepKindId::ClassifierHead => StepParams::ClassifierHead(HeadParams {
            logreg: p.flag("logreg")?,
            epochs: p.positive("epochs")?,
            learning_rate: p.float("learning_rate")?,
            l2: p.float("l2")?,
            batch_size: p.positive("batch_size")?,
        }),
        StepKindId::Clustering => StepParams::Clustering(ClusteringParams {
            k: p.count("k")?,
            iterations: p.positive("iterations")?,
            inits: p.positive("inits")?,
            tolerance: p.float("tolerance")?,
            seed: p.u64("seed")?,
        }),
        StepKindId::VisualSearch => StepParams::VisualSearch(SearchParams {
            top_k: p.positive("top_k")?,
            queries: match p.keyword_or_path("queries")? {
                Ok("train") => Queries::Train,
                Ok("eval") => Queries::Eval,
                Ok(other) => return Err(format!("`queries` = {other} is not a known keyword")),
                Err(path) => Queries::Folder(resolve(path)),
            },
            index: match p.keyword_or_path("index")? {
                Ok("train") => Index::Train,
                Ok("all") => Index::All,
                Ok(other) => return Err(format!("`index` = {other} is not a known keyword")),
                Err(path) => Index::Table(resolve(path)),
            },
        }),
    })
}
