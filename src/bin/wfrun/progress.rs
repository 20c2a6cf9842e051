//! What `wfrun FILE.wf` shows while a run goes: a live line of steps on a
//! terminal, one line per epoch and step, warnings, and the summary at the end.

use std::time::Instant;
use wfrun::paths::ShowPath;

use wfrun::exec::sweep::{SweepSummary, TrialStatus};
use wfrun::exec::{Event, RunSummary, StepOutcome};
use wfrun::Workflow;

/// The run's progress as a person sees it on standard error.
pub struct Progress {
    /// Standard error is a terminal: one line is redrawn as steps go.
    live: bool,
    started: Instant,
    total_steps: u64,
    done_steps: u64,
    /// The images being embedded and since when.
    embedding: Option<(&'static str, Instant)>,
    /// A sweep's objective, shown on each epoch line when the line does not
    /// show it already.
    objective: Option<wfrun::sweep::Metric>,
}

pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// One line of a step's headline metrics.
fn step_line(outcome: &StepOutcome) -> String {
    wfrun::exec::results::headline_text(&outcome.metrics.headline())
}

impl Progress {
    pub fn new(live: bool) -> Progress {
        Progress {
            live,
            started: Instant::now(),
            total_steps: 0,
            done_steps: 0,
            embedding: None,
            objective: None,
        }
    }

    /// Clears the live line before a line of its own.
    pub fn clear_line(&self) {
        if self.live {
            err!("\r\x1b[2K");
        }
    }

    pub fn show(&mut self, e: &Event) {
        match e {
            Event::Started { .. } => self.started(e),
            Event::Step { .. } => self.step(e),
            Event::BadImage { path, reason } => {
                self.clear_line();
                errln!("warning: skipped `{}`: {reason}", path.shown());
            }
            Event::SmallImages { .. } => small_images(e),
            Event::Epoch {
                train_loss, eval, ..
            } => {
                self.clear_line();
                let mut line = epoch_line(e);
                use wfrun::sweep::Metric;
                if let Some(m) = self
                    .objective
                    .filter(|m| !matches!(m, Metric::MapAtR | Metric::Accuracy))
                {
                    if let Some((v, _)) = wfrun::exec::sweep::objective_value(m, *train_loss, eval)
                    {
                        line.push_str(&format!("; objective {} {v:.4}", m.name()));
                    }
                }
                errln!("{line}");
            }
            Event::StepFinished { outcome } => errln!(
                "step {}: {} ({})",
                outcome.name,
                step_line(outcome),
                duration(outcome.seconds)
            ),
            Event::StepFailed { step, message } => {
                errln!("error: step `{step}` did not run: {message}")
            }
            Event::Cleared { output, removed } => errln!(
                "removed the previous run's {} from {}",
                removed.join(", "),
                output.shown()
            ),
            Event::Finished { output } => errln!("wrote {}", output.shown()),
            Event::Embedding { split, done, total } => self.embedding(split, *done, *total),
            Event::StoppedEarly {
                epoch,
                epochs,
                reason,
            } => {
                self.clear_line();
                errln!("stopped after epoch {epoch} of {epochs}: {reason}");
            }
            Event::TrialStarted {
                name,
                index,
                trials,
                values,
                objective,
            } => {
                self.objective = Some(*objective);
                self.clear_line();
                errln!("\n{name} ({index} of {trials}): {values}");
            }
            Event::TrialSkipped { name, why } => errln!("{name}: skipped, {why}"),
            Event::TrialEnded { outcome } => {
                self.clear_line();
                let how = match (outcome.status, outcome.objective) {
                    (TrialStatus::Finished, Some(v)) => format!("finished, objective {v:.4}"),
                    (TrialStatus::Finished, None) => {
                        "finished; the objective was not measured".into()
                    }
                    (TrialStatus::Stopped, _) => format!("stopped after epoch {}", outcome.epochs),
                    (TrialStatus::Diverged, _) => "diverged".into(),
                };
                match &outcome.message {
                    Some(m) if outcome.status == TrialStatus::Diverged => {
                        errln!("{}: {how}: {m}; the sweep goes on", outcome.name)
                    }
                    _ => errln!("{}: {how}", outcome.name),
                }
            }
        }
    }

    /// A redrawn line while images are embedded, cleared when they are.
    fn embedding(&mut self, split: &'static str, done: usize, total: usize) {
        if !self.live {
            return;
        }
        let started = match self.embedding {
            Some((s, at)) if s == split => at,
            _ => {
                let now = Instant::now();
                self.embedding = Some((split, now));
                now
            }
        };
        if done >= total {
            self.clear_line();
            self.embedding = None;
            return;
        }
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let eta = (total - done) as f64 / rate.max(1e-9);
        let what = if split == "images" {
            String::from("embedding")
        } else {
            format!("embedding the {split} images")
        };
        err!(
            "\r\x1b[2K{what}  {done}/{total}  {rate:.1} img/s  ETA {}",
            duration(eta)
        );
    }

