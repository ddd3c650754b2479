//! New record IDs and the timestamps records carry.

use std::time::{SystemTime, UNIX_EPOCH};

/// A new 64-hex-digit ID (like containerd's), random so IDs never repeat across restarts.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
