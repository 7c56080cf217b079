//! Checks a storage tree, or a live registry, against a Truth; returns every mismatch found.

use std::fs;
use std::path::Path;

use anyhow::{Result, bail};

use crate::media::sha256_digest;
use crate::push::Pusher;
use crate::tree;
use crate::truth::Truth;

/// Checks that the storage tree under `root` (the folder containing `docker/`) holds what
/// `truth` says: every tag's `current/link` and `index` entry, revision links of tagged,
/// child and untagged manifests, `_layers` links and blob data (hashed) for every blob,
/// no data or link for foreign layers, and each unfinished upload's folder.
pub fn check_tree(root: &Path, truth: &Truth) -> Result<()> {
    let mut problems = Vec::new();
    let check_blob = |digest: &str, size: Option<u64>, problems: &mut Vec<String>| {
        let path = tree::blob_data(root, digest);
        match fs::read(&path) {
            Ok(bytes) => {
                if sha256_digest(&bytes) != digest {
                    problems.push(format!("{} does not hash to {digest}", path.display()));
                }
                if let Some(size) = size
                    && bytes.len() as u64 != size
                {
                    problems.push(format!(
                        "{} has {} bytes, want {size}",
                        path.display(),
                        bytes.len()
                    ));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    };
    let link_holds =
        |path: &Path, digest: &str, problems: &mut Vec<String>| match fs::read_to_string(path) {
            Ok(text) if text == digest => {}
            Ok(text) => problems.push(format!("{} holds {text:?}, want {digest}", path.display())),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        };

    for (name, image) in &truth.tags {
        let repo = &image.repository;
        link_holds(
            &tree::tag_current_link(root, repo, &image.tag),
            &image.digest,
            &mut problems,
        );
        let (_, hex) = image.digest.split_once(':').unwrap_or(("", &image.digest));
        let index_link = tree::repo_dir(root, repo)
            .join("_manifests/tags")
            .join(&image.tag)
            .join("index/sha256")
            .join(hex)
            .join("link");
        link_holds(&index_link, &image.digest, &mut problems);
        link_holds(
            &tree::revision_link(root, repo, &image.digest),
            &image.digest,
            &mut problems,
        );
        check_blob(&image.digest, None, &mut problems);
        for child in &image.children {
            link_holds(
                &tree::revision_link(root, repo, child),
                child,
                &mut problems,
            );
            check_blob(child, None, &mut problems);
        }
        for blob in &image.blobs {
            link_holds(
                &tree::layer_link(root, repo, &blob.digest),
                &blob.digest,
                &mut problems,
            );
            check_blob(&blob.digest, Some(blob.size), &mut problems);
        }
        for foreign in &image.foreign_layers {
            if tree::blob_data(root, foreign).exists() {
                problems.push(format!("{name}: foreign layer {foreign} has blob data"));
            }
            if tree::layer_link(root, repo, foreign).exists() {
                problems.push(format!(
                    "{name}: foreign layer {foreign} is linked in {repo}"
                ));
            }
        }
    }
    for u in &truth.untagged {
        link_holds(
            &tree::revision_link(root, &u.repository, &u.digest),
            &u.digest,
            &mut problems,
        );
        check_blob(&u.digest, None, &mut problems);
        if let Some(t) = truth.tags.values().find(|t| {
            t.repository == u.repository && (t.digest == u.digest || t.children.contains(&u.digest))
        }) {
            problems.push(format!(
                "untagged {}@{} is referenced by tag {}",
                u.repository, u.digest, t.tag
            ));
        }
    }
    for up in &truth.uploads {
        let dir = tree::upload_dir(root, &up.repository, &up.uuid);
        for file in ["data", "startedat"] {
            if !dir.join(file).is_file() {
                problems.push(format!("{} is missing", dir.join(file).display()));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "storage tree {} differs from the truth:\n  {}",
            root.display(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Checks through the registry API that every truth tag is listed by `tags/list` and
/// resolves (with all four manifest types accepted) to its digest and media type, that the
/// bytes hash to the digest, that indexes list the truth's children and platforms, that
/// every blob is linked in its repository, and that untagged manifests resolve by digest.
pub fn check_registry(p: &Pusher, truth: &Truth) -> Result<()> {
    let mut problems = Vec::new();
    for repo in truth
        .tags
        .values()
        .map(|t| t.repository.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let listed = p.tags(&repo)?;
        let want: Vec<&str> = truth
            .tags
            .values()
            .filter(|t| t.repository == repo)
            .map(|t| t.tag.as_str())
            .collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        let mut got: Vec<&str> = listed.iter().map(String::as_str).collect();
        got.sort();
        if got != want_sorted {
            problems.push(format!(
                "{repo}: tags/list says {got:?}, want {want_sorted:?}"
            ));
        }
    }
    for (name, image) in &truth.tags {
        let m = match p.get_manifest(&image.repository, &image.tag) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        if m.digest != image.digest {
            problems.push(format!(
                "{name}: registry digest {}, want {}",
                m.digest, image.digest
            ));
        }
        if sha256_digest(&m.bytes) != image.digest {
            problems.push(format!(
                "{name}: served bytes hash to {}",
                sha256_digest(&m.bytes)
            ));
        }
        if m.media_type != image.media_type {
            problems.push(format!(
                "{name}: Content-Type {}, want {}",
                m.media_type, image.media_type
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&m.bytes)?;
        if json["mediaType"] != image.media_type.as_str() {
            problems.push(format!(
                "{name}: mediaType field {} in the JSON",
                json["mediaType"]
            ));
        }
        if !image.children.is_empty() {
            let entries = json["manifests"].as_array().cloned().unwrap_or_default();
            let digests: Vec<String> = entries
                .iter()
                .filter_map(|e| e["digest"].as_str().map(str::to_string))
                .collect();
            if digests != image.children {
                problems.push(format!(
                    "{name}: index children {digests:?}, want {:?}",
                    image.children
                ));
            }
            let platforms: Vec<crate::media::Platform> = entries
                .iter()
                .filter_map(|e| serde_json::from_value(e["platform"].clone()).ok())
                .collect();
            if platforms != image.platforms {
                problems.push(format!(
                    "{name}: index platforms {platforms:?}, want {:?}",
                    image.platforms
                ));
            }
        }
        for blob in &image.blobs {
            if !p.blob_exists(&image.repository, &blob.digest)? {
                problems.push(format!(
                    "{name}: blob {} is not in {}",
                    blob.digest, image.repository
                ));
            }
        }
        for foreign in &image.foreign_layers {
            if p.blob_exists(&image.repository, foreign)? {
                problems.push(format!(
                    "{name}: foreign layer {foreign} is served by the registry"
                ));
            }
        }
    }
    for u in &truth.untagged {
        match p.get_manifest(&u.repository, &u.digest) {
            Ok(m) if sha256_digest(&m.bytes) == u.digest => {}
            Ok(m) => problems.push(format!(
                "untagged {}@{}: bytes hash to {}",
                u.repository,
                u.digest,
                sha256_digest(&m.bytes)
            )),
            Err(e) => problems.push(format!("untagged {}@{}: {e:#}", u.repository, u.digest)),
        }
    }
    if !problems.is_empty() {
        bail!(
            "registry {} differs from the truth:\n  {}",
            p.base_url(),
            problems.join("\n  ")
        );
    }
    Ok(())
}
