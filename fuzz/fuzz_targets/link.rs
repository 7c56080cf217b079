//! Fuzzes link-file digests and `Retry-After` values: never a panic, a digest only from its exact text.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use ferry::digest::Digest;
use ferry::registry::error::retry_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Digest::from_link(data) {
        Ok(d) => assert_eq!(d.to_string().as_bytes(), data),
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Digest::parse(text);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let _ = retry_after(text, now);
    }
});
