//! The stop switch of a run: a run-fatal cause or a signal sets it; the engine, retry waits and streamed uploads read it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::outcome::Fatal;

/// How often a stoppable wait looks at the switch.
const POLL: Duration = Duration::from_millis(50);

/// Shared by everything a run starts; cloning shares the switch.
#[derive(Clone, Default)]
pub struct Stop(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// The signal received (0: none); written from a signal handler.
    signal: Arc<AtomicUsize>,
    /// The first run-fatal cause.
    fatal: Mutex<Option<Fatal>>,
    raised: AtomicBool,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stop").field(&self.cause()).finish()
    }
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// SIGINT and SIGTERM: the first one sets this switch (the run winds down, writes its failed
    /// list and exits 128+signal); a second one exits at once with 128+signal.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let armed = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            // Order matters: the shutdown is checked before the first signal arms it.
            flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&armed))?;
            flag::register_usize(signal, Arc::clone(&self.0.signal), signal as usize)?;
            flag::register(signal, Arc::clone(&armed))?;
        }
        Ok(())
    }

    /// Stops the run for `cause`; the first cause is the one reported.
    pub fn fatal(&self, cause: Fatal) {
        let mut fatal = self.0.fatal.lock().unwrap_or_else(|e| e.into_inner());
        fatal.get_or_insert(cause);
        self.0.raised.store(true, Ordering::SeqCst);
    }

    /// Whether the run is stopping (nothing new should start).
    pub fn is_stopping(&self) -> bool {
        self.0.raised.load(Ordering::Relaxed) || self.0.signal.load(Ordering::Relaxed) != 0
    }

    /// Why the run stops, when it does: a signal wins over a later fatal cause only if it came first.
    pub fn cause(&self) -> Option<Fatal> {
        if let Some(f) = self
            .0
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(f);
        }
        match self.0.signal.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(Fatal::Interrupted {
                signal: signal as i32,
            }),
        }
    }

    /// Sleeps up to `duration`, waking early when the run stops; true when it stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if self.is_stopping() {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(POLL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_is_kept_and_wakes_sleepers() {
        let stop = Stop::new();
        assert!(!stop.is_stopping());
        assert!(!stop.sleep(Duration::from_millis(1)));
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                assert!(stop.sleep(Duration::from_secs(30)));
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        stop.fatal(Fatal::Interrupted { signal: 15 });
        stop.fatal(Fatal::Interrupted { signal: 2 });
        assert!(waiter.join().unwrap() < Duration::from_secs(5));
        assert!(matches!(
            stop.cause(),
            Some(Fatal::Interrupted { signal: 15 })
        ));
    }
}
