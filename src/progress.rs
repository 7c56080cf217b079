//! Progress on stderr: bars on a terminal, a line every few seconds elsewhere, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const LINE_EVERY: Duration = Duration::from_secs(5);

enum Mode {
    Bars {
        multi: MultiProgress,
        bytes: ProgressBar,
        images: Option<ProgressBar>,
    },
    Lines {
        last: Mutex<Instant>,
    },
    /// A line at every tenth of the bytes (for runs measured in bytes only).
    Tenths {
        printed: AtomicU64,
    },
    Hidden,
}

/// Progress of one run: images done out of a total, bytes moved out of a total.
pub struct Progress {
    verb: &'static str,
    mode: Mode,
    images_total: u64,
    bytes_total: u64,
    images_done: AtomicU64,
    bytes_done: AtomicU64,
    started: Instant,
}

impl Progress {
    /// Progress of reading `bytes_total` bytes (an archive's compressed bytes): no image count.
    pub fn reading(verb: &'static str, bytes_total: u64) -> Progress {
        Progress::new(verb, 0, bytes_total)
    }

    /// `verb` names the run in lines ("push", "export"); totals may be estimates.
    pub fn new(verb: &'static str, images_total: u64, bytes_total: u64) -> Progress {
        let mode = if crate::messages::quiet() {
            Mode::Hidden
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bytes = multi.add(ProgressBar::new(bytes_total));
            bytes.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bytes.set_prefix(verb);
            let images = if images_total == 0 {
                ProgressBar::hidden()
            } else {
                multi.add(ProgressBar::new(images_total))
            };
            images.set_style(
                ProgressStyle::with_template("{prefix:>8} {pos}/{len} {wide_msg}")
                    .expect("valid template"),
            );
            images.set_prefix("images");
            bytes.enable_steady_tick(Duration::from_millis(200));
            crate::messages::set_bars(Some(multi.clone()));
            Mode::Bars {
                multi,
                bytes,
                images: Some(images),
            }
        } else {
            Mode::Lines {
                last: Mutex::new(Instant::now()),
            }
        };
        Progress {
            verb,
            mode,
            images_total,
            bytes_total,
            images_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Progress of bytes alone (hashing): a bar with rate and ETA on a terminal, else a line
    /// at every tenth of `bytes_total`.
    pub fn bytes_only(verb: &'static str, bytes_total: u64) -> Progress {
        let mode = if crate::messages::quiet() {
            Mode::Hidden
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bytes = multi.add(ProgressBar::new(bytes_total));
            bytes.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bytes.set_prefix(verb);
            bytes.enable_steady_tick(Duration::from_millis(200));
            crate::messages::set_bars(Some(multi.clone()));
            Mode::Bars {
                multi,
                bytes,
                images: None,
            }
        } else {
            Mode::Tenths {
                printed: AtomicU64::new(0),
            }
        };
        Progress {
            verb,
            mode,
            images_total: 0,
            bytes_total,
            images_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// A progress that shows nothing (tests, dry runs).
    pub fn hidden() -> Progress {
        Progress {
            verb: "",
            mode: Mode::Hidden,
            images_total: 0,
            bytes_total: 0,
            images_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
        match &self.mode {
            Mode::Bars { bytes, .. } => bytes.inc(n),
            Mode::Lines { .. } => self.maybe_line(),
            Mode::Tenths { printed } => self.maybe_tenth(printed),
            Mode::Hidden => {}
        }
    }

    /// One image finished (whatever its outcome); `what` is shown beside the count on a terminal.
    pub fn image_done(&self, what: &str) {
        self.images_done.fetch_add(1, Ordering::Relaxed);
        match &self.mode {
            Mode::Bars {
                images: Some(images),
                ..
            } => {
                images.inc(1);
                images.set_message(what.to_string());
            }
            Mode::Lines { .. } => self.maybe_line(),
            Mode::Bars { .. } | Mode::Tenths { .. } | Mode::Hidden => {}
        }
    }

    /// The bytes the run expects to move (an estimate).
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    pub fn bytes_done(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn maybe_line(&self) {
        let Mode::Lines { last } = &self.mode else {
            return;
        };
        let Ok(mut last) = last.try_lock() else {
            return;
        };
        if last.elapsed() < LINE_EVERY {
            return;
        }
        *last = Instant::now();
        let bytes = self.bytes_done();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        if self.images_total == 0 {
            crate::note!(
                "ferry {}: {} of {}, {}/s",
                self.verb,
                HumanBytes(bytes),
                HumanBytes(self.bytes_total),
                HumanBytes((bytes as f64 / secs) as u64)
            );
            return;
        }
        crate::note!(
            "ferry {}: {}/{} images, {} of {}, {}/s",
            self.verb,
            self.images_done.load(Ordering::Relaxed),
            self.images_total,
            HumanBytes(bytes),
            HumanBytes(self.bytes_total),
            HumanBytes((bytes as f64 / secs) as u64)
        );
    }

    /// Prints a line when the bytes done cross into a new tenth of the total.
    fn maybe_tenth(&self, printed: &AtomicU64) {
        let bytes = self.bytes_done();
        let tenth = (bytes.saturating_mul(10) / self.bytes_total.max(1)).min(10);
        let before = printed.fetch_max(tenth, Ordering::Relaxed);
        // Runs shorter than a second need no progress lines.
        if tenth <= before || self.started.elapsed() < Duration::from_secs(1) {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        let left = self.bytes_total.saturating_sub(bytes) as f64 / rate.max(1.0);
        crate::note!(
            "ferry {}: {}% — {} of {}, {}/s, ETA {}",
            self.verb,
            tenth * 10,
            HumanBytes(bytes),
            HumanBytes(self.bytes_total),
            HumanBytes(rate as u64),
            indicatif::HumanDuration(Duration::from_secs_f64(left))
        );
    }

    /// Removes the bars (call before printing the summary).
    pub fn finish(&self) {
        if let Mode::Bars {
            multi,
            bytes,
            images,
        } = &self.mode
        {
            bytes.finish_and_clear();
            if let Some(images) = images {
                images.finish_and_clear();
            }
            let _ = multi.clear();
            crate::messages::set_bars(None);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
