//! The warning `fit` prints once, at the first validation, when a batch-normalization
//! layer's moving statistics have seen too few updates for their momentum.

use crate::layer::join_path;
use crate::{Layer, MovingStatistics};

/// The layers (by path) with moving statistics that have had fewer than
/// `1 / (1 - momentum)` updates, counting `uncounted` more than the layers saw (the steps
/// a CUDA graph replayed, which run no layer code).
fn young_layers(model: &dyn Layer, uncounted: u64) -> Vec<(String, MovingStatistics)> {
    fn walk(layer: &dyn Layer, path: &str, uncounted: u64, out: &mut Vec<(String, MovingStatistics)>) {
        if let Some(mut stats) = layer.moving_statistics() {
            stats.updates += uncounted;
            if stats.momentum < 1.0 && (stats.updates as f64) < 1.0 / (1.0 - stats.momentum) {
                let name = if path.is_empty() { layer.name().to_string() } else { path.to_string() };
                out.push((name, stats));
            }
        }
        layer.visit_sublayers(&mut |name, sub| walk(sub, &join_path(path, name), uncounted, out));
    }
    let mut out = Vec::new();
    walk(model, "", uncounted, &mut out);
    out
}

/// The warning for `model`, if one of its layers' moving statistics are still young:
/// names the layer whose initial values weigh the most, its update count and momentum,
/// that weight, the updates needed, and the fix. `uncounted`: updates the layers did not
/// count (replayed CUDA-graph steps).
pub(crate) fn batch_norm_warning(model: &dyn Layer, uncounted: u64) -> Option<String> {
    let young = young_layers(model, uncounted);
    let (path, stats) = young
        .iter()
        .max_by(|a, b| a.1.momentum.powf(a.1.updates as f64).total_cmp(&b.1.momentum.powf(b.1.updates as f64)))?;
    let weight = stats.momentum.powf(stats.updates as f64);
    let needed = (1.0 / (1.0 - stats.momentum)).round();
    // The momentum whose 1 / (1 - momentum) is the updates done, rounded down.
    let fix = if stats.updates >= 2 {
        let m = ((1.0 - 1.0 / stats.updates as f64) * 100.0).floor() / 100.0;
        format!("lower the momentum to at most {m} (BatchNormalization::new().momentum({m})) or train longer")
    } else {
        "train longer".to_string()
    };
    let others = match young.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more layer)".to_string(),
        n => format!(" (and {n} more layers)"),
    };
    Some(format!(
        "warning: batch normalization layer {path}{others} has had {updates} training updates of its moving \
         statistics at momentum {m}: they still weigh {m}^{updates} = {pct:.1}% of their initial values (mean 0, \
         variance 1), and about 1/(1 - {m}) = {needed} updates are needed before they describe the trained \
         network, so validation, evaluate and predict (which use them) will score far below training. Fix: {fix} \
         (at least {needed} steps at momentum {m}).",
        updates = stats.updates,
        m = stats.momentum,
        pct = 100.0 * weight,
    ))
}
