//! The [`Layer`] trait, the [`Mode`] a layer runs in and the [`InputSpec`] it is built for.

use crate::error::InLayer;
use crate::mixed_precision::{self, Policy};
use crate::{trace, Result};
use tapegrad_tensor::{DType, Device, Shape, Tensor, Variable};

/// Whether a layer runs for training or for inference (Keras' `training=True/False`).
/// Batch normalization uses batch statistics and updates its moving statistics only in
/// `Train`; dropout drops only in `Train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Training: batch statistics, dropout active, moving statistics updated.
    Train,
    /// Inference: moving statistics, dropout is the identity, no state changes.
    Infer,
}

impl Mode {
    /// Whether this is [`Mode::Train`].
    pub fn is_train(self) -> bool {
        self == Mode::Train
    }
}

/// What a layer is built for: the shape of an input batch (batch axis included), its
/// dtype and its device. Variables are created on that device, in that dtype (after the
/// [dtype policy](crate::mixed_precision)'s cast; in f32 under a mixed policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// The input's shape, batch axis first.
    pub shape: Shape,
    /// The input's dtype (f32 unless set).
    pub dtype: DType,
    /// The input's device (the CPU unless set).
    pub device: Device,
}

impl InputSpec {
    /// An f32 input on the CPU of the given shape (batch axis included).
    pub fn new(shape: impl Into<Shape>) -> Self {
        InputSpec { shape: shape.into(), dtype: DType::F32, device: Device::Cpu }
    }

    /// The same spec with another dtype.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The same spec on another device.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// A tensor of zeros matching the spec (what a default [`Layer::build`] runs).
    pub fn zeros(&self) -> tapegrad_tensor::Result<Tensor> {
        Tensor::zeros(self.shape.clone(), self.dtype, &self.device)
    }
}

impl From<&Tensor> for InputSpec {
    fn from(t: &Tensor) -> Self {
        InputSpec { shape: t.shape().clone(), dtype: t.dtype(), device: t.device() }
    }
}

impl From<Shape> for InputSpec {
    fn from(shape: Shape) -> Self {
        InputSpec::new(shape)
    }
}

impl<const N: usize> From<[usize; N]> for InputSpec {
    fn from(dims: [usize; N]) -> Self {
        InputSpec::new(dims)
    }
}

/// Parameter counts as Keras' `model.summary()` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCount {
    /// Elements of trainable variables.
    pub trainable: usize,
    /// Elements of non-trainable variables (BN moving statistics).
    pub non_trainable: usize,
}

impl ParamCount {
    /// Trainable plus non-trainable.
    pub fn total(&self) -> usize {
        self.trainable + self.non_trainable
    }
}

/// The state of a layer's moving averages (batch normalization's moving mean and
/// variance): how many training-mode calls have updated them in this process, and their
/// momentum. After `updates` steps the initial values still weigh `momentum^updates`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MovingStatistics {
    /// Training-mode calls that updated the statistics since the layer was created.
    pub updates: u64,
    /// The moving-average momentum (the old value's weight at each update).
    pub momentum: f64,
}

