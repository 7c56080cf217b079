//! Runs images in batches, one after another, as one run: a later batch starts when the one
//! before is done (a shard pushes the blobs it is home for before the images that mount them).

use super::{ImageOutcome, RunResult, not_attempted, run};
use crate::inventory::Image;
use crate::progress::Progress;
use crate::sink::Sink;

/// Runs `batches` (indexes into `images`, which together name every image once) into `sink`;
/// outcomes come back in `images` order. A fatal error stops the run: later batches are not attempted.
pub fn run_batches<S: Sink>(
    sink: &S,
    images: &[Image],
    batches: &[Vec<usize>],
    jobs: usize,
    progress: &Progress,
) -> RunResult {
    let mut slots: Vec<Option<ImageOutcome>> = vec![None; images.len()];
    let mut fatal = None;
    for batch in batches {
        if fatal.is_some() {
            for &i in batch {
                slots[i] = Some(not_attempted(&images[i]));
                progress.image_done(&images[i].reference());
            }
            continue;
        }
        let part: Vec<Image> = batch.iter().map(|&i| images[i].clone()).collect();
        let result = run(sink, &part, jobs, progress);
        for (&i, outcome) in batch.iter().zip(result.images) {
            slots[i] = Some(outcome);
        }
        fatal = result.fatal;
    }
    debug_assert!(
        slots.iter().all(Option::is_some),
        "batches cover every image"
    );
    RunResult {
        images: slots.into_iter().flatten().collect(),
        fatal,
    }
}
