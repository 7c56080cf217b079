//! Proves a destination registry holds what the source holds: tag digests, index children, every blob.

pub mod platforms;
pub mod verdict;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::destination::Mapping;
use crate::digest::Digest;
use crate::engine::once::{Ids, OnceMap};
use crate::engine::{Fatal, Halt, Job};
use crate::inventory::{Image, ManifestRef};
use crate::manifest::{ManifestKind, RawManifest};
use crate::progress::Progress;
use crate::registry::harbor::Refusal;
use crate::registry::{Client, RegistryError};
use crate::sink::registry::classify;
use crate::sink::{ImageError, SinkError};
use crate::source::Source;
pub use platforms::PlatformSelection;
use platforms::{EntryMismatch, compare};
pub use verdict::{Counts, Reason, Status, Verdict};

/// What a validation checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Tags, digests and index children only; no blob `HEAD`s.
    pub shallow: bool,
    pub platforms: PlatformSelection,
    /// The destination is Harbor: its refusals are read as such.
    pub harbor: bool,
    /// Harbor projects the account cannot read (from the preflight): their tags fail with that reason, unasked.
    pub closed: HashMap<String, Refusal>,
}

/// A (destination repository, digest) pair.
type RepoDigest = (u32, Digest);

/// Checks images against one registry: a job the engine runs, with one answer per (repository,
/// digest) so shared blobs and children are asked once.
pub struct Checker<'a> {
    client: &'a Client,
    /// Indexes are read again from here: images keep no manifest bytes.
    source: &'a dyn Source,
    mapping: Mapping,
    options: Options,
    manifests: OnceMap<RepoDigest, bool>,
    blobs: OnceMap<RepoDigest, bool>,
    /// Destination repositories as numbers, for those keys.
    ids: Ids,
    requests: AtomicUsize,
}

