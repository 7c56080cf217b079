//! The skopeo `dir:` layout: a folder per tag with `manifest.json`, blobs named by hex, `<hex>.manifest.json` children and `version`.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::layout::{
    DIR_VERSION, FileCounts, FileTotals, ImageFile, all_placed, check_component,
    check_manifest_file, check_tag, image_files, make_dirs, manifest_file, repository_components,
};
use super::link::{Ladder, LinkError, Wanted, write_small};
use super::{BlobAction, ImageError, Sink, SinkError};
use crate::digest::Digest;
use crate::inventory::{BlobRef, Image};
use crate::manifest::RawManifest;
use crate::progress::Progress;
use crate::source::{BlobFile, Source};

const MANIFEST: &str = "manifest.json";
const VERSION: &str = "version";

/// Writes images as skopeo `dir:` folders under one output folder.
pub struct DirLayout<'a> {
    out: PathBuf,
    source: &'a dyn Source,
    ladder: Ladder,
    counts: FileCounts,
}

/// One image's folder: `DIR/<repo>:<tag>/`, or `DIR/<repo>@sha256:<hex>/` for an untagged manifest.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// The folder relative to DIR, as shown to people.
    rel: String,
    components: Vec<String>,
    path: PathBuf,
    /// The image's top manifest: it goes to `manifest.json`, every other one to `<hex>.manifest.json`.
    top: Digest,
}

impl fmt::Display for ImageFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.rel)
    }
}

/// The folder components for an image, every name checked before it becomes a path.
pub fn image_folder_components(
    repository: &str,
    tag: Option<&str>,
    digest: Digest,
) -> Result<Vec<String>, String> {
    let mut parts: Vec<String> = repository_components(repository)?
        .into_iter()
        .map(str::to_string)
        .collect();
    let last = parts.pop().ok_or("empty repository name")?;
    let leaf = match tag {
        Some(tag) => {
            check_tag(tag)?;
            format!("{last}:{tag}")
        }
        None => format!("{last}@{digest}"),
    };
    check_component(&leaf)?;
    parts.push(leaf);
    Ok(parts)
}

impl<'a> DirLayout<'a> {
    /// `out` must have passed [`super::layout::prepare_out`].
    pub fn new(out: PathBuf, source: &'a dyn Source, ladder: Ladder) -> DirLayout<'a> {
        DirLayout {
            out,
            source,
            ladder,
            counts: FileCounts::default(),
        }
    }

    pub fn totals(&self) -> FileTotals {
        self.counts.totals()
    }

    fn manifest_path(&self, folder: &ImageFolder, digest: Digest) -> PathBuf {
        if digest == folder.top {
            folder.path.join(MANIFEST)
        } else {
            folder.path.join(format!("{}.manifest.json", digest.hex()))
        }
    }

    /// Whether every file of the image is already right, `version` and `manifest.json` included.
    fn complete(&self, folder: &ImageFolder, image: &Image) -> Result<bool, SinkError> {
        if !fs::read(folder.path.join(VERSION)).is_ok_and(|b| b == DIR_VERSION) {
            return Ok(false);
        }
        let files = image_files(self.source, image)?;
        let dest = |f: &ImageFile| {
            if f.is_manifest {
                self.manifest_path(folder, f.digest)
            } else {
                folder.path.join(f.digest.hex())
            }
        };
        all_placed(&self.ladder, &files, dest, &self.counts)
    }

    /// Makes the folder and its `version`, and removes a `manifest.json` so the folder reads as
    /// incomplete (skopeo finds images by that file) until this image's own is written last.
    fn ready(&self, folder: &ImageFolder) -> Result<(), SinkError> {
        let components: Vec<&str> = folder.components.iter().map(String::as_str).collect();
        make_dirs(&self.out, &components).map_err(|error| {
            SinkError::from(LinkError::Write {
                path: folder.path.clone(),
                error,
            })
        })?;
        write_small(&folder.path.join(VERSION), DIR_VERSION).map_err(SinkError::from)?;
        let manifest = folder.path.join(MANIFEST);
        match fs::remove_file(&manifest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(LinkError::Write {
                path: manifest,
                error,
            }
            .into()),
        }
    }

    fn place(
        &self,
        want: Wanted,
        dest: &Path,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        let action = self.ladder.place(want, dest, &|n| progress.add_bytes(n))?;
        self.counts.record(action, want.size);
        Ok(action)
    }
}

impl DirLayout<'_> {
    /// Where an image goes in the layout, names checked before they become paths.
    fn locate(&self, image: &Image) -> Result<ImageFolder, String> {
        let top = image
            .digest
            .ok_or_else(|| format!("{}: no manifest digest", image.reference()))?;
        let components = image_folder_components(&image.repository, image.tag.as_deref(), top)?;
        let path = components.iter().fold(self.out.clone(), |p, c| p.join(c));
        Ok(ImageFolder {
            rel: components.join("/"),
            components,
            path,
            top,
        })
    }
}