/// A layer: a callable piece of a model that may own variables and contain other layers,
/// as in Keras.
///
/// A layer creates its variables lazily, from the shape of the first input it is called
/// on (or explicitly, with [`Layer::build`]); layers therefore use interior mutability and
/// every method takes `&self`. A layer implements [`Layer::forward`] (Keras' `call`,
/// PyTorch's `forward`) and is run with [`Layer::call`] (Keras' `__call__`), which adds
/// what every layer needs around it: the layer's name scope for
/// [`check_numerics`](tapegrad_tensor::check_numerics) and its output shape for
/// summaries. A composite layer is an ordinary struct whose fields are layers: its
/// `forward` calls them, and [`Layer::visit_sublayers`] names them. Variable paths
/// ("layer1.0.conv1.kernel") follow from those names:
///
/// ```
/// use tapegrad_layers::{Dense, Layer, Mode, Result};
/// use tapegrad_tensor::{DType, Device, Tensor};
///
/// /// Two dense layers with a residual connection.
/// struct Residual {
///     fc1: Dense,
///     fc2: Dense,
/// }
///
/// impl Layer for Residual {
///     fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
///         let h = self.fc1.call(x, mode)?.relu()?;
///         Ok(self.fc2.call(&h, mode)?.add(x)?)
///     }
///     fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
///         visit("fc1", &self.fc1);
///         visit("fc2", &self.fc2);
///     }
/// }
///
/// # fn main() -> Result<()> {
/// let block = Residual { fc1: Dense::new(8), fc2: Dense::new(4) };
/// let y = block.call(&Tensor::ones([2, 4], DType::F32, &Device::Cpu)?, Mode::Infer)?;
/// assert_eq!(y.dims(), &[2, 4]);
/// let names: Vec<String> = block.named_variables().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.kernel", "fc1.bias", "fc2.kernel", "fc2.bias"]);
/// # Ok(())
/// # }
/// ```
pub trait Layer: AsDynLayer + Send + Sync {
    /// What the layer computes; implement it, and run layers with [`Layer::call`]. The
    /// first call builds the layer for the input's shape, dtype and device.
    fn forward(&self, input: &Tensor, mode: Mode) -> Result<Tensor>;

    /// Runs the layer: [`Layer::forward`] inside the layer's name scope (so
    /// check-numerics errors name it), recording its output shape while a summary traces
    /// the model. Layers keep this default.
    ///
    /// Under a [dtype policy](crate::mixed_precision) it also puts the layer's policy in
    /// force for the call (its own, [`Layer::policy_override`], else its caller's, else
    /// the global one) and casts a float input to the policy's compute dtype.
    fn call(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        let _scope = tapegrad_tensor::check_numerics::name_scope(self.name());
        let policy = mixed_precision::enter_policy(self.policy_override());
        if !self.autocasts_inputs() {
            return traced(self.as_dyn_layer(), self.forward(input, mode));
        }
        let input = mixed_precision::autocast(input, policy.policy()).in_layer(self.name())?;
        traced(self.as_dyn_layer(), self.forward(&input, mode))
    }

    /// What the layer computes from several inputs. Merge layers
    /// ([`Add`](crate::Add), [`Concatenate`](crate::Concatenate), ...) implement it; the
    /// default takes exactly one input and runs [`Layer::forward`] on it.
    fn forward_many(&self, inputs: &[&Tensor], mode: Mode) -> Result<Tensor> {
        match inputs {
            [x] => self.forward(x, mode),
            _ => Err(crate::Error::layer(
                self.name(),
                format!("takes exactly one input but was called on {} inputs", inputs.len()),
            )),
        }
    }

    /// Runs the layer on several inputs, as Keras calls a layer on a list of tensors:
    /// [`Layer::forward_many`] with what [`Layer::call`] adds. Any layer can be run through
    /// this one entry point.
    fn call_many(&self, inputs: &[&Tensor], mode: Mode) -> Result<Tensor> {
        let _scope = tapegrad_tensor::check_numerics::name_scope(self.name());
        let policy = mixed_precision::enter_policy(self.policy_override());
        let cast = inputs
            .iter()
            .map(|x| mixed_precision::autocast(x, policy.policy()))
            .collect::<tapegrad_tensor::Result<Vec<Tensor>>>()
            .in_layer(self.name())?;
        let cast: Vec<&Tensor> = cast.iter().collect();
        traced(self.as_dyn_layer(), self.forward_many(&cast, mode))
    }

    /// The layer's own dtype policy (Keras' `dtype=` argument), set with the layer's
    /// `dtype_policy` builder; `None` (the default) follows the layer it is called in, or
    /// the [global policy](crate::mixed_precision::set_global_policy). Composite layers may
    /// return one to set the policy of everything inside them.
    fn policy_override(&self) -> Option<Policy> {
        None
    }

    /// Whether [`Layer::call`] casts the layer's float inputs to the compute dtype (Keras'
    /// `layer.autocast`); true by default. [`Embedding`](crate::Embedding) says false: its
    /// inputs are ids, which a 16-bit float would round (1001 is 1000 in bf16).
    fn autocasts_inputs(&self) -> bool {
        true
    }

