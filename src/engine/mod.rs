//! The engine: runs one job (copy into a sink, check a destination) over the selected images on a
//! worker pool, and is the only place that decides to stop a run.

pub mod copy;
pub mod depends;
pub mod once;
pub mod outcome;
pub mod retries;
pub mod stop;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::digest::Digest;
use crate::inventory::Image;
use crate::progress::Progress;
pub use copy::{BlobRecord, Copy, CopyCounts, ImageOutcome, ImageStatus};
pub use outcome::{Failure, Fatal, Outcome, Run, Step};
pub use stop::Stop;

/// Why a job could not finish an image and the run must stop.
#[derive(Debug)]
pub enum Halt {
    /// A run-fatal cause met by this image.
    Fatal(Fatal),
    /// The work was cut short because the run is already stopping.
    Stopped,
}

impl From<Fatal> for Halt {
    fn from(f: Fatal) -> Halt {
        Halt::Fatal(f)
    }
}

/// What the engine runs for each image.
pub trait Job: Sync {
    type Outcome: Outcome + Send;

    /// Does one image. `Err` stops the run; the image is then recorded with `not_done(started)`.
    fn run(&self, image: &Image, progress: &Progress) -> Result<Self::Outcome, Halt>;

    /// The outcome of an image the run did not do because of `cause`; `started` when it was in progress.
    fn not_done(&self, image: &Image, cause: &Fatal, started: bool) -> Self::Outcome;

    /// After every image: work done once per run (an OCI `index.json`), which may fail images
    /// (their outcomes are updated) or stop the run.
    fn finish(&self, _images: &[Image], _outcomes: &mut [Self::Outcome]) -> Result<(), Fatal> {
        Ok(())
    }
}

/// Runs `job` over `images` on `jobs` workers, which take images in `order` (indexes into
/// `images`). A fatal cause, or a signal seen through `stop`, ends the scheduling: images not
/// started are recorded as not done, in-flight ones end on their own (every request is bounded).
/// Outcomes come back in the order of `images`.
pub fn run<J: Job>(
    job: &J,
    images: &[Image],
    order: &[usize],
    jobs: usize,
    progress: &Progress,
    stop: &Stop,
) -> Run<J::Outcome> {
    let next = AtomicUsize::new(0);
    // One slot per image, filled in place: no second list of outcomes while they are sorted.
    let outcomes: Mutex<Vec<Option<J::Outcome>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(images.len()).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, order.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    let image = &images[i];
                    // Retries this worker made before this image are not the image's.
                    retries::take();
                    let mut outcome = match stop.cause() {
                        Some(cause) => job.not_done(image, &cause, false),
                        None => match job.run(image, progress) {
                            Ok(o) => o,
                            Err(halt) => {
                                if let Halt::Fatal(f) = halt {
                                    stop.fatal(f);
                                }
                                let cause = stop.cause().unwrap_or(Fatal::Output {
                                    message: "the run stopped".to_string(),
                                });
                                job.not_done(image, &cause, true)
                            }
                        },
                    };
                    outcome.set_retries(retries::take());
                    progress.image_done(&image.reference());
                    outcomes.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.retain(Option::is_some);
    let mut outcomes: Vec<J::Outcome> = outcomes.into_iter().map(Option::unwrap).collect();
    if let Err(f) = job.finish(images, &mut outcomes) {
        stop.fatal(f);
    }
    Run {
        outcomes,
        stopped: stop.cause(),
    }
}

/// Images in the order given.
pub fn in_order(images: &[Image]) -> Vec<usize> {
    (0..images.len()).collect()
}

/// Puts images in the order they are worked on. Images are grouped by their largest shared blob
/// (groups of bigger blobs first) and taken one per group in turn, so the first images each
/// start a different shared blob and later ones find their blobs there (mount, not wait).
/// Images sharing nothing come last, in their own order. Referrers (cosign signatures, manifests
/// with a `subject`) come after the image they refer to.
pub fn plan_order(images: &[Image]) -> Vec<usize> {
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for image in images {
        for b in &image.blobs {
            *users.entry(b.digest).or_default() += 1;
        }
    }
    let mut groups: std::collections::BTreeMap<(std::cmp::Reverse<u64>, Digest), Vec<usize>> =
        std::collections::BTreeMap::new();
    let mut alone = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let largest = image
            .blobs
            .iter()
            .filter(|b| users[&b.digest] > 1)
            .max_by_key(|b| (b.size, b.digest));
        match largest {
            Some(b) => groups
                .entry((std::cmp::Reverse(b.size), b.digest))
                .or_default()
                .push(i),
            None => alone.push(i),
        }
    }
    let mut queues: Vec<std::collections::VecDeque<usize>> =
        groups.into_values().map(Into::into).collect();
    let mut order = Vec::with_capacity(images.len());
    while !queues.is_empty() {
        queues.retain_mut(|q| match q.pop_front() {
            Some(i) => {
                order.push(i);
                true
            }
            None => false,
        });
    }
    order.extend(alone);
    depends::after_subjects(order, &depends::subjects(images))
}
