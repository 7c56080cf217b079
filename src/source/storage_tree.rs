//! Reads a Distribution storage tree (`docker/registry/v2`): repositories, tags, revisions, blobs.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::beneath::{Beneath, Kind, is_symlink_error, symlink_on_the_way};
use super::{BlobFile, RepositoryEntry, Scan, ScanOptions, Source, SourceError, TagEntry, Upload};
use crate::digest::Digest;
use crate::manifest::{MAX_MANIFEST_BYTES, RawManifest};
use crate::names;
use crate::problem::Problem;

/// Link files hold 71 bytes; anything much longer is damage, not a digest.
const MAX_LINK: u64 = 256;
/// Repository folders nest at most this deep (a name has at most 255 characters).
const MAX_NESTING: usize = 128;

/// A storage tree on disk, located at its `docker/registry/v2` folder. Never written to, and
/// read without following a symbolic link at any level below that folder.
#[derive(Debug, Clone)]
pub struct StorageTree {
    v2: PathBuf,
    /// Where every read happens, beneath `v2`.
    root: Beneath,
    /// The folder the tree lives in: the root holding `docker/registry/v2`, else `v2` itself.
    folder: PathBuf,
}

impl StorageTree {
    /// Opens SOURCE: the root, its `docker/`, or its `docker/registry/v2/` folder.
    pub fn open(path: &Path) -> Result<StorageTree, SourceError> {
        let meta = fs::metadata(path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => SourceError::NotFound {
                path: path.to_path_buf(),
            },
            _ => SourceError::Io {
                path: path.to_path_buf(),
                error,
            },
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotATree {
                path: path.to_path_buf(),
            });
        }
        if let Some(v2) = Self::find_v2(path) {
            let v2 = fs::canonicalize(&v2).map_err(|error| SourceError::Io {
                path: v2.clone(),
                error,
            })?;
            let root = Beneath::open(&v2).map_err(|error| SourceError::Io {
                path: v2.clone(),
                error,
            })?;
            let folder = if v2.ends_with("docker/registry/v2") {
                v2.ancestors().nth(3).unwrap_or(&v2).to_path_buf()
            } else {
                v2.clone()
            };
            return Ok(StorageTree { v2, root, folder });
        }
        Err(SourceError::NotATree {
            path: path.to_path_buf(),
        })
    }

    /// The tree's `v2` folder when `path` is the root, its `docker/` or its `docker/registry/v2/` folder.
    pub fn find_v2(path: &Path) -> Option<PathBuf> {
        [
            path.join("docker/registry/v2"),
            path.join("registry/v2"),
            path.to_path_buf(),
        ]
        .into_iter()
        .find(|v2| v2.join("repositories").is_dir() || v2.join("blobs").is_dir())
    }

    /// The `docker/registry/v2` folder.
    pub fn v2(&self) -> &Path {
        &self.v2
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.v2.join(blob_rel(digest))
    }

    /// Names of every repository folder (one holding `_manifests`, `_layers` or `_uploads`),
    /// sorted; symbolic links on the way are reported, never followed.
    fn repository_names(&self) -> Result<(Vec<String>, Vec<Problem>), SourceError> {
        let mut names = Vec::new();
        let mut problems = Vec::new();
        match self.root.entries(Path::new("repositories")) {
            Ok(_) => self.find_repositories(Path::new(""), 0, &mut names, &mut problems),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if is_symlink_error(&e) => problems.push(Problem::Symlink {
                path: self.v2.join("repositories"),
            }),
            Err(error) => {
                return Err(SourceError::Io {
                    path: self.v2.join("repositories"),
                    error,
                });
            }
        }
        names.sort();
        names.dedup();
        Ok((names, problems))
    }

    /// Looks for repositories in `repositories/<rel>`.
    fn find_repositories(
        &self,
        rel: &Path,
        depth: usize,
        names: &mut Vec<String>,
        problems: &mut Vec<Problem>,
    ) {
        let folder = Path::new("repositories").join(rel);
        let entries = match self.root.entries(&folder) {
            Ok(e) => e,
            Err(e) => {
                problems.push(self.problem(&folder, &e));
                return;
            }
        };
        for (name, kind) in entries {
            let path = folder.join(&name);
            let Some(text) = name.to_str() else {
                problems.push(Problem::BadName {
                    what: "repository",
                    name: name.to_string_lossy().into_owned(),
                    path: self.v2.join(&path),
                });
                continue;
            };
            match kind {
                Kind::Symlink => problems.push(Problem::Symlink {
                    path: self.v2.join(&path),
                }),
                Kind::Dir if text.starts_with('_') => {
                    if matches!(text, "_manifests" | "_layers" | "_uploads")
                        && let Some(repo) = rel.to_str().filter(|r| !r.is_empty())
                    {
                        names.push(repo.to_string());
                    }
                }
                Kind::Dir if depth + 1 >= MAX_NESTING => problems.push(Problem::Io {
                    path: self.v2.join(&path),
                    error: format!("folders nest deeper than {MAX_NESTING} levels"),
                }),
                Kind::Dir => self.find_repositories(&rel.join(text), depth + 1, names, problems),
                Kind::File | Kind::Other => {}
            }
        }
    }

    /// A problem reading `rel`, naming the file.
    fn problem(&self, rel: &Path, e: &io::Error) -> Problem {
        let path = self.v2.join(rel);
        if is_symlink_error(e) {
            Problem::Symlink {
                path: symlink_on_the_way(&path, &self.v2),
            }
        } else {
            Problem::io(path, e)
        }
    }

    /// Sub-folders of `rel`, sorted; links among them come back as problems.
    fn folders(
        &self,
        rel: &Path,
    ) -> io::Result<Vec<(std::ffi::OsString, Result<PathBuf, Problem>)>> {
        Ok(self
            .root
            .entries(rel)?
            .into_iter()
            .filter_map(|(name, kind)| {
                let path = rel.join(&name);
                match kind {
                    Kind::Dir => Some((name, Ok(path))),
                    Kind::Symlink => Some((
                        name,
                        Err(Problem::Symlink {
                            path: self.v2.join(path),
                        }),
                    )),
                    Kind::File | Kind::Other => None,
                }
            })
            .collect())
    }

    fn read_repository(&self, name: &str, options: ScanOptions) -> RepositoryEntry {
        let dir = Path::new("repositories").join(name);
        let mut problems = Vec::new();
        if let Err(why) = names::check_repository(name) {
            problems.push(Problem::BadName {
                what: "repository",
                name: format!("{name} ({why})"),
                path: self.v2.join(&dir),
            });
        }
        let tags_dir = dir.join("_manifests/tags");
        let mut tags = Vec::new();
        match self.folders(&tags_dir) {
            Ok(entries) => {
                for (tag, folder) in entries {
                    let target = folder.and_then(|tag_dir| match tag.to_str() {
                        Some(t) if names::check_tag(t).is_ok() => {
                            self.read_link(&tag_dir.join("current/link"))
                        }
                        _ => Err(Problem::BadName {
                            what: "tag",
                            name: tag.to_string_lossy().into_owned(),
                            path: self.v2.join(&tag_dir),
                        }),
                    });
                    tags.push(TagEntry {
                        name: tag.to_string_lossy().into_owned(),
                        target,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(self.problem(&tags_dir, &e)),
        }
        let mut revisions = Vec::new();
        if options.revisions {
            let rev_dir = dir.join("_manifests/revisions/sha256");
            match self.folders(&rev_dir) {
                Ok(entries) => {
                    for (hex, folder) in entries {
                        revisions.push(folder.and_then(|path| {
                            let link = path.join("link");
                            let d = self.read_link(&link)?;
                            if Some(d.hex().as_str()) == hex.to_str() {
                                Ok(d)
                            } else {
                                Err(Problem::BadLink {
                                    path: self.v2.join(&link),
                                    error: crate::digest::DigestError::Malformed {
                                        found: format!(
                                            "{d} under folder {}",
                                            hex.to_string_lossy()
                                        ),
                                    },
                                })
                            }
                        }));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => problems.push(self.problem(&rev_dir, &e)),
            }
        }
        let uploads_dir = dir.join("_uploads");
        let mut uploads = Vec::new();
        if let Ok(entries) = self.folders(&uploads_dir) {
            for (id, folder) in entries {
                let Ok(path) = folder else { continue };
                let bytes = self.root.file_len(&path.join("data")).unwrap_or(0);
                uploads.push(Upload {
                    repository: name.to_string(),
                    id: id.to_string_lossy().into_owned(),
                    bytes,
                    path: self.v2.join(path),
                });
            }
        }
        RepositoryEntry {
            name: name.to_string(),
            tags,
            revisions,
            uploads,
            problems,
        }
    }

    /// Reads a link file strictly: `sha256:<64 hex>` and nothing else.
    fn read_link(&self, rel: &Path) -> Result<Digest, Problem> {
        let bytes = self.read_capped(rel, MAX_LINK)?;
        Digest::from_link(&bytes).map_err(|error| Problem::BadLink {
            path: self.v2.join(rel),
            error,
        })
    }

    /// Reads at most `max` bytes (+1 to notice more) of the regular file `rel`, never through a
    /// link. A missing file comes back as `Problem::MissingLink`, which callers rename.
    fn read_capped(&self, rel: &Path, max: u64) -> Result<Vec<u8>, Problem> {
        let path = self.v2.join(rel);
        let file = match self.root.file(rel) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Problem::MissingLink { path });
            }
            Err(e) => return Err(self.problem(rel, &e)),
        };
        // Said from the size when the file is already too big: nothing is read (a 200 MB
        // "manifest" would otherwise cost its cap in memory). The read stays capped all the same.
        if let Ok(meta) = file.metadata()
            && meta.is_file()
            && meta.len() > max
        {
            return Err(Problem::Io {
                path,
                error: format!(
                    "{} bytes, larger than the {max} bytes such a file can hold",
                    meta.len()
                ),
            });
        }
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Problem::io(&path, &e))?;
        if bytes.len() as u64 > max {
            return Err(Problem::Io {
                path,
                error: format!("larger than the {max} bytes such a file can hold"),
            });
        }
        Ok(bytes)
    }
}

/// `blobs/sha256/<hex[:2]>/<hex>/data`, relative to the v2 folder.
fn blob_rel(digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    Path::new("blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data")
}

impl Source for StorageTree {
    fn location(&self) -> &Path {
        &self.v2
    }

    fn folder(&self) -> Option<&Path> {
        Some(&self.folder)
    }

    fn v2_folder(&self) -> Option<&Path> {
        Some(&self.v2)
    }

    fn repositories(
        &self,
        options: ScanOptions,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Scan, SourceError> {
        let (names, problems) = self.repository_names()?;
        let repositories = names
            .par_iter()
            .filter(|n| wanted(n))
            .map(|n| self.read_repository(n, options))
            .collect();
        Ok(Scan {
            repositories,
            problems,
        })
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest, Problem> {
        let path = self.blob_path(digest);
        let bytes = self
            .read_capped(&blob_rel(digest), MAX_MANIFEST_BYTES)
            .map_err(|p| match p {
                Problem::MissingLink { path } => Problem::MissingManifest {
                    digest: *digest,
                    path,
                },
                other => other,
            })?;
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(Problem::CorruptManifest {
                digest: *digest,
                path,
                found,
                len: bytes.len() as u64,
            });
        }
        RawManifest::parse(bytes).map_err(|error| Problem::BadManifest {
            digest: *digest,
            path,
            error,
        })
    }

    fn blob(&self, digest: &Digest) -> Result<BlobFile, Problem> {
        let rel = blob_rel(digest);
        let path = self.v2.join(&rel);
        match self.root.file_len(&rel) {
            Ok(len) => Ok(BlobFile::own(path, len)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Problem::MissingBlob {
                role: "".to_string(),
                digest: *digest,
                path,
            }),
            Err(e) => Err(self.problem(&rel, &e)),
        }
    }

    fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem> {
        let path = self.blob_path(digest);
        let bytes = self.read_capped(&blob_rel(digest), max)?;
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(Problem::CorruptBlob {
                digest: *digest,
                path,
                found,
                len: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }
}
