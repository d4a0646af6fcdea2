//! Data-parallel training on an in-process group of 2 ranks equals single-process
//! training on the combined batch, and buckets start their all-reduce during the
//! backward pass.

mod common;

use std::sync::Arc;
use std::time::Duration;
use tapegrad_distributed::{Communicator, DataParallel, ThreadGroup};

#[test]
fn two_ranks_with_batch_b_equal_one_process_with_batch_2b() {
    let single = common::train(&DataParallel::new(Arc::new(Communicator::local().unwrap())), 8, 6);
    let comms = ThreadGroup::communicators(2, Duration::from_secs(30)).unwrap();
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    // Tiny buckets: several all-reduces per step, most started mid-walk.
                    let dp = DataParallel::new(Arc::new(c)).with_bucket_bytes(40).unwrap();
                    let run = common::train(&dp, 8, 6);
                    (run, dp.last_step())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (run, report) in &runs {
        common::assert_close(run, &single);
        assert_eq!(report.bytes, (3 * 8 + 8 + 8 * 2 + 2) * 4);
        assert!(report.buckets >= 2, "{report:?}");
        assert!(report.started_during_backward >= 1, "{report:?}");
    }
    // The replicas hold bit-identical weights.
    assert_eq!(runs[0].0 .1, runs[1].0 .1);
}

#[test]
fn one_bucket_holds_everything_by_default() {
    let comms = ThreadGroup::communicators(2, Duration::from_secs(30)).unwrap();
    std::thread::scope(|s| {
        for c in comms {
            s.spawn(move || {
                let dp = DataParallel::new(Arc::new(c));
                common::train(&dp, 4, 1);
                let report = dp.last_step();
                assert_eq!((report.buckets, report.started_during_backward), (1, 0));
            });
        }
    });
    assert!(DataParallel::new(Arc::new(Communicator::local().unwrap())).with_bucket_bytes(0).is_err());
}
