//! [`ThreadGroup`]: ranks as threads of one process, exchanging host buffers through
//! shared memory. For tests of the collectives' semantics without MPI, and for
//! data-parallel runs over several devices of one process.

use crate::communicator::Communicator;
use crate::transport::Transport;
use crate::{Error, HostBuffer, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Makes the communicators of an in-process group.
pub struct ThreadGroup;

impl ThreadGroup {
    /// `world_size` communicators, rank 0 first; give one to each thread. A rank waits for
    /// the others at most `timeout` inside a collective (its caller's wait has the
    /// communicator's own timeout).
    pub fn communicators(world_size: usize, timeout: Duration) -> Result<Vec<Communicator>> {
        if world_size == 0 {
            return Err(Error::Invalid {
                rank: 0,
                collective: "ThreadGroup::communicators",
                msg: "the world size must be at least 1".into(),
            });
        }
        let shared = Arc::new(Rendezvous::new(world_size, timeout));
        (0..world_size)
            .map(|rank| {
                let shared = shared.clone();
                Communicator::spawn(Box::new(move || {
                    Ok(Box::new(ThreadTransport { rank, shared }) as Box<dyn Transport>)
                }))
                .map(|c| c.with_timeout(timeout))
            })
            .collect()
    }
}

/// One exchange at a time: every rank deposits a buffer, waits until all have, takes
/// copies, and the last to leave opens the next round.
struct Rendezvous {
    world_size: usize,
    timeout: Duration,
    state: Mutex<Round>,
    changed: Condvar,
}

struct Round {
    slots: Vec<Option<HostBuffer>>,
    arrived: usize,
    left: usize,
    /// All ranks have deposited; the round is being read.
    full: bool,
    generation: u64,
}

impl Rendezvous {
    fn new(world_size: usize, timeout: Duration) -> Rendezvous {
        Rendezvous {
            world_size,
            timeout,
            state: Mutex::new(Round { slots: vec![None; world_size], arrived: 0, left: 0, full: false, generation: 0 }),
            changed: Condvar::new(),
        }
    }

    /// Every rank's buffer, in rank order.
    fn exchange(&self, rank: usize, buf: HostBuffer) -> Result<Vec<HostBuffer>> {
        // The caller's PendingCollective restates this with the collective, shape and
        // dtype; which of the two waits notices a dead rank first is a race.
        let lost = || Error::Timeout {
            rank,
            collective: "exchange",
            shape: String::new(),
            dtype: String::new(),
            timeout: self.timeout,
        };
        let poisoned = || Error::Backend { backend: "threads", msg: "a rank panicked during a collective".into() };
        let state = self.state.lock().map_err(|_| poisoned())?;
        // The previous round may still be read by slower ranks.
        let (mut state, wait) =
            self.changed.wait_timeout_while(state, self.timeout, |s| s.full).map_err(|_| poisoned())?;
        if wait.timed_out() {
            return Err(lost());
        }
        state.slots[rank] = Some(buf);
        state.arrived += 1;
        let generation = state.generation;
        if state.arrived == self.world_size {
            state.full = true;
            self.changed.notify_all();
        }
        let (mut state, wait) = self
            .changed
            .wait_timeout_while(state, self.timeout, |s| !(s.full && s.generation == generation))
            .map_err(|_| poisoned())?;
        if wait.timed_out() {
            return Err(lost());
        }
        let all: Vec<HostBuffer> = state.slots.iter().flatten().cloned().collect();
        state.left += 1;
        if state.left == self.world_size {
            state.slots.iter_mut().for_each(|s| *s = None);
            state.arrived = 0;
            state.left = 0;
            state.full = false;
            state.generation += 1;
            self.changed.notify_all();
        }
        Ok(all)
    }
}

struct ThreadTransport {
    rank: usize,
    shared: Arc<Rendezvous>,
}

impl Transport for ThreadTransport {
    fn name(&self) -> &'static str {
        "threads"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.world_size
    }
    fn all_gather(&mut self, local: &HostBuffer) -> Result<HostBuffer> {
        let all = self.shared.exchange(self.rank, local.clone())?;
        let mut out = HostBuffer::with_capacity(local.dtype(), local.len() * all.len())?;
        for b in &all {
            out.extend(b)?;
        }
        Ok(out)
    }
    fn all_reduce_sum(&mut self, local: HostBuffer) -> Result<HostBuffer> {
        // Summed in rank order on every rank: the same bits everywhere, and deterministic.
        let all = self.shared.exchange(self.rank, local)?;
        let mut iter = all.into_iter();
        let mut sum = iter.next().ok_or_else(|| Error::Backend { backend: "threads", msg: "empty group".into() })?;
        for b in iter {
            sum.add_assign(&b)?;
        }
        Ok(sum)
    }
    fn broadcast(&mut self, local: HostBuffer, root: usize) -> Result<HostBuffer> {
        let all = self.shared.exchange(self.rank, local)?;
        all.into_iter()
            .nth(root)
            .ok_or_else(|| Error::Backend { backend: "threads", msg: format!("root {root} is outside the group") })
    }
    fn barrier(&mut self) -> Result<()> {
        self.shared.exchange(self.rank, HostBuffer::I64(Vec::new())).map(|_| ())
    }
}
