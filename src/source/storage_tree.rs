//! Reads a Distribution storage tree (`docker/registry/v2`): repositories, tags, revisions, blobs.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use walkdir::WalkDir;

use super::open::{is_symlink_error, open_no_symlinks, symlink_on_the_way};
use super::{BlobFile, RepositoryEntry, Scan, ScanOptions, Source, SourceError, TagEntry, Upload};
use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::names;
use crate::problem::Problem;

/// Manifests larger than this are refused (Distribution itself refuses over 4 MiB).
const MAX_MANIFEST: u64 = 16 << 20;
/// Link files hold 71 bytes; anything much longer is damage, not a digest.
const MAX_LINK: u64 = 256;

/// A storage tree on disk, located at its `docker/registry/v2` folder. Never written to.
#[derive(Debug, Clone)]
pub struct StorageTree {
    v2: PathBuf,
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
        if meta.is_file() {
            return Err(match archive_kind(path) {
                Some(kind) => SourceError::Archive {
                    path: path.to_path_buf(),
                    kind,
                },
                None => SourceError::NotATree {
                    path: path.to_path_buf(),
                },
            });
        }
        let candidates = [
            path.join("docker/registry/v2"),
            path.join("registry/v2"),
            path.to_path_buf(),
        ];
        for v2 in candidates {
            if v2.join("repositories").is_dir() || v2.join("blobs").is_dir() {
                let v2 = fs::canonicalize(&v2).map_err(|error| SourceError::Io {
                    path: v2.clone(),
                    error,
                })?;
                return Ok(StorageTree { v2 });
            }
        }
        Err(SourceError::NotATree {
            path: path.to_path_buf(),
        })
    }

    /// The `docker/registry/v2` folder.
    pub fn v2(&self) -> &Path {
        &self.v2
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.v2
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }

    fn repositories_dir(&self) -> PathBuf {
        self.v2.join("repositories")
    }

    /// Names of every repository folder (one holding `_manifests`, `_layers` or `_uploads`).
    fn repository_names(&self) -> Result<(Vec<String>, Vec<Problem>), SourceError> {
        let top = self.repositories_dir();
        let mut names = Vec::new();
        let mut problems = Vec::new();
        if !top.exists() {
            return Ok((names, problems));
        }
        let mut walk = WalkDir::new(&top)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter();
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(&top).to_path_buf();
                    if path == top {
                        return Err(SourceError::Io {
                            path,
                            error: e.into(),
                        });
                    }
                    problems.push(Problem::Io {
                        path,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            if !entry.file_type().is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str() else {
                problems.push(Problem::BadName {
                    what: "repository",
                    name: entry.file_name().to_string_lossy().into_owned(),
                    path: entry.path().to_path_buf(),
                });
                walk.skip_current_dir();
                continue;
            };
            if name.starts_with('_') {
                if matches!(name, "_manifests" | "_layers" | "_uploads") {
                    let repo_dir = entry.path().parent().unwrap_or(&top);
                    if let Some(repo) = relative_name(&top, repo_dir)
                        && names.last() != Some(&repo)
                    {
                        names.push(repo);
                    }
                }
                walk.skip_current_dir();
            }
        }
        names.sort();
        names.dedup();
        Ok((names, problems))
    }

    fn read_repository(&self, name: &str, options: ScanOptions) -> RepositoryEntry {
        let dir = self.repositories_dir().join(name);
        let mut problems = Vec::new();
        if let Err(why) = names::check_repository(name) {
            problems.push(Problem::BadName {
                what: "repository",
                name: format!("{name} ({why})"),
                path: dir.clone(),
            });
        }
        let tags_dir = dir.join("_manifests/tags");
        let mut tags = Vec::new();
        match sorted_dir_names(&tags_dir) {
            Ok(entries) => {
                for (tag, tag_dir) in entries {
                    let link = tag_dir.join("current/link");
                    let target = match tag.to_str() {
                        Some(t) if names::check_tag(t).is_ok() => read_link(&link),
                        _ => Err(Problem::BadName {
                            what: "tag",
                            name: tag.to_string_lossy().into_owned(),
                            path: tag_dir.clone(),
                        }),
                    };
                    tags.push(TagEntry {
                        name: tag.to_string_lossy().into_owned(),
                        target,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(Problem::io(&tags_dir, &e)),
        }
        let mut revisions = Vec::new();
        if options.revisions {
            let rev_dir = dir.join("_manifests/revisions/sha256");
            match sorted_dir_names(&rev_dir) {
                Ok(entries) => {
                    for (hex, path) in entries {
                        let link = path.join("link");
                        revisions.push(read_link(&link).and_then(|d| {
                            if Some(d.hex().as_str()) == hex.to_str() {
                                Ok(d)
                            } else {
                                Err(Problem::BadLink {
                                    path: link.clone(),
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
                Err(e) => problems.push(Problem::io(&rev_dir, &e)),
            }
        }
        let uploads_dir = dir.join("_uploads");
        let mut uploads = Vec::new();
        if let Ok(entries) = sorted_dir_names(&uploads_dir) {
            for (id, path) in entries {
                let bytes = fs::symlink_metadata(path.join("data"))
                    .map(|m| m.len())
                    .unwrap_or(0);
                uploads.push(Upload {
                    repository: name.to_string(),
                    id: id.to_string_lossy().into_owned(),
                    bytes,
                    path,
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
}

impl Source for StorageTree {
    fn location(&self) -> &Path {
        &self.v2
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
        let bytes = read_capped(&path, MAX_MANIFEST).map_err(|p| match p {
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
        let path = self.blob_path(digest);
        // Opened rather than stat'ed, so that a link anywhere on the way is refused too.
        let meta = open_no_symlinks(&path).and_then(|f| f.metadata());
        match meta {
            Ok(m) if m.is_file() => Ok(BlobFile { len: m.len(), path }),
            Ok(_) => Err(Problem::Io {
                path,
                error: "not a regular file".to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Problem::MissingBlob {
                role: "".to_string(),
                digest: *digest,
                path,
            }),
            Err(e) if is_symlink_error(&e) => Err(Problem::Symlink {
                path: symlink_on_the_way(&path, &self.v2),
            }),
            Err(e) => Err(Problem::io(path, &e)),
        }
    }

    fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem> {
        let path = self.blob_path(digest);
        let bytes = read_capped(&path, max)?;
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

/// Reads a link file strictly: `sha256:<64 hex>` and nothing else.
fn read_link(path: &Path) -> Result<Digest, Problem> {
    let bytes = read_capped(path, MAX_LINK)?;
    Digest::from_link(&bytes).map_err(|error| Problem::BadLink {
        path: path.to_path_buf(),
        error,
    })
}

/// Opens without following a final symlink and reads at most `max` bytes (+1 to notice more).
/// A missing file comes back as `Problem::MissingLink`, which callers rename.
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, Problem> {
    let file = match open_no_symlinks(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Problem::MissingLink {
                path: path.to_path_buf(),
            });
        }
        Err(e) if is_symlink_error(&e) => {
            return Err(Problem::Symlink {
                path: symlink_on_the_way(path, Path::new("/")),
            });
        }
        Err(e) => return Err(Problem::io(path, &e)),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Problem::io(path, &e))?;
    if bytes.len() as u64 > max {
        return Err(Problem::Io {
            path: path.to_path_buf(),
            error: format!("larger than the {max} bytes such a file can hold"),
        });
    }
    Ok(bytes)
}

/// Folder entries that are directories (not symlinks), sorted by name.
fn sorted_dir_names(dir: &Path) -> io::Result<Vec<(std::ffi::OsString, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push((entry.file_name(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn relative_name(top: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(top).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Recognises tar, gzip and zstd archives by their first bytes.
fn archive_kind(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 512];
    let mut file = File::open(path).ok()?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some("tar")
    } else {
        None
    }
}
