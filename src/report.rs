//! Serialisable records of outcomes: `--format json` rows and `--report FILE` documents.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::inventory::Image;
use crate::manifest::Platform;

/// One image as `list --format json` and reports show it.
#[derive(Debug, Serialize)]
pub struct ImageRecord {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    /// docker, docker-list, oci, oci-index, helm, signature, artifact, schema1.
    #[serde(rename = "type")]
    pub kind: Option<&'static str>,
    pub size: u64,
    pub platforms: Vec<Platform>,
    pub status: &'static str,
    pub problems: Vec<String>,
}

impl From<&Image> for ImageRecord {
    fn from(image: &Image) -> ImageRecord {
        let top = image.manifest();
        ImageRecord {
            repository: image.repository.clone(),
            tag: image.tag.clone(),
            digest: image.digest.map(|d| d.to_string()),
            media_type: top.map(|m| m.media_type().to_string()),
            kind: top.map(|m| m.type_label()),
            size: image.size(),
            platforms: image.platforms.clone(),
            status: if image.is_ok() { "ok" } else { "broken" },
            problems: image.problems.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// A run's retried requests in a report: all of them, and those made for no one image (the first
/// `/v2/` probe, tokens, Harbor's API before the images); each image's own are in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryTotals {
    pub total: u64,
    pub run: u64,
}

impl RetryTotals {
    /// From the client's total and each image's count.
    pub fn new(total: u64, per_image: impl IntoIterator<Item = u64>) -> RetryTotals {
        let images: u64 = per_image.into_iter().sum();
        RetryTotals {
            total,
            run: total.saturating_sub(images),
        }
    }
}

/// Writes `value` as pretty JSON to `path` (temp file + rename, so a reader never sees half a report).
pub fn write_json_file(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    write_atomically(path, |out| {
        serde_json::to_writer_pretty(&mut *out, value)?;
        out.write_all(b"\n")?;
        Ok(())
    })
}

/// Writes one line per reference (a failed list `--images FILE` can take back), temp file + rename.
pub fn write_lines_file(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    write_atomically(path, |out| {
        for line in lines {
            writeln!(out, "{line}")?;
        }
        Ok(())
    })
}

/// Writes through a temp file beside `path`, then renames it into place.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut tempfile::NamedTempFile) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    write(&mut tmp).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Serialises a path as text, bytes that are not UTF-8 shown as U+FFFD: one odd file name must
/// not fail a whole JSON document (serde refuses such a path).
pub fn path_text<P: AsRef<Path>, S: serde::Serializer>(path: &P, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.as_ref().to_string_lossy())
}

/// [`path_text`] for an optional path.
pub fn optional_path_text<S: serde::Serializer>(
    path: &Option<PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&*p.to_string_lossy()),
        None => s.serialize_none(),
    }
}
