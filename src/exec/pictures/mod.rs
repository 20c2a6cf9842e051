//! Pictures of a run, as SVG files under `pictures/`, and `report.html`, one
//! page that shows them together: the training curves, a 2-D projection (PCA)
//! of the embeddings coloured by concept and by cluster, each softmax head's
//! confusion matrix, and a grid of search queries with their neighbours.

mod grid;
mod svg;

use std::fmt::Write as _;

use candle_core::{Device, Tensor};

use super::metrics::EpochRow;
use crate::data::Rng;
pub(super) use grid::{search_grid, QueryRow};
pub(super) use svg::{esc, fmt_tick, svg_open, ticks};
use svg::{line_chart, PALETTE};

/// Points drawn in a projection, at most (a seeded sample of larger sets).
const MAX_POINTS: usize = 3000;

/// `training.svg`: loss and held-out metrics per epoch, from `metrics.jsonl`.
pub(super) fn training_curves(rows: &[EpochRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let series = |value: &dyn Fn(&EpochRow) -> Option<f32>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.epoch as f64, f64::from(value(r)?))))
            .collect()
    };
    let mut svg = svg_open(900.0, 320.0);
    line_chart(
        &mut svg,
        (0.0, 0.0, 450.0, 320.0),
        "Loss",
        "epoch",
        &[
            ("training", PALETTE[0], series(&|r| Some(r.train_loss))),
            ("held-out", PALETTE[1], series(&|r| r.eval.loss)),
        ],
    );
    let mut metrics = Vec::new();
    type Metric = fn(&EpochRow) -> Option<f32>;
    let curves: [(&str, Metric, &str); 6] = [
        ("accuracy", |r| r.eval.accuracy, PALETTE[4]),
        ("mAP", |r| r.eval.mean_average_precision, PALETTE[2]),
        ("F1", |r| r.eval.f1, PALETTE[6]),
        ("recall@1", |r| r.eval.recall_at_1, PALETTE[3]),
        ("MAP@R", |r| judged_map(&r.eval.embeddings), PALETTE[5]),
        ("unseen MAP@R", |r| judged_map(&r.eval.unseen), PALETTE[7]),
    ];
    for (name, value, colour) in curves {
        let s = series(&value);
        if !s.is_empty() {
            metrics.push((name, colour, s));
        }
    }
    line_chart(
        &mut svg,
        (450.0, 0.0, 450.0, 320.0),
        "Held-out metrics",
        "epoch",
        &metrics,
    );
    svg.push_str("</svg>\n");
    Some(svg)
}

/// MAP@R of a judged epoch, for the curves (an epoch not judged has none).
fn judged_map(j: &Option<Box<crate::steps::judge::Judged>>) -> Option<f32> {
    j.as_ref().map(|j| j.map_at_r.value as f32)
}

/// The rows of `x` projected on its first two principal components.
pub(super) fn pca_2d(x: &Tensor, seed: u64) -> candle_core::Result<Vec<(f32, f32)>> {
    let x = x.to_device(&Device::Cpu)?;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let cov = centred.t()?.matmul(&centred)?;
    let d = cov.dim(0)?;
    let cov = cov.to_vec2::<f32>()?;
    let mut rng = Rng::new(seed);
    let mut components: Vec<Vec<f64>> = Vec::new();
    for _ in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        for _ in 0..300 {
            let mut next: Vec<f64> = cov
                .iter()
                .map(|row| row.iter().zip(&v).map(|(a, b)| *a as f64 * b).sum())
                .collect();
            for c in &components {
                let dot: f64 = next.iter().zip(c).map(|(a, b)| a * b).sum();
                next.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = next.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm < 1e-20 {
                break;
            }
            next.iter_mut().for_each(|a| *a /= norm);
            v = next;
        }
        components.push(v);
    }
    let basis: Vec<f32> = (0..d)
        .flat_map(|i| [components[0][i] as f32, components[1][i] as f32])
        .collect();
    let basis = Tensor::from_vec(basis, (d, 2), &Device::Cpu)?;
    let p = centred.matmul(&basis)?.to_vec2::<f32>()?;
    Ok(p.into_iter().map(|r| (r[0], r[1])).collect())
}

