//! Tree findings: what a tree holds besides intact or broken images (orphan blobs, untagged
//! revisions, dangling layer links, uploads, stray files, symbolic links, empty repositories).

use std::collections::HashSet;
use std::path::PathBuf;

use indicatif::HumanBytes;
use serde::Serialize;

use crate::digest::Digest;
use crate::inventory::Image;
use crate::problem::Problem;
use crate::source::Upload;
use crate::source::survey::{OddityKind, Survey};

/// What kind of thing was found; informational unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A stored blob no readable manifest references.
    OrphanBlob,
    /// A manifest revision no tag points at (recoverable with `--untagged`).
    UntaggedRevision,
    /// A `_layers` link to a blob that is not stored.
    DanglingLayerLink,
    UnfinishedUpload,
    StrayFile,
    /// A symbolic link inside the tree (never followed).
    Symlink,
    /// A repository folder with nothing left in it.
    EmptyRepository,
    /// A folder that could not be read (what it holds is not known: exit 1).
    Unreadable,
    /// A repository whose name no registry accepts (its images cannot move: exit 1).
    BadName,
}

impl FindingKind {
    /// Whether the finding may hide or block images, so the run cannot say "all intact".
    pub fn is_problem(self) -> bool {
        matches!(self, FindingKind::Unreadable | FindingKind::BadName)
    }

    /// Plural words for summaries.
    pub fn label(self, n: usize) -> String {
        let (one, many) = match self {
            FindingKind::OrphanBlob => ("orphan blob", "orphan blobs"),
            FindingKind::UntaggedRevision => ("untagged revision", "untagged revisions"),
            FindingKind::DanglingLayerLink => ("dangling layer link", "dangling layer links"),
            FindingKind::UnfinishedUpload => ("unfinished upload", "unfinished uploads"),
            FindingKind::StrayFile => ("stray file", "stray files"),
            FindingKind::Symlink => ("symbolic link", "symbolic links"),
            FindingKind::EmptyRepository => ("empty repository folder", "empty repository folders"),
            FindingKind::Unreadable => ("unreadable folder", "unreadable folders"),
            FindingKind::BadName => ("bad repository name", "bad repository names"),
        };
        format!("{n} {}", if n == 1 { one } else { many })
    }
}

/// One thing found in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub message: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::report::optional_path_text"
    )]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl Finding {
    fn new(kind: FindingKind, message: String) -> Finding {
        Finding {
            kind,
            message,
            path: None,
            repository: None,
            digest: None,
            bytes: None,
        }
    }
}

/// What the findings are drawn from.
pub struct Sources<'a> {
    pub survey: Option<&'a Survey>,
    /// Every digest some readable manifest of the tree references (manifests included).
    pub referenced: Option<&'a HashSet<Digest>>,
    /// Untagged revisions that were not selected as images.
    pub untagged: &'a [Image],
    pub uploads: &'a [Upload],
    /// Problems of the scan that belong to no image.
    pub scan_problems: &'a [Problem],
    /// Whether a repository is selected (findings inside others are left out).
    pub wanted: &'a dyn Fn(&str) -> bool,
}

/// Every finding, sorted by kind, then path.
pub fn collect(from: &Sources) -> Vec<Finding> {
    let mut out = Vec::new();
    if let (Some(survey), Some(referenced)) = (from.survey, from.referenced) {
        for (digest, file) in &survey.blobs {
            if !referenced.contains(digest) {
                let mut f = Finding::new(
                    FindingKind::OrphanBlob,
                    format!(
                        "blob {digest} ({}) is referenced by no readable manifest of the tree",
                        HumanBytes(file.len)
                    ),
                );
                (f.path, f.digest, f.bytes) =
                    (Some(file.path.clone()), Some(*digest), Some(file.len));
                out.push(f);
            }
        }
    }
    if let Some(survey) = from.survey {
        for (repo, links) in &survey.repositories {
            if !(from.wanted)(repo) {
                continue;
            }
            for (digest, dir) in &links.layers {
                if !survey.blobs.contains_key(digest) {
                    let mut f = Finding::new(
                        FindingKind::DanglingLayerLink,
                        format!(
                            "{repo}: layer link {} names blob {digest}, which is not stored",
                            dir.display()
                        ),
                    );
                    (f.path, f.repository, f.digest) =
                        (Some(dir.clone()), Some(repo.clone()), Some(*digest));
                    out.push(f);
                }
            }
            if links.is_empty() {
                let mut f = Finding::new(
                    FindingKind::EmptyRepository,
                    format!("{repo}: no tag, revision, layer link or upload is left in it"),
                );
                f.repository = Some(repo.clone());
                out.push(f);
            }
        }
        for odd in &survey.oddities {
            if odd.repository.as_deref().is_some_and(|r| !(from.wanted)(r)) {
                continue;
            }
            let shown = odd.path.display();
            let (kind, message, bytes) = match &odd.kind {
                OddityKind::StrayFile { bytes } => (
                    FindingKind::StrayFile,
                    format!(
                        "{shown} ({}) is not part of a registry storage layout",
                        HumanBytes(*bytes)
                    ),
                    Some(*bytes),
                ),
                OddityKind::Symlink { target } => (
                    FindingKind::Symlink,
                    format!(
                        "{shown} is a symbolic link to {} (not followed)",
                        target.display()
                    ),
                    None,
                ),
                OddityKind::EmptyFolder => (
                    FindingKind::EmptyRepository,
                    format!("{shown} is an empty folder under repositories/"),
                    None,
                ),
                OddityKind::Unreadable { error } => (
                    FindingKind::Unreadable,
                    format!("cannot read {shown}: {error}"),
                    None,
                ),
            };
            let mut f = Finding::new(kind, message);
            (f.path, f.repository, f.bytes) =
                (Some(odd.path.clone()), odd.repository.clone(), bytes);
            out.push(f);
        }
    }
    for image in from.untagged {
        let mut f = Finding::new(
            FindingKind::UntaggedRevision,
            format!(
                "{}: no tag points at it; `verify --untagged` checks it, `push`/`export --untagged` recover it",
                image.reference()
            ),
        );
        (f.repository, f.digest) = (Some(image.repository.clone()), image.digest);
        out.push(f);
    }
    for upload in from.uploads {
        let mut f = Finding::new(
            FindingKind::UnfinishedUpload,
            format!(
                "{}: upload {} was never finished ({}); not an image, safe to ignore",
                upload.repository,
                upload.id,
                HumanBytes(upload.bytes)
            ),
        );
        (f.path, f.repository, f.bytes) = (
            Some(upload.path.clone()),
            Some(upload.repository.clone()),
            Some(upload.bytes),
        );
        out.push(f);
    }
    for problem in from.scan_problems {
        let kind = match problem {
            Problem::BadName { .. } => FindingKind::BadName,
            _ => FindingKind::Unreadable,
        };
        let mut f = Finding::new(kind, problem.to_string());
        if let Problem::Io { path, .. } | Problem::BadName { path, .. } = problem {
            f.path = Some(path.clone());
        }
        out.push(f);
    }
    dedup_unreadable(&mut out);
    out.sort_by(|a, b| (a.kind, &a.path, &a.message).cmp(&(b.kind, &b.path, &b.message)));
    out
}

/// The scan and the survey both name an unreadable folder; say it once.
fn dedup_unreadable(out: &mut Vec<Finding>) {
    let mut seen = HashSet::new();
    out.retain(|f| f.kind != FindingKind::Unreadable || seen.insert(f.path.clone()));
}
