//! Keras-like model summaries: a table of layers, output shapes and parameter counts.

use crate::trace::{self, Traced};
use crate::{InputSpec, Layer, Mode, ParamCount, Result};
use std::fmt;
use tapegrad_tensor::Variable;

/// One row of a [`Summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRow {
    /// Nesting depth (0 for the model's direct sublayers).
    pub depth: usize,
    /// The layer's name.
    pub name: String,
    /// The layer's type ("Conv2D").
    pub type_name: String,
    /// The output shape seen while tracing, batch axis first; `None` if the layer was not
    /// seen (a sublayer called directly by a user-written layer) and
    /// `Some("multiple")` if its calls returned different shapes.
    pub output_shape: Option<String>,
    /// Trainable plus non-trainable parameters of the layer and its sublayers.
    pub params: usize,
}

/// A model's summary, as `model.summary()` prints it in Keras. Display it with `{}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The model's name.
    pub name: String,
    /// The model's output shape for the traced input.
    pub output_shape: String,
    /// The rows, in visiting order (nested rows follow their parent).
    pub rows: Vec<SummaryRow>,
    /// The model's parameter counts.
    pub params: ParamCount,
}

/// Builds `model` for `input` by running it once on zeros in [`Mode::Infer`], recording
/// every layer's output shape, and summarizes its direct sublayers (Keras' default).
pub fn summary(model: &dyn Layer, input: &InputSpec) -> Result<Summary> {
    summarize(model, input, false)
}

/// As [`summary`], with one row for every layer at every depth (Keras'
/// `expand_nested=True`).
pub fn summary_nested(model: &dyn Layer, input: &InputSpec) -> Result<Summary> {
    summarize(model, input, true)
}

fn summarize(model: &dyn Layer, input: &InputSpec, expand_nested: bool) -> Result<Summary> {
    // The trace runs where the model's weights are (a model built on a GPU, summarised from
    // a spec that names only the shape), else where the spec says.
    let device = model.variables().first().map(|v| v.value_untracked().device()).unwrap_or(input.device);
    let x = input.clone().with_device(device).zeros()?;
    let ((out, recorded), read) = Variable::reads_during(|| trace::with_trace(|| model.call(&x, Mode::Infer)));
    let out = out?;
    // A variable used but not listed would be missing from the counts below.
    crate::layer::check_all_listed(model, &read)?;
    let mut rows = Vec::new();
    let mut has_sublayers = false;
    model.visit_sublayers(&mut |_, sub| {
        has_sublayers = true;
        collect_rows(sub, 0, &recorded, expand_nested, &mut rows);
    });
    if !has_sublayers {
        collect_rows(model, 0, &recorded, expand_nested, &mut rows);
    }
    Ok(Summary {
        name: model.name().to_string(),
        output_shape: format_shape(out.dims()),
        rows,
        params: model.count_params(),
    })
}

fn collect_rows(
    layer: &dyn Layer,
    depth: usize,
    recorded: &trace::Recorded,
    expand_nested: bool,
    rows: &mut Vec<SummaryRow>,
) {
    rows.push(SummaryRow {
        depth,
        name: layer.name().to_string(),
        type_name: layer.type_name().to_string(),
        output_shape: recorded.get(layer).map(|t| match t {
            Traced::Shape(s) => format_shape(s.dims()),
            Traced::Multiple => "multiple".to_string(),
        }),
        params: layer.count_params().total(),
    });
    if expand_nested {
        layer.visit_sublayers(&mut |_, sub| collect_rows(sub, depth + 1, recorded, expand_nested, rows));
    }
}

/// "(None, 30, 30, 64)": the batch axis shown as `None`, as Keras does.
fn format_shape(dims: &[usize]) -> String {
    let mut parts = vec!["None".to_string()];
    parts.extend(dims.iter().skip(1).map(|d| d.to_string()));
    if dims.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

/// `11227300` -> "11,227,300".
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> =
        digits.as_bytes().rchunks(3).rev().map(|g| std::str::from_utf8(g).expect("ASCII digits")).collect();
    groups.join(",")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> =
            self.rows.iter().map(|r| format!("{}{} ({})", "  ".repeat(r.depth), r.name, r.type_name)).collect();
        let shapes: Vec<&str> = self.rows.iter().map(|r| r.output_shape.as_deref().unwrap_or("?")).collect();
        // Columns grow to fit their longest entry (Keras wraps instead).
        let w0 = labels.iter().map(String::len).max().unwrap_or(0).max(28) + 2;
        let w1 = shapes.iter().map(|s| s.len()).max().unwrap_or(0).max(20) + 2;
        let w2 = 12;
        let width = 1 + w0 + w1 + w2;
        writeln!(f, "Model: \"{}\"", self.name)?;
        writeln!(f, "{}", "_".repeat(width))?;
        writeln!(f, " {:<w0$}{:<w1$}{:>w2$}", "Layer (type)", "Output Shape", "Param #")?;
        writeln!(f, "{}", "=".repeat(width))?;
        for (i, row) in self.rows.iter().enumerate() {
            writeln!(f, " {:<w0$}{:<w1$}{:>w2$}", labels[i], shapes[i], thousands(row.params))?;
            if i + 1 < self.rows.len() && self.rows[i + 1].depth == 0 {
                writeln!(f)?;
            }
        }
        writeln!(f, "{}", "=".repeat(width))?;
        writeln!(f, "Total params: {}", thousands(self.params.total()))?;
        writeln!(f, "Trainable params: {}", thousands(self.params.trainable))?;
        writeln!(f, "Non-trainable params: {}", thousands(self.params.non_trainable))?;
        write!(f, "{}", "_".repeat(width))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_shapes_format_as_keras() {
        assert_eq!(thousands(11227300), "11,227,300");
        assert_eq!(thousands(7808), "7,808");
        assert_eq!(thousands(100), "100");
        assert_eq!(format_shape(&[1, 30, 30, 64]), "(None, 30, 30, 64)");
        assert_eq!(format_shape(&[1]), "(None,)");
    }
}
