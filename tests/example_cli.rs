//! The flagship example's command line, end to end on synthetic data on the CPU: it
//! trains, writes metrics, curves and checkpoints, resumes exactly, evaluates, and fails
//! cleanly without data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The flagship binary that `cargo test` builds beside the test binaries.
fn example() -> PathBuf {
    example_named("resnet_cifar100")
}

fn example_named(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built (cargo test builds examples)", bin.display());
    bin
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(example()).args(args).env("RAYON_NUM_THREADS", "2").output().expect("run the example");
    if !out.status.success() {
        eprintln!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Small, fast settings: 10 classes, 64 images, batches of 16 (4 steps per epoch).
fn smoke_args(dir: &Path) -> Vec<String> {
    [
        "--dataset",
        "cifar10",
        "--synthetic",
        "64",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--seed",
        "7",
        "--checkpoint-dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with(base: &[String], extra: &[&str]) -> Vec<String> {
    base.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn model_tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("checkpoint");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut out: Vec<(String, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("optimizer/"))
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    out.sort();
    out
}

#[test]
fn trains_writes_artifacts_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let base = smoke_args(&straight);
    let out = run(&refs(&with(&base, &["--epochs", "2", "--max-steps", "6"])));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Total params"), "summary printed first:\n{stdout}");
    assert!(stdout.contains("done: best test accuracy"), "{stdout}");
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    assert_eq!(lines.len(), 2, "one JSON object per epoch:\n{metrics}");
    for key in
        ["epoch", "steps", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "images_per_sec", "seconds"]
    {
        assert!(lines[1].contains(&format!("\"{key}\":")), "{key} missing in {}", lines[1]);
    }
    assert!(lines[1].contains("\"steps\": 6"), "{}", lines[1]);
    let svg = std::fs::read_to_string(straight.join("metrics.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    assert!(straight.join("last.safetensors").exists() && straight.join("best.safetensors").exists());

    // The same 6 steps as 3, then a resume for the other 3, give identical weights.
    let split = tmp.path().join("split");
    let base = smoke_args(&split);
    assert!(run(&refs(&with(&base, &["--epochs", "2", "--max-steps", "3"]))).status.success());
    let out = run(&refs(&with(&base, &["--epochs", "2", "--max-steps", "6", "--resume"])));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed from"));
    let a = model_tensors(&straight.join("last.safetensors"));
    let b = model_tensors(&split.join("last.safetensors"));
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(da == db, "{na} differs between the uninterrupted and the resumed run");
    }

    // --eval-only reads the best checkpoint.
    let out = run(&refs(&with(&smoke_args(&straight), &["--eval-only"])));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("test loss"));
}

/// `--precision bf16` and `f16` train (mixed precision: f32 variables in the checkpoint);
/// f16's loss-scale state is checkpointed and resumed, and resuming it without loss
/// scaling is a clear error.
#[test]
fn mixed_precision_trains_and_resumes_with_its_loss_scale() {
    let tmp = tempfile::tempdir().unwrap();
    for precision in ["bf16", "f16"] {
        let dir = tmp.path().join(precision);
        let base = smoke_args(&dir);
        let out = run(&refs(&with(&base, &["--epochs", "1", "--max-steps", "2", "--precision", precision])));
        assert!(out.status.success(), "--precision {precision}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("mixed precision: mixed_") && stdout.contains("done:"), "{stdout}");
        let last = dir.join("last.safetensors");
        let info = tapegrad::layers::checkpoint::info(&last).unwrap();
        assert_eq!(info.step, 2);
        let bytes = std::fs::read(&last).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in file.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} is saved in f32 under --precision {precision}");
        }
        if precision == "bf16" {
            assert_eq!(info.loss_scale, None);
            continue;
        }
        // Keras' initial scale 2^15, halved by each skipped (overflowing) step so far.
        let state = info.loss_scale.expect("f16 saves the loss scale");
        assert!(state.scale <= 32768.0 && state.scale.log2().fract() == 0.0 && state.good_steps <= 2, "{state:?}");
        let out = run(&refs(&with(&base, &["--epochs", "1", "--max-steps", "3", "--precision", "f16", "--resume"])));
        assert!(out.status.success());
        // The resumed step continued from the saved state: one more finite step, or a halving.
        let resumed = tapegrad::layers::checkpoint::info(&last).unwrap().loss_scale.unwrap();
        let continued = [(state.scale, state.good_steps + 1), (state.scale / 2.0, 0)];
        assert!(continued.contains(&(resumed.scale, resumed.good_steps)), "{state:?} then {resumed:?}");
        let out = run(&refs(&with(&base, &["--epochs", "1", "--max-steps", "4", "--resume"])));
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("loss-scale state") && stderr.contains("LossScaleOptimizer"), "{stderr}");
    }
}

