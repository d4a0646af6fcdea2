//! Unique default layer names, as Keras gives them ("conv2d", "conv2d_1", ...).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// A name not yet handed out in this process: `prefix` the first time, then `prefix_1`,
/// `prefix_2`, ... Layers use it for their default names.
pub fn unique_name(prefix: &str) -> String {
    static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    let mut counts = COUNTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let n = counts.entry(prefix.to_string()).or_insert(0);
    let name = if *n == 0 { prefix.to_string() } else { format!("{prefix}_{n}") };
    *n += 1;
    name
}