impl Sink for DirLayout<'_> {
    type Target = ImageFolder;

    fn target(&self, image: &Image) -> Result<ImageFolder, ImageError> {
        self.locate(image).map_err(ImageError::Invalid)
    }

    /// Also readies the folder of an incomplete image for the blobs that follow.
    fn image_present(&self, folder: &ImageFolder, image: &Image) -> Result<bool, SinkError> {
        if self.complete(folder, image)? {
            return Ok(true);
        }
        self.ready(folder)?;
        Ok(false)
    }

    fn put_blob(
        &self,
        folder: &ImageFolder,
        blob: &BlobRef,
        file: &BlobFile,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        let want = Wanted {
            file,
            digest: blob.digest,
            size: blob.size,
        };
        self.place(want, &folder.path.join(blob.digest.hex()), progress)
    }

    fn put_manifest(
        &self,
        folder: &ImageFolder,
        manifest: &RawManifest,
        _tag: Option<&str>,
    ) -> Result<(), SinkError> {
        let file = manifest_file(self.source, manifest)?;
        let dest = self.manifest_path(folder, manifest.digest());
        let want = Wanted {
            file: &file,
            digest: manifest.digest(),
            size: manifest.len(),
        };
        self.place(want, &dest, &Progress::hidden())?;
        check_manifest_file(&dest, manifest)
    }

    /// Removes files an earlier export of another image left in this folder.
    fn finish_image(&self, folder: &ImageFolder, image: &Image) -> Result<(), SinkError> {
        let mut keep: HashSet<String> = [VERSION.to_string(), MANIFEST.to_string()].into();
        for m in &image.manifests {
            if m.digest() != folder.top {
                keep.insert(format!("{}.manifest.json", m.digest().hex()));
            }
        }
        keep.extend(image.blobs.iter().map(|b| b.digest.hex()));
        let entries = fs::read_dir(&folder.path).map_err(|error| {
            SinkError::from(LinkError::Read {
                path: folder.path.clone(),
                error,
            })
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let stale = !keep.contains(name.to_string_lossy().as_ref())
                && entry
                    .file_type()
                    .is_ok_and(|t| t.is_file() || t.is_symlink());
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_repo_colon_tag_or_repo_at_digest() {
        let d = Digest::of(b"x");
        assert_eq!(
            image_folder_components("org/team/app", Some("1.0"), d).unwrap(),
            ["org", "team", "app:1.0"]
        );
        assert_eq!(
            image_folder_components("alpine", None, d).unwrap(),
            [format!("alpine@{d}")]
        );
        for (repo, tag) in [
            ("../etc", Some("x")),
            ("a", Some("..")),
            ("a", Some("x/../../y")),
            ("/abs", Some("x")),
        ] {
            assert!(
                image_folder_components(repo, tag, d).is_err(),
                "{repo} {tag:?}"
            );
        }
    }
}
