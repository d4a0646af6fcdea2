//! The ResNet models: parameter counts as Keras reports them for the seed
//! (shared/seed/params.md), output shapes, variable paths.

use tapegrad_layers::models::{resnet18, resnet18_cifar, resnet34};
use tapegrad_layers::random::set_seed;
use tapegrad_layers::{InputSpec, Layer, Result};

#[test]
fn seed_resnet18_summary_matches_keras() -> Result<()> {
    let model = resnet18(100);
    let summary = model.summary(&InputSpec::new([1, 32, 32, 3]))?;
    let text = summary.to_string();
    println!("{text}");
    assert!(text.contains("Trainable params: 11,227,300"), "{text}");
    assert!(text.contains("Non-trainable params: 7,808"), "{text}");
    assert!(text.contains("Total params: 11,235,108"), "{text}");
    // Spatial sizes 32 -> 30 -> 15 -> 8 -> 4 -> 2, as the seed's README says.
    let shapes: Vec<&str> = summary.rows.iter().map(|r| r.output_shape.as_deref().unwrap()).collect();
    assert_eq!(
        shapes,
        [
            "(None, 30, 30, 64)",
            "(None, 15, 15, 64)",
            "(None, 8, 8, 128)",
            "(None, 4, 4, 256)",
            "(None, 2, 2, 512)",
            "(None, 512)",
            "(None, 100)"
        ]
    );
    let names: Vec<String> = model.named_variables().into_iter().map(|(n, _)| n).collect();
    for expected in [
        "preprocess.0.kernel",
        "preprocess.1.moving_variance",
        "layer1.0.conv1.kernel",
        "layer1.0.shortcut.kernel",
        "layer4.1.bn2.gamma",
        "fc.bias",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n == "layer1.1.shortcut.kernel"), "stride-1 blocks have an identity shortcut");
    Ok(())
}

#[test]
fn seed_resnet34_summary_matches_keras() -> Result<()> {
    let text = resnet34(100).summary(&InputSpec::new([1, 32, 32, 3]))?.to_string();
    assert!(text.contains("Trainable params: 21,339,172"), "{text}");
    assert!(text.contains("Non-trainable params: 15,232"), "{text}");
    Ok(())
}

#[test]
fn a_boxed_model_has_summary_and_the_class_count_is_chosen() -> Result<()> {
    // 10 classes: the head is 512 * 10 + 10 instead of 512 * 100 + 100.
    let model: Box<dyn Layer> = Box::new(resnet18(10));
    let summary = model.summary(&InputSpec::new([1, 32, 32, 3]))?;
    assert_eq!(summary.params.trainable, 11_227_300 - 512 * 90 - 90);
    Ok(())
}

#[test]
fn cifar_resnet18_matches_the_pytorch_cifar_count() -> Result<()> {
    // The "pytorch-cifar" ResNet18 for 10 classes has 11,173,962 parameters; its BN
    // running statistics (4,800 channels) are our non-trainable variables.
    let model = resnet18_cifar(10);
    let summary = model.summary(&InputSpec::new([1, 32, 32, 3]))?;
    assert_eq!(summary.params.trainable, 11_173_962);
    assert_eq!(summary.params.non_trainable, 9_600);
    let shapes: Vec<&str> = summary.rows.iter().map(|r| r.output_shape.as_deref().unwrap()).collect();
    assert_eq!(
        shapes[..5],
        ["(None, 32, 32, 64)", "(None, 32, 32, 64)", "(None, 16, 16, 128)", "(None, 8, 8, 256)", "(None, 4, 4, 512)"]
    );
    Ok(())
}

#[test]
fn one_seed_builds_the_same_resnet() -> Result<()> {
    let build = |seed| -> Result<Vec<Vec<u32>>> {
        set_seed(seed);
        let model = resnet18_cifar(10);
        model.build(&InputSpec::new([1, 8, 8, 3]))?;
        let vars = model.variables();
        Ok(vars
            .iter()
            .map(|v| v.value_untracked().to_vec::<f32>().unwrap().iter().map(|f| f.to_bits()).collect())
            .collect())
    };
    let a = build(11)?;
    assert_eq!(a, build(11)?);
    assert_ne!(a, build(12)?);
    Ok(())
}