#[test]
fn without_data_fails_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(example())
        .args(["--data-dir", tmp.path().join("nothing-here").to_str().unwrap(), "--device", "cpu"])
        .args(["--checkpoint-dir", tmp.path().join("ck").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--synthetic") && stderr.contains("--data-dir"), "{stderr}");
}

#[test]
fn seed_resnet18_lowers_its_loss_on_synthetic_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("learn");
    let args = [
        "--dataset",
        "cifar10",
        "--synthetic",
        "256",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--checkpoint-dir",
        dir.to_str().unwrap(),
    ];
    assert!(run(&args).status.success());
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .map(|l| {
            let v = l.split("\"train_loss\": ").nth(1).unwrap();
            v[..v.find(',').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < 0.7 * losses[0], "training loss should fall clearly: {losses:?}");
}

#[test]
fn small_cnn_example_learns_synthetic_data() {
    let out = Command::new(example_named("small_cnn"))
        .args(["--synthetic", "256", "--epochs", "2", "--batch-size", "32"])
        .output()
        .expect("run small_cnn");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap();
    let acc: f64 = last.split("test accuracy ").nth(1).unwrap().trim().parse().unwrap();
    assert!(acc > 0.5, "a 10-class synthetic task, chance is 0.1: {last}");
}

#[test]
#[cfg(unix)]
fn ctrl_c_finishes_the_step_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("interrupt");
    let base = smoke_args(&dir);
    let mut child = Command::new(example())
        .args(refs(&with(&base, &["--epochs", "1000"])))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    // A watchdog, so that a run which never prints the expected line fails the test instead
    // of training for 1000 epochs.
    let pid = child.id().to_string();
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(std::time::Duration::from_secs(300)).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    // Interrupt once training runs (the seed's "epoch step loss:" line of step 0 is printed
    // after the handler is installed), then read the rest of the output.
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut stdout = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        stdout.push_str(&line);
        if line.starts_with("0 0 loss:") {
            break;
        }
        line.clear();
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
    assert!(status.success());
    reader.read_to_string(&mut stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    assert!(out.status.success(), "exits cleanly:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("interrupted: checkpoint written"), "{stdout}");
    assert!(dir.join("last.safetensors").exists());
}

/// Unmounts the tmpfs when the test ends, failed or not.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_stops_the_run_with_exit_code_4_and_leaves_nothing_half_written() {
    let dir = std::env::temp_dir().join(format!("tapegrad-full-disk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1 MiB: room for the metrics, not for a ResNet18 checkpoint (tens of MB).
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tapegrad-test"])
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("SKIPPED: cannot mount a 1 MiB tmpfs here (needs root)");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let _guard = Mounted(dir.clone());
    let out = run(&refs(&with(&smoke_args(&dir), &["--epochs", "1", "--max-steps", "1"])));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let best = dir.join("best.safetensors");
    assert!(stderr.contains(&best.display().to_string()) && stderr.contains("--resume"), "{stderr}");
    assert!(!stderr.contains(".tmp-"), "the message names the checkpoint, not its temporary: {stderr}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("safetensors"))
        .collect();
    assert!(left.is_empty(), "no checkpoint or temporary is left on the full disk: {left:?}");
}
