//! What a person reads on stderr: notes, warnings, errors, and `--debug` lines; quiet-aware and bar-safe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static QUIET: AtomicBool = AtomicBool::new(false);
static DEBUG: AtomicBool = AtomicBool::new(false);
static BARS: OnceLock<Mutex<Option<indicatif::MultiProgress>>> = OnceLock::new();

pub fn init(quiet: bool, debug: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    DEBUG.store(debug, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// While progress bars are drawn, messages are printed above them instead of through them.
pub fn set_bars(bars: Option<indicatif::MultiProgress>) {
    *BARS.get_or_init(|| Mutex::new(None)).lock().unwrap() = bars;
}

/// Prints one line to stderr, above any progress bars.
pub fn eprint_line(line: &str) {
    let guard = BARS.get().map(|m| m.lock().unwrap());
    match guard.as_ref().and_then(|g| g.as_ref()) {
        Some(bars) => bars.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// Progress and summaries: silenced by `--quiet`.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::messages::quiet() {
            $crate::messages::eprint_line(&format!($($arg)*));
        }
    };
}

/// Something the user should know about; silenced by `--quiet`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        if !$crate::messages::quiet() {
            $crate::messages::eprint_line(&format!("ferry: warning: {}", format_args!($($arg)*)));
        }
    };
}

/// A failure; always printed.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        $crate::messages::eprint_line(&format!("ferry: error: {}", format_args!($($arg)*)))
    };
}

/// `--debug` detail (never secrets).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::messages::debug_enabled() {
            $crate::messages::eprint_line(&format!("ferry: debug: {}", format_args!($($arg)*)));
        }
    };
}
