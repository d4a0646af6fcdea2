//! The tape computes only the gradients some source needs: asking for a convolution's
//! kernel gradient does not run its input gradient. Observed through check-numerics mode:
//! the input gradient of this convolution overflows f32, its kernel gradient does not.
//! (One test in its own binary: check-numerics mode is process-wide.)

use tapegrad_tensor::{check_numerics, Conv2dParams, DType, Device, Error, GradientTape, Padding, Tensor};

#[test]
fn an_unrequested_input_gradient_is_not_computed() {
    let x = Tensor::full(1e-10, [1, 4, 4, 2], DType::F32, &Device::Cpu).unwrap();
    // dx sums 9 taps of 2 channels of 1e38: infinite in f32; dk sums x (tiny) over 16 pixels.
    let k = Tensor::full(1e38, [2, 3, 3, 2], DType::F32, &Device::Cpu).unwrap();
    let p = Conv2dParams { padding: Padding::Same, ..Default::default() };
    let grads = |want_x: bool| {
        let tape = GradientTape::new();
        tape.watch(&x);
        tape.watch(&k);
        let loss = tape.record(|| x.conv2d(&k, None, &p)?.sum_all()).unwrap();
        if want_x {
            tape.gradient(&loss, &[&x]).map(|_| ())
        } else {
            tape.gradient(&loss, &[&k]).map(|_| ())
        }
    };
    check_numerics::enable();
    let kernel_only = grads(false);
    let input_too = grads(true);
    check_numerics::disable();
    kernel_only.expect("the kernel gradient is finite, and the input gradient is not computed");
    assert!(matches!(input_too, Err(Error::NonFinite { op: "conv2d_backward_input", .. })), "{input_too:?}");
}
