//! Counts the retries the current thread made, so the engine can give each image the retries its job needed.

use std::cell::Cell;

thread_local! {
    static RETRIES: Cell<u64> = const { Cell::new(0) };
}

/// Notes one retry made on this thread (the client's retry loop calls it).
pub fn record() {
    RETRIES.with(|r| r.set(r.get() + 1));
}

/// The retries this thread made since the last call, and starts counting again from zero.
pub fn take() -> u64 {
    RETRIES.with(|r| r.replace(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_thread_and_resets() {
        take();
        record();
        record();
        std::thread::spawn(record).join().unwrap();
        assert_eq!(take(), 2, "the other thread's retry is its own");
        assert_eq!(take(), 0);
    }
}
