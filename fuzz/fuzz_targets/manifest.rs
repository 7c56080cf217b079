//! Fuzzes manifest classification: never a panic, the digest is always of the exact bytes.
#![no_main]

use ferry::digest::Digest;
use ferry::manifest::{RawManifest, config_platform};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match RawManifest::parse(data.to_vec()) {
        Ok(m) => {
            assert_eq!(m.bytes(), data);
            assert_eq!(m.digest(), Digest::of(data));
            let _ = m.type_label();
            for d in m.manifests().iter().chain(m.layers()).chain(m.config()) {
                assert!(d.size <= i64::MAX as u64);
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
    let _ = config_platform(data);
});
