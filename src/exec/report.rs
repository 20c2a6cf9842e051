//! The run's pictures and `report.html`.

use crate::paths::ShowPath;
use std::fmt::Write as _;
use std::path::Path;

use candle_core::Tensor;

use super::metrics::{epoch_rows, Embedded};
use super::pictures::{self, esc};
use super::results::{headline_text, StepMetrics};
use super::sets::DataSets;
use super::steps::Extras;
use super::{folder, RunError, RunSummary};
use crate::plan::Plan;

/// A picture: its file under `pictures/`, its heading, its SVG.
type Picture = (String, String, String);

/// Draws the run's pictures and writes `report.html`.
pub(super) fn write(
    plan: &Plan,
    sets: &DataSets,
    embedded: [&Embedded; 2],
    summary: &RunSummary,
    extras: &[Extras],
) -> Result<(), RunError> {
    let out = &plan.output;
    let mut pics: Vec<Picture> = Vec::new();
    if plan.base.is_none() {
        // The whole log: a resumed run's earlier epochs too.
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        if let Some(svg) = pictures::training_curves(&epoch_rows(&log)) {
            pics.push(("training.svg".into(), "Training".into(), svg));
        }
    }
    projections(plan, sets, embedded, summary, extras, &mut pics)?;
    for (outcome, extra) in summary.steps.iter().zip(extras) {
        if let StepMetrics::ClassifierHead(m) = &outcome.metrics {
            if let Some(matrix) = m.eval.as_ref().and_then(|e| e.confusion.as_ref()) {
                pics.push((
                    format!("confusion_{}.svg", outcome.name),
                    format!("Confusion matrix ({})", outcome.name),
                    pictures::confusion(
                        &format!("Held-out confusion matrix ({})", outcome.name),
                        matrix,
                        &sets.concepts,
                    ),
                ));
            }
        }
        if let Some(rows) = &extra.grid {
            pics.push((
                format!("search_{}.svg", outcome.name),
                format!("Visual search ({})", outcome.name),
                pictures::search_grid(&format!("Nearest neighbours ({})", outcome.name), rows),
            ));
        }
    }
    let html = summary_table(plan, sets, embedded, summary);
    write_report(out, &format!("wfrun: {}", plan.workflow), &html, &pics)
}

/// The embeddings on two principal components, by concept and by each
/// clustering step's clusters.
fn projections(
    plan: &Plan,
    sets: &DataSets,
    [train, eval]: [&Embedded; 2],
    summary: &RunSummary,
    extras: &[Extras],
    pics: &mut Vec<Picture>,
) -> Result<(), RunError> {
    let parts: Vec<Tensor> = [train, eval]
        .iter()
        .filter_map(|e| e.matrix.clone())
        .collect();
    if parts.is_empty() {
        return Ok(());
    }
    let all = Tensor::cat(&parts, 0)?;
    let points = pictures::pca_2d(&all, plan.seed)?;
    let concepts: Vec<&Vec<usize>> = train.concepts.iter().chain(&eval.concepts).collect();
    let mut names = sets.concepts.clone();
    let unknown = names.len();
    if concepts.iter().any(|c| c.is_empty()) {
        names.push("no concept".into());
    }
    let groups: Vec<usize> = concepts
        .iter()
        .map(|c| c.first().copied().unwrap_or(unknown))
        .collect();
    pics.push((
        "embeddings_by_concept.svg".into(),
        "Embeddings by concept".into(),
        pictures::scatter("Embeddings coloured by concept", &points, &groups, &names),
    ));
    for (outcome, extra) in summary.steps.iter().zip(extras) {
        if let Some(a) = &extra.assignments {
            let groups: Vec<usize> = a.iter().map(|&c| c as usize).collect();
            let k = groups.iter().max().map_or(0, |m| m + 1);
            let names: Vec<String> = (0..k).map(|c| format!("cluster {c}")).collect();
            pics.push((
                format!("clusters_{}.svg", outcome.name),
                format!("Embeddings by cluster ({})", outcome.name),
                pictures::scatter(
                    &format!("Embeddings coloured by cluster ({})", outcome.name),
                    &points,
                    &groups,
                    &names,
                ),
            ));
        }
    }
    Ok(())
}

/// The report's table: what ran, on which images, what it measured.
fn summary_table(
    plan: &Plan,
    sets: &DataSets,
    [train, eval]: [&Embedded; 2],
    summary: &RunSummary,
) -> String {
    let mut html = String::from("<table>\n");
    let mut row = |k: &str, v: String| {
        html.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            pictures::esc(k),
            pictures::esc(&v)
        ));
    };
    match &plan.base {
        Some(b) => row("base model", b.weights.shown().to_string()),
        None => row(
            "template",
            format!("{} ({} epochs)", plan.template, summary.epochs),
        ),
    }
    row(
        "images",
        format!(
            "{} concepts; {} training, {} evaluation",
            sets.concepts.len(),
            train.rows(),
            eval.rows()
        ),
    );
    if let Some(e) = &summary.final_eval {
        row("held-out, last epoch", headline_text(&e.headline()));
    }
    for s in &summary.steps {
        row(
            &format!("step {}", s.name),
            headline_text(&s.metrics.headline()),
        );
    }
    for (name, why) in &summary.failed_steps {
        row(&format!("step {name}"), format!("did not run: {why}"));
    }
    html.push_str("</table>");
    html
}

/// Writes the pictures into `pictures/` and `report.html` showing them.
pub(super) fn write_report(
    out: &Path,
    title: &str,
    summary_html: &str,
    pictures: &[(String, String, String)],
) -> Result<(), RunError> {
    let folder = out.join("pictures");
    folder::create(&folder)?;
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1100px}}\
         h2{{margin-top:2em}} img{{max-width:100%;border:1px solid #eee}} table{{border-collapse:collapse}}\
         td,th{{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}}</style></head><body>\n\
         <h1>{t}</h1>\n{summary_html}\n",
        t = esc(title)
    );
    for (file, heading, svg) in pictures {
        folder::write(&folder.join(file), svg.as_bytes())?;
        let _ = writeln!(
            html,
            "<h2>{}</h2>\n<img src=\"pictures/{}\" alt=\"{}\">",
            esc(heading),
            esc(file),
            esc(heading)
        );
    }
    html.push_str("</body></html>\n");
    folder::write(&out.join("report.html"), html.as_bytes())?;
    remove_other_pictures(&folder, pictures)
}

/// Removes pictures this run did not draw (those of a step no longer in the
/// workflow), so that `pictures/` holds exactly what `report.html` shows.
fn remove_other_pictures(
    folder: &Path,
    drawn: &[(String, String, String)],
) -> Result<(), RunError> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name.to_string_lossy().ends_with(".svg");
        if ours && !drawn.iter().any(|(file, _, _)| name == file.as_str()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|error| RunError::Remove {
                path: path.clone(),
                error,
            })?;
        }
    }
    Ok(())
}
