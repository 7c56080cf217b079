//! The OCI image layout: per repository `oci-layout`, `index.json` (tags as ref names) and `blobs/sha256/<hex>`, manifests byte-exact.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::layout::{
    FileCounts, FileTotals, OCI_LAYOUT, all_placed, check_manifest_file, check_tag, image_files,
    make_dirs, manifest_file, repository_components,
};
use super::link::{Ladder, LinkError, Wanted, write_small};
use super::{BlobAction, ImageError, Sink, SinkError, Unfinished};
use crate::digest::Digest;
use crate::engine::once::OnceMap;
use crate::inventory::{BlobRef, Image};
use crate::manifest::{RawManifest, media_type};
use crate::progress::Progress;
use crate::source::{BlobFile, Source};

/// The annotation carrying a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Names a repository's layout folder uses itself: a deeper repository cannot be called so.
const RESERVED: [&str; 3] = ["blobs", "index.json", "oci-layout"];

/// Writes one OCI image layout per repository under one output folder.
pub struct OciLayout<'a> {
    out: PathBuf,
    source: &'a dyn Source,
    ladder: Ladder,
    counts: FileCounts,
    /// Every repository this run writes, to spot a name that would land inside another's layout.
    repositories: BTreeSet<String>,
    /// Layout folders readied this run, with the `index.json` entries they already had.
    ready: OnceMap<PathBuf, Arc<Vec<Value>>>,
    /// Blob files placed this run (tags of one repository share `blobs/`).
    placed: OnceMap<PathBuf, BlobAction>,
    /// Index entries of images written this run, per layout folder.
    entries: Mutex<BTreeMap<PathBuf, Vec<Entry>>>,
}

/// One repository's layout and the reference written into it.
#[derive(Debug, Clone)]
pub struct OciTarget {
    repository: String,
    components: Vec<String>,
    path: PathBuf,
    tag: Option<String>,
    top: Digest,
}

impl fmt::Display for OciTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(tag) => write!(f, "{}/ (ref {tag})", self.repository),
            None => write!(f, "{}/ (untagged {})", self.repository, self.top),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The source reference of the image, to fail it when its `index.json` cannot be written.
    source: String,
    tag: Option<String>,
    digest: Digest,
    media_type: String,
    size: u64,
}

impl Entry {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.size,
        });
        if let Some(tag) = &self.tag {
            v["annotations"] = json!({ REF_NAME: tag });
        }
        v
    }
}

fn entry_ref_name(v: &Value) -> Option<&str> {
    v.get("annotations")?.get(REF_NAME)?.as_str()
}

fn entry_digest(v: &Value) -> Option<&str> {
    v.get("digest")?.as_str()
}

