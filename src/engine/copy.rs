//! The copy job: one image into a sink (skip when present, blobs, then manifests children first,
//! the tag last), and the outcomes push and export report.

use std::collections::HashMap;

use serde::{Serialize, Serializer};

use super::depends::{SUBJECT_WAIT_MAX, SubjectEnd, Subjects, Waited};
use super::outcome::{Failure, Fatal, Outcome, Step};
use super::stop::Stop;
use super::{Halt, Job};
use crate::digest::Digest;
use crate::inventory::Image;
use crate::progress::Progress;
use crate::sink::{BlobAction, ImageError, Sink, SinkError};
use crate::source::Source;

/// How one image ended.
#[derive(Debug)]
pub enum ImageStatus {
    /// Written to the sink.
    Copied,
    /// Already complete at the destination.
    Skipped,
    /// Not written: the source is broken, the destination refused it, or it was cut off (boxed:
    /// an outcome per image is held for the whole run).
    Failed(Box<Failure>),
    /// Not started: the run stopped first, for this cause.
    NotDone(Fatal),
}

/// What happened to one blob of one image.
#[derive(Debug, Clone, Serialize)]
pub struct BlobRecord {
    pub digest: Digest,
    pub size: u64,
    pub action: BlobAction,
}

/// The outcome of one image.
#[derive(Debug, Serialize)]
pub struct ImageOutcome {
    /// The source `repo:tag` (what a failed list holds).
    pub source: String,
    /// Where it went (destination repository or folder), when planning got that far.
    pub target: Option<String>,
    pub digest: Option<Digest>,
    #[serde(flatten)]
    pub status: ImageStatus,
    pub blobs: Vec<BlobRecord>,
    /// Requests retried for this image (a blob another image was already placing counts for that one).
    pub retries: u64,
}

impl Serialize for ImageStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Record<'a> {
            status: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<String>,
        }
        let (status, reason) = match self {
            ImageStatus::Copied => ("copied", None),
            ImageStatus::Skipped => ("skipped", None),
            ImageStatus::Failed(f) => ("failed", Some(f.to_string())),
            ImageStatus::NotDone(cause) => (cause.not_done_status(), Some(cause.to_string())),
        };
        Record { status, reason }.serialize(s)
    }
}

impl ImageOutcome {
    fn new(image: &Image) -> ImageOutcome {
        ImageOutcome {
            source: image.reference(),
            target: None,
            digest: image.digest,
            status: ImageStatus::Copied,
            blobs: Vec::new(),
            retries: 0,
        }
    }

    /// Failed, or not done at all.
    pub fn failed(&self) -> bool {
        matches!(
            self.status,
            ImageStatus::Failed(_) | ImageStatus::NotDone(_)
        )
    }
}

impl Outcome for ImageOutcome {
    fn retry_reference(&self) -> Option<&str> {
        self.failed().then_some(self.source.as_str())
    }

    fn set_retries(&mut self, retries: u64) {
        self.retries = retries;
    }
}

/// Counts for a summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CopyCounts {
    pub copied: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Images the run stopped before.
    pub not_done: usize,
    /// Blob operations per action, over every image (a blob shared by two images counts twice).
    pub blobs: HashMap<BlobAction, usize>,
    /// Bytes the actions that write bytes wrote.
    pub bytes_written: u64,
}

impl CopyCounts {
    pub fn of(outcomes: &[ImageOutcome]) -> CopyCounts {
        let mut c = CopyCounts::default();
        for image in outcomes {
            match image.status {
                ImageStatus::Copied => c.copied += 1,
                ImageStatus::Skipped => c.skipped += 1,
                ImageStatus::Failed(_) => c.failed += 1,
                ImageStatus::NotDone(_) => c.not_done += 1,
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
}

/// Copies images into one sink, reading manifests again from their source as they travel.
pub struct Copy<'a, S: Sink> {
    sink: &'a S,
    source: &'a dyn Source,
    /// When set, a referrer waits for its subject in the same run to end before it is written.
    subjects: Option<(&'a Subjects, &'a Stop)>,
}

impl<'a, S: Sink> Copy<'a, S> {
    pub fn new(sink: &'a S, source: &'a dyn Source) -> Copy<'a, S> {
        Copy {
            sink,
            source,
            subjects: None,
        }
    }

    /// Writes a signature (or a manifest with a `subject`) only after its subject's copy ended
    /// (Harbor up to 2.7 refuses a signature whose subject is absent); a subject that failed
    /// fails it too.
    pub fn after_subjects(mut self, subjects: &'a Subjects, stop: &'a Stop) -> Copy<'a, S> {
        self.subjects = Some((subjects, stop));
        self
    }

