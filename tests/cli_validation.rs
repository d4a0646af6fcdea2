//! The examples reject bad command lines before any work, naming the option and its
//! value (exit code 2); I/O problems name the path; a diverging run stops at the first
//! non-finite loss with exit code 3 and writes no checkpoint (issue 11 §2 and §5).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built (cargo test builds examples)", bin.display());
    bin
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name)).args(args).env("RAYON_NUM_THREADS", "2").output().expect("run the example")
}

/// Small, fast flagship settings: 10 classes, 64 images, batches of 16 (4 steps per epoch).
fn smoke(dir: &Path, extra: &[&str]) -> Vec<String> {
    let base = ["--dataset", "cifar10", "--synthetic", "64", "--batch-size", "16", "--device", "cpu", "--seed", "7"];
    // clap refuses a repeated option: drop a base option that `extra` sets.
    let mut v: Vec<String> = Vec::new();
    for pair in base.chunks(2) {
        if !extra.contains(&pair[0]) {
            v.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    v.extend(["--checkpoint-dir".to_string(), dir.to_str().unwrap().to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Asserts the run failed with `code` and that stderr names every part.
fn assert_fails(out: &Output, code: i32, parts: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stdout:\n{}\nstderr:\n{stderr}", String::from_utf8_lossy(&out.stdout));
    for p in parts {
        assert!(stderr.contains(p), "{p:?} missing from stderr:\n{stderr}");
    }
}

#[test]
fn flagship_rejects_bad_values_naming_option_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--batch-size", "0"], &["--batch-size 0"]),
        (&["--epochs", "0"], &["--epochs 0"]),
        (&["--max-steps", "0"], &["--max-steps 0"]),
        (&["--lr", "nan"], &["--lr NaN"]),
        (&["--lr=-0.1"], &["--lr -0.1"]),
        (&["--lr", "inf"], &["--lr inf"]),
        (&["--weight-decay", "nan"], &["--weight-decay NaN"]),
        (&["--weight-decay=-1"], &["--weight-decay -1"]),
        (&["--label-smoothing", "1.5"], &["--label-smoothing 1.5"]),
        (&["--label-smoothing=-0.1"], &["--label-smoothing -0.1"]),
        (&["--label-smoothing", "nan"], &["--label-smoothing NaN"]),
        (&["--precision", "f8"], &["'f8'", "--precision", "f32, bf16, f16"]),
        (&["--cuda-graph"], &["--cuda-graph with --device cpu", "needs a GPU"]),
        (
            &["--cuda-graph", "--device", "cuda", "--distributed", "mpi"],
            &["--cuda-graph with --distributed", "not supported"],
        ),
    ];
    for (extra, parts) in cases {
        let args = smoke(dir.path(), extra);
        let out = run("resnet_cifar100", &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_fails(&out, 2, parts);
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was written");
}

#[test]
fn flagship_step_count_overflow_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = (1u64 << 63).to_string();
    let args = smoke(dir.path(), &["--epochs", &epochs, "--schedule", "cosine"]);
    let out = run("resnet_cifar100", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(&out, 1, &[&format!("--epochs {epochs}"), "overflows"]);
}

#[test]
fn flagship_io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_dir = dir.path().join("metrics_is_a_dir");
    std::fs::create_dir(&metrics_dir).unwrap();
    let args = smoke(&dir.path().join("ckpt"), &["--metrics", metrics_dir.to_str().unwrap()]);
    let out = run("resnet_cifar100", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(&out, 2, &["--metrics", metrics_dir.to_str().unwrap(), "directory"]);

    let file = dir.path().join("a_file");
    std::fs::write(&file, b"x").unwrap();
    let args = smoke(&file, &[]);
    let out = run("resnet_cifar100", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(&out, 2, &["--checkpoint-dir", file.to_str().unwrap(), "not a directory"]);

    // A place nobody (root included) can create a folder in: fails before the first epoch.
    if cfg!(target_os = "linux") {
        let unwritable = Path::new("/proc/self/tapegrad-checkpoints");
        let args = smoke(unwritable, &["--epochs", "1"]);
        let out = run("resnet_cifar100", &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_fails(&out, 1, &["--checkpoint-dir", "/proc/self/tapegrad-checkpoints"]);
        assert!(!String::from_utf8_lossy(&out.stdout).contains(" acc: "), "no epoch ran before the check");
    }
}

#[test]
fn flagship_stops_at_the_first_non_finite_loss_without_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    // Adam moves every weight by about the learning rate at the first step: 1e38 makes the
    // second forward pass overflow, so the second loss is not finite.
    let args = smoke(dir.path(), &["--lr", "1e38", "--epochs", "2"]);
    let out = run("resnet_cifar100", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(&out, 3, &["training loss is", "stopping"]);
    for file in ["last.safetensors", "best.safetensors"] {
        assert!(!dir.path().join(file).exists(), "{file} was written from a diverged model");
    }
}

#[test]
fn small_cnn_rejects_bad_values_and_stops_on_nan() {
    for (extra, part) in [
        (["--epochs", "0"], "--epochs 0"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--lr", "nan"], "--lr NaN"),
        (["--synthetic", "0"], "--synthetic 0"),
    ] {
        let mut args = if extra[0] == "--synthetic" { vec![] } else { vec!["--synthetic", "64"] };
        args.extend(extra);
        assert_fails(&run("small_cnn", &args), 2, &[part]);
    }
    let out = run("small_cnn", &["--synthetic", "64", "--batch-size", "16", "--epochs", "1", "--lr", "1e38"]);
    assert_fails(&out, 3, &["training loss is"]);
}