impl<'a> OciLayout<'a> {
    /// `out` must have passed [`super::layout::prepare_out`]; `repositories` are those of the selected images.
    pub fn new(
        out: PathBuf,
        source: &'a dyn Source,
        ladder: Ladder,
        repositories: impl IntoIterator<Item = String>,
    ) -> OciLayout<'a> {
        OciLayout {
            out,
            source,
            ladder,
            counts: FileCounts::default(),
            repositories: repositories.into_iter().collect(),
            ready: OnceMap::new(),
            placed: OnceMap::new(),
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn totals(&self) -> FileTotals {
        self.counts.totals()
    }

    fn blob_path(&self, target: &OciTarget, digest: Digest) -> PathBuf {
        target.path.join("blobs/sha256").join(digest.hex())
    }

    /// Refuses a repository whose folder would be a file or folder of an enclosing repository's layout.
    fn check_nesting(&self, components: &[&str]) -> Result<(), String> {
        for depth in 1..components.len() {
            let outer = components[..depth].join("/");
            let outer_is_layout = self.repositories.contains(&outer)
                || fs::symlink_metadata(self.out.join(&outer).join("oci-layout")).is_ok();
            if outer_is_layout && RESERVED.contains(&components[depth]) {
                return Err(format!(
                    "repository {} cannot be written as an OCI layout: {:?} is a reserved name inside the layout of {outer}",
                    components.join("/"),
                    components[depth]
                ));
            }
        }
        Ok(())
    }

    /// Makes the layout folder, `oci-layout` and `blobs/sha256`, once per run; reads the existing `index.json` entries.
    fn ready(&self, target: &OciTarget) -> Result<Arc<Vec<Value>>, SinkError> {
        let (entries, _) = self.ready.run(&target.path, || {
            let components: Vec<&str> = target.components.iter().map(String::as_str).collect();
            let write_err = |error| -> SinkError {
                LinkError::Write {
                    path: target.path.clone(),
                    error,
                }
                .into()
            };
            let path = make_dirs(&self.out, &components).map_err(write_err)?;
            if fs::symlink_metadata(path.join("blobs/oci-layout")).is_ok() {
                return Err(SinkError::invalid(format!(
                    "{} holds the layout of another repository named blobs",
                    path.join("blobs").display()
                )));
            }
            make_dirs(&path, &["blobs", "sha256"]).map_err(write_err)?;
            write_small(&path.join("oci-layout"), OCI_LAYOUT)?;
            Ok::<_, SinkError>(Arc::new(read_index(&path.join("index.json"))?))
        })?;
        Ok(entries)
    }

    fn place(
        &self,
        want: Wanted,
        dest: PathBuf,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        let (action, here) = self.placed.run(&dest, || {
            self.ladder
                .place(want, &dest, &|n| progress.add_bytes(n))
                .map_err(SinkError::from)
        })?;
        if !here {
            // Another tag of this repository placed the same file this run: one file, counted once.
            return Ok(BlobAction::Present);
        }
        self.counts.record(action, want.size);
        Ok(action)
    }
}

/// The `manifests` of an existing `index.json`, or none when there is no such file.
fn read_index(path: &Path) -> Result<Vec<Value>, SinkError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(LinkError::Read {
                path: path.to_path_buf(),
                error,
            }
            .into());
        }
    };
    let index: Value = serde_json::from_slice(&bytes).map_err(|e| {
        SinkError::invalid(format!(
            "{} is not valid JSON ({e}); move it away or export into another folder",
            path.display()
        ))
    })?;
    match index.get("manifests") {
        Some(Value::Array(m)) => Ok(m.clone()),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(SinkError::invalid(format!(
            "{}: \"manifests\" is not an array",
            path.display()
        ))),
    }
}

impl OciLayout<'_> {
    /// Where an image goes in the layout, names checked before they become paths.
    fn locate(&self, image: &Image) -> Result<OciTarget, String> {
        let top = image
            .digest
            .ok_or_else(|| format!("{}: no manifest digest", image.reference()))?;
        let components = repository_components(&image.repository)?;
        if let Some(tag) = &image.tag {
            check_tag(tag)?;
        }
        self.check_nesting(&components)?;
        Ok(OciTarget {
            repository: image.repository.clone(),
            path: components.iter().fold(self.out.clone(), |p, c| p.join(c)),
            components: components.into_iter().map(str::to_string).collect(),
            tag: image.tag.clone(),
            top,
        })
    }
}

