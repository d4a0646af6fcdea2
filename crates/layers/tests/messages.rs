//! Messages that say what the user most likely did wrong: a missing batch axis,
//! channels-first images, loading into an unbuilt model, and the sparse loss given float
//! or one-hot labels.

use tapegrad_layers::losses::sparse_categorical_crossentropy;
use tapegrad_layers::{checkpoint, BatchNormalization, Conv2D, Dense, Error, Layer, Mode, Sequential};
use tapegrad_tensor::{DType, Device, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn an_image_without_a_batch_axis_is_said_to_lack_one() {
    let msg = Conv2D::new(8, 3).call(&zeros(&[32, 32, 1]), Mode::Train).unwrap_err().to_string();
    assert!(msg.contains("no batch axis") && msg.contains("[1, 32, 32, 1]"), "{msg}");
}

#[test]
fn channels_first_images_get_the_permute_hint() {
    for layer in [Box::new(Conv2D::new(8, 3)) as Box<dyn Layer>, Box::new(BatchNormalization::new())] {
        layer.call(&zeros(&[2, 16, 16, 3]), Mode::Train).unwrap();
        let msg = layer.call(&zeros(&[2, 3, 16, 16]), Mode::Train).unwrap_err().to_string();
        assert!(msg.contains("channels-first") && msg.contains("permute(&[0, 2, 3, 1])"), "{msg}");
    }
    // A plain channel mismatch gets no layout hint.
    let conv = Conv2D::new(8, 3);
    conv.call(&zeros(&[2, 16, 16, 3]), Mode::Train).unwrap();
    let msg = conv.call(&zeros(&[2, 16, 16, 5]), Mode::Train).unwrap_err().to_string();
    assert!(msg.contains("with 3 channels") && !msg.contains("channels-first"), "{msg}");
}

#[test]
fn loading_into_an_unbuilt_model_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let built = Sequential::new().add(Dense::new(4)).add(Dense::new(2));
    built.call(&zeros(&[1, 3]), Mode::Infer).unwrap();
    checkpoint::save(&path, &built, None, 0).unwrap();
    let fresh = Sequential::new().add(Dense::new(4)).add(Dense::new(2));
    match checkpoint::load(&path, &fresh, None) {
        Err(Error::Mismatch { problems, .. }) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains("build") && problems[0].contains("4 tensors"), "{problems:?}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn float_labels_in_the_sparse_loss_name_the_loss() {
    let logits = zeros(&[4, 3]);
    let labels = zeros(&[4]);
    let msg = sparse_categorical_crossentropy(&labels, &logits, true).unwrap_err().to_string();
    assert!(msg.starts_with("sparse_categorical_crossentropy:") && msg.contains("i64"), "{msg}");
    assert!(!msg.contains("one_hot"), "{msg}");
}

#[test]
fn one_hot_labels_in_the_sparse_loss_point_to_the_categorical_loss() {
    let logits = zeros(&[4, 3]);
    let labels =
        Tensor::one_hot(&Tensor::from_vec(vec![0i64, 1, 2, 0], [4], &Device::Cpu).unwrap(), 3, DType::F32).unwrap();
    let msg = sparse_categorical_crossentropy(&labels, &logits, true).unwrap_err().to_string();
    assert!(msg.contains("look one-hot") && msg.contains("categorical_crossentropy") && msg.contains("[4]"), "{msg}");
}
