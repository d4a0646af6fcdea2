//! The seed program (shared/seed/resnet_cifar100_tf.py) in Rust: ResNet18 on CIFAR-100,
//! trained with a GradientTape loop.
//!
//! ```text
//! cargo run --release --example resnet_cifar100 -- --help
//! cargo run --release --example resnet_cifar100 --features cuda            # on a GPU
//! cargo run --release --example resnet_cifar100 -- --synthetic 2048 --epochs 2   # no download
//! cargo run --release --example resnet_cifar100 --features cuda -- --cuda-graph  # replayed steps
//! cargo run --release --example resnet_cifar100 --features cuda -- --precision bf16  # mixed precision
//! ```
//!
//! The loop reads as the seed's: call the model under a tape, take the gradient of the
//! loss with respect to the trainable variables, let the optimizer apply it. Unlike the
//! seed, the test set is evaluated in inference mode (BatchNormalization uses its moving
//! statistics), which is what the seed meant to measure.
//!
//! Data-parallel: `mpirun -np N target/release/examples/resnet_cifar100 --distributed mpi`
//! (built with `--features mpi`) trains one replica per process on its shard of each epoch,
//! `--batch-size` images per rank, averaging gradients after every step; rank 0 prints,
//! writes the checkpoints and the metrics, and every epoch's line gives each rank's and the
//! global images/s. `--distributed nccl` (built with `--features mpi,nccl`, started the same
//! way with one process per GPU) trains each rank on its local GPU and averages the
//! gradients there with NCCL.
//!
//! Exit codes: 0 done; 1 an error (named on stderr); 2 a bad command line; 3 the training
//! diverged (a NaN or infinite loss: the run stops at the first one it reads, which on a
//! GPU is every 25 steps, and never writes a non-finite checkpoint); 4 a checkpoint could
//! not be written (a full disk: every file on disk is still a whole earlier checkpoint, and
//! `--resume` repeats the lost epoch once there is space).

mod cli;
mod distributed;
mod report;
mod setup;

use clap::Parser;
use cli::Args;
use indicatif::{ProgressBar, ProgressStyle};
use report::EpochRecord;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tapegrad::data::{DataLoader, LoaderConfig, Shard};
use tapegrad::distributed::DataParallel;
use tapegrad::layers::mixed_precision::{full_precision, set_global_policy};
use tapegrad::layers::training::GraphedStep;
use tapegrad::layers::{checkpoint, metrics, InputSpec, Layer, Mode};
use tapegrad::{Device, GradientTape, Tensor};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The run stopped because the loss or the weights stopped being finite.
#[derive(Debug)]
struct Diverged(String);

/// The run stopped because a checkpoint could not be written (a full disk, say). Saves are
/// atomic, so every checkpoint on disk is still a whole earlier one, and `--resume` repeats
/// the lost epoch exactly once space is freed.
#[derive(Debug)]
struct SaveFailed(String);

impl std::fmt::Display for SaveFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SaveFailed {}

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Diverged {}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Diverged>() => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
        Err(e) if e.is::<SaveFailed>() => {
            eprintln!("error: {e}");
            ExitCode::from(4)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Fails with [`Diverged`] unless `loss` (a value read from the device) is finite.
fn check_loss(loss: f64, epoch: u64, step: u64) -> AnyResult<()> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(Box::new(Diverged(format!(
        "the training loss is {loss} at epoch {epoch}, step {step}: stopping (the learning rate may be too high, or \
         the data holds NaN; TAPEGRAD_CHECK_NUMERICS=1 names the first op that made it); no checkpoint was written \
         from this state"
    ))))
}

/// Writes a checkpoint only from finite weights: a diverged model never becomes `best`.
/// A failed write stops the run with [`SaveFailed`], which says what is still on disk.
fn save_checkpoint(
    path: &std::path::Path,
    model: &dyn Layer,
    optimizer: &dyn tapegrad::layers::optimizers::Optimizer,
    step: u64,
) -> AnyResult<()> {
    let variables = model.variables();
    let values: Vec<Tensor> = variables.iter().map(|v| v.value_untracked()).collect();
    if !tapegrad::tensor::check_numerics::all_finite(&values.iter().collect::<Vec<_>>())? {
        return Err(Box::new(Diverged(format!(
            "the weights hold NaN or infinite values at step {step}: not writing {}",
            path.display()
        ))));
    }
    checkpoint::save(path, model, Some(optimizer), step).map_err(|e| {
        let last = path.with_file_name("last.safetensors");
        SaveFailed(format!(
            "{e}\nstopping at step {step}: nothing half-written was left, and {} holds the end of the previous \
             epoch (if one was saved). Free space (or pick another --checkpoint-dir, moving the files) and rerun \
             with --resume: the lost epoch is repeated exactly.",
            last.display()
        ))
    })?;
    Ok(())
}

