//! What a run leaves behind besides checkpoints: one JSON line per epoch, and the loss and
//! accuracy curves drawn as an SVG next to it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The figures of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    pub epoch: u64,
    pub steps: u64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub test_top5: f64,
    pub images_per_sec: f64,
    pub seconds: f64,
    pub learning_rate: f64,
}

impl EpochRecord {
    fn to_json(&self) -> String {
        format!(
            "{{\"epoch\": {}, \"steps\": {}, \"train_loss\": {}, \"train_acc\": {}, \"test_loss\": {}, \"test_acc\": {}, \
             \"test_top5\": {}, \"images_per_sec\": {}, \"seconds\": {}, \"learning_rate\": {}}}",
            self.epoch,
            self.steps,
            json_number(self.train_loss),
            json_number(self.train_acc),
            json_number(self.test_loss),
            json_number(self.test_acc),
            json_number(self.test_top5),
            json_number(self.images_per_sec),
            json_number(self.seconds),
            json_number(self.learning_rate),
        )
    }
}

/// JSON has no NaN or infinity: write them as null.
fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// Appends `record` to the metrics file and redraws the curves from `history`.
pub fn write_epoch(metrics: &Path, record: &EpochRecord, history: &[EpochRecord]) -> std::io::Result<PathBuf> {
    if let Some(dir) = metrics.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(metrics)?;
    writeln!(file, "{}", record.to_json())?;
    let svg_path = metrics.with_extension("svg");
    let tmp = svg_path.with_extension("svg.tmp");
    std::fs::write(&tmp, curves_svg(history))?;
    std::fs::rename(&tmp, &svg_path)?;
    Ok(svg_path)
}

/// One curve: its label, colour and values per epoch.
type Series<'a> = (&'a str, &'a str, Vec<f64>);

/// Two panels, loss and accuracy per epoch, train and test.
pub fn curves_svg(history: &[EpochRecord]) -> String {
    let (w, h, pad) = (480.0, 300.0, 40.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w
    );
    let epochs: Vec<f64> = history.iter().map(|r| r.epoch as f64 + 1.0).collect();
    let panels: [(&str, [Series; 2]); 2] = [
        (
            "loss",
            [
                ("train", "#1f77b4", history.iter().map(|r| r.train_loss).collect()),
                ("test", "#d62728", history.iter().map(|r| r.test_loss).collect()),
            ],
        ),
        (
            "accuracy",
            [
                ("train", "#1f77b4", history.iter().map(|r| r.train_acc).collect()),
                ("test", "#d62728", history.iter().map(|r| r.test_acc).collect()),
            ],
        ),
    ];
    for (p, (title, series)) in panels.iter().enumerate() {
        let x0 = p as f64 * w;
        let values: Vec<f64> = series.iter().flat_map(|s| s.2.iter().copied()).filter(|v| v.is_finite()).collect();
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0), lo.max(0.0) + 1.0) };
        let (e_lo, e_hi) = (1.0, epochs.last().copied().unwrap_or(1.0).max(2.0));
        let sx = |e: f64| x0 + pad + (e - e_lo) / (e_hi - e_lo) * (w - 2.0 * pad);
        let sy = |v: f64| h - pad - (v - lo) / (hi - lo) * (h - 2.0 * pad);
        let _ = writeln!(
            svg,
            "<rect x=\"{}\" y=\"{pad}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{title}</text>\n\
             <text x=\"{}\" y=\"{}\">{hi:.3}</text><text x=\"{}\" y=\"{}\">{lo:.3}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">epoch</text>",
            x0 + pad,
            w - 2.0 * pad,
            h - 2.0 * pad,
            x0 + w / 2.0,
            pad - 10.0,
            x0 + 2.0,
            pad + 10.0,
            x0 + 2.0,
            h - pad,
            x0 + w / 2.0,
            h - 10.0
        );
        for (i, (name, color, ys)) in series.iter().enumerate() {
            let points: Vec<String> = epochs
                .iter()
                .zip(ys)
                .filter(|(_, v)| v.is_finite())
                .map(|(&e, &v)| format!("{:.1},{:.1}", sx(e), sy(v)))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n\
                 <text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>",
                points.join(" "),
                x0 + w - pad - 40.0,
                pad + 15.0 + 14.0 * i as f64
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
