//! `--distributed` backends this build lacks fail before training, saying how to get them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    dir.join("examples").join(format!("resnet_cifar100{}", std::env::consts::EXE_SUFFIX))
}

fn stderr_of(backend: &str) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(example())
        .args(["--distributed", backend, "--synthetic", "16", "--batch-size", "8", "--device", "cpu"])
        .args(["--epochs", "1", "--max-steps", "1"])
        .arg("--checkpoint-dir")
        .arg(tmp.path())
        .output()
        .expect("run the example");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `cargo test --workspace` builds the example without NCCL and MPI: `--distributed nccl`
/// says how to build it and names the alternative. (With them, `--device cpu` is refused.)
#[test]
fn nccl_without_the_features_says_how_to_build_it() {
    let (code, stderr) = stderr_of("nccl");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--distributed nccl"), "{stderr}");
    assert!(
        stderr.contains("--features mpi,nccl") && stderr.contains("--distributed mpi")
            || stderr.contains("--device cuda"),
        "{stderr}"
    );
}

/// `cargo test --workspace` builds the example without MPI: `--distributed mpi` says how
/// to build it. (A binary left by a `--features mpi` build runs as a world of one.)
#[test]
fn mpi_without_the_feature_says_how_to_build_it() {
    let (code, stderr) = stderr_of("mpi");
    if code == Some(0) {
        return;
    }
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--features mpi") && stderr.contains("mpirun"), "{stderr}");
}
