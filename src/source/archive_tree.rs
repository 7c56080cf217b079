//! Reads a storage tree held in a tar archive's members: repositories, tags, manifests and blobs, read in place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::members::{MemberKind, RootChoice, Roots, clean_name, under};
use super::{
    BlobFile, BlobPlace, RepositoryEntry, Scan, ScanOptions, Source, SourceError, TagEntry, Upload,
    member_path,
};
use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::names;
use crate::problem::Problem;

/// Manifests larger than this are refused (Distribution itself refuses over 4 MiB).
pub const MAX_MANIFEST: u64 = 16 << 20;
/// Link files hold 71 bytes; anything much longer is damage, not a digest.
pub const MAX_LINK: u64 = 256;

/// Where a member's bytes are.
#[derive(Debug, Clone)]
pub enum Data {
    /// At `offset` in the (uncompressed) tar file.
    InTar { offset: u64, len: u64 },
    /// Kept in memory from a compressed stream (link files, manifests, configs).
    Memory(Arc<[u8]>),
    /// Seen in a compressed stream and not kept: only its size is known.
    Unread { len: u64 },
}

impl Data {
    /// Bytes of the member's contents.
    pub fn size(&self) -> u64 {
        match self {
            Data::InTar { len, .. } | Data::Unread { len } => *len,
            Data::Memory(bytes) => bytes.len() as u64,
        }
    }
}

/// One member as an archive reader saw it, before it is judged.
#[derive(Debug, Clone)]
pub struct RawMember {
    /// The name as written in the archive (long names applied).
    pub name: Vec<u8>,
    pub kind: MemberKind,
    pub data: Data,
}

/// What sits at a path of the tree.
#[derive(Debug, Clone)]
enum Node {
    File(Data),
    Symlink,
}

/// The folders of one repository that hold names: tags, revisions, uploads.
#[derive(Debug, Default)]
struct RepositoryFolders {
    tags: BTreeSet<String>,
    revisions: BTreeSet<String>,
    uploads: BTreeSet<String>,
}

/// A storage tree inside a tar archive. Never writes anything.
pub struct ArchiveTree {
    archive: PathBuf,
    /// Opened once; blobs and links are read with positioned reads, in parallel.
    file: Option<File>,
    /// Where the tree's `v2` folder is inside the archive ("" for the archive's top).
    root: String,
    nodes: HashMap<String, Node>,
    repositories: BTreeMap<String, RepositoryFolders>,
    /// Damage and refused members, reported with every scan.
    problems: Vec<Problem>,
}

