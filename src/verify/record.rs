//! What `ferry verify` says about each image and blob, in the shape `--format json` prints.

use std::path::PathBuf;

use serde::Serialize;

use crate::digest::Digest;
use crate::filter::ImageRef;
use crate::problem::Problem;

/// Whether an image can be trusted whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Broken,
}

/// One selected image: intact, or broken with every problem found.
#[derive(Debug, Clone, Serialize)]
pub struct ImageVerdict {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    pub status: Status,
    pub problems: Vec<ProblemRecord>,
    /// Facts that are not problems (schema1, foreign layers).
    pub notes: Vec<String>,
}

impl ImageVerdict {
    /// `repo:tag`, or `repo@digest` for an untagged manifest: the failed-list form, quoted (or a
    /// JSON object) when a name would not read back or would break a line.
    pub fn reference(&self) -> String {
        ImageRef::line_of(&self.repository, self.tag.as_deref(), self.digest)
    }
}

/// One problem, typed for scripts (`kind`) and said for people (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemRecord {
    /// bad-link, missing-link, missing-manifest, missing-child, corrupt-manifest, bad-manifest,
    /// missing-blob, corrupt-blob, size-mismatch, symlink, unreadable, bad-name, not-in-source.
    pub kind: &'static str,
    pub message: String,
    /// Where in the image: `layer 2`, `child sha256:… (linux/arm64)`, `config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::report::optional_path_text"
    )]
    pub path: Option<PathBuf>,
    /// The digest the image expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The digest the bytes on disk have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<u64>,
}

impl From<&Problem> for ProblemRecord {
    fn from(problem: &Problem) -> ProblemRecord {
        let mut contexts = Vec::new();
        let mut inner = problem;
        while let Problem::Within { context, inner: i } = inner {
            contexts.push(context.as_str());
            inner = i;
        }
        let mut r = ProblemRecord {
            kind: "",
            message: problem.to_string(),
            within: (!contexts.is_empty()).then(|| contexts.join(": ")),
            path: None,
            digest: None,
            actual_digest: None,
            expected_size: None,
            actual_size: None,
        };
        r.kind = match inner {
            Problem::BadLink { path, .. } => {
                r.path = Some(path.clone());
                "bad-link"
            }
            Problem::MissingLink { path } => {
                r.path = Some(path.clone());
                "missing-link"
            }
            Problem::MissingManifest { digest, path } => {
                (r.digest, r.path) = (Some(*digest), Some(path.clone()));
                // Only index children are read inside a context.
                if contexts.is_empty() {
                    "missing-manifest"
                } else {
                    "missing-child"
                }
            }
            Problem::CorruptManifest {
                digest,
                path,
                found,
                len,
            } => {
                (r.digest, r.path) = (Some(*digest), Some(path.clone()));
                (r.actual_digest, r.actual_size) = (Some(*found), Some(*len));
                "corrupt-manifest"
            }
            Problem::BadManifest { digest, path, .. } => {
                (r.digest, r.path) = (Some(*digest), Some(path.clone()));
                "bad-manifest"
            }
            Problem::MissingBlob { digest, path, role } => {
                (r.digest, r.path) = (Some(*digest), Some(path.clone()));
                if r.within.is_none() && !role.is_empty() {
                    r.within = Some(role.clone());
                }
                "missing-blob"
            }
            Problem::BlobSize {
                role,
                digest,
                path,
                expected,
                found,
            } => {
                (r.digest, r.path) = (Some(*digest), Some(path.clone()));
                (r.expected_size, r.actual_size) = (Some(*expected), Some(*found));
                if r.within.is_none() && !role.is_empty() {
                    r.within = Some(role.clone());
                }
                "size-mismatch"
            }
            Problem::CorruptBlob {
                digest,
                path,
                found,
                len,
            } => {
                (r.digest, r.path) = (Some(*digest), Some(path.clone()));
                (r.actual_digest, r.actual_size) = (Some(*found), Some(*len));
                "corrupt-blob"
            }
            Problem::Symlink { path } => {
                r.path = Some(path.clone());
                "symlink"
            }
            Problem::Io { path, .. } => {
                r.path = Some(path.clone());
                "unreadable"
            }
            Problem::Archive { path, .. } => {
                r.path = Some(path.clone());
                "archive-damage"
            }
            Problem::BadName { path, .. } => {
                r.path = Some(path.clone());
                "bad-name"
            }
            Problem::NotInSource => "not-in-source",
            Problem::Within { .. } => unreachable!("unwrapped above"),
        };
        r
    }
}

/// What hashing found, blob by blob (manifests included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BlobSummary {
    /// Distinct blobs whose bytes were read and hashed.
    pub checked: usize,
    /// Bytes hashed.
    pub bytes: u64,
    pub corrupt: Vec<BlobIssue>,
    pub missing: Vec<BlobIssue>,
    /// Present but not readable (I/O error, a symbolic link, not a regular file).
    pub unreadable: Vec<BlobIssue>,
}

/// One blob that is not as its digest says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct BlobIssue {
    pub digest: Digest,
    #[serde(serialize_with = "crate::report::path_text")]
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_manifest_inside_an_index_is_a_missing_child() {
        let d = Digest::of(b"child");
        let missing = Problem::MissingManifest {
            digest: d,
            path: PathBuf::from("/t/data"),
        };
        assert_eq!(ProblemRecord::from(&missing).kind, "missing-manifest");
        let r = ProblemRecord::from(&missing.within(format!("child {d} (linux/arm64)")));
        assert_eq!(r.kind, "missing-child");
        assert_eq!(r.digest, Some(d));
        assert_eq!(r.within, Some(format!("child {d} (linux/arm64)")));
        assert!(r.message.contains("linux/arm64"), "{}", r.message);
    }
}