    /// Layer fusion: this layer's [`call`](Layer::call) followed by a ReLU, as one fused
    /// op, with the values and gradients of the two layers; `None` (the default) where the
    /// layer has no fused form. [`Sequential`](crate::Sequential) uses it where the next
    /// layer [`is_relu`](Layer::is_relu) (BatchNormalization implements it).
    fn call_then_relu(&self, input: &Tensor, mode: Mode) -> Option<Result<Tensor>> {
        let _ = (input, mode);
        None
    }

    /// Whether the layer computes exactly the elementwise `relu` (values and gradient), so
    /// that a preceding layer may fuse it through [`call_then_relu`](Layer::call_then_relu).
    fn is_relu(&self) -> bool {
        false
    }

    /// Host-side state that [`forward`](Layer::forward) advances (`Dropout`'s random
    /// generator, batch norm's count of moving-statistics updates), not counting
    /// sublayers'; `None` (the default) for a layer without any. A CUDA-graph capture
    /// ([`GraphedStep`](crate::training::GraphedStep)) runs the forward pass's host code
    /// without computing anything, so it saves this before and gives it back with
    /// [`restore_host_state`](Layer::restore_host_state) after.
    fn host_state(&self) -> Option<Box<dyn std::any::Any>> {
        None
    }

    /// Sets the state [`host_state`](Layer::host_state) returned back; anything else is
    /// ignored.
    fn restore_host_state(&self, state: &dyn std::any::Any) {
        let _ = state;
    }

    /// The layer's name ("conv2d_3"); by default the short name of its Rust type.
    fn name(&self) -> &str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// The short name of the layer's Rust type ("Conv2D"), shown by summaries.
    fn type_name(&self) -> &str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// Creates the layer's variables (and its sublayers') for inputs like `input`. A layer
    /// already built is left as it is. The default runs [`Layer::call`] once in
    /// [`Mode::Infer`] on zeros, which builds every sublayer it calls (Keras builds
    /// subclassed models the same way).
    ///
    /// The default also checks that every variable the call read is listed by
    /// [`Layer::visit_variables`] or [`Layer::visit_sublayers`] (at any depth): a sublayer
    /// missing from a composite layer's `visit_sublayers` would be used but never trained,
    /// saved or counted, so it is an error naming the variable.
    fn build(&self, input: &InputSpec) -> Result<()> {
        let x = input.zeros()?;
        let (called, read) = Variable::reads_during(|| self.call(&x, Mode::Infer));
        called?;
        check_all_listed(self.as_dyn_layer(), &read)
    }

    /// Visits the variables this layer owns directly (not those of its sublayers), with
    /// their local names ("kernel", "moving_mean"). Layers without variables keep the
    /// default, which visits nothing.
    fn visit_variables(&self, visit: &mut dyn FnMut(&str, &Variable)) {
        let _ = visit;
    }

