//! What a validation says about each tag: pass or fail, with exact reasons, and the counts of a run.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use super::platforms::{SpecComparison, describe};
use crate::digest::Digest;
use crate::engine::{Fatal, Outcome};
use crate::inventory::Image;
use crate::manifest::Platform;
use crate::registry::harbor::Refusal;

/// Why the destination does not hold a tag as the source does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    MissingTag,
    /// The tag (or, with a platform, an index entry) points at another digest.
    DigestDiffers {
        dest: Digest,
        source: Digest,
        platform: Option<Platform>,
    },
    MissingChild {
        digest: Digest,
        platform: Option<Platform>,
        /// Set when the entry is absent from a destination index that differs from the source's.
        dest_index: Option<Digest>,
    },
    /// An index entry with the right digest but other platform fields.
    PlatformDiffers {
        digest: Digest,
        dest: Option<Platform>,
        source: Option<Platform>,
    },
    MissingBlob {
        digest: Digest,
        role: String,
    },
    /// 401/403 on this repository although the destination accepted the credentials.
    Unauthorised {
        status: u16,
        code: Option<String>,
        who: String,
    },
    DestinationError {
        status: Option<u16>,
        code: Option<String>,
        detail: String,
    },
    /// Harbor's refusal: a project missing, a right the account lacks.
    Harbor(Refusal),
}

impl Reason {
    /// The kind counted in summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::MissingTag => "missing tag",
            Reason::DigestDiffers { .. } => "digest differs",
            Reason::MissingChild { .. } => "missing child",
            Reason::PlatformDiffers { .. } => "platform differs",
            Reason::MissingBlob { .. } => "missing blob",
            Reason::Unauthorised { .. } => "destination unauthorised",
            Reason::DestinationError { .. } => "destination error",
            Reason::Harbor(r) => r.kind(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MissingTag => f.write_str("missing tag"),
            Reason::DigestDiffers {
                dest,
                source,
                platform,
            } => {
                write!(f, "digest differs: dest {dest} != source {source}")?;
                match platform {
                    Some(_) => write!(f, " ({})", describe(platform.as_ref())),
                    None => Ok(()),
                }
            }
            Reason::MissingChild {
                digest,
                platform,
                dest_index,
            } => {
                write!(
                    f,
                    "missing child {digest} ({})",
                    describe(platform.as_ref())
                )?;
                match dest_index {
                    Some(i) => write!(f, ": not in destination index {i}"),
                    None => Ok(()),
                }
            }
            Reason::PlatformDiffers {
                digest,
                dest,
                source,
            } => write!(
                f,
                "platform differs for {digest}: dest {} != source {}",
                describe(dest.as_ref()),
                describe(source.as_ref())
            ),
            Reason::MissingBlob { digest, role } => write!(f, "missing blob {digest} ({role})"),
            Reason::Unauthorised { status, code, who } => {
                write!(f, "destination unauthorised: {status}")?;
                if let Some(c) = code {
                    write!(f, " {c}")?;
                }
                write!(f, " for {who}")
            }
            Reason::DestinationError {
                status: Some(status),
                code,
                ..
            } => {
                write!(f, "destination error {status}")?;
                match code {
                    Some(c) => write!(f, " {c}"),
                    None => Ok(()),
                }
            }
            Reason::DestinationError { detail, .. } => write!(f, "destination error: {detail}"),
            Reason::Harbor(r) => write!(f, "{r}"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Record<'a> {
            kind: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a str>,
        }
        let detail = match self {
            Reason::DestinationError { detail, .. } => Some(detail.as_str()),
            _ => None,
        };
        Record {
            kind: self.kind(),
            message: self.to_string(),
            detail,
        }
        .serialize(s)
    }
}

/// The verdict on one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The destination holds the tag, its children and its blobs.
    Pass,
    /// The destination does not hold it as the source does (see the reasons).
    Fail,
    /// The source image is broken: there is nothing sound to compare with.
    SourceProblem,
    /// The run stopped before this tag.
    NotChecked,
}