    fn copy(&self, image: &Image, progress: &Progress) -> Result<ImageOutcome, Halt> {
        let mut outcome = ImageOutcome::new(image);
        if !image.is_ok() {
            outcome.status =
                ImageStatus::Failed(Box::new(Failure::Source(image.problem_summary())));
            return Ok(outcome);
        }
        let target = match self.sink.target(image) {
            Ok(t) => t,
            Err(why) => {
                outcome.status = ImageStatus::Failed(Box::new(Failure::Refused(why)));
                return Ok(outcome);
            }
        };
        outcome.target = Some(target.to_string());
        if let Some((subjects, stop)) = self.subjects {
            match subjects.wait(image, stop, SUBJECT_WAIT_MAX) {
                Waited::NoSubject
                | Waited::Ended {
                    end: SubjectEnd::Done,
                    ..
                } => {}
                Waited::Ended {
                    subject,
                    end: SubjectEnd::Failed(reason),
                } => {
                    outcome.status =
                        ImageStatus::Failed(Box::new(Failure::Subject { subject, reason }));
                    return Ok(outcome);
                }
                Waited::TimedOut { subject } => crate::warn!(
                    "{}: its subject {subject} is still in progress after {} min; going on without waiting",
                    image.reference(),
                    SUBJECT_WAIT_MAX.as_secs() / 60
                ),
                Waited::Stopped => return Err(Halt::Stopped),
            }
        }
        let Err(failed) = self.steps(&target, image, progress, &mut outcome) else {
            return Ok(outcome);
        };
        match *failed {
            (step, SinkError::Image(error)) => {
                outcome.status = ImageStatus::Failed(Box::new(Failure::Step { step, error }));
                Ok(outcome)
            }
            (_, SinkError::Fatal(f)) => Err(Halt::Fatal(f)),
            (_, SinkError::Stopped) => Err(Halt::Stopped),
        }
    }

    /// Opens the latch of `image` for its referrers.
    fn ended(&self, image: &Image, end: impl FnOnce() -> SubjectEnd) {
        if let Some((subjects, _)) = self.subjects {
            subjects.finished(image, end());
        }
    }
}

impl<S: Sink> Job for Copy<'_, S> {
    type Outcome = ImageOutcome;

    fn run(&self, image: &Image, progress: &Progress) -> Result<ImageOutcome, Halt> {
        let result = self.copy(image, progress);
        self.ended(image, || match &result {
            Ok(o) => match &o.status {
                ImageStatus::Failed(f) => SubjectEnd::Failed(f.to_string()),
                ImageStatus::NotDone(cause) => SubjectEnd::Failed(cause.to_string()),
                ImageStatus::Copied | ImageStatus::Skipped => SubjectEnd::Done,
            },
            Err(_) => SubjectEnd::Failed("the run stopped".to_string()),
        });
        result
    }

    fn not_done(&self, image: &Image, cause: &Fatal, started: bool) -> ImageOutcome {
        self.ended(image, || SubjectEnd::Failed(cause.to_string()));
        let mut outcome = ImageOutcome::new(image);
        outcome.status = if started {
            ImageStatus::Failed(Box::new(Failure::Stopped(cause.clone())))
        } else {
            ImageStatus::NotDone(cause.clone())
        };
        outcome
    }

    fn finish(&self, images: &[Image], outcomes: &mut [ImageOutcome]) -> Result<(), Fatal> {
        let mut fatal = None;
        for unfinished in self.sink.finish() {
            for (image, outcome) in images.iter().zip(outcomes.iter_mut()) {
                if !unfinished.images.contains(&image.reference()) || outcome.failed() {
                    continue;
                }
                let error = match &unfinished.error {
                    SinkError::Image(e) => ImageError::Invalid(e.to_string()),
                    SinkError::Fatal(f) => {
                        fatal.get_or_insert_with(|| f.clone());
                        ImageError::Invalid(f.to_string())
                    }
                    SinkError::Stopped => ImageError::Invalid("the run stopped".to_string()),
                };
                outcome.status = ImageStatus::Failed(Box::new(Failure::Step {
                    step: Step::Finish(unfinished.what.clone()),
                    error,
                }));
            }
        }
        fatal.map_or(Ok(()), Err)
    }
}

impl<S: Sink> Copy<'_, S> {
    /// Skip when present, else blobs (largest first), then manifests children first, the tag last.
    fn steps(
        &self,
        target: &S::Target,
        image: &Image,
        progress: &Progress,
        outcome: &mut ImageOutcome,
    ) -> Result<(), Box<(Step, SinkError)>> {
        let check = || Step::Check(target.to_string());
        if self
            .sink
            .image_present(target, image)
            .map_err(|e| Box::new((check(), e)))?
        {
            outcome.status = ImageStatus::Skipped;
            return Ok(());
        }
        outcome.blobs.reserve_exact(image.blobs.len());
        let mut blobs: Vec<_> = image.blobs.iter().collect();
        blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
        for blob in blobs {
            let step = || Step::Blob {
                role: blob.role.clone(),
                digest: blob.digest,
            };
            // The inventory keeps no paths: ask the source again (a stat, no read).
            let file = self.source.blob(&blob.digest).map_err(|p| {
                Box::new((
                    step(),
                    SinkError::invalid(format!("the source changed: {p}")),
                ))
            })?;
            let action = self
                .sink
                .put_blob(target, blob, &file, progress)
                .map_err(|e| Box::new((step(), e)))?;
            outcome.blobs.push(BlobRecord {
                digest: blob.digest,
                size: blob.size,
                action,
            });
        }
        let count = image.manifests.len();
        for (i, m) in image.manifests.iter().enumerate() {
            let tag = if i + 1 == count {
                image.tag.as_deref()
            } else {
                None
            };
            let step = || Step::Manifest(m.digest());
            // The inventory keeps no bytes: read them again (checked against the digest).
            let manifest = self.source.manifest(&m.digest()).map_err(|p| {
                Box::new((
                    step(),
                    SinkError::invalid(format!("the source changed: {p}")),
                ))
            })?;
            self.sink
                .put_manifest(target, &manifest, tag)
                .map_err(|e| Box::new((step(), e)))?;
        }
        self.sink
            .finish_image(target, image)
            .map_err(|e| Box::new((Step::Finish(target.to_string()), e)))
    }
}
