//! SVG drawing the pictures share: the palette, escaping, axes with round
//! ticks, line charts.

use std::fmt::Write as _;

/// Colours for categories (concepts, clusters); cycled past the end.
pub(in crate::exec) const PALETTE: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1b9e77", "#7570b3",
];

/// Text made safe inside SVG and HTML.
pub(in crate::exec) fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The opening of an SVG picture `w` × `h` on white.
pub(in crate::exec) fn svg_open(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    )
}

/// A round number of about `n` steps spanning `lo..hi`.
pub(in crate::exec) fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
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

pub(in crate::exec) fn fmt_tick(v: f64) -> String {
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
pub(in crate::exec) type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Where a chart's data lands: the data's bounds and the plot's edges.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
    /// Left, right, top, bottom edges of the plot area.
    edges: (f64, f64, f64, f64),
}

impl Frame {
    /// The bounds of the finite points, with the y axis from 0 when the
    /// values are all positive and near it; `None` without a point.
    fn fit(series: &[Series], (x0, y0, w, h): (f64, f64, f64, f64)) -> Option<Frame> {
        let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in series.iter().flat_map(|s| s.2.iter()) {
            if y.is_finite() {
                (xmin, xmax) = (xmin.min(x), xmax.max(x));
                (ymin, ymax) = (ymin.min(y), ymax.max(y));
            }
        }
        if xmin > xmax {
            return None;
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
        Some(Frame {
            x: (xmin, xmax),
            y: (ymin, ymax),
            edges: (x0 + 50.0, x0 + w - 10.0, y0 + 30.0, y0 + h - 40.0),
        })
    }

    fn sx(&self, x: f64) -> f64 {
        let (l, r, _, _) = self.edges;
        l + (x - self.x.0) / (self.x.1 - self.x.0) * (r - l)
    }

    fn sy(&self, y: f64) -> f64 {
        let (_, _, t, b) = self.edges;
        b - (y - self.y.0) / (self.y.1 - self.y.0) * (b - t)
    }

    /// Grid lines with their values, whole x ticks, the axes and their label.
    fn axes(&self, out: &mut String, x_label: &str) {
        let (l, r, t, b) = self.edges;
        for v in ticks(self.y.0, self.y.1, 5) {
            let y = self.sy(v);
            let _ = writeln!(
                out,
                "<line x1=\"{l}\" x2=\"{r}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
                l - 5.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        for v in ticks(self.x.0, self.x.1, 8)
            .into_iter()
            .filter(|v| v.fract() == 0.0)
        {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                self.sx(v),
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
    }
}

/// One line chart in the box (x0, y0, w, h) of a picture.
pub(in crate::exec) fn line_chart(
    out: &mut String,
    area: (f64, f64, f64, f64),
    title: &str,
    x_label: &str,
    series: &[Series],
) {
    let Some(frame) = Frame::fit(series, area) else {
        return;
    };
    let (l, _, _, _) = frame.edges;
    let title_y = area.1 + 18.0;
    let _ = writeln!(
        out,
        "<text x=\"{l}\" y=\"{title_y}\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    frame.axes(out, x_label);
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| (frame.sx(x), frame.sy(y)))
            .collect();
        let joined: Vec<String> = path.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            joined.join(" ")
        );
        for (x, y) in &path {
            let _ = writeln!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>"
            );
        }
        // The legend sits in the top margin, right of the title.
        let lx = l + 150.0 + i as f64 * 85.0;
        let _ = writeln!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{title_y:.1}\" fill=\"#333\">{}</text>",
            title_y - 4.0,
            lx + 16.0,
            esc(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(1.0, 6.0, 8), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