fn run(args: Args) -> AnyResult<()> {
    tapegrad::layers::random::set_seed(args.seed);
    let comm = distributed::communicator(args.distributed)?;
    // An NCCL rank trains on its own GPU; other backends on the one --device names.
    let device = match comm.reduction_device() {
        Some(_) if args.device == cli::DeviceKind::Cpu => {
            return Err("--distributed nccl reduces CUDA tensors: use --device cuda (or auto)".into())
        }
        Some(gpu) => gpu,
        None => setup::device(args.device)?,
    };
    let (rank, world) = (comm.rank(), comm.world_size());
    // Rank 0 alone prints the model, progress and results, and writes files.
    let writer = rank == 0;
    let dp = DataParallel::new(comm.clone());
    let (train, test) = setup::datasets(&args)?;
    // --precision: Keras' set_global_policy, before the model is built.
    let policy = args.precision.policy();
    set_global_policy(policy);
    if writer && policy.is_mixed() {
        println!(
            "mixed precision: {policy} (layers compute in {}, variables, batch norm, softmax and the loss in f32{})",
            policy.compute_dtype(),
            if args.precision == cli::Precision::F16 { "; dynamic loss scaling" } else { "" }
        );
    }
    let model = setup::model(args.arch, train.num_classes());
    model.build(&InputSpec::new([args.batch_size, 32, 32, 3]).with_device(device))?;
    if writer {
        println!("{}", tapegrad::layers::summary(&*model, &InputSpec::new([args.batch_size, 32, 32, 3]))?);
    }

    let mut train_config = LoaderConfig::new(args.batch_size).shuffle(args.seed).augment(setup::augment(&args));
    if world > 1 {
        train_config = train_config.shard(Shard::new(rank, world)?);
        if writer {
            println!(
                "data-parallel over {world} ranks ({}): {} images per step",
                comm.backend(),
                args.batch_size * world
            );
        }
    }
    let train = DataLoader::new(train, train_config)?;
    let test = DataLoader::new(test, LoaderConfig::new(args.batch_size))?;
    let steps_per_epoch = train.num_batches() as u64;
    let mut optimizer = setup::optimizer(&args, args.total_steps(steps_per_epoch)?)?;
    let loss_fn = setup::loss(&args);

    if !args.eval_only && writer {
        args.prepare_checkpoint_dir()?;
    }
    let last = args.checkpoint_dir.join("last.safetensors");
    let best = args.checkpoint_dir.join("best.safetensors");
    if args.eval_only {
        let path = if args.resume { &last } else { &best };
        checkpoint::load(path, &*model, None)?;
        let (loss, top1, top5) = evaluate(&*model, &test, &device, &loss_fn)?;
        println!("{}: test loss {loss:.4}, accuracy {top1:.4}, top-5 {top5:.4}", path.display());
        return Ok(());
    }
    let mut step = 0;
    if args.resume {
        step = checkpoint::load(&last, &*model, Some(optimizer.as_mut()))?.step;
        if writer {
            println!("resumed from {} at step {step}", last.display());
        }
    }
    // Every replica starts from rank 0's weights (and, resumed, from the same file).
    if world > 1 {
        dp.broadcast_variables(&model.variables())?;
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;

    let metrics_path = args.metrics_path();
    // A resumed run continues the file (and the best accuracy so far); a new run starts it anew.
    let mut history = if args.resume { report::read_history(&metrics_path) } else { Vec::new() };
    if writer && !args.resume && metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| format!("--metrics {}: {e}", metrics_path.display()))?;
    }
    let mut best_acc = history.iter().map(|r| r.test_acc).fold(f64::NEG_INFINITY, f64::max);
    let (mut total_images, run_start) = (0u64, Instant::now());
    let mut train_seconds = 0.0;
    let max_steps = args.max_steps.unwrap_or(u64::MAX);
    // --cuda-graph: the step below, optimizer update included, captured once and replayed.
    let mut graphed = args.cuda_graph.then(GraphedStep::new);
    let forward = |x: &Tensor, y: &Tensor| -> tapegrad::layers::Result<(Tensor, Tensor)> {
        // The logits go to f32 before the loss and the accuracy (mixed precision).
        let logits = full_precision(&model.call(x, Mode::Train)?)?;
        Ok((loss_fn.sparse(y, &logits)?, logits))
    };
    for epoch in step / steps_per_epoch.max(1)..args.epochs {
        if step >= max_steps || interrupted.load(Ordering::SeqCst) {
            break;
        }
        let skip = (step - epoch * steps_per_epoch) as usize;
        let bar = progress_bar(steps_per_epoch, epoch, args.epochs);
        if !writer {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_position(skip as u64);
        let (mut loss_sum, mut correct, mut seen, epoch_start) = (0.0, 0usize, 0usize, Instant::now());
        // The epoch's sums stay on the device between reads: reading a value waits for the
        // device, so on a GPU the host reads every `read_every` steps and otherwise queues
        // the next step while the current one runs.
        let read_every = if device.is_cpu() { 1 } else { 25 }; // divides 100: the seed's lines
        let mut pending: Option<(Tensor, Tensor)> = None;
        for (i, batch) in train.epoch(epoch)?.enumerate().skip(skip) {
            let (x, y) = batch.into_tensors(&device)?;
            let (loss, logits) = if let Some(graphed) = graphed.as_mut() {
                // Replayed: loss and logits are the graph's buffers, used before the next step.
                graphed.run(&*model, optimizer.as_mut(), &x, &y, forward)?
            } else {
                // The seed's step: forward under the tape, gradient, apply.
                let tape = GradientTape::new();
                let (loss, scaled_loss, logits) = tape.record(|| {
                    let (loss, logits) = forward(&x, &y)?;
                    // --precision f16: the loss times the loss scale (otherwise the loss itself).
                    Ok((loss.clone(), optimizer.scale_loss(&loss)?, logits))
                })?;
                // One process keeps the plain gradient (no host copies); ranks average theirs.
                let grads = if world > 1 {
                    dp.gradient(&tape, &scaled_loss, &model.trainable_variables())?
                } else {
                    tape.gradient(&scaled_loss, &model.trainable_variables())?
                };
                optimizer.apply_gradients(&grads, &model.trainable_variables())?;
                (loss, logits)
            };

            let n = y.elem_count();
            let batch_sums = (loss.mul_scalar(n as f64)?, metrics::correct_count_tensor(&y, &logits)?);
            pending = Some(match pending.take() {
                Some((l, c)) => (l.add(&batch_sums.0)?, c.add(&batch_sums.1)?),
                None => batch_sums,
            });
            seen += n;
            step += 1;
            bar.inc(1);
            let last_step = i + 1 == steps_per_epoch as usize;
            // Ranks stop together (Ctrl-C reaches them at different steps).
            let stop = step >= max_steps || any_rank(&comm, interrupted.load(Ordering::SeqCst))?;
            if i % read_every == 0 || last_step || stop {
                if let Some((l, c)) = pending.take() {
                    let l = l.to_scalar::<f32>()? as f64;
                    check_loss(l, epoch, step)?;
                    loss_sum += l;
                    correct += c.to_scalar::<i64>()? as usize;
                }
                let ips = seen as f64 / epoch_start.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4} acc {:.3} {ips:.0} img/s",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64
                ));
            }
            if i % 100 == 0 && writer {
                // The seed prints this line every 100 steps: above the bar on a terminal,
                // plainly when the output is piped (a hidden bar prints nothing).
                let line = format!("{epoch} {i} loss: {:.6}", loss.to_scalar::<f32>()?);
                if bar.is_hidden() {
                    println!("{line}");
                } else {
                    bar.println(line);
                }
            }
            if stop {
                break;
            }
        }
        bar.finish_and_clear();
        let seconds = epoch_start.elapsed().as_secs_f64();
        train_seconds += seconds;
        let (per_rank, global_ips) = distributed::images_per_second(&comm, seen as f64 / seconds)?;
        let (loss_sum, correct, seen) = if world > 1 {
            distributed::global_sums(&comm, loss_sum, correct, seen)?
        } else {
            (loss_sum, correct, seen)
        };
        total_images += seen as u64;
        if world > 1 && writer {
            let ranks: Vec<String> = per_rank.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "{epoch} images/s per rank [{}], global {global_ips:.0}; rank 0 spent {:.2} s in collectives",
                ranks.join(", "),
                comm.busy_time().as_secs_f64()
            );
        }
        // Best, then last, then the metrics line: a failed save leaves `last` and the metrics
        // at the previous epoch, so `--resume` repeats this epoch and writes all three again.
        let (test_loss, test_acc, test_top5) = evaluate(&*model, &test, &device, &loss_fn)?;
        // Every rank evaluates (same weights, same result), so they stay in step.
        if test_acc > best_acc && test_loss.is_finite() {
            if writer {
                save_checkpoint(&best, &*model, optimizer.as_ref(), step)?;
            }
            best_acc = test_acc;
        }
        if writer {
            save_checkpoint(&last, &*model, optimizer.as_ref(), step)?;
        }
        let record = EpochRecord {
            epoch,
            steps: step,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            test_loss,
            test_acc,
            test_top5,
            images_per_sec: global_ips,
            seconds,
            learning_rate: optimizer.learning_rate(),
        };
        history.push(record.clone());
        if !writer {
            continue;
        }
        println!(
            "{epoch} acc: {test_acc:.4}  (test loss {test_loss:.4}, top-5 {test_top5:.4}; train loss {:.4}, acc {:.4}; \
             {:.0} img/s)",
            record.train_loss, record.train_acc, record.images_per_sec
        );
        report::write_epoch(&metrics_path, &record, &history)
            .map_err(|e| format!("--metrics {}: {e}", metrics_path.display()))?;
    }
    if let Some(graphed) = &graphed {
        let s = graphed.stats();
        println!(
            "cuda graph: {} steps replayed, {} captured, {} eager{}",
            s.replays,
            s.captures,
            s.eager_steps,
            graphed.fallback_reason().map(|r| format!(" (last eager step: {r})")).unwrap_or_default()
        );
    }
    if !writer {
        return Ok(());
    }
    if interrupted.load(Ordering::SeqCst) {
        println!("interrupted: checkpoint written to {} at step {step}", last.display());
    }
    println!(
        "done: best test accuracy {:.4}, {step} steps, {:.1} s in all, {:.0} train images/s",
        if best_acc.is_finite() { best_acc } else { f64::NAN },
        run_start.elapsed().as_secs_f64(),
        total_images as f64 / train_seconds.max(1e-9)
    );
    Ok(())
}