    fn started(&mut self, e: &Event) {
        let Event::Started {
            workflow,
            concepts,
            train_images,
            eval_images,
            epochs,
            steps_per_epoch,
            first_epoch,
            epoch_estimate_s,
        } = e
        else {
            return;
        };
        self.total_steps = (epochs + 1).saturating_sub(*first_epoch) * steps_per_epoch;
        if *epochs == 0 {
            let concepts = match concepts {
                0 => "unlabelled images".to_string(),
                n => format!("{n} concepts"),
            };
            errln!(
                "embedding `{workflow}` with its base model: {concepts}, \
                 {train_images} training and {eval_images} evaluation images"
            );
        } else if first_epoch > epochs {
            errln!(
                "`{workflow}` finished training its {epochs} epoch{} before: \
                 {concepts} concepts, {train_images} training and {eval_images} evaluation images",
                if *epochs == 1 { "" } else { "s" }
            );
        } else {
            let estimate = epoch_estimate_s.map_or(String::new(), |s| {
                let left = (epochs + 1).saturating_sub(*first_epoch) as f64;
                format!(
                    " (about {} an epoch, {} in all, on this machine)",
                    wfrun::cost::duration_text(s),
                    wfrun::cost::duration_text(s * left)
                )
            });
            errln!(
                "training `{workflow}`: {concepts} concepts, {train_images} training and {eval_images} evaluation images, \
                 epochs {first_epoch}–{epochs} × {steps_per_epoch} steps{estimate}"
            );
        }
    }

    fn step(&mut self, e: &Event) {
        let Event::Step {
            epoch,
            step,
            steps,
            loss,
            learning_rate,
            images_per_s,
        } = e
        else {
            return;
        };
        self.done_steps += 1;
        if self.live {
            let elapsed = self.started.elapsed().as_secs_f64();
            let left = self.total_steps.saturating_sub(self.done_steps);
            let eta = elapsed / self.done_steps as f64 * left as f64;
            err!(
                "\r\x1b[2Kepoch {epoch}  step {step}/{steps}  loss {loss:.4}  lr {}  {images_per_s:.1} img/s  ETA {}",
                wfrun::spec::fmt_float(*learning_rate),
                duration(eta)
            );
        }
    }