impl std::fmt::Debug for ArchiveTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveTree")
            .field("archive", &self.archive)
            .field("root", &self.root)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl ArchiveTree {
    /// Judges every member, picks the tree root (`subpath` chooses among several) and indexes the
    /// tree. `damage` is what the archive reader found wrong (it is reported, the rest is read).
    /// `file` is the tar file when members are [`Data::InTar`].
    pub fn build(
        archive: &Path,
        file: Option<File>,
        members: Vec<RawMember>,
        mut damage: Vec<Problem>,
        subpath: Option<&str>,
    ) -> Result<ArchiveTree, SourceError> {
        let mut problems = Vec::new();
        let mut roots = Roots::default();
        let mut judged = Vec::with_capacity(members.len());
        for member in members {
            let name = match clean_name(&member.name) {
                Ok(n) => n,
                Err(why) => {
                    problems.push(refused(archive, &member.name, &why));
                    continue;
                }
            };
            match &member.kind {
                MemberKind::Refused(what) => {
                    problems.push(refused(
                        archive,
                        &member.name,
                        &format!("it is {what}; ferry reads only files, folders and links"),
                    ));
                    continue;
                }
                MemberKind::Ignored => continue,
                MemberKind::File | MemberKind::HardLink(_) => roots.see(&name),
                MemberKind::Dir | MemberKind::Symlink(_) => {}
            }
            judged.push((name, member));
        }
        let root = match roots.choose(subpath) {
            RootChoice::Found(root) => root,
            RootChoice::None => {
                problems.append(&mut damage);
                return Err(SourceError::NotATreeArchive {
                    path: archive.to_path_buf(),
                    detail: not_found_detail(&problems),
                });
            }
            RootChoice::Several(roots) => {
                return Err(SourceError::SeveralTrees {
                    path: archive.to_path_buf(),
                    roots,
                });
            }
            RootChoice::NotAtSubpath(roots) => {
                return Err(SourceError::NotAtSubpath {
                    path: archive.to_path_buf(),
                    subpath: subpath.unwrap_or_default().to_string(),
                    roots,
                });
            }
        };
        // Hard links name an earlier member anywhere in the archive.
        let mut data_by_name: HashMap<&str, &Data> = HashMap::new();
        for (name, member) in &judged {
            if member.kind == MemberKind::File {
                data_by_name.insert(name.as_str(), &member.data);
            }
        }
        let mut tree = ArchiveTree {
            archive: archive.to_path_buf(),
            file,
            root: root.clone(),
            nodes: HashMap::new(),
            repositories: BTreeMap::new(),
            problems: Vec::new(),
        };
        let mut resolved = Vec::with_capacity(judged.len());
        for (name, member) in &judged {
            let Some(rel) = under(&root, name) else {
                continue;
            };
            let node = match &member.kind {
                MemberKind::File => Some(Node::File(member.data.clone())),
                MemberKind::HardLink(target) => {
                    let target_name = clean_name(target).unwrap_or_default();
                    match data_by_name.get(target_name.as_str()) {
                        Some(data) => Some(Node::File((*data).clone())),
                        None => {
                            problems.push(Problem::Archive {
                                path: member_path(archive, name),
                                error: format!(
                                    "a hard link to {:?}, which is not a file earlier in the archive",
                                    String::from_utf8_lossy(target)
                                ),
                            });
                            None
                        }
                    }
                }
                MemberKind::Symlink(target) => {
                    problems.push(Problem::Archive {
                        path: member_path(archive, name),
                        error: format!(
                            "a symbolic link to {:?}; ferry does not follow links inside a storage tree",
                            String::from_utf8_lossy(target)
                        ),
                    });
                    Some(Node::Symlink)
                }
                _ => None,
            };
            resolved.push((rel.to_string(), node));
        }
        drop(data_by_name);
        for (rel, node) in resolved {
            tree.note_path(&rel);
            if let Some(node) = node {
                tree.nodes.insert(rel, node);
            }
        }
        problems.append(&mut damage);
        tree.problems = problems;
        Ok(tree)
    }

    /// Where the tree's `v2` folder is inside the archive.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Records the repository folders a path shows (folders are also implied by the files in them).
    fn note_path(&mut self, rel: &str) {
        let Some(rest) = rel.strip_prefix("repositories/") else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let Some(i) = parts.iter().position(|p| p.starts_with('_')) else {
            return;
        };
        if i == 0 || !matches!(parts[i], "_manifests" | "_layers" | "_uploads") {
            return;
        }
        let folders = self.repositories.entry(parts[..i].join("/")).or_default();
        match &parts[i..] {
            ["_manifests", "tags", tag, ..] => {
                folders.tags.insert(tag.to_string());
            }
            ["_manifests", "revisions", "sha256", hex, ..] => {
                folders.revisions.insert(hex.to_string());
            }
            ["_uploads", id, ..] => {
                folders.uploads.insert(id.to_string());
            }
            _ => {}
        }
    }

    fn member(&self, rel: &str) -> PathBuf {
        if self.root.is_empty() {
            member_path(&self.archive, rel)
        } else {
            member_path(&self.archive, &format!("{}/{rel}", self.root))
        }
    }

    fn member_name(&self, rel: &str) -> Arc<str> {
        if self.root.is_empty() {
            rel.into()
        } else {
            format!("{}/{rel}", self.root).into()
        }
    }

    /// Reads a whole member of at most `max` bytes. A missing one comes back as `Problem::MissingLink`.
    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Problem> {
        let path = || self.member(rel);
        let data = match self.nodes.get(rel) {
            None => return Err(Problem::MissingLink { path: path() }),
            Some(Node::Symlink) => return Err(Problem::Symlink { path: path() }),
            Some(Node::File(data)) => data,
        };
        if data.size() > max {
            return Err(Problem::Io {
                path: path(),
                error: format!("larger than the {max} bytes such a file can hold"),
            });
        }
        match data {
            Data::Memory(bytes) => Ok(bytes.to_vec()),
            Data::InTar { offset, len } => {
                let file = self.file.as_ref().ok_or_else(|| Problem::Io {
                    path: path(),
                    error: "the archive is not open".to_string(),
                })?;
                let mut bytes = vec![0u8; *len as usize];
                file.read_exact_at(&mut bytes, *offset)
                    .map_err(|e| Problem::io(path(), &e))?;
                Ok(bytes)
            }
            Data::Unread { .. } => Err(Problem::Io {
                path: path(),
                error: "not a JSON document (only those are kept from a compressed archive read for its metadata)".to_string(),
            }),
        }
    }

    fn read_link(&self, rel: &str) -> Result<Digest, Problem> {
        let bytes = self.read(rel, MAX_LINK)?;
        Digest::from_link(&bytes).map_err(|error| Problem::BadLink {
            path: self.member(rel),
            error,
        })
    }

    fn blob_rel(digest: &Digest) -> String {
        let hex = digest.hex();
        format!("blobs/sha256/{}/{hex}/data", &hex[..2])
    }

    fn read_repository(
        &self,
        name: &str,
        folders: &RepositoryFolders,
        options: ScanOptions,
    ) -> RepositoryEntry {
        let dir = format!("repositories/{name}");
        let mut problems = Vec::new();
        if let Err(why) = names::check_repository(name) {
            problems.push(Problem::BadName {
                what: "repository",
                name: format!("{name} ({why})"),
                path: self.member(&dir),
            });
        }
        let tags = folders
            .tags
            .iter()
            .map(|tag| {
                let tag_dir = format!("{dir}/_manifests/tags/{tag}");
                let target = if names::check_tag(tag).is_ok() {
                    self.read_link(&format!("{tag_dir}/current/link"))
                } else {
                    Err(Problem::BadName {
                        what: "tag",
                        name: tag.clone(),
                        path: self.member(&tag_dir),
                    })
                };
                TagEntry {
                    name: tag.clone(),
                    target,
                }
            })
            .collect();
        let mut revisions = Vec::new();
        if options.revisions {
            for hex in &folders.revisions {
                let rel = format!("{dir}/_manifests/revisions/sha256/{hex}/link");
                revisions.push(self.read_link(&rel).and_then(|d| {
                    if d.hex() == *hex {
                        Ok(d)
                    } else {
                        Err(Problem::BadLink {
                            path: self.member(&rel),
                            error: crate::digest::DigestError::Malformed {
                                found: format!("{d} under folder {hex}"),
                            },
                        })
                    }
                }));
            }
        }
        let uploads = folders
            .uploads
            .iter()
            .map(|id| {
                let upload = format!("{dir}/_uploads/{id}");
                let bytes = match self.nodes.get(&format!("{upload}/data")) {
                    Some(Node::File(data)) => data.size(),
                    _ => 0,
                };
                Upload {
                    repository: name.to_string(),
                    id: id.clone(),
                    bytes,
                    path: self.member(&upload),
                }
            })
            .collect();
        RepositoryEntry {
            name: name.to_string(),
            tags,
            revisions,
            uploads,
            problems,
        }
    }
}