impl<'a> Checker<'a> {
    pub fn new(
        client: &'a Client,
        source: &'a dyn Source,
        mapping: Mapping,
        options: Options,
    ) -> Checker<'a> {
        Checker {
            client,
            source,
            mapping,
            options,
            manifests: OnceMap::new(),
            blobs: OnceMap::new(),
            ids: Ids::default(),
            requests: AtomicUsize::new(0),
        }
    }

    /// The verdict on one image; `Err` only for problems that end the run.
    pub fn check(&self, image: &Image) -> Result<Verdict, Halt> {
        let mut verdict = Verdict::new(image);
        if !image.is_ok() {
            verdict.status = Status::SourceProblem;
            verdict.source_problems = image.problems.iter().map(|p| p.to_string()).collect();
            return Ok(verdict);
        }
        let Some(top) = image.manifest() else {
            verdict.status = Status::SourceProblem;
            verdict.source_problems = vec!["no manifest".to_string()];
            return Ok(verdict);
        };
        if top.kind() == ManifestKind::Schema1 {
            verdict.status = Status::SourceProblem;
            verdict.source_problems = vec![format!(
                "schema1 manifest {}: its digest depends on the repository name inside it, so no destination can hold it with this digest",
                top.digest()
            )];
            return Ok(verdict);
        }
        let repository = self.mapping.destination(&image.repository);
        if let Some(r) = self
            .options
            .closed
            .get(crate::destination::project_of(&repository))
        {
            verdict.target = Some(repository);
            verdict.reasons.push(Reason::Harbor(r.clone()));
            verdict.status = Status::Fail;
            return Ok(verdict);
        }
        let reference = match &image.tag {
            Some(t) => t.clone(),
            None => top.digest().to_string(),
        };
        let separator = if image.tag.is_some() { ':' } else { '@' };
        verdict.target = Some(format!("{repository}{separator}{reference}"));
        let mut walk = Walk {
            repository: &repository,
            image,
            verdict: &mut verdict,
            seen: HashSet::new(),
        };
        self.check_tag(&reference, top, image.manifests.len() - 1, &mut walk)?;
        verdict.status = if !verdict.source_problems.is_empty() {
            Status::SourceProblem
        } else if verdict.reasons.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        };
        Ok(verdict)
    }

    fn check_tag(
        &self,
        reference: &str,
        top: &ManifestRef,
        index: usize,
        walk: &mut Walk<'_>,
    ) -> Result<(), Halt> {
        let repository = walk.repository;
        let found = match self.tag_digest(repository, reference) {
            Ok(Some(d)) => d,
            Ok(None) => {
                walk.fail(Reason::MissingTag);
                return Ok(());
            }
            Err(e) => {
                walk.fail(self.reason(e)?);
                return Ok(());
            }
        };
        walk.verdict.found = Some(found);
        if found != top.digest() {
            let differs = Reason::DigestDiffers {
                dest: found,
                source: top.digest(),
                platform: None,
            };
            if !top.kind().is_index() {
                walk.fail(differs);
                return Ok(());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let dest = match self.client.get_manifest(repository, &found.to_string()) {
                Ok(Some(m)) => m,
                // Gone between the HEAD and the GET: say what the HEAD saw.
                Ok(None) => {
                    walk.fail(differs);
                    return Ok(());
                }
                Err(e) => {
                    walk.fail(self.reason(e)?);
                    return Ok(());
                }
            };
            let dest = match RawManifest::parse(dest.bytes) {
                Ok(m) if m.kind().is_index() => m,
                _ => {
                    walk.fail(differs);
                    return Ok(());
                }
            };
            let Some(top) = self.read(top.digest(), walk) else {
                return Ok(());
            };
            let comparison = compare(&top, &dest, &self.options.platforms);
            let mismatches = comparison.mismatches.clone();
            walk.verdict.specs = Some(comparison);
            if self.options.platforms.is_all() {
                // Without -a/--os the digest is the contract: pulls by the source digest must work.
                if mismatches.is_empty() {
                    walk.verdict.notes.push(
                        "every source entry is in the destination index with its platform; only the index differs (-a/--os compare entries only)".to_string(),
                    );
                }
                walk.fail(differs);
                return Ok(());
            }
            if !mismatches.is_empty() {
                for m in mismatches {
                    walk.fail(match m {
                        EntryMismatch::Missing(s) => Reason::MissingChild {
                            digest: s.digest,
                            platform: s.platform,
                            dest_index: Some(found),
                        },
                        EntryMismatch::OtherDigest { source, dest } => Reason::DigestDiffers {
                            dest,
                            source: source.digest,
                            platform: source.platform,
                        },
                        EntryMismatch::OtherPlatform { source, dest } => Reason::PlatformDiffers {
                            digest: source.digest,
                            dest,
                            source: source.platform,
                        },
                    });
                }
                return Ok(());
            }
        }
        self.check_below(index, 0, walk)
    }

    /// Children (by digest) and blobs of the image's manifest number `index`, as the inventory
    /// resolved them; at the top, only the index entries the platform selection keeps.
    fn check_below(&self, index: usize, depth: usize, walk: &mut Walk<'_>) -> Result<(), Halt> {
        let repository = walk.repository;
        let image = walk.image;
        let refs = &image.refs[index];
        let index_manifest = if image.manifests[index].kind().is_index() {
            match self.read(image.manifests[index].digest(), walk) {
                Some(m) => Some(m),
                None => return Ok(()),
            }
        } else {
            None
        };
        let listed = index_manifest.as_ref().map_or(&[][..], |m| m.manifests());
        let entries = match &index_manifest {
            Some(m) if depth == 0 => self.options.platforms.entries(m),
            _ => listed.iter().collect(),
        };
        if entries.is_empty() && !listed.is_empty() {
            walk.verdict.notes.push(format!(
                "no index entry for {}: only the index itself was checked",
                self.options.platforms
            ));
        }
        for entry in entries {
            if !walk.seen.insert(entry.digest) {
                continue;
            }
            match self.manifest_present(repository, entry.digest) {
                Ok(true) => walk.verdict.manifests_checked += 1,
                Ok(false) => {
                    walk.fail(Reason::MissingChild {
                        digest: entry.digest,
                        platform: entry.platform.clone(),
                        dest_index: None,
                    });
                    continue;
                }
                Err(e) => {
                    walk.fail(self.reason(e)?);
                    continue;
                }
            }
            let child = refs
                .children
                .iter()
                .copied()
                .find(|&c| image.manifests[c].digest() == entry.digest);
            if let Some(child) = child {
                self.check_below(child, depth + 1, walk)?;
            }
        }
        if self.options.shallow {
            return Ok(());
        }
        for blob in refs.blobs.iter().map(|&b| &image.blobs[b]) {
            if !walk.seen.insert(blob.digest) {
                continue;
            }
            match self.blob_present(repository, blob.digest) {
                Ok(true) => walk.verdict.blobs_checked += 1,
                Ok(false) => walk.fail(Reason::MissingBlob {
                    digest: blob.digest,
                    role: blob.role.clone(),
                }),
                Err(e) => walk.fail(self.reason(e)?),
            }
        }
        Ok(())
    }

    /// A manifest of the image read again from the source; a source that no longer reads as it did
    /// is a source problem of the image.
    fn read(&self, digest: Digest, walk: &mut Walk<'_>) -> Option<RawManifest> {
        match self.source.manifest(&digest) {
            Ok(m) => Some(m),
            Err(p) => {
                walk.verdict
                    .source_problems
                    .push(format!("the source changed: {p}"));
                None
            }
        }
    }

    /// The digest the destination serves for a tag (or digest); `None` when it has none.
    fn tag_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some(head) = self.client.head_manifest(repository, reference)? else {
            return Ok(None);
        };
        if let Some(d) = head.digest {
            return Ok(Some(d));
        }
        // Registries that leave the digest out of HEAD: read the bytes and hash them.
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .client
            .get_manifest(repository, reference)?
            .map(|m| Digest::of(&m.bytes)))
    }

    fn manifest_present(&self, repository: &str, digest: Digest) -> Result<bool, RegistryError> {
        let key = (self.ids.of(repository), digest);
        let (present, _) = self.manifests.run(&key, || {
            self.requests.fetch_add(1, Ordering::Relaxed);
            Ok::<_, RegistryError>(
                self.client
                    .head_manifest(repository, &digest.to_string())?
                    .is_some(),
            )
        })?;
        Ok(present)
    }

    fn blob_present(&self, repository: &str, digest: Digest) -> Result<bool, RegistryError> {
        let key = (self.ids.of(repository), digest);
        let (present, _) = self.blobs.run(&key, || {
            self.requests.fetch_add(1, Ordering::Relaxed);
            Ok::<_, RegistryError>(self.client.head_blob(repository, &digest)?.is_some())
        })?;
        Ok(present)
    }

    /// A registry error as a per-tag reason, or as the end of the run when it concerns the whole
    /// destination. A 401 with credentials the destination accepted at the start concerns one
    /// repository (a project the account may not read).
    fn reason(&self, e: RegistryError) -> Result<Reason, Halt> {
        if self.options.harbor
            && let Some(r) = Refusal::recognise(&e, &self.client.who())
        {
            return Ok(Reason::Harbor(r));
        }
        let error = match e {
            RegistryError::Status {
                status: status @ (401 | 403),
                ref errors,
                ..
            } if status == 403 || self.client.has_credentials() => {
                return Ok(Reason::Unauthorised {
                    status,
                    code: errors.first().map(|e| e.code.clone()),
                    who: self.client.who(),
                });
            }
            e => match classify(self.client, self.options.harbor, e) {
                SinkError::Fatal(f) => return Err(Halt::Fatal(f)),
                SinkError::Stopped => return Err(Halt::Stopped),
                SinkError::Image(ImageError::Registry { error, .. }) => error,
                SinkError::Image(other) => {
                    return Ok(Reason::DestinationError {
                        status: None,
                        code: None,
                        detail: other.to_string(),
                    });
                }
            },
        };
        Ok(match &error {
            RegistryError::Status { status, errors, .. } => Reason::DestinationError {
                status: Some(*status),
                code: errors.first().map(|e| e.code.clone()),
                detail: error.to_string(),
            },
            _ => Reason::DestinationError {
                status: None,
                code: None,
                detail: error.to_string(),
            },
        })
    }

    /// Requests sent so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

/// One image being checked: where, what was already asked for it, and its verdict so far.
struct Walk<'v> {
    repository: &'v str,
    image: &'v Image,
    verdict: &'v mut Verdict,
    /// Children and blobs already checked for this image (each is counted and reported once).
    seen: HashSet<Digest>,
}

impl Walk<'_> {
    fn fail(&mut self, reason: Reason) {
        self.verdict.reasons.push(reason);
    }
}

impl Job for Checker<'_> {
    type Outcome = Verdict;

    fn run(&self, image: &Image, progress: &Progress) -> Result<Verdict, Halt> {
        let verdict = self.check(image);
        progress.add_bytes(image.size());
        verdict
    }

    fn not_done(&self, image: &Image, cause: &Fatal, _started: bool) -> Verdict {
        Verdict::not_checked(image, cause)
    }
}