/// A scatter plot of `points` coloured by `groups` (index into `names`).
pub(super) fn scatter(
    title: &str,
    points: &[(f32, f32)],
    groups: &[usize],
    names: &[String],
) -> String {
    let (w, h) = (640.0, 520.0);
    let mut svg = svg_open(w, h);
    let (l, r, t, b) = (20.0, 460.0, 40.0, 500.0);
    let mut idx: Vec<usize> = (0..points.len()).collect();
    if idx.len() > MAX_POINTS {
        Rng::new(1).shuffle(&mut idx);
        idx.truncate(MAX_POINTS);
    }
    // The view spans the 1st to 99th percentile of each axis (a few outliers
    // must not squeeze the rest into a corner), centred, with equal scales;
    // points beyond it sit on its edge.
    let range = |coord: &dyn Fn(usize) -> f32| {
        let mut v: Vec<f32> = idx.iter().map(|&i| coord(i)).collect();
        v.sort_by(f32::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.01), at(0.99))
    };
    if idx.is_empty() {
        svg.push_str("</svg>\n");
        return svg;
    }
    let (x_lo, x_hi) = range(&|i| points[i].0);
    let (y_lo, y_hi) = range(&|i| points[i].1);
    let span = ((x_hi - x_lo).max(y_hi - y_lo) as f64 * 1.08).max(1e-9);
    let (cx, cy) = (((x_lo + x_hi) / 2.0) as f64, ((y_lo + y_hi) / 2.0) as f64);
    let sx = |x: f32| l + ((x as f64 - cx) / span + 0.5).clamp(0.0, 1.0) * (r - l);
    let sy = |y: f32| b - ((y as f64 - cy) / span + 0.5).clamp(0.0, 1.0) * (b - t);
    let _ = writeln!(
        svg,
        "<text x=\"{l}\" y=\"24\" font-size=\"14\" font-weight=\"bold\">{}</text>\
         <rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>",
        esc(title),
        r - l,
        b - t
    );
    for &i in &idx {
        let (x, y) = points[i];
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\" fill-opacity=\"0.75\"/>",
            sx(x),
            sy(y),
            PALETTE[groups[i] % PALETTE.len()]
        );
    }
    for (g, name) in names.iter().enumerate().take(24) {
        let y = t + 10.0 + g as f64 * 18.0;
        let _ = writeln!(
            svg,
            "<circle cx=\"{}\" cy=\"{y}\" r=\"5\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            r + 20.0,
            PALETTE[g % PALETTE.len()],
            r + 32.0,
            y + 4.0,
            esc(name)
        );
    }
    if names.len() > 24 {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\">and {} more</text>",
            r + 20.0,
            t + 10.0 + 24.0 * 18.0,
            names.len() - 24
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{l}\" y=\"{}\" fill=\"#777\">first two principal components{}</text>",
        b + 16.0,
        if points.len() > MAX_POINTS {
            format!(", {MAX_POINTS} of {} images", points.len())
        } else {
            String::new()
        }
    );
    svg.push_str("</svg>\n");
    svg
}

/// A confusion matrix heat map: rows true concepts, columns predicted.
pub(super) fn confusion(title: &str, matrix: &[Vec<usize>], names: &[String]) -> String {
    let n = names.len().max(1);
    let cell = (360.0 / n as f64).clamp(8.0, 48.0);
    let label_w = 120.0;
    let (w, h) = (
        label_w + cell * n as f64 + 40.0,
        70.0 + cell * n as f64 + 110.0,
    );
    let mut svg = svg_open(w, h);
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    let (x0, y0) = (label_w, 50.0);
    for (i, row) in matrix.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        for (j, &c) in row.iter().enumerate() {
            let share = c as f64 / total as f64;
            let shade = (255.0 * (1.0 - share)) as u8;
            let fill = if i == j {
                format!("rgb({shade},{},{shade})", 255 - (share * 90.0) as u8)
            } else {
                format!("rgb(255,{shade},{shade})")
            };
            let (x, y) = (x0 + j as f64 * cell, y0 + i as f64 * cell);
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{fill}\" stroke=\"#ddd\"/>"
            );
            if cell >= 20.0 {
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{}\">{c}</text>",
                    x + cell / 2.0,
                    y + cell / 2.0 + 4.0,
                    if share > 0.6 { "white" } else { "#333" }
                );
            }
        }
    }
    for (i, name) in names.iter().enumerate() {
        let y = y0 + i as f64 * cell + cell / 2.0 + 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            esc(name)
        );
        let x = x0 + i as f64 * cell + cell / 2.0;
        let yb = y0 + n as f64 * cell + 8.0;
        let _ = writeln!(
            svg,
            "<text transform=\"translate({x:.1},{yb:.1}) rotate(45)\">{}</text>",
            esc(name)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"{:.1}\" fill=\"#777\">rows: true concept, columns: predicted</text>",
        h - 10.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_direction_of_largest_spread() {
        // Points along (1, 1, 0) with small noise in the other directions.
        let mut rng = Rng::new(2);
        let mut data = Vec::new();
        for _ in 0..200 {
            let t = rng.normal() * 10.0;
            data.extend([
                (t + rng.normal() * 0.1) as f32,
                (t + rng.normal() * 0.1) as f32,
                (rng.normal() * 0.5) as f32,
            ]);
        }
        let x = Tensor::from_vec(data.clone(), (200, 3), &Device::Cpu).unwrap();
        let p = pca_2d(&x, 0).unwrap();
        // The first coordinate is (x + y) / √2, centred, up to sign.
        let along: Vec<f32> = (0..200)
            .map(|i| (data[3 * i] + data[3 * i + 1]) / 2f32.sqrt())
            .collect();
        let mean = along.iter().sum::<f32>() / 200.0;
        let sign = if p[0].0 * (along[0] - mean) >= 0.0 {
            1.0
        } else {
            -1.0
        };
        for (i, (a, _)) in p.iter().enumerate() {
            assert!(
                (a * sign - (along[i] - mean)).abs() < 0.5,
                "{a} vs {}",
                along[i] - mean
            );
        }
    }
}