    /// Visits the direct sublayers with their attribute names ("conv1", or "0", "1", ... in
    /// a [`Sequential`](crate::Sequential)). Layers without sublayers keep the default.
    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        let _ = visit;
    }

    /// Every variable of the layer and its sublayers, by path ("layer1.0.conv1.kernel"):
    /// own variables first, then each sublayer's, in visiting order.
    fn named_variables(&self) -> Vec<(String, Variable)> {
        let mut out = Vec::new();
        self.visit_variables(&mut |name, v| out.push((name.to_string(), v.clone())));
        self.visit_sublayers(&mut |name, sub| collect_named_variables(sub, name, &mut out));
        out
    }

    /// Every variable, trainable or not (BN moving statistics included).
    fn variables(&self) -> Vec<Variable> {
        let mut out = Vec::new();
        self.visit_variables(&mut |_, v| out.push(v.clone()));
        self.visit_sublayers(&mut |_, sub| collect_variables(sub, &mut out));
        out
    }

    /// The variables an optimizer trains, in the order of [`Layer::named_variables`] (the
    /// same at every call, which optimizers rely on for a fast slot lookup).
    fn trainable_variables(&self) -> Vec<Variable> {
        let mut all = self.variables();
        all.retain(Variable::trainable);
        all
    }

    /// The variables an optimizer does not train (BN moving statistics).
    fn non_trainable_variables(&self) -> Vec<Variable> {
        let mut all = self.variables();
        all.retain(|v| !v.trainable());
        all
    }

    /// The number of trainable and non-trainable parameters (0 before the layer is built).
    fn count_params(&self) -> ParamCount {
        let mut count = ParamCount::default();
        for v in self.variables() {
            let n = v.value_untracked().elem_count();
            if v.trainable() {
                count.trainable += n;
            } else {
                count.non_trainable += n;
            }
        }
        count
    }

    /// The update count and momentum of the layer's own moving statistics, for layers
    /// that keep them (only [`BatchNormalization`](crate::BatchNormalization) here); `None`
    /// for every other layer (the default). Sublayers are not included: walk them with
    /// [`Layer::visit_sublayers`]. `fit` reads it to warn when inference would use moving
    /// statistics that still weigh mostly their initial values.
    fn moving_statistics(&self) -> Option<MovingStatistics> {
        None
    }

    /// Builds the layer for `input` and returns its Keras-like summary (print it with
    /// `{}`); see [`Summary`](crate::Summary). Works on a `&dyn Layer` or
    /// `Box<dyn Layer>` too.
    fn summary(&self, input: &InputSpec) -> Result<crate::Summary> {
        crate::summary(self.as_dyn_layer(), input)
    }
}

/// Views a layer as `&dyn Layer`. Implemented for every sized [`Layer`], so a layer never
/// writes it; it lets [`Layer`]'s provided methods (such as [`Layer::summary`]) reach the
/// free functions over `&dyn Layer`, also when called on a `dyn Layer`.
pub trait AsDynLayer {
    /// This layer as a trait object.
    fn as_dyn_layer(&self) -> &dyn Layer;
}

impl<L: Layer> AsDynLayer for L {
    fn as_dyn_layer(&self) -> &dyn Layer {
        self
    }
}

/// Fails, naming the first one, when a variable in `read` (read by a call of `layer`) is
/// not among `layer`'s variables.
pub(crate) fn check_all_listed(layer: &dyn Layer, read: &[Variable]) -> Result<()> {
    let listed = layer.variables();
    match read.iter().find(|v| !listed.iter().any(|l| l.same_as(v))) {
        None => Ok(()),
        Some(missing) => Err(crate::Error::layer(
            layer.name(),
            format!(
                "its call reads the variable {:?}, which neither visit_variables nor visit_sublayers lists at any \
                 depth (a sublayer missing from a composite layer's visit_sublayers?): it would never be trained, \
                 saved or counted",
                missing.name()
            ),
        )),
    }
}

fn collect_named_variables(layer: &dyn Layer, prefix: &str, out: &mut Vec<(String, Variable)>) {
    layer.visit_variables(&mut |name, v| out.push((join_path(prefix, name), v.clone())));
    layer.visit_sublayers(&mut |name, sub| collect_named_variables(sub, &join_path(prefix, name), out));
}

/// Variables without their paths (no string building: models ask for them every step).
fn collect_variables(layer: &dyn Layer, out: &mut Vec<Variable>) {
    layer.visit_variables(&mut |_, v| out.push(v.clone()));
    layer.visit_sublayers(&mut |_, sub| collect_variables(sub, out));
}

/// `prefix.name`, or `name` at the root.
pub(crate) fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// "tapegrad_layers::layers::conv2d::Conv2D" -> "Conv2D" (generic arguments dropped).
fn short_type_name(full: &str) -> &str {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Records the output shape of a layer's call for [`Layer::summary`] (a no-op unless a
/// summary is being traced).
pub(crate) fn traced(layer: &dyn Layer, output: Result<Tensor>) -> Result<Tensor> {
    if let Ok(y) = &output {
        trace::record(layer, y.shape());
    }
    output
}