/// Whether `flag` is set on any rank (on one process: `flag`).
fn any_rank(comm: &tapegrad::distributed::Communicator, flag: bool) -> AnyResult<bool> {
    if comm.world_size() == 1 {
        return Ok(flag);
    }
    let t = Tensor::from_vec(vec![flag as i64], [1], &Device::Cpu)?;
    Ok(comm.all_reduce(&t, tapegrad::distributed::ReduceOp::Sum)?.to_vec::<i64>()?[0] > 0)
}

/// Test-set loss, top-1 and top-5 accuracy, in inference mode (no tape: nothing is recorded).
fn evaluate(
    model: &dyn Layer,
    test: &DataLoader,
    device: &Device,
    loss_fn: &tapegrad::layers::losses::CrossEntropy,
) -> AnyResult<(f64, f64, f64)> {
    let (mut loss_sum, mut top1, mut top5, mut seen) = (0.0, 0usize, 0usize, 0usize);
    for batch in test.epoch(0)? {
        let (x, y): (Tensor, Tensor) = batch.into_tensors(device)?;
        let logits = full_precision(&model.call(&x, Mode::Infer)?)?;
        let n = y.elem_count();
        loss_sum += loss_fn.sparse(&y, &logits)?.to_scalar::<f32>()? as f64 * n as f64;
        top1 += metrics::correct_count(&y, &logits)?;
        top5 += metrics::top_k_correct_count(&y, &logits, 5.min(logits.dims()[1]))?;
        seen += n;
    }
    let seen = seen.max(1) as f64;
    Ok((loss_sum / seen, top1 as f64 / seen, top5 as f64 / seen))
}

fn progress_bar(steps: u64, epoch: u64, epochs: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar
}
