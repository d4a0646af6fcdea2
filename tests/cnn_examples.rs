//! The CNN examples (`small_cnn`, `mobilenet_v2`, `unet`) end to end on tiny generated data
//! on the CPU: each prints its summary and a line per epoch, writes one JSON object per
//! epoch to `--metrics`, exits cleanly, learns an easy task, and fails cleanly on bad options.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An example binary that `cargo test` builds beside the test binaries.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built (cargo test builds examples)", bin.display());
    bin
}

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(example(name))
        .args(args)
        .args(["--device", "cpu"])
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("run the example");
    if !out.status.success() {
        eprintln!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The value of `"key": value` in a JSON line written by the examples.
fn field(line: &str, key: &str) -> f64 {
    let rest = line.split(&format!("\"{key}\": ")).nth(1).unwrap_or_else(|| panic!("{key} missing in {line}"));
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim().parse().unwrap_or_else(|_| panic!("{key} is not a number in {line}"))
}

/// Runs `name` with `args` plus a metrics file; checks the exit code, the summary, one
/// printed line and one JSON object per epoch with the common fields; returns the lines.
fn train(name: &str, args: &[&str], epochs: usize, extra_fields: &[&str]) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = tmp.path().join("runs").join("metrics.jsonl");
    let epochs_arg = epochs.to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--epochs", &epochs_arg, "--metrics", metrics.to_str().unwrap()]);
    let out = run(name, &all);
    assert!(out.status.success(), "{name} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Total params") && stdout.contains("Trainable params"), "summary printed:\n{stdout}");
    let epoch_lines = stdout.lines().filter(|l| l.starts_with("epoch ")).count();
    assert_eq!(epoch_lines, epochs, "one line per epoch:\n{stdout}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), epochs, "one JSON object per epoch:\n{text}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        assert_eq!(field(line, "epoch"), i as f64);
        for key in ["steps", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "images_per_sec"]
            .iter()
            .chain(extra_fields)
        {
            assert!(field(line, key).is_finite(), "{key} in {line}");
        }
        let acc = field(line, "test_acc");
        assert!((0.0..=1.0).contains(&acc), "{line}");
    }
    lines
}

#[test]
fn small_cnn_infers_as_well_as_it_trains_after_a_short_run() {
    // 64 steps: with Keras' BN momentum 0.99 the moving statistics would still hold
    // 0.99^64 = 53% of their initial values and inference accuracy would be far below
    // training accuracy; with the examples' 0.9 they hold 0.1%.
    let lines = train("small_cnn", &["--synthetic", "512", "--batch-size", "16", "--seed", "3"], 2, &[]);
    let last = &lines[1];
    assert_eq!(field(last, "steps"), 64.0, "{last}");
    assert!(field(last, "train_acc") > 0.8, "a 10-class synthetic task, chance is 0.1: {last}");
    assert!(field(last, "test_acc") > 0.8, "inference (moving statistics) as good as training: {last}");
}

#[test]
fn mobilenet_v2_trains_and_lowers_its_loss() {
    let args = ["--synthetic", "256", "--batch-size", "32", "--alpha", "0.35", "--seed", "1"];
    let lines = train("mobilenet_v2", &args, 3, &[]);
    let losses: Vec<f64> = lines.iter().map(|l| field(l, "train_loss")).collect();
    assert!(losses[2] < 0.8 * losses[0], "training loss should fall: {losses:?}");
}

#[test]
fn mobilenet_v2_summary_shows_the_inverted_residual_blocks() {
    // One step (16 images, batch 16): `--epochs 0` is rejected as a bad command line.
    let out = run("mobilenet_v2", &["--synthetic", "16", "--batch-size", "16", "--alpha", "0.35", "--epochs", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Stem, 17 blocks, the last 1x1 convolution, pooling and the classifier.
    assert_eq!(stdout.matches("(InvertedResidual)").count(), 17, "{stdout}");
    assert!(stdout.contains("(None, 4, 4, 1280)") && stdout.contains("(None, 10)"), "{stdout}");
}

#[test]
fn unet_segments_generated_shapes() {
    let args = ["--synthetic", "384", "--batch-size", "16", "--seed", "5"];
    let lines = train("unet", &args, 3, &["mean_iou"]);
    let (first, last) = (&lines[0], &lines[2]);
    assert!(field(last, "train_loss") < 0.7 * field(first, "train_loss"), "{first}\n{last}");
    // Four classes; predicting the background everywhere scores a mean IoU of about 0.2.
    // Three short epochs (72 steps) measured mean IoU 0.25 and pixel accuracy 0.80 on this
    // seed: the net has started to find the shapes, no more; the bounds check that much.
    assert!(field(last, "mean_iou") > 0.22, "{last}");
    assert!(field(last, "test_acc") > 0.75, "{last}");
}

#[test]
fn unet_with_bilinear_upsampling_runs() {
    let lines =
        train("unet", &["--synthetic", "32", "--batch-size", "16", "--upsampling", "bilinear"], 1, &["mean_iou"]);
    assert_eq!(field(&lines[0], "steps"), 2.0);
}

#[test]
fn bad_options_fail_with_a_clear_message() {
    let cases: [(&str, &[&str], &[&str]); 4] = [
        ("small_cnn", &[], &["--data-dir", "--synthetic"]),
        ("mobilenet_v2", &["--synthetic", "64", "--alpha", "0"], &["--alpha 0"]),
        ("unet", &["--batch-size", "0"], &["--batch-size 0"]),
        ("unet", &["--synthetic", "0"], &["--synthetic 0"]),
    ];
    for (name, args, expected) in cases {
        let out = run(name, args);
        assert!(!out.status.success(), "{name} {args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{name} {args:?}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{name} {args:?}: {e:?} not in {stderr}");
        }
    }
}
