//! Times the mean all-reduce of the seed ResNet18's gradients (11.2M f32, 44.8 MB) as
//! `DataParallel` runs it: `mpirun -np 2 target/debug/examples/allreduce_bench [REPEATS]`
//! (built with `--features mpi`). Rank 0 prints the median time and the bus bandwidth
//! (NCCL's definition: 2 (n-1)/n bytes / time).

use std::time::Instant;
use tapegrad_distributed::{Communicator, HostBuffer, ReduceOp};

fn main() -> tapegrad_distributed::Result<()> {
    let repeats: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let comm = Communicator::mpi()?;
    let n = 11_200_000;
    let mut times = Vec::new();
    for i in 0..repeats + 1 {
        let buf = HostBuffer::F32(vec![comm.rank() as f32 + i as f32; n]);
        comm.barrier()?;
        let start = Instant::now();
        comm.all_reduce_buffer_start(buf, ReduceOp::Mean)?.wait_buffer()?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let world = comm.world_size() as f64;
    if comm.rank() == 0 {
        let bytes = n as f64 * 4.0;
        println!(
            "{} ranks, {:.1} MB: median {:.1} ms (min {:.1}), bus bandwidth {:.2} GB/s",
            comm.world_size(),
            bytes / 1e6,
            median * 1e3,
            times[0] * 1e3,
            2.0 * (world - 1.0) / world * bytes / median / 1e9
        );
    }
    Ok(())
}
