//! Reads a folder of image layouts as a source: skopeo `dir:` folders (`<repo>:<tag>/`, as `ferry export` and `skopeo sync --dest dir` write them) and OCI image layouts (`index.json` + `blobs/`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::{BlobFile, RepositoryEntry, Scan, ScanOptions, Source, SourceError, TagEntry};
use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::names;
use crate::problem::Problem;

const MAX_MANIFEST: u64 = 16 << 20;
/// `index.json` files larger than this are refused.
const MAX_INDEX: u64 = 64 << 20;
/// A folder whose first entries hold no layout is not a folder of layouts.
const LOOK_AT_MOST: usize = 200_000;
/// The annotation carrying a tag in an OCI `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Layouts found under one folder. Never written to.
#[derive(Debug)]
pub struct LayoutTree {
    folder: PathBuf,
    repositories: BTreeMap<String, Repository>,
    /// Every manifest and blob file found, by digest (the first one found).
    files: HashMap<Digest, PathBuf>,
    problems: Vec<Problem>,
}

#[derive(Debug, Default)]
struct Repository {
    tags: BTreeMap<String, Result<Digest, Problem>>,
    untagged: Vec<Result<Digest, Problem>>,
    folder: PathBuf,
}

impl LayoutTree {
    /// Finds the layouts under `folder`; `None` when there are none.
    pub fn open(folder: &Path) -> Result<Option<LayoutTree>, SourceError> {
        let folder = fs::canonicalize(folder).map_err(|error| SourceError::Io {
            path: folder.to_path_buf(),
            error,
        })?;
        let mut tree = LayoutTree {
            folder: folder.clone(),
            repositories: BTreeMap::new(),
            files: HashMap::new(),
            problems: Vec::new(),
        };
        let mut walk = WalkDir::new(&folder)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter();
        let mut seen = 0usize;
        while let Some(entry) = walk.next() {
            seen += 1;
            if seen > LOOK_AT_MOST && tree.repositories.is_empty() {
                return Ok(None);
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(&folder).to_path_buf();
                    tree.problems.push(Problem::Io {
                        path,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            if !entry.file_type().is_dir() {
                continue;
            }
            let dir = entry.path();
            let Some(rel) = relative(&folder, dir) else {
                tree.problems.push(Problem::BadName {
                    what: "folder",
                    name: dir.to_string_lossy().into_owned(),
                    path: dir.to_path_buf(),
                });
                walk.skip_current_dir();
                continue;
            };
            if is_file(&dir.join("oci-layout")) {
                tree.read_oci(&rel, dir);
            } else if is_file(&dir.join("manifest.json")) {
                tree.read_dir_image(&rel, dir);
                walk.skip_current_dir();
            } else if entry.file_name() == "blobs"
                && is_file(&dir.parent().unwrap_or(dir).join("oci-layout"))
            {
                walk.skip_current_dir();
            }
        }
        if tree.repositories.is_empty() {
            return Ok(None);
        }
        Ok(Some(tree))
    }

    fn repository(&mut self, name: &str, dir: &Path) -> &mut Repository {
        self.repositories
            .entry(name.to_string())
            .or_insert_with(|| Repository {
                folder: dir.to_path_buf(),
                ..Repository::default()
            })
    }

    /// A skopeo `dir:` folder `<repo>:<tag>` or `<repo>@sha256:<hex>`: `manifest.json`, blobs as `<hex>`, children as `<hex>.manifest.json`.
    fn read_dir_image(&mut self, rel: &str, dir: &Path) {
        let (parent, leaf) = match rel.rsplit_once('/') {
            Some((p, l)) => (Some(p), l),
            None => (None, rel),
        };
        let (last, reference) = if let Some((name, digest)) = leaf.split_once('@') {
            (name, Reference::Digest(digest))
        } else if let Some((name, tag)) = leaf.rsplit_once(':') {
            (name, Reference::Tag(tag))
        } else {
            self.problems.push(Problem::BadName {
                what: "dir: image folder",
                name: leaf.to_string(),
                path: dir.to_path_buf(),
            });
            return;
        };
        let repository = match parent {
            Some(p) => format!("{p}/{last}"),
            None => last.to_string(),
        };
        let manifest = dir.join("manifest.json");
        let target = read_capped(&manifest, MAX_MANIFEST).map(|bytes| Digest::of(&bytes));
        if let Ok(digest) = &target {
            self.files.entry(*digest).or_insert(manifest.clone());
        }
        match fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let hex = name.strip_suffix(".manifest.json").unwrap_or(name);
                    if let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) {
                        self.files.entry(digest).or_insert(entry.path());
                    }
                }
            }
            Err(e) => self.problems.push(Problem::io(dir, &e)),
        }
        match reference {
            Reference::Tag(tag) => {
                let target = if names::check_tag(tag).is_ok() {
                    target
                } else {
                    Err(Problem::BadName {
                        what: "tag",
                        name: tag.to_string(),
                        path: dir.to_path_buf(),
                    })
                };
                self.add_tag(&repository, dir, tag, target);
            }
            Reference::Digest(expected) => {
                let target = target.and_then(|d| {
                    if d.to_string() == expected {
                        Ok(d)
                    } else {
                        Err(Problem::CorruptManifest {
                            digest: Digest::parse(expected).unwrap_or(d),
                            path: manifest.clone(),
                            found: d,
                            len: fs::metadata(&manifest).map(|m| m.len()).unwrap_or(0),
                        })
                    }
                });
                self.repository(&repository, dir).untagged.push(target);
            }
        }
    }

    /// An OCI image layout: `index.json` entries with a ref name are tags, the others untagged.
    fn read_oci(&mut self, rel: &str, dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        if let Ok(entries) = fs::read_dir(&blobs) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str()
                    && let Ok(digest) = Digest::parse(&format!("sha256:{name}"))
                {
                    self.files.entry(digest).or_insert(entry.path());
                }
            }
        }
        let index_path = dir.join("index.json");
        let index = read_capped(&index_path, MAX_INDEX).and_then(|bytes| {
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| Problem::Io {
                path: index_path.clone(),
                error: format!("not valid JSON: {e}"),
            })
        });
        let index = match index {
            Ok(i) => i,
            Err(problem) => {
                self.repository(rel, dir);
                self.problems.push(problem);
                return;
            }
        };
        let entries = index
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        self.repository(rel, dir);
        for (i, entry) in entries.iter().enumerate() {
            let digest = entry
                .get("digest")
                .and_then(|d| d.as_str())
                .ok_or_else(|| format!("entry {i} has no digest"))
                .and_then(|d| Digest::parse(d).map_err(|e| format!("entry {i}: {e}")))
                .map_err(|error| Problem::Io {
                    path: index_path.clone(),
                    error,
                });
            let tag = entry
                .get("annotations")
                .and_then(|a| a.get(REF_NAME))
                .and_then(|t| t.as_str());
            match tag {
                Some(tag) if names::check_tag(tag).is_ok() => self.add_tag(rel, dir, tag, digest),
                Some(tag) => self.add_tag(
                    rel,
                    dir,
                    tag,
                    Err(Problem::BadName {
                        what: "tag",
                        name: tag.to_string(),
                        path: index_path.clone(),
                    }),
                ),
                None => self.repository(rel, dir).untagged.push(digest),
            }
        }
    }

    fn add_tag(
        &mut self,
        repository: &str,
        dir: &Path,
        tag: &str,
        target: Result<Digest, Problem>,
    ) {
        let repo = self.repository(repository, dir);
        if repo.tags.contains_key(tag) {
            let problem = Problem::Io {
                path: dir.to_path_buf(),
                error: format!(
                    "{repository}:{tag} is in more than one layout; the first one found is used"
                ),
            };
            self.problems.push(problem);
            return;
        }
        repo.tags.insert(tag.to_string(), target);
    }

    /// Where a digest's file would be named in a message when it is missing.
    fn missing_path(&self, digest: &Digest) -> PathBuf {
        self.folder.join("…").join(digest.hex())
    }
}