    /// The summary printed on standard output when the run finished.
    pub fn finished(&self, workflow: &Workflow, s: &RunSummary) -> String {
        let verb = if workflow.base.is_some() {
            "embedded"
        } else {
            "trained"
        };
        let took = duration(self.started.elapsed().as_secs_f64());
        let mut out = format!("\n{} {verb} in {took}", workflow.name);
        if let Some(e) = &s.final_eval {
            if let Some(a) = e.accuracy {
                out.push_str(&format!("; held-out accuracy {:.1}%", a * 100.0));
            }
            if let Some(m) = e.mean_average_precision {
                out.push_str(&format!("; held-out mAP {m:.3}"));
            }
            if let Some(r) = e.recall_at_1 {
                out.push_str(&format!("; recall@1 {r:.3}"));
            }
            for (what, judged) in [
                ("held-out embeddings", &e.embeddings),
                ("unseen concepts", &e.unseen),
            ] {
                if let Some(j) = judged {
                    out.push_str(&format!(
                        "\n  {what} ({} images, {} concepts; 95% intervals): {}",
                        j.images,
                        j.concepts,
                        j.text()
                    ));
                }
            }
        }
        if workflow.data.unseen.is_some()
            && s.final_eval.as_ref().is_none_or(|e| e.unseen.is_none())
        {
            out.push_str(
                "\n  unseen concepts: not judged, fewer than two of them have a readable image",
            );
        }
        let file = |name: &str| s.output.join(name).shown().to_string();
        match &workflow.base {
            Some(b) => out.push_str(&format!("\n  base model  {}", b.weights.shown())),
            None => out.push_str(&format!(
                "\n  model       {}\n  metrics     {}",
                file("model.safetensors"),
                file("metrics.jsonl"),
            )),
        }
        out.push_str(&format!(
            "\n  embeddings  {}",
            file("embeddings.safetensors")
        ));
        if s.bad_images > 0 {
            let n = s.bad_images;
            out.push_str(&match n {
                1 => "\n  1 unreadable image was skipped".to_string(),
                n => format!("\n  {n} unreadable images were skipped"),
            });
        }
        for step in &s.steps {
            out.push_str(&format!("\n  step        {}", step.folder.shown()));
        }
        let report = s.output.join("report.html");
        if report.is_file() {
            out.push_str(&format!("\n  report      {}", report.shown()));
        }
        out
    }
}

fn small_images(e: &Event) {
    let Event::SmallImages {
        image_size,
        count,
        smallest,
        median_side,
        fitting_size,
    } = e
    else {
        return;
    };
    let Some((path, w, h)) = smallest.first() else {
        return;
    };
    let mut line = format!(
        "warning: {count} image(s) have a shorter side below `image_size` = {image_size} and are upscaled; \
         the smallest is `{}` ({w}×{h})",
        path.shown()
    );
    if let Some(fits) = fitting_size {
        line.push_str(&format!(
            "\n  half the images are {median_side} px or smaller: `image_size = {fits}` would not upscale them"
        ));
    }
    errln!("{line}");
}

fn epoch_line(e: &Event) -> String {
    let Event::Epoch {
        epoch,
        train_loss,
        eval,
        seconds,
        data_wait,
        ..
    } = e
    else {
        return String::new();
    };
    let mut line = format!("epoch {epoch}: train loss {train_loss:.4}");
    for h in eval.headline().iter().filter(|h| !h.whole) {
        line.push_str(&format!(", {h}"));
    }
    line.push_str(&format!(
        " ({}, waiting for images {:.0}%)",
        duration(*seconds),
        data_wait * 100.0
    ));
    line
}

/// A sweep's ranking as the last lines on standard output.
pub fn sweep_summary(workflow: &Workflow, s: &SweepSummary, one_trial: bool) -> String {
    let metric = s.objective.metric.name();
    let mut out = String::new();
    let total = s.ranked.len() + s.pending.len();
    out.push_str(&format!(
        "sweep {}: {} of {total} trials done, ranked by {}\n",
        workflow.name,
        s.ranked.len(),
        s.objective.describe()
    ));
    if !s.candidates.is_empty() {
        out.push_str("  candidates, by the mean of their repeats:\n");
        for (rank, c) in s.candidates.iter().enumerate() {
            let values: Vec<String> = c.values.iter().map(|(n, v)| format!("{n} = {v}")).collect();
            let mean = match (c.mean, c.low, c.high) {
                (Some(m), Some(l), Some(h)) => {
                    format!(
                        "{metric} mean {m:.4} [{l:.4}, {h:.4}] of {} finished",
                        c.finished
                    )
                }
                _ => format!("no finished repeat reported {metric}"),
            };
            out.push_str(&format!(
                "  {:>2}. {}  {mean} ({})\n",
                rank + 1,
                values.join(", "),
                c.trials.join(", ")
            ));
        }
        out.push_str("  trials:\n");
    }
    for (rank, o) in s.ranked.iter().enumerate() {
        let values: Vec<String> = o.values.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        let result = match (o.status, o.objective) {
            (TrialStatus::Finished, Some(v)) => match o.interval {
                Some((lo, hi)) => format!("{metric} {v:.4} [{lo:.4}, {hi:.4}]"),
                None => format!("{metric} {v:.4}"),
            },
            (TrialStatus::Finished, None) => format!("{metric} not reported"),
            (TrialStatus::Stopped, _) => format!("stopped after epoch {}", o.epochs),
            (TrialStatus::Diverged, _) => "diverged".to_string(),
        };
        out.push_str(&format!(
            "  {:>2}. {}  {}  {result}\n",
            rank + 1,
            o.name,
            values.join(", ")
        ));
    }
    if !s.pending.is_empty() {
        let shown: Vec<&str> = s.pending.iter().take(10).map(String::as_str).collect();
        let more = match s.pending.len() {
            n if n > 10 => format!(" and {} more", n - 10),
            _ => String::new(),
        };
        out.push_str(&format!("  not done: {}{more}\n", shown.join(", ")));
    }
    match (&s.best, one_trial) {
        (_, true) if s.pending.is_empty() => out.push_str(
            "every trial is done: run the workflow with `--resume` to rank them and link the best",
        ),
        (_, true) => out.push_str(
            "run the workflow with `--resume` once its trials are done: it ranks them and links the best",
        ),
        (Some(best), false) => {
            // `base` paths are relative to the workflow's folder.
            let link = s.output.join("best");
            let base = link.strip_prefix(&workflow.base_dir).unwrap_or(&link);
            out.push_str(&format!(
                "best: {} (linked as {}); a workflow beside this one uses it with `base = \"{}\"`",
                best.shown(),
                link.shown(),
                base.shown()
            ))
        }
        (None, false) if s.ranked.iter().any(|o| o.status == TrialStatus::Finished) => out.push_str(
            &format!("no finished trial reported {metric}: nothing to name best"),
        ),
        (None, false) if !s.pending.is_empty() => {
            out.push_str("no trial finished yet: nothing to name best")
        }
        (None, false) => out.push_str("no trial finished: nothing to name best"),
    }
    out
}
