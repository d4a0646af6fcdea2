//! The flagship under `mpirun --allow-run-as-root --oversubscribe -np 2 ... --distributed mpi`
//! on synthetic data: it trains, rank 0 alone writes the metrics and checkpoints and prints
//! per-rank and global images/s, and a run resumed from rank 0's checkpoint ends with the
//! weights of the uninterrupted run. With `--distributed nccl` on the emulated GPU
//! (`TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh`, the example built with `--features
//! mpi,nccl`), each rank trains on its own GPU and reduces through the fake libnccl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = dir.join("examples").join(format!("resnet_cifar100{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built (cargo test builds examples)", bin.display());
    bin
}

/// Two ranks of the flagship, one thread each; `dir` is the checkpoint folder.
fn mpirun(dir: &Path, extra: &[&str]) -> Output {
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "RAYON_NUM_THREADS=1"])
        .arg(example())
        .args(["--distributed", "mpi", "--dataset", "cifar10", "--synthetic", "64", "--batch-size", "8"])
        .args(["--device", "cpu", "--seed", "7", "--epochs", "2"])
        .arg("--checkpoint-dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("mpirun must be installed (apt-get install openmpi-bin libopenmpi-dev)");
    if !out.status.success() {
        eprintln!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn model_bytes(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("checkpoint");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut out: Vec<(String, Vec<u8>)> =
        file.tensors().into_iter().map(|(name, view)| (name, view.data().to_vec())).collect();
    out.sort();
    out
}

#[test]
fn two_ranks_train_write_once_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    // 64 images over 2 ranks in batches of 8: 4 steps per epoch.
    let out = mpirun(&straight, &["--max-steps", "6"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("Total params").count(), 1, "rank 0 alone prints:\n{stdout}");
    assert_eq!(stdout.matches("done: best test accuracy").count(), 1, "{stdout}");
    assert!(stdout.contains("data-parallel over 2 ranks (mpi): 16 images per step"), "{stdout}");
    assert!(stdout.contains("images/s per rank [") && stdout.contains("global"), "{stdout}");
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "one line per epoch, from rank 0 only:\n{metrics}");
    assert!(metrics.lines().last().unwrap().contains("\"steps\": 6"), "{metrics}");
    let leftovers: Vec<_> = std::fs::read_dir(&straight)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // 3 steps, then a resume from rank 0's checkpoint for the other 3: the same weights
    // and optimizer state, byte for byte.
    let split = tmp.path().join("split");
    assert!(mpirun(&split, &["--max-steps", "3"]).status.success());
    let out = mpirun(&split, &["--max-steps", "6", "--resume"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed from"));
    let (a, b) = (model_bytes(&straight.join("last.safetensors")), model_bytes(&split.join("last.safetensors")));
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(da == db, "{na} differs between the uninterrupted and the resumed run");
    }
}

/// `--distributed nccl` under `mpirun -np 2` on two emulated GPUs: each rank trains on the
/// GPU of its local rank, its gradients reduced by (the fake) NCCL between the processes;
/// rank 0 alone prints and writes metrics and a checkpoint. Skipped without the emulator.
#[test]
fn two_nccl_ranks_on_the_emulated_gpus_train_and_rank_0_writes() {
    if std::env::var_os("TAPEGRAD_EMU_DEVICES").is_none() {
        eprintln!("SKIPPED: needs the emulated GPU (TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "RAYON_NUM_THREADS=1"])
        .arg(example())
        // As little work as shows the path: the emulator runs ResNet18's kernels on the host.
        .args(["--distributed", "nccl", "--dataset", "cifar10", "--synthetic", "8", "--batch-size", "2"])
        .args(["--device", "cuda", "--seed", "7", "--epochs", "1", "--max-steps", "1"])
        .arg("--checkpoint-dir")
        .arg(tmp.path())
        .output()
        .expect("mpirun must be installed (apt-get install openmpi-bin libopenmpi-dev)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!("stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(stdout.contains("data-parallel over 2 ranks (nccl): 4 images per step"), "{text}");
    assert!(stdout.contains("images/s per rank [") && stdout.contains("global"), "{text}");
    assert_eq!(stdout.matches("Total params").count(), 1, "rank 0 alone prints:\n{text}");
    let metrics = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "one line for the epoch, from rank 0 only:\n{metrics}");
    assert!(!model_bytes(&tmp.path().join("last.safetensors")).is_empty());
}