enum Reference<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

impl Source for LayoutTree {
    fn location(&self) -> &Path {
        &self.folder
    }

    fn folder(&self) -> Option<&Path> {
        Some(&self.folder)
    }

    fn repositories(
        &self,
        options: ScanOptions,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Scan, SourceError> {
        let repositories = self
            .repositories
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, repo)| {
                let mut problems = Vec::new();
                if let Err(why) = names::check_repository(name) {
                    problems.push(Problem::BadName {
                        what: "repository",
                        name: format!("{name} ({why})"),
                        path: repo.folder.clone(),
                    });
                }
                RepositoryEntry {
                    name: name.clone(),
                    tags: repo
                        .tags
                        .iter()
                        .map(|(tag, target)| TagEntry {
                            name: tag.clone(),
                            target: target.clone(),
                        })
                        .collect(),
                    revisions: if options.revisions {
                        repo.untagged.clone()
                    } else {
                        Vec::new()
                    },
                    uploads: Vec::new(),
                    problems,
                }
            })
            .collect();
        Ok(Scan {
            repositories,
            problems: self.problems.clone(),
        })
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest, Problem> {
        let Some(path) = self.files.get(digest) else {
            return Err(Problem::MissingManifest {
                digest: *digest,
                path: self.missing_path(digest),
            });
        };
        let bytes = read_capped(path, MAX_MANIFEST)?;
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(Problem::CorruptManifest {
                digest: *digest,
                path: path.clone(),
                found,
                len: bytes.len() as u64,
            });
        }
        RawManifest::parse(bytes).map_err(|error| Problem::BadManifest {
            digest: *digest,
            path: path.clone(),
            error,
        })
    }

    fn blob(&self, digest: &Digest) -> Result<BlobFile, Problem> {
        let Some(path) = self.files.get(digest) else {
            return Err(Problem::MissingBlob {
                role: String::new(),
                digest: *digest,
                path: self.missing_path(digest),
            });
        };
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(Problem::Symlink { path: path.clone() }),
            Ok(m) if m.is_file() => Ok(BlobFile::own(path.clone(), m.len())),
            Ok(_) => Err(Problem::Io {
                path: path.clone(),
                error: "not a regular file".to_string(),
            }),
            Err(e) => Err(Problem::io(path, &e)),
        }
    }

    fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem> {
        let Some(path) = self.files.get(digest) else {
            return Err(Problem::MissingBlob {
                role: String::new(),
                digest: *digest,
                path: self.missing_path(digest),
            });
        };
        let bytes = read_capped(path, max)?;
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(Problem::CorruptBlob {
                digest: *digest,
                path: path.clone(),
                found,
                len: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }
}

fn is_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// `dir` relative to `top` with `/` separators, when every component is UTF-8.
fn relative(top: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(top).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// Reads at most `max` bytes, not following a final symbolic link.
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, Problem> {
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => Problem::Symlink {
                path: path.to_path_buf(),
            },
            _ if e.kind() == io::ErrorKind::NotFound => Problem::MissingLink {
                path: path.to_path_buf(),
            },
            _ => Problem::io(path, &e),
        })?;
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
