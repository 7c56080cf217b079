//! What a run ends with: the causes that stop a whole run, and why one image failed. Messages are made here, once.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use indicatif::HumanBytes;

use crate::digest::Digest;
use crate::sink::ImageError;

/// A cause that stops the whole run: nothing more is scheduled, every image not done is listed
/// as not attempted, and the process exits 2 (128 + signal when interrupted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// Connections refused or reset, and a ping of `/v2/` failed too.
    Unreachable {
        destination: String,
        since: SystemTime,
        error: String,
    },
    /// No progress within the stall timeout, and a ping of `/v2/` failed too.
    Stalled {
        destination: String,
        since: SystemTime,
        timeout: Duration,
        error: String,
    },
    /// The destination refuses the credentials (or wants some), or its certificate is not trusted.
    Refused {
        destination: String,
        message: String,
    },
    /// The destination registry answered that its storage is full (Distribution's 500 with "no
    /// space left on device"): every further upload would hit it too.
    DestinationFull {
        destination: String,
        /// What the registry could not write, as it said.
        detail: String,
    },
    /// The output filesystem is full; `needed` is what the run still had to write.
    DiskFull {
        path: PathBuf,
        error: String,
        free: Option<u64>,
        needed: Option<u64>,
    },
    /// A local write every further file would hit too (read-only filesystem, a link mode the
    /// filesystems cannot do).
    Output { message: String },
    /// SIGINT or SIGTERM.
    Interrupted { signal: i32 },
}

impl Fatal {
    /// The process exit code for a run stopped by this cause.
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::Interrupted { signal } => (128 + signal).clamp(0, 255) as u8,
            _ => 2,
        }
    }

    /// The word reports use for images this cause kept from being done.
    pub fn not_done_status(&self) -> &'static str {
        match self {
            Fatal::Interrupted { .. } => "interrupted",
            _ => "not-attempted",
        }
    }
}

/// A wall-clock time as people read it in messages (UTC, HTTP date form).
struct When(SystemTime);

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&httpdate::fmt_http_date(self.0))
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Unreachable {
                destination,
                since,
                error,
            } => write!(
                f,
                "destination {destination} unreachable since {} ({error}); a ping of /v2/ failed too",
                When(*since)
            ),
            Fatal::Stalled {
                destination,
                since,
                timeout,
                error,
            } => write!(
                f,
                "destination {destination} stalled since {}: no progress for {} s ({error}), and a ping of /v2/ got no answer either (--timeout sets the limit)",
                When(*since),
                timeout.as_secs()
            ),
            Fatal::Refused {
                destination,
                message,
            } => write!(f, "destination {destination}: {message}"),
            Fatal::DestinationFull {
                destination,
                detail,
            } => write!(
                f,
                "destination {destination} storage full: the registry cannot store more ({detail}); free space on its storage, then push again with --images <failed list>"
            ),
            Fatal::DiskFull {
                path,
                error,
                free,
                needed,
            } => {
                write!(f, "disk full: cannot write {}: {error}", path.display())?;
                if let Some(free) = free {
                    write!(f, "; {} free there", HumanBytes(*free))?;
                }
                if let Some(needed) = needed {
                    write!(
                        f,
                        "; this run still had about {} to write",
                        HumanBytes(*needed)
                    )?;
                }
                write!(
                    f,
                    " (free some space or choose another --out, then run again)"
                )
            }
            Fatal::Output { message } => f.write_str(message),
            Fatal::Interrupted { signal } => {
                let name = match *signal {
                    2 => "SIGINT",
                    15 => "SIGTERM",
                    _ => "a signal",
                };
                write!(f, "interrupted by {name}")
            }
        }
    }
}

/// The step of an image's copy that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Checking whether the image is already at its target.
    Check(String),
    /// Placing a config or layer.
    Blob { role: String, digest: Digest },
    /// Storing a manifest.
    Manifest(Digest),
    /// Completing the image (its index entry, its folder).
    Finish(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Check(target) => write!(f, "checking {target}"),
            Step::Blob { role, digest } => write!(f, "{role} blob {digest}"),
            Step::Manifest(digest) => write!(f, "manifest {digest}"),
            Step::Finish(target) => write!(f, "finishing {target}"),
        }
    }
}

/// Why one image was not done; the rest of the run goes on.
#[derive(Debug)]
pub enum Failure {
    /// The source image is broken: there is nothing sound to copy.
    Source(String),
    /// The sink will not take it: a name the destination refuses, a schema1 manifest, a Harbor
    /// project that cannot take it.
    Refused(ImageError),
    /// The image it refers to (a signature's subject) was not pushed.
    Subject { subject: String, reason: String },
    /// A step failed.
    Step { step: Step, error: ImageError },
    /// It was in progress when the run stopped.
    Stopped(Fatal),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Source(problems) => write!(f, "source: {problems}"),
            Failure::Refused(why) => write!(f, "{why}"),
            Failure::Subject { subject, reason } => {
                write!(
                    f,
                    "not pushed: its subject {subject} was not pushed ({reason})"
                )
            }
            Failure::Step { step, error } => write!(f, "{step}: {error}"),
            Failure::Stopped(cause) => write!(f, "stopped while in progress: {cause}"),
        }
    }
}

/// One image's outcome, whatever the job: what the failed list and the stop rule need.
pub trait Outcome {
    /// The source reference to retry (`repo:tag`, as `--images` reads it), when it was not done.
    fn retry_reference(&self) -> Option<&str>;

    /// Records the retries of requests the job made for this image (on its worker's thread).
    fn set_retries(&mut self, retries: u64);
}

/// Everything a run did, in the order the images were given.
#[derive(Debug)]
pub struct Run<O> {
    pub outcomes: Vec<O>,
    /// Set when the run stopped early.
    pub stopped: Option<Fatal>,
}

impl<O: Outcome> Run<O> {
    /// The failed list: one source reference per image not done.
    pub fn failed_list(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|o| o.retry_reference().map(str::to_string))
            .collect()
    }
}
