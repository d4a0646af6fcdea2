//! Prefetching: a background thread makes batches a few ahead through a bounded channel.

use crate::batch::Batch;
use crate::error::{DataError, Result};
use crate::pipeline::EpochBatches;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

/// Runs an epoch's batch producer on its own thread, at most `depth` batches ahead of
/// the consumer. Dropping it disconnects the channel, which stops the thread at its next
/// send, and joins it.
#[derive(Debug)]
pub(crate) struct Prefetcher {
    receiver: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts the thread. Fails when the operating system refuses a new thread.
    pub(crate) fn spawn(producer: EpochBatches, depth: usize) -> Result<Self> {
        let (sender, receiver) = sync_channel(depth);
        let worker = std::thread::Builder::new()
            .name("tapegrad-prefetch".into())
            .spawn(move || {
                for batch in producer {
                    if sender.send(batch).is_err() {
                        break; // The consumer is gone.
                    }
                }
            })
            .map_err(|e| DataError::io("starting the prefetch thread for", "<data loader>", e))?;
        Ok(Self { receiver: Some(receiver), worker: Some(worker) })
    }

    /// The next batch, waiting for the thread if it is behind; `None` at the end of the
    /// epoch. A panic on the worker thread (a bug) is resumed here.
    pub(crate) fn next(&mut self) -> Option<Batch> {
        match self.receiver.as_ref()?.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                self.receiver = None;
                if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.receiver = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
