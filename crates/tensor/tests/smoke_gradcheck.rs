use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{Device, Tensor};

#[test]
fn gradcheck_catches_matmul_and_broadcast() {
    let a = Tensor::from_vec((0..6).map(|v| v as f64 * 0.3 - 0.7).collect::<Vec<_>>(), [2, 3], &Device::Cpu).unwrap();
    let b =
        Tensor::from_vec((0..12).map(|v| (v as f64 * 0.37).sin()).collect::<Vec<_>>(), [3, 4], &Device::Cpu).unwrap();
    let c = Tensor::from_vec(vec![0.1, 0.2, 0.3, 0.4], [4], &Device::Cpu).unwrap();
    check_gradients(|x| x[0].matmul(&x[1])?.add(&x[2])?.tanh()?.log_softmax(-1), &[a, b, c]).unwrap();
}
