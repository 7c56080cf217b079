//! Surveys a whole storage tree for what lies beside its images: stored blobs, the links each
//! repository holds, stray files, symbolic links and empty repository folders. Reads folders only.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::BlobFile;
use crate::digest::Digest;

/// Folders nest at most this deep below `docker/registry/v2` (names have far fewer components).
const MAX_DEPTH: usize = 128;

/// What a storage tree holds besides what its tags resolve to.
#[derive(Debug, Default)]
pub struct Survey {
    /// Every `blobs/sha256/<xx>/<hex>/data` regular file, by digest.
    pub blobs: BTreeMap<Digest, BlobFile>,
    /// Per repository, the links it holds.
    pub repositories: BTreeMap<String, RepositoryLinks>,
    /// Files and folders that are not part of the layout, in path order.
    pub oddities: Vec<Oddity>,
}

/// The links of one repository, from folder names (link contents are not read here).
#[derive(Debug, Default, Clone)]
pub struct RepositoryLinks {
    /// Manifests its revisions and tag histories name.
    pub manifests: BTreeSet<Digest>,
    /// Blobs linked into it (`_layers`), with the link's folder.
    pub layers: BTreeMap<Digest, PathBuf>,
    pub tags: usize,
    /// Files of unfinished uploads (`_uploads/<id>/...`).
    pub upload_files: usize,
}

impl RepositoryLinks {
    /// Nothing is left in it: no tag, revision, layer link or upload.
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty()
            && self.layers.is_empty()
            && self.tags == 0
            && self.upload_files == 0
    }
}

/// Something found in the tree that is not part of a Distribution storage layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oddity {
    pub path: PathBuf,
    /// The repository it lies in, when it lies in one.
    pub repository: Option<String>,
    pub kind: OddityKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OddityKind {
    /// A regular file where the layout has none.
    StrayFile { bytes: u64 },
    /// A symbolic link (never followed).
    Symlink { target: PathBuf },
    /// A folder under `repositories/` with nothing in it.
    EmptyFolder,
    /// A folder that could not be read, or something that is neither file, folder nor link.
    Unreadable { error: String },
}

impl Survey {
    /// Walks the `docker/registry/v2` folder `v2`, never following a symbolic link.
    pub fn of(v2: &Path) -> Survey {
        let mut survey = Survey::default();
        let mut rel = Vec::new();
        survey.walk(v2, &mut rel);
        survey
    }

    fn walk(&mut self, dir: &Path, rel: &mut Vec<OsString>) {
        if rel.len() > MAX_DEPTH {
            self.odd(
                dir,
                rel,
                OddityKind::Unreadable {
                    error: format!("folders nest deeper than {MAX_DEPTH} levels; not read further"),
                },
            );
            return;
        }
        let mut entries = match read_sorted(dir) {
            Ok(e) => e,
            Err(e) => {
                self.odd(
                    dir,
                    rel,
                    OddityKind::Unreadable {
                        error: e.to_string(),
                    },
                );
                return;
            }
        };
        if entries.is_empty() && in_name_area(rel) {
            self.odd(dir, rel, OddityKind::EmptyFolder);
        }
        if let Some(repo) = repository_of(rel)
            && rel.len() == repo_depth(rel) + 1
        {
            // Entering a repository's own folder (`_manifests`, `_layers`, `_uploads`).
            self.repositories.entry(repo).or_default();
        }
        for (name, path, kind) in entries.drain(..) {
            rel.push(name);
            match kind {
                Kind::Dir => self.walk(&path, rel),
                Kind::File => self.file(&path, rel),
                Kind::Symlink => {
                    let target = fs::read_link(&path).unwrap_or_default();
                    self.odd(&path, rel, OddityKind::Symlink { target });
                }
                Kind::Other(error) => self.odd(&path, rel, OddityKind::Unreadable { error }),
            }
            rel.pop();
        }
    }

    /// Files the layout has: blobs, link files, uploads. Anything else is a stray.
    fn file(&mut self, path: &Path, rel: &[OsString]) {
        let parts: Option<Vec<&str>> = rel.iter().map(|c| c.to_str()).collect();
        let parts = parts.unwrap_or_default();
        match parts.as_slice() {
            ["blobs", "sha256", prefix, hex, "data"] => {
                if let Some(digest) = Digest::from_hex(hex)
                    && hex.starts_with(prefix)
                    && prefix.len() == 2
                {
                    match fs::symlink_metadata(path) {
                        Ok(m) => {
                            let file = BlobFile::own(path.to_path_buf(), m.len());
                            self.blobs.insert(digest, file);
                        }
                        Err(e) => self.odd(
                            path,
                            rel,
                            OddityKind::Unreadable {
                                error: e.to_string(),
                            },
                        ),
                    }
                    return;
                }
            }
            ["repositories", ..] => {
                if let Some(repo) = repository_of(rel) {
                    let own = &parts[repo_depth(rel)..];
                    let links = self.repositories.entry(repo).or_default();
                    if record_link(links, own, path) {
                        return;
                    }
                }
            }
            _ => {}
        }
        let bytes = fs::symlink_metadata(path).map_or(0, |m| m.len());
        self.odd(path, rel, OddityKind::StrayFile { bytes });
    }

