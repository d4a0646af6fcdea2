//! Learning-rate schedules: a function of the optimizer's iteration count (0 at the first
//! step), as Keras' `LearningRateSchedule`.

use std::f64::consts::PI;
use std::fmt::Debug;
use std::sync::Arc;

/// A learning rate that depends on the step.
pub trait LearningRateSchedule: Debug + Send + Sync {
    /// The learning rate at `step` (0-based: the number of steps already taken).
    fn learning_rate(&self, step: u64) -> f64;
}

/// An optimizer's learning rate: a constant or a schedule. Converts from `f64` and from
/// every schedule here.
#[derive(Clone, Debug)]
pub enum LearningRate {
    /// The same rate at every step.
    Constant(f64),
    /// A schedule.
    Schedule(Arc<dyn LearningRateSchedule>),
}

impl LearningRate {
    /// The rate at `step`.
    pub fn at(&self, step: u64) -> f64 {
        match self {
            LearningRate::Constant(lr) => *lr,
            LearningRate::Schedule(s) => s.learning_rate(step),
        }
    }
}

impl From<f64> for LearningRate {
    fn from(lr: f64) -> Self {
        LearningRate::Constant(lr)
    }
}

impl From<Arc<dyn LearningRateSchedule>> for LearningRate {
    fn from(s: Arc<dyn LearningRateSchedule>) -> Self {
        LearningRate::Schedule(s)
    }
}

macro_rules! schedule_into_learning_rate {
    ($($t:ty),*) => {$(
        impl From<$t> for LearningRate {
            fn from(s: $t) -> Self {
                LearningRate::Schedule(Arc::new(s))
            }
        }
    )*};
}
schedule_into_learning_rate!(Constant, StepDecay, CosineDecay, OneCycle);

/// The same rate at every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constant(pub f64);

impl LearningRateSchedule for Constant {
    fn learning_rate(&self, _step: u64) -> f64 {
        self.0
    }
}

/// `initial * factor ^ floor(step / step_size)`: the rate drops by `factor` every
/// `step_size` steps (Keras' `ExponentialDecay(staircase=True)`, PyTorch's `StepLR`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepDecay {
    /// The rate of the first `step_size` steps.
    pub initial: f64,
    /// The factor applied at each drop (0.1 for the classic ResNet recipe).
    pub factor: f64,
    /// Steps between drops (at least 1).
    pub step_size: u64,
}

impl LearningRateSchedule for StepDecay {
    fn learning_rate(&self, step: u64) -> f64 {
        let drops = step / self.step_size.max(1);
        self.initial * self.factor.powi(drops.min(i32::MAX as u64) as i32)
    }
}

/// A linear warm-up followed by a cosine decay (Keras' `CosineDecay` with
/// `warmup_target`): for `step < warmup_steps` the rate goes linearly from
/// `warmup_start` to `peak`; then over `decay_steps` it follows
/// `peak * ((1 - alpha) * (1 + cos(pi * s / decay_steps)) / 2 + alpha)` and stays at
/// `alpha * peak` after.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineDecay {
    /// The rate after warm-up.
    pub peak: f64,
    /// The length of the decay (after warm-up).
    pub decay_steps: u64,
    /// The final rate as a fraction of `peak`.
    pub alpha: f64,
    /// The length of the warm-up (0 for none).
    pub warmup_steps: u64,
    /// The rate at step 0 of the warm-up.
    pub warmup_start: f64,
}

impl CosineDecay {
    /// A cosine decay from `peak` to 0 over `decay_steps`, without warm-up.
    pub fn new(peak: f64, decay_steps: u64) -> Self {
        CosineDecay { peak, decay_steps, alpha: 0.0, warmup_steps: 0, warmup_start: 0.0 }
    }

    /// The same schedule ending at `alpha * peak`.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// The same schedule after a linear warm-up of `steps` steps from `start`.
    pub fn warmup(mut self, steps: u64, start: f64) -> Self {
        self.warmup_steps = steps;
        self.warmup_start = start;
        self
    }
}

