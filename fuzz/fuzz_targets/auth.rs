//! Fuzzes what a registry or the user's files say about authentication: `WWW-Authenticate`
//! values, token answers and auth files. Never a panic; errors never quote a token.
#![no_main]

use std::path::Path;

use ferry::registry::auth::{Challenge, MAX_TOKEN_LIFE, token_reply};
use ferry::registry::credentials::lookup_auth_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Challenge::parse(text);
    }
    match token_reply("https://auth.example/token", data) {
        Ok((_, life)) => {
            assert!(life <= MAX_TOKEN_LIFE);
            let _ = std::time::Instant::now() + life;
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
    let _ = lookup_auth_text(Path::new("auth.json"), data, "reg.example:5000");
});