    fn odd(&mut self, path: &Path, rel: &[OsString], kind: OddityKind) {
        self.oddities.push(Oddity {
            path: path.to_path_buf(),
            repository: repository_of(rel),
            kind,
        });
    }
}

/// Records a file inside a repository's `_` folders (`own` starts there); false when the
/// layout has no such file.
fn record_link(links: &mut RepositoryLinks, own: &[&str], path: &Path) -> bool {
    let digest = |hex: &str| Digest::from_hex(hex);
    match own {
        ["_layers", "sha256", hex, "link"] => match digest(hex) {
            Some(d) => {
                links
                    .layers
                    .insert(d, path.parent().unwrap_or(path).to_path_buf());
                true
            }
            None => false,
        },
        ["_manifests", "revisions", "sha256", hex, "link"]
        | ["_manifests", "tags", _, "index", "sha256", hex, "link"] => match digest(hex) {
            Some(d) => {
                links.manifests.insert(d);
                true
            }
            None => false,
        },
        // Schema1 signatures, as registries before 2.3 stored them.
        [
            "_manifests",
            "revisions",
            "sha256",
            hex,
            "signatures",
            "sha256",
            sig,
            "link",
        ] => digest(hex).is_some() && digest(sig).is_some(),
        ["_manifests", "tags", _, "current", "link"] => {
            links.tags += 1;
            true
        }
        ["_uploads", _, _, ..] => {
            links.upload_files += 1;
            true
        }
        _ => false,
    }
}

/// Below `repositories/` and above any `_` folder: where repository names are spelt.
fn in_name_area(rel: &[OsString]) -> bool {
    rel.first().is_some_and(|c| c == "repositories")
        && !rel[1..]
            .iter()
            .any(|c| c.as_encoded_bytes().starts_with(b"_"))
}

/// Number of leading components of `rel` up to the end of the repository name.
fn repo_depth(rel: &[OsString]) -> usize {
    rel.iter()
        .position(|c| c.as_encoded_bytes().starts_with(b"_"))
        .unwrap_or(rel.len())
}

/// The repository a path below `repositories/` belongs to: the components before the first `_` one.
fn repository_of(rel: &[OsString]) -> Option<String> {
    if rel.first().is_none_or(|c| c != "repositories") {
        return None;
    }
    let end = repo_depth(rel);
    if end < 2 || end == rel.len() {
        return None;
    }
    let parts: Option<Vec<&str>> = rel[1..end].iter().map(|c| c.to_str()).collect();
    parts.map(|p| p.join("/"))
}

enum Kind {
    Dir,
    File,
    Symlink,
    Other(String),
}

/// A folder's entries, sorted by name, typed without following links.
fn read_sorted(dir: &Path) -> std::io::Result<Vec<(OsString, PathBuf, Kind)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = match entry.file_type() {
            Ok(t) if t.is_symlink() => Kind::Symlink,
            Ok(t) if t.is_dir() => Kind::Dir,
            Ok(t) if t.is_file() => Kind::File,
            Ok(_) => Kind::Other("neither a file, a folder nor a symbolic link".to_string()),
            Err(e) => Kind::Other(e.to_string()),
        };
        out.push((entry.file_name(), path, kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Vec<OsString> {
        s.split('/').map(OsString::from).collect()
    }

    #[test]
    fn names_end_at_the_first_underscore_folder() {
        assert_eq!(
            repository_of(&rel("repositories/org/team/app/_layers/sha256")),
            Some("org/team/app".to_string())
        );
        assert_eq!(repository_of(&rel("repositories/org/team")), None);
        assert_eq!(repository_of(&rel("blobs/sha256/ab")), None);
        assert!(in_name_area(&rel("repositories/org/team")));
        assert!(!in_name_area(&rel("repositories/org/_uploads")));
        assert!(!in_name_area(&rel("blobs/sha256")));
    }

    #[test]
    fn knows_the_files_of_the_layout() {
        let mut links = RepositoryLinks::default();
        let hex = "a".repeat(64);
        let p = Path::new("/x/link");
        assert!(record_link(
            &mut links,
            &["_layers", "sha256", &hex, "link"],
            p
        ));
        assert!(record_link(
            &mut links,
            &["_manifests", "tags", "v1", "current", "link"],
            p
        ));
        assert!(record_link(
            &mut links,
            &["_uploads", "u", "hashstates", "sha256", "0"],
            p
        ));
        assert!(!record_link(
            &mut links,
            &["_layers", "sha256", "zz", "link"],
            p
        ));
        assert!(!record_link(&mut links, &["_manifests", "notes.txt"], p));
        assert_eq!((links.layers.len(), links.tags), (1, 1));
    }
}