impl Source for ArchiveTree {
    fn location(&self) -> &Path {
        &self.archive
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
            .map(|(name, folders)| self.read_repository(name, folders, options))
            .collect();
        Ok(Scan {
            repositories,
            problems: self.problems.clone(),
        })
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest, Problem> {
        let rel = Self::blob_rel(digest);
        let bytes = self.read(&rel, MAX_MANIFEST).map_err(|p| match p {
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
                path: self.member(&rel),
                found,
                len: bytes.len() as u64,
            });
        }
        RawManifest::parse(bytes).map_err(|error| Problem::BadManifest {
            digest: *digest,
            path: self.member(&rel),
            error,
        })
    }

    fn blob(&self, digest: &Digest) -> Result<BlobFile, Problem> {
        let rel = Self::blob_rel(digest);
        match self.nodes.get(&rel) {
            None => Err(Problem::MissingBlob {
                role: String::new(),
                digest: *digest,
                path: self.member(&rel),
            }),
            Some(Node::Symlink) => Err(Problem::Symlink {
                path: self.member(&rel),
            }),
            Some(Node::File(data)) => {
                let member = self.member_name(&rel);
                let place = match data {
                    Data::InTar { offset, .. } => BlobPlace::InTar {
                        offset: *offset,
                        member,
                    },
                    Data::Memory(_) | Data::Unread { .. } => BlobPlace::Unread { member },
                };
                Ok(BlobFile {
                    path: self.archive.clone(),
                    len: data.size(),
                    place,
                })
            }
        }
    }

    fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem> {
        let rel = Self::blob_rel(digest);
        let bytes = self.read(&rel, max)?;
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(Problem::CorruptBlob {
                digest: *digest,
                path: self.member(&rel),
                found,
                len: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }
}

/// A member ferry will not read, named as written in the archive.
pub fn refused(archive: &Path, raw_name: &[u8], why: &str) -> Problem {
    Problem::Archive {
        path: member_path(archive, &String::from_utf8_lossy(raw_name)),
        error: format!("member refused: {why}"),
    }
}

/// Why no tree was found: what the reader saw wrong, if anything.
fn not_found_detail(problems: &[Problem]) -> String {
    match problems.first() {
        None => "no member looks like docker/registry/v2/blobs/sha256/<xx>/<digest>/data or repositories/<name>/_manifests/...".to_string(),
        Some(first) => format!(
            "no storage tree among the members that could be read ({} problems, the first: {first})",
            problems.len()
        ),
    }
}