impl Sink for OciLayout<'_> {
    type Target = OciTarget;

    fn target(&self, image: &Image) -> Result<OciTarget, ImageError> {
        self.locate(image).map_err(ImageError::Invalid)
    }

    /// Also readies the repository's layout folder.
    fn image_present(&self, target: &OciTarget, image: &Image) -> Result<bool, SinkError> {
        let existing = self.ready(target)?;
        let top = target.top.to_string();
        let listed = existing.iter().any(|e| {
            entry_digest(e) == Some(top.as_str()) && entry_ref_name(e) == target.tag.as_deref()
        });
        if !listed {
            return Ok(false);
        }
        let files = image_files(self.source, image)?;
        all_placed(
            &self.ladder,
            &files,
            |f| self.blob_path(target, f.digest),
            &self.counts,
        )
    }

    fn put_blob(
        &self,
        target: &OciTarget,
        blob: &BlobRef,
        file: &BlobFile,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        let want = Wanted {
            file,
            digest: blob.digest,
            size: blob.size,
        };
        self.place(want, self.blob_path(target, blob.digest), progress)
    }

    fn put_manifest(
        &self,
        target: &OciTarget,
        manifest: &RawManifest,
        _tag: Option<&str>,
    ) -> Result<(), SinkError> {
        let file = manifest_file(self.source, manifest)?;
        let dest = self.blob_path(target, manifest.digest());
        let want = Wanted {
            file: &file,
            digest: manifest.digest(),
            size: manifest.len(),
        };
        self.place(want, dest.clone(), &Progress::hidden())?;
        check_manifest_file(&dest, manifest)
    }

    fn finish_image(&self, target: &OciTarget, image: &Image) -> Result<(), SinkError> {
        let Some(top) = image.manifest() else {
            return Err(SinkError::invalid(format!("{target}: no manifest")));
        };
        self.entries
            .lock()
            .unwrap()
            .entry(target.path.clone())
            .or_default()
            .push(Entry {
                source: image.reference(),
                tag: target.tag.clone(),
                digest: top.digest(),
                media_type: top.media_type().to_string(),
                size: top.len(),
            });
        Ok(())
    }

    /// Writes each changed `index.json`: earlier entries kept unless a new one takes their tag
    /// (or digest, untagged). One that cannot be written fails the images it should list.
    fn finish(&self) -> Vec<Unfinished> {
        let entries = std::mem::take(&mut *self.entries.lock().unwrap());
        let mut unfinished = Vec::new();
        for (path, new) in entries {
            let index_path = path.join("index.json");
            if let Err(error) = write_index(&index_path, &new) {
                unfinished.push(Unfinished {
                    what: index_path.display().to_string(),
                    images: new.into_iter().map(|e| e.source).collect(),
                    error,
                });
            }
        }
        unfinished
    }
}

/// Merges `new` entries into the `index.json` at `index_path` and writes it (temp + rename).
fn write_index(index_path: &Path, new: &[Entry]) -> Result<(), SinkError> {
    let existing = read_index(index_path)?;
    let mut new = new.to_vec();
    new.sort_by(|a, b| (&a.tag, a.digest).cmp(&(&b.tag, b.digest)));
    let tags: BTreeSet<&str> = new.iter().filter_map(|e| e.tag.as_deref()).collect();
    let untagged: BTreeSet<String> = new
        .iter()
        .filter(|e| e.tag.is_none())
        .map(|e| e.digest.to_string())
        .collect();
    let mut manifests: Vec<Value> = existing
        .into_iter()
        .filter(|e| match entry_ref_name(e) {
            Some(name) => !tags.contains(name),
            None => !entry_digest(e).is_some_and(|d| untagged.contains(d)),
        })
        .collect();
    manifests.extend(new.iter().map(Entry::to_json));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    let mut bytes = serde_json::to_vec_pretty(&index).expect("JSON values serialise");
    bytes.push(b'\n');
    write_small(index_path, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::StorageTree;

    #[test]
    fn a_repository_inside_anothers_layout_files_is_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("docker/registry/v2/blobs")).unwrap();
        let tree = StorageTree::open(d.path()).unwrap();
        let ladder = Ladder::new(crate::sink::link::LinkMode::Auto, false);
        let sink = OciLayout::new(
            d.path().join("out"),
            &tree,
            ladder,
            ["ns/sub".to_string(), "ns/sub/blobs".to_string()],
        );
        assert!(sink.check_nesting(&["ns", "sub", "blobs"]).is_err());
        assert!(sink.check_nesting(&["ns", "sub", "img"]).is_ok());
        assert!(sink.check_nesting(&["ns", "blobs"]).is_ok());
    }
}
