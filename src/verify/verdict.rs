//! The verdict on one image: every problem its resolution and its hashed blobs show, and notes.

use crate::inventory::Image;
use crate::manifest::{Descriptor, ManifestKind};
use crate::problem::Problem;
use crate::source::Source;

use super::Hashes;
use super::memo::Memo;
use super::record::{ImageVerdict, ProblemRecord, Status};

/// The verdict on one image: its resolution problems, then what hashing found.
pub fn verdict(image: &Image, memo: &Memo, hashed: &Hashes) -> ImageVerdict {
    let mut problems = image.problems.clone();
    problems.extend(child_sizes(image, memo));
    for blob in &image.blobs {
        match hashed.get(&blob.digest) {
            Some(Ok(h)) if h.digest != blob.digest => problems.push(
                Problem::CorruptBlob {
                    digest: blob.digest,
                    path: memo
                        .blob(&blob.digest)
                        .map(|f| f.name())
                        .unwrap_or_default(),
                    found: h.digest,
                    len: h.len,
                }
                .within(&blob.role),
            ),
            Some(Err(Problem::MissingBlob { digest, path, .. })) => {
                problems.push(Problem::MissingBlob {
                    role: blob.role.clone(),
                    digest: *digest,
                    path: path.clone(),
                })
            }
            Some(Err(p)) => problems.push(p.clone().within(&blob.role)),
            Some(Ok(_)) | None => {}
        }
    }
    ImageVerdict {
        repository: image.repository.clone(),
        tag: image.tag.clone(),
        digest: image.digest,
        status: if problems.is_empty() {
            Status::Ok
        } else {
            Status::Broken
        },
        problems: problems.iter().map(ProblemRecord::from).collect(),
        notes: notes(image),
    }
}

/// Index children whose stored size differs from what their index says (a truncated child
/// reads as corrupt too; this names the size the index expected).
fn child_sizes(image: &Image, memo: &Memo) -> Vec<Problem> {
    let mut out = Vec::new();
    for index in &image.manifests {
        let Some(Ok(index)) = memo.get(&index.digest()) else {
            continue;
        };
        for child in index.manifests() {
            let found = match memo.get(&child.digest) {
                Some(Ok(m)) => m.len(),
                Some(Err(Problem::CorruptManifest { len, .. })) => len,
                _ => continue,
            };
            if found != child.size {
                let path = memo.blob(&child.digest).map(|f| f.path).unwrap_or_default();
                out.push(Problem::BlobSize {
                    role: child_label(child),
                    digest: child.digest,
                    path,
                    expected: child.size,
                    found,
                });
            }
        }
    }
    out
}

fn child_label(child: &Descriptor) -> String {
    match &child.platform {
        Some(p) => format!("child {} ({p})", child.digest),
        None => format!("child {}", child.digest),
    }
}

/// Facts about an image that are not problems.
fn notes(image: &Image) -> Vec<String> {
    let mut out = Vec::new();
    if image
        .manifests
        .iter()
        .any(|m| m.kind() == ManifestKind::Schema1)
    {
        out.push(
            "schema1 manifest: its digest depends on the repository name inside it, so push skips it (export keeps it)"
                .to_string(),
        );
    }
    for layer in &image.foreign {
        out.push(format!(
            "foreign layer {} is fetched from {} and need not be in the tree",
            layer.digest,
            layer.urls.first().map(String::as_str).unwrap_or("its URL")
        ));
    }
    out
}
