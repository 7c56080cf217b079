//! Paths inside a registry v2 storage tree, and copying such a tree somewhere else.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `<root>/docker/registry/v2`.
pub fn v2_dir(root: &Path) -> PathBuf {
    root.join("docker/registry/v2")
}

/// `<root>/docker/registry/v2/repositories/<repo>`.
pub fn repo_dir(root: &Path, repo: &str) -> PathBuf {
    v2_dir(root).join("repositories").join(repo)
}

/// `.../_manifests/tags/<tag>/current/link`.
pub fn tag_current_link(root: &Path, repo: &str, tag: &str) -> PathBuf {
    repo_dir(root, repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link")
}

/// `.../_manifests/revisions/sha256/<hex>/link`.
pub fn revision_link(root: &Path, repo: &str, digest: &str) -> PathBuf {
    let (algo, hex) = split_digest(digest);
    repo_dir(root, repo)
        .join("_manifests/revisions")
        .join(algo)
        .join(hex)
        .join("link")
}

/// `.../_layers/sha256/<hex>/link`.
pub fn layer_link(root: &Path, repo: &str, digest: &str) -> PathBuf {
    let (algo, hex) = split_digest(digest);
    repo_dir(root, repo)
        .join("_layers")
        .join(algo)
        .join(hex)
        .join("link")
}

/// `.../_uploads/<uuid>`.
pub fn upload_dir(root: &Path, repo: &str, uuid: &str) -> PathBuf {
    repo_dir(root, repo).join("_uploads").join(uuid)
}

/// `<root>/docker/registry/v2/blobs/sha256/<hex[..2]>/<hex>/data`.
pub fn blob_data(root: &Path, digest: &str) -> PathBuf {
    let (algo, hex) = split_digest(digest);
    v2_dir(root)
        .join("blobs")
        .join(algo)
        .join(&hex[..2.min(hex.len())])
        .join(hex)
        .join("data")
}

fn split_digest(digest: &str) -> (&str, &str) {
    digest.split_once(':').unwrap_or(("sha256", digest))
}

/// Copies the folder `from` to `to` (which must not exist or be empty), recursively.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ty.is_symlink() {
            let target = fs::read_link(&src)?;
            std::os::unix::fs::symlink(target, &dst)?;
        } else {
            fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// Total size in bytes of the regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else if ty.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}