impl LearningRateSchedule for CosineDecay {
    fn learning_rate(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            let f = step as f64 / self.warmup_steps as f64;
            return self.warmup_start + (self.peak - self.warmup_start) * f;
        }
        let s = (step - self.warmup_steps).min(self.decay_steps) as f64;
        let cosine = 0.5 * (1.0 + (PI * s / self.decay_steps.max(1) as f64).cos());
        self.peak * ((1.0 - self.alpha) * cosine + self.alpha)
    }
}

/// The one-cycle policy (PyTorch's `OneCycleLR` with cosine annealing, two phases): from
/// `max_lr / div_factor` up to `max_lr` over the first `pct_start` of `total_steps`, then
/// down to `max_lr / div_factor / final_div_factor` at the last step; it stays there after.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    /// The peak rate.
    pub max_lr: f64,
    /// The length of the cycle.
    pub total_steps: u64,
    /// The fraction of the cycle spent rising (0.3).
    pub pct_start: f64,
    /// `max_lr / initial rate` (25).
    pub div_factor: f64,
    /// `initial rate / final rate` (1e4).
    pub final_div_factor: f64,
}

impl OneCycle {
    /// A one-cycle schedule with PyTorch's defaults (pct_start 0.3, div_factor 25,
    /// final_div_factor 1e4).
    pub fn new(max_lr: f64, total_steps: u64) -> Self {
        OneCycle { max_lr, total_steps, pct_start: 0.3, div_factor: 25.0, final_div_factor: 1e4 }
    }
}

/// Cosine interpolation from `start` (pct 0) to `end` (pct 1).
fn cosine_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * (1.0 + (PI * pct).cos())
}

impl LearningRateSchedule for OneCycle {
    fn learning_rate(&self, step: u64) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let last = self.total_steps.saturating_sub(1) as f64;
        let peak_step = (self.pct_start * self.total_steps as f64 - 1.0).max(0.0);
        let step = (step as f64).min(last);
        if step <= peak_step {
            let pct = if peak_step > 0.0 { step / peak_step } else { 1.0 };
            cosine_anneal(initial, self.max_lr, pct)
        } else {
            let pct = (step - peak_step) / (last - peak_step).max(f64::MIN_POSITIVE);
            cosine_anneal(self.max_lr, min, pct.min(1.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn step_decay_drops_every_step_size() {
        let s = StepDecay { initial: 0.1, factor: 0.1, step_size: 10 };
        assert!(close(s.learning_rate(0), 0.1));
        assert!(close(s.learning_rate(9), 0.1));
        assert!(close(s.learning_rate(10), 0.01));
        assert!(close(s.learning_rate(25), 0.001));
    }

    #[test]
    fn cosine_warms_up_then_decays() {
        let s = CosineDecay::new(1.0, 100).alpha(0.1).warmup(10, 0.0);
        assert!(close(s.learning_rate(0), 0.0));
        assert!(close(s.learning_rate(5), 0.5));
        assert!(close(s.learning_rate(10), 1.0));
        assert!(close(s.learning_rate(60), 0.1 + 0.9 * 0.5));
        assert!(close(s.learning_rate(110), 0.1));
        assert!(close(s.learning_rate(1000), 0.1));
    }

    #[test]
    fn one_cycle_matches_pytorch_shape() {
        // PyTorch OneCycleLR(max_lr=1, total_steps=100): starts at 1/25, peaks at step 29,
        // ends at 1/25/1e4 at step 99.
        let s = OneCycle::new(1.0, 100);
        assert!(close(s.learning_rate(0), 0.04));
        assert!(close(s.learning_rate(29), 1.0));
        assert!(close(s.learning_rate(99), 0.04 / 1e4));
        assert!(close(s.learning_rate(500), 0.04 / 1e4));
        let mid = s.learning_rate(64);
        assert!(close(mid, cosine_anneal(1.0, 4e-6, 35.0 / 70.0)));
    }
}
