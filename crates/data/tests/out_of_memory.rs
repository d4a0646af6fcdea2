//! Buffers whose size the caller decides are allocated fallibly: an impossible request is
//! `DataError::OutOfMemory` naming what it was for, never an abort.

use tapegrad_data::{synthetic, DataError};

#[test]
fn an_impossible_synthetic_dataset_is_an_error() {
    let n = 1usize << 50;
    match synthetic(n, 10, 1) {
        Err(DataError::OutOfMemory { what, bytes }) => {
            assert!(what.contains(&n.to_string()), "{what}");
            assert!(bytes >= n as u64, "{bytes}");
        }
        Err(e) => panic!("expected OutOfMemory, got {e}"),
        Ok(_) => panic!("2^50 synthetic images were allocated"),
    }
}

#[test]
fn the_message_names_the_request() {
    let Err(e) = synthetic(1 << 50, 10, 1) else { panic!("2^50 synthetic images were allocated") };
    let message = e.to_string();
    assert!(message.starts_with("out of memory: synthetic: 1125899906842624 images needs"), "{message}");
}