/// One tag's verdict, as `--format json` and reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The source `repo:tag` (what a failed list holds).
    pub source: String,
    /// The destination `repo:tag` checked.
    pub target: Option<String>,
    /// The source digest.
    pub digest: Option<Digest>,
    /// The digest the destination serves for the tag.
    pub found: Option<Digest>,
    pub status: Status,
    pub reasons: Vec<Reason>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_problems: Vec<String>,
    /// What a reader should know that is not a failure (nothing selected, only the index differs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why the run stopped before this tag was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Index entries compared (srcSpec / dstSpec) when the destination index differs.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub specs: Option<SpecComparison>,
    pub manifests_checked: usize,
    pub blobs_checked: usize,
    /// Requests retried while checking this tag.
    pub retries: u64,
}

impl Verdict {
    pub fn new(image: &Image) -> Verdict {
        Verdict {
            source: image.reference(),
            target: None,
            digest: image.digest,
            found: None,
            status: Status::NotChecked,
            reasons: Vec::new(),
            source_problems: Vec::new(),
            notes: Vec::new(),
            stopped: None,
            specs: None,
            manifests_checked: 0,
            blobs_checked: 0,
            retries: 0,
        }
    }

    /// A tag the run stopped before, for `cause`.
    pub fn not_checked(image: &Image, cause: &Fatal) -> Verdict {
        let mut v = Verdict::new(image);
        v.stopped = Some(cause.to_string());
        v
    }

    /// The reasons in one line (or the source problems).
    pub fn summary(&self) -> String {
        match self.status {
            Status::Pass => "ok".to_string(),
            Status::NotChecked => format!(
                "not checked: {}",
                self.stopped.as_deref().unwrap_or("the run stopped early")
            ),
            Status::SourceProblem => format!("source problem: {}", self.source_problems.join("; ")),
            Status::Fail => self
                .reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl Outcome for Verdict {
    fn retry_reference(&self) -> Option<&str> {
        matches!(self.status, Status::Fail | Status::NotChecked).then_some(self.source.as_str())
    }

    fn set_retries(&mut self, retries: u64) {
        self.retries = retries;
    }
}

/// Tags per status and reasons per kind.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub tags: usize,
    pub passed: usize,
    pub failed: usize,
    pub source_problems: usize,
    pub not_checked: usize,
    /// Reasons per kind, over every failed tag.
    pub reasons: BTreeMap<&'static str, usize>,
    pub manifests_checked: usize,
    pub blobs_checked: usize,
}

impl Counts {
    pub fn of(verdicts: &[Verdict]) -> Counts {
        let mut c = Counts {
            tags: verdicts.len(),
            ..Counts::default()
        };
        for v in verdicts {
            match v.status {
                Status::Pass => c.passed += 1,
                Status::Fail => c.failed += 1,
                Status::SourceProblem => c.source_problems += 1,
                Status::NotChecked => c.not_checked += 1,
            }
            for r in &v.reasons {
                *c.reasons.entry(r.kind()).or_default() += 1;
            }
            c.manifests_checked += v.manifests_checked;
            c.blobs_checked += v.blobs_checked;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_the_issue_spells_them() {
        let d = |n: u8| Digest::of(&[n]);
        let arm64 = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
            os_version: None,
            os_features: Vec::new(),
        };
        assert_eq!(Reason::MissingTag.to_string(), "missing tag");
        assert_eq!(
            Reason::DigestDiffers {
                dest: d(1),
                source: d(2),
                platform: None
            }
            .to_string(),
            format!("digest differs: dest {} != source {}", d(1), d(2))
        );
        assert_eq!(
            Reason::MissingChild {
                digest: d(3),
                platform: Some(arm64),
                dest_index: None,
            }
            .to_string(),
            format!("missing child {} (linux/arm64)", d(3))
        );
        assert_eq!(
            Reason::MissingBlob {
                digest: d(4),
                role: "layer 2".into()
            }
            .to_string(),
            format!("missing blob {} (layer 2)", d(4))
        );
        let e = Reason::DestinationError {
            status: Some(500),
            code: Some("UNKNOWN".into()),
            detail: "HEAD x: 500 UNKNOWN".into(),
        };
        assert_eq!(e.to_string(), "destination error 500 UNKNOWN");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "destination error");
        assert_eq!(json["detail"], "HEAD x: 500 UNKNOWN");
    }
}
