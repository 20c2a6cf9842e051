//! Pictures of a run, as SVG files under `pictures/`, and `report.html`, one
//! page that shows them together: the training curves, a 2-D projection (PCA)
//! of the embeddings coloured by concept and by cluster, each softmax head's
//! confusion matrix, and a grid of search queries with their neighbours.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::folder::{self, write};
use super::metrics::EpochRow;
use super::RunError;
use crate::data::Rng;

/// Colours for categories (concepts, clusters); cycled past the end.
const PALETTE: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1b9e77", "#7570b3",
];

/// Points drawn in a projection, at most (a seeded sample of larger sets).
const MAX_POINTS: usize = 3000;

pub(super) fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn svg_open(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    )
}

/// A round number of about `n` steps spanning `lo..hi`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A line of a chart: name, colour, points (x, y).
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// One line chart.
fn line_chart(
    out: &mut String,
    (x0, y0, w, h): (f64, f64, f64, f64),
    title: &str,
    x_label: &str,
    series: &[Series],
) {
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if y.is_finite() {
            xmin = xmin.min(x);
            xmax = xmax.max(x);
            ymin = ymin.min(y);
            ymax = ymax.max(y);
        }
    }
    if xmin > xmax {
        return;
    }
    if ymin >= 0.0 && ymin < ymax * 0.5 {
        ymin = 0.0;
    }
    if ymax - ymin < 1e-9 {
        ymax = ymin + 1.0;
    }
    if xmax - xmin < 1e-9 {
        xmax = xmin + 1.0;
    }
    let (l, r, t, b) = (x0 + 50.0, x0 + w - 10.0, y0 + 30.0, y0 + h - 40.0);
    let sx = |x: f64| l + (x - xmin) / (xmax - xmin) * (r - l);
    let sy = |y: f64| b - (y - ymin) / (ymax - ymin) * (b - t);
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        l,
        y0 + 18.0,
        esc(title)
    );
    for v in ticks(ymin, ymax, 5) {
        let y = sy(v);
        let _ = writeln!(
            out,
            "<line x1=\"{l}\" x2=\"{r}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            l - 5.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    for v in ticks(xmin, xmax, 8)
        .into_iter()
        .filter(|v| v.fract() == 0.0)
    {
        let x = sx(v);
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            b + 15.0,
            fmt_tick(v)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#333\"/>\
         <line x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{b}\" stroke=\"#333\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\">{}</text>",
        (l + r) / 2.0,
        b + 32.0,
        esc(x_label)
    );
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                out,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>"
            );
        }
        // The legend sits in the top margin, right of the title.
        let lx = l + 150.0 + i as f64 * 85.0;
        let ly = y0 + 18.0;
        let _ = writeln!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\" fill=\"#333\">{}</text>",
            ly - 4.0,
            lx + 16.0,
            esc(name)
        );
    }
}

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
    let curves: [(&str, Metric, &str); 4] = [
        ("accuracy", |r| r.eval.accuracy, PALETTE[4]),
        ("mAP", |r| r.eval.mean_average_precision, PALETTE[2]),
        ("F1", |r| r.eval.f1, PALETTE[6]),
        ("recall@1", |r| r.eval.recall_at_1, PALETTE[3]),
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

/// One query of a search grid: the query image and its neighbours with
/// their scores and whether they share a concept (`None`: unknown).
pub(super) struct QueryRow {
    pub query: PathBuf,
    pub neighbours: Vec<(PathBuf, f32, Option<bool>)>,
}

const THUMB: u32 = 72;

/// A square thumbnail as a PNG data URI, or `None` if the image cannot be read.
fn thumbnail(path: &Path) -> Option<String> {
    let img = image::open(path).ok()?.to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let square =
        image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let small =
        image::imageops::resize(&square, THUMB, THUMB, image::imageops::FilterType::Triangle);
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(small)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .ok()?;
    Some(format!("data:image/png;base64,{}", base64(&bytes)))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Queries (left column) and their neighbours, with a green frame for a
/// neighbour sharing the query's concept and a red one for another concept.
pub(super) fn search_grid(title: &str, rows: &[QueryRow]) -> String {
    let cols = rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0);
    let (cw, ch) = (THUMB as f64 + 14.0, THUMB as f64 + 30.0);
    let (w, h) = (
        40.0 + cw * (cols + 1) as f64 + 20.0,
        50.0 + ch * rows.len() as f64,
    );
    let mut svg = svg_open(w, h);
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\
         <text x=\"10\" y=\"40\" fill=\"#777\">query, then its nearest neighbours (cosine); green: same concept, red: another</text>",
        esc(title)
    );
    for (i, row) in rows.iter().enumerate() {
        let y = 50.0 + i as f64 * ch;
        let cells = std::iter::once((&row.query, None, None)).chain(
            row.neighbours
                .iter()
                .map(|(p, s, same)| (p, Some(*s), *same)),
        );
        for (j, (path, score, same)) in cells.enumerate() {
            let x = 10.0 + j as f64 * cw + if j > 0 { 30.0 } else { 0.0 };
            let frame = match (j, same) {
                (0, _) => "#333",
                (_, Some(true)) => "#2e9d4b",
                (_, Some(false)) => "#d6343a",
                _ => "#aaa",
            };
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{frame}\" stroke-width=\"3\"/>",
                x - 2.0,
                y - 2.0,
                THUMB + 4,
                THUMB + 4
            );
            match thumbnail(path) {
                Some(uri) => {
                    let _ = writeln!(
                        svg,
                        "<image x=\"{x:.1}\" y=\"{y:.1}\" width=\"{THUMB}\" height=\"{THUMB}\" href=\"{uri}\"/>"
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#999\">unreadable</text>",
                        x + 6.0,
                        y + 36.0
                    );
                }
            }
            let caption = match score {
                Some(s) => format!("{s:.3}"),
                None => "query".to_string(),
            };
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\">{caption}</text>",
                x + THUMB as f64 / 2.0,
                y + THUMB as f64 + 16.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
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
        write(&folder.join(file), svg.as_bytes())?;
        let _ = writeln!(
            html,
            "<h2>{}</h2>\n<img src=\"pictures/{}\" alt=\"{}\">",
            esc(heading),
            esc(file),
            esc(heading)
        );
    }
    html.push_str("</body></html>\n");
    write(&out.join("report.html"), html.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

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

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(1.0, 6.0, 8), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
