//! Small rayon helpers shared by the CPU kernels: run serially below a size where
//! threading costs more than it saves, and let the program's main thread compute.

use std::cell::Cell;
use std::sync::OnceLock;

/// Below this many elements, loops run on the calling thread.
pub(crate) const PAR_MIN_LEN: usize = 1 << 15;

/// The pool whose thread 0 is the program's main thread, once it has joined one.
static MAIN_THREAD_POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

thread_local! {
    /// Whether this thread has been considered by [`enter_pool_on_main_thread`].
    static CONSIDERED: Cell<bool> = const { Cell::new(false) };
}

/// Makes the program's main thread thread 0 of a rayon pool of its own, with as many
/// threads as rayon's global pool (`RAYON_NUM_THREADS`, or what the program gave
/// `build_global`), the first time it runs a CPU op; on any other thread, and on every
/// later call, it does nothing (one thread-local read).
///
/// Why: a parallel loop started on a thread outside every pool is handed to a pool
/// thread, and the caller sleeps until it is done. A training step runs hundreds of
/// such loops; with one thread, each hand-off costs a wake-up on both sides and moves
/// the data between cores (measured: 15-25% of a ResNet18 step at 1 thread). As a pool
/// thread, the main thread runs its loops itself and shares them with the pool's
/// others, as PyTorch's caller thread does with its intra-op threads.
///
/// Only the main thread joins: it lives as long as the process (rayon cannot release a
/// thread from a pool it joined), and it is the thread that runs a training loop.
/// Other threads (data loaders, test threads) keep using the global pool, whose threads
/// pick up their loops; the main thread's pool is its own, so no other thread can queue
/// work on it that would wait for the main thread.
pub(crate) fn enter_pool_on_main_thread() {
    if CONSIDERED.get() {
        return;
    }
    CONSIDERED.set(true);
    if rayon::current_thread_index().is_some() || std::thread::current().name() != Some("main") {
        return;
    }
    let threads = rayon::current_num_threads();
    MAIN_THREAD_POOL.get_or_init(|| {
        // Building fails only when the OS refuses to start the pool's other threads; the
        // main thread then runs its loops alone, which is slower but correct.
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tapegrad-main-pool-{i}"))
            .use_current_thread()
            .build()
            .ok()
    });
}
