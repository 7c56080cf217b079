//! The copy engine: plans selected images for a sink and runs them on a worker pool.

pub mod batches;
pub mod once;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Serialize;

use crate::digest::Digest;
use crate::inventory::Image;
use crate::progress::Progress;
use crate::sink::{BlobAction, Sink, SinkError};

/// How one image ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "reason")]
pub enum ImageStatus {
    /// Written to the sink.
    Copied,
    /// Already complete at the destination.
    Skipped,
    /// Not written: the source image is broken, the destination refused it, or the run stopped.
    Failed(String),
}

/// What happened to one blob of one image.
#[derive(Debug, Clone, Serialize)]
pub struct BlobRecord {
    pub digest: Digest,
    pub size: u64,
    pub action: BlobAction,
}

/// The outcome of one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageOutcome {
    /// The source `repo:tag` (what a failed list holds).
    pub source: String,
    /// Where it went (destination repository or folder), when planning got that far.
    pub target: Option<String>,
    pub digest: Option<Digest>,
    #[serde(flatten)]
    pub status: ImageStatus,
    pub blobs: Vec<BlobRecord>,
}

impl ImageOutcome {
    pub fn failed(&self) -> bool {
        matches!(self.status, ImageStatus::Failed(_))
    }
}

/// Everything a run did, in plan order.
#[derive(Debug, Default, Serialize)]
pub struct RunResult {
    pub images: Vec<ImageOutcome>,
    /// Set when the run stopped early on a global problem (exit 2).
    pub fatal: Option<String>,
}

/// Counts for a summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunCounts {
    pub copied: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Blob operations per action, over every image (a blob shared by two images counts twice).
    pub blobs: HashMap<BlobAction, usize>,
    /// Bytes the actions that write bytes wrote.
    pub bytes_written: u64,
}

impl RunResult {
    pub fn counts(&self) -> RunCounts {
        let mut c = RunCounts::default();
        for image in &self.images {
            match image.status {
                ImageStatus::Copied => c.copied += 1,
                ImageStatus::Skipped => c.skipped += 1,
                ImageStatus::Failed(_) => c.failed += 1,
            }
            for b in &image.blobs {
                *c.blobs.entry(b.action).or_default() += 1;
                if b.action.writes_bytes() {
                    c.bytes_written += b.size;
                }
            }
        }
        c
    }

    /// Source references of the failed images, one per line for `--images`.
    pub fn failed_list(&self) -> Vec<String> {
        self.images
            .iter()
            .filter(|i| i.failed())
            .map(|i| i.source.clone())
            .collect()
    }
}

/// Puts images in the order they are worked on. Images are grouped by their largest shared blob
/// (groups of bigger blobs first) and taken one per group in turn, so the first images each
/// start a different shared blob and later ones find their blobs there (mount, not wait).
/// Images sharing nothing come last, in their own order.
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
    order
}

/// Runs `images` into `sink` on `jobs` workers, which take images strictly in plan order.
/// Broken source images fail without touching the sink; a fatal sink error stops the run.
pub fn run<S: Sink>(sink: &S, images: &[Image], jobs: usize, progress: &Progress) -> RunResult {
    let stop = AtomicBool::new(false);
    let fatal: Mutex<Option<String>> = Mutex::new(None);
    let order = plan_order(images);
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<(usize, ImageOutcome)>> = Mutex::new(Vec::with_capacity(images.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, order.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    let image = &images[i];
                    let outcome = if stop.load(Ordering::Relaxed) {
                        not_attempted(image)
                    } else {
                        let (outcome, fatal_error) = run_image(sink, image, progress);
                        if let Some(e) = fatal_error {
                            stop.store(true, Ordering::Relaxed);
                            fatal.lock().unwrap().get_or_insert(e);
                        }
                        outcome
                    };
                    progress.image_done(&image.reference());
                    outcomes.lock().unwrap().push((i, outcome));
                }
            });
        }
    });
    let mut result = RunResult {
        images: Vec::new(),
        fatal: fatal.into_inner().unwrap(),
    };
    if let Err(e) = sink.finish() {
        result.fatal.get_or_insert(e.to_string());
    }
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|(i, _)| *i);
    result.images = outcomes.into_iter().map(|(_, o)| o).collect();
    result
}

pub(crate) fn not_attempted(image: &Image) -> ImageOutcome {
    ImageOutcome {
        source: image.reference(),
        target: None,
        digest: image.digest,
        status: ImageStatus::Failed("not attempted: the run stopped early".into()),
        blobs: Vec::new(),
    }
}

/// One image: plan its target, skip it if present, else blobs, then manifests children first.
/// A fatal sink error also comes back on its own, so the run can stop.
fn run_image<S: Sink>(
    sink: &S,
    image: &Image,
    progress: &Progress,
) -> (ImageOutcome, Option<String>) {
    let mut outcome = ImageOutcome {
        source: image.reference(),
        target: None,
        digest: image.digest,
        status: ImageStatus::Copied,
        blobs: Vec::new(),
    };
    if !image.is_ok() {
        outcome.status = ImageStatus::Failed(format!("source: {}", image.problem_summary()));
        return (outcome, None);
    }
    let target = match sink.target(image) {
        Ok(t) => t,
        Err(e) => {
            outcome.status = ImageStatus::Failed(e);
            return (outcome, None);
        }
    };
    outcome.target = Some(target.to_string());
    let fail = |mut outcome: ImageOutcome, e: SinkError, what: String| {
        let message = format!("{what}: {e}");
        outcome.status = ImageStatus::Failed(message.clone());
        (outcome, e.is_fatal().then_some(message))
    };
    match sink.image_present(&target, image) {
        Ok(true) => {
            outcome.status = ImageStatus::Skipped;
            return (outcome, None);
        }
        Ok(false) => {}
        Err(e) => return fail(outcome, e, format!("checking {target}")),
    }
    let mut blobs: Vec<_> = image.blobs.iter().collect();
    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
    for blob in blobs {
        let Some(file) = &blob.file else {
            outcome.status = ImageStatus::Failed(format!(
                "{} blob {} has no local file",
                blob.role, blob.digest
            ));
            return (outcome, None);
        };
        match sink.put_blob(&target, blob, file, progress) {
            Ok(action) => outcome.blobs.push(BlobRecord {
                digest: blob.digest,
                size: blob.size,
                action,
            }),
            Err(e) => {
                let what = format!("{} blob {}", blob.role, blob.digest);
                return fail(outcome, e, what);
            }
        }
    }
    let count = image.manifests.len();
    for (i, manifest) in image.manifests.iter().enumerate() {
        let tag = if i + 1 == count {
            image.tag.as_deref()
        } else {
            None
        };
        if let Err(e) = sink.put_manifest(&target, manifest, tag) {
            let what = format!("manifest {}", manifest.digest());
            return fail(outcome, e, what);
        }
    }
    if let Err(e) = sink.finish_image(&target, image) {
        return fail(outcome, e, format!("finishing {target}"));
    }
    (outcome, None)
}
