//! What hashing found, blob by blob: how many and how many bytes were read, and which blobs are
//! corrupt, missing or unreadable (manifests included).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::problem::Problem;
use crate::source::Source;

use super::memo::ManifestRead;
use super::record::{BlobIssue, BlobSummary};
use super::{Hashes, Plan};

/// The blobs the selected images need (and with `--all-blobs` every stored one), as hashed.
pub fn blob_summary(plan: &Plan, hashed: &Hashes) -> BlobSummary {
    let mut s = BlobSummary::default();
    let issue = |digest: Digest, path: PathBuf| BlobIssue {
        digest,
        path,
        actual_digest: None,
        bytes: None,
        error: None,
    };
    let mut manifests: HashSet<Digest> = HashSet::new();
    for image in &plan.images {
        manifests.extend(image.digest);
        for m in &image.manifests {
            if let Some(Ok(raw)) = plan.memo.get(&m.digest()) {
                manifests.extend(raw.manifests().iter().map(|c| c.digest));
            }
        }
    }
    if plan.options.all_blobs
        && let Some(survey) = plan.survey
    {
        manifests.extend(
            survey
                .blobs
                .keys()
                .filter(|d| plan.memo.get(d).is_some_and(|r| was_hashed(&r))),
        );
    }
    for digest in manifests {
        let Some(read) = plan.memo.get(&digest) else {
            continue;
        };
        match read.as_ref().map_err(innermost) {
            Ok(m) => (s.checked, s.bytes) = (s.checked + 1, s.bytes + m.len()),
            Err(Problem::CorruptManifest {
                path, found, len, ..
            }) => {
                (s.checked, s.bytes) = (s.checked + 1, s.bytes + len);
                s.corrupt.push(BlobIssue {
                    actual_digest: Some(*found),
                    bytes: Some(*len),
                    ..issue(digest, path.clone())
                });
            }
            Err(Problem::BadManifest { .. }) => {
                let len = plan.memo.blob(&digest).map(|f| f.len).unwrap_or(0);
                (s.checked, s.bytes) = (s.checked + 1, s.bytes + len);
            }
            Err(Problem::MissingManifest { path, .. }) => {
                s.missing.push(issue(digest, path.clone()))
            }
            Err(p) => s.unreadable.push(BlobIssue {
                error: Some(p.to_string()),
                ..issue(digest, problem_path(p))
            }),
        }
    }
    let files: HashMap<Digest, &Path> = plan
        .to_hash
        .iter()
        .map(|(d, f)| (*d, f.path.as_path()))
        .collect();
    for (digest, outcome) in hashed {
        let path = files
            .get(digest)
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        match outcome {
            Ok(h) => {
                (s.checked, s.bytes) = (s.checked + 1, s.bytes + h.len);
                if h.digest != *digest {
                    s.corrupt.push(BlobIssue {
                        actual_digest: Some(h.digest),
                        bytes: Some(h.len),
                        ..issue(*digest, path)
                    });
                }
            }
            Err(Problem::MissingBlob { .. }) => s.missing.push(issue(*digest, path)),
            Err(p) => s.unreadable.push(BlobIssue {
                error: Some(p.to_string()),
                ..issue(*digest, path)
            }),
        }
    }
    // Blobs the images need that were not there to hash.
    for p in plan.images.iter().flat_map(|i| &i.problems) {
        if let Problem::MissingBlob { digest, path, .. } = innermost(p) {
            s.missing.push(issue(*digest, path.clone()));
        }
    }
    for list in [&mut s.corrupt, &mut s.missing, &mut s.unreadable] {
        list.sort();
        list.dedup_by(|a, b| a.digest == b.digest);
    }
    s
}

/// Whether reading a manifest got as far as hashing its bytes.
pub fn was_hashed(read: &ManifestRead) -> bool {
    matches!(
        read,
        Ok(_) | Err(Problem::CorruptManifest { .. } | Problem::BadManifest { .. })
    )
}

/// The file a problem names.
fn problem_path(p: &Problem) -> PathBuf {
    match innermost(p) {
        Problem::BadLink { path, .. }
        | Problem::MissingLink { path }
        | Problem::MissingManifest { path, .. }
        | Problem::CorruptManifest { path, .. }
        | Problem::BadManifest { path, .. }
        | Problem::MissingBlob { path, .. }
        | Problem::BlobSize { path, .. }
        | Problem::CorruptBlob { path, .. }
        | Problem::Symlink { path }
        | Problem::Io { path, .. }
        | Problem::Archive { path, .. }
        | Problem::BadName { path, .. } => path.clone(),
        Problem::NotInSource | Problem::Within { .. } => PathBuf::new(),
    }
}

pub fn innermost(p: &Problem) -> &Problem {
    match p {
        Problem::Within { inner, .. } => innermost(inner),
        other => other,
    }
}
