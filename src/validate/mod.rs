//! Proves a destination registry holds what the source holds: tag digests, index children, every blob.

pub mod platforms;
pub mod verdict;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::destination::Mapping;
use crate::digest::Digest;
use crate::engine::once::OnceMap;
use crate::inventory::Image;
use crate::manifest::{ManifestKind, Platform, RawManifest};
use crate::progress::Progress;
use crate::registry::{Client, RegistryError};
pub use platforms::PlatformSelection;
use platforms::{EntryMismatch, compare};
pub use verdict::{Counts, Reason, Status, Verdict};

/// Indexes nest at most this deep (as in the inventory).
const MAX_DEPTH: usize = 4;

/// What a validation checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Tags, digests and index children only; no blob `HEAD`s.
    pub shallow: bool,
    pub platforms: PlatformSelection,
}

/// A (destination repository, digest) pair.
type RepoDigest = (String, Digest);

/// Checks images against one registry; shared by the workers of a run, with one answer per
/// (repository, digest) so shared blobs and children are asked once.
pub struct Checker<'a> {
    client: &'a Client,
    mapping: Mapping,
    options: Options,
    manifests: OnceMap<RepoDigest, bool>,
    blobs: OnceMap<RepoDigest, bool>,
    requests: AtomicUsize,
}

/// A problem that ends the whole run (exit 2).
#[derive(Debug, Clone)]
pub struct Fatal(pub String);

/// Everything a run found, in the order of the images given.
#[derive(Debug, Default)]
pub struct ValidationResult {
    pub verdicts: Vec<Verdict>,
    /// Set when the run stopped early (destination unreachable or refusing us).
    pub fatal: Option<String>,
    /// Requests sent to the destination.
    pub requests: usize,
}

impl ValidationResult {
    pub fn counts(&self) -> Counts {
        Counts::of(&self.verdicts)
    }

    /// Source `repo:tag` of every tag the destination does not hold (or that was not checked).
    pub fn failed_list(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .filter(|v| matches!(v.status, Status::Fail | Status::NotChecked))
            .map(|v| v.source.clone())
            .collect()
    }
}

impl<'a> Checker<'a> {
    pub fn new(client: &'a Client, mapping: Mapping, options: Options) -> Checker<'a> {
        Checker {
            client,
            mapping,
            options,
            manifests: OnceMap::new(),
            blobs: OnceMap::new(),
            requests: AtomicUsize::new(0),
        }
    }

    /// The verdict on one image; `Err` only for problems that end the run.
    pub fn check(&self, image: &Image) -> Result<Verdict, Fatal> {
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
        self.check_tag(&reference, top, &mut walk)?;
        verdict.status = if verdict.reasons.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        };
        Ok(verdict)
    }

    fn check_tag(
        &self,
        reference: &str,
        top: &RawManifest,
        walk: &mut Walk<'_>,
    ) -> Result<(), Fatal> {
        let repository = walk.repository;
        let found = match self.tag_digest(repository, reference) {
            Ok(Some(d)) => d,
            Ok(None) => return walk.fail(Reason::MissingTag),
            Err(e) => return walk.fail(self.reason(e)?),
        };
        walk.verdict.found = Some(found);
        if found != top.digest() {
            let differs = Reason::DigestDiffers {
                dest: found,
                source: top.digest(),
                platform: None,
            };
            if !top.kind().is_index() {
                return walk.fail(differs);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let dest = match self.client.get_manifest(repository, &found.to_string()) {
                Ok(Some(m)) => m,
                // Gone between the HEAD and the GET: say what the HEAD saw.
                Ok(None) => return walk.fail(differs),
                Err(e) => return walk.fail(self.reason(e)?),
            };
            let dest = match RawManifest::parse(dest.bytes) {
                Ok(m) if m.kind().is_index() => m,
                _ => return walk.fail(differs),
            };
            let comparison = compare(top, &dest, &self.options.platforms);
            let mismatches = comparison.mismatches.clone();
            walk.verdict.specs = Some(comparison);
            if self.options.platforms.is_all() {
                // Without -a/--os the digest is the contract: pulls by the source digest must work.
                if mismatches.is_empty() {
                    walk.verdict.notes.push(
                        "every source entry is in the destination index with its platform; only the index differs (-a/--os compare entries only)".to_string(),
                    );
                }
                return walk.fail(differs);
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
                    })?;
                }
                return Ok(());
            }
        }
        self.check_below(top, "", 0, walk)
    }

    /// Children (by digest) and blobs of one manifest; `label` names the platform for messages.
    fn check_below(
        &self,
        manifest: &RawManifest,
        label: &str,
        depth: usize,
        walk: &mut Walk<'_>,
    ) -> Result<(), Fatal> {
        let repository = walk.repository;
        let entries = if depth == 0 {
            self.options.platforms.entries(manifest)
        } else {
            manifest.manifests().iter().collect()
        };
        if entries.is_empty() && !manifest.manifests().is_empty() {
            walk.verdict.notes.push(format!(
                "no index entry for {}: only the index itself was checked",
                self.options.platforms
            ));
        }
        for entry in entries {
            if !walk.seen.insert(entry.digest) {
                continue;
            }
            let platform = entry.platform.clone();
            match self.manifest_present(repository, entry.digest) {
                Ok(true) => walk.verdict.manifests_checked += 1,
                Ok(false) => {
                    walk.fail(Reason::MissingChild {
                        digest: entry.digest,
                        platform,
                        dest_index: None,
                    })?;
                    continue;
                }
                Err(e) => {
                    walk.fail(self.reason(e)?)?;
                    continue;
                }
            }
            let image = walk.image;
            let child = image.manifests.iter().find(|m| m.digest() == entry.digest);
            if let Some(child) = child
                && depth < MAX_DEPTH
            {
                let label = child_label(label, platform.as_ref(), entry.digest);
                self.check_below(child, &label, depth + 1, walk)?;
            }
        }
        if self.options.shallow {
            return Ok(());
        }
        let config = manifest.config().map(|c| (c, "config".to_string()));
        let layers = manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| (l, format!("layer {}", i + 1)));
        for (descriptor, role) in config.into_iter().chain(layers) {
            if descriptor.is_foreign() || !walk.seen.insert(descriptor.digest) {
                continue;
            }
            let role = if label.is_empty() {
                role
            } else {
                format!("{label} {role}")
            };
            match self.blob_present(repository, descriptor.digest) {
                Ok(true) => walk.verdict.blobs_checked += 1,
                Ok(false) => walk.fail(Reason::MissingBlob {
                    digest: descriptor.digest,
                    role,
                })?,
                Err(e) => walk.fail(self.reason(e)?)?,
            }
        }
        Ok(())
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
        let key = (repository.to_string(), digest);
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
        let key = (repository.to_string(), digest);
        let (present, _) = self.blobs.run(&key, || {
            self.requests.fetch_add(1, Ordering::Relaxed);
            Ok::<_, RegistryError>(self.client.head_blob(repository, &digest)?.is_some())
        })?;
        Ok(present)
    }

    /// A registry error as a per-tag reason, or as the end of the run when it concerns the whole destination.
    fn reason(&self, e: RegistryError) -> Result<Reason, Fatal> {
        let needs_credentials = "the destination needs credentials: pass --username with --password-stdin, set FERRY_USERNAME/FERRY_PASSWORD, or use --authfile";
        match &e {
            RegistryError::Auth(_) | RegistryError::Certificate { .. } => Err(Fatal(e.to_string())),
            RegistryError::Transport { .. } => Err(Fatal(format!("destination unreachable: {e}"))),
            RegistryError::Status { status: 401, .. } if !self.client.has_credentials() => {
                Err(Fatal(format!("{e} ({needs_credentials})")))
            }
            RegistryError::Status {
                status: status @ (401 | 403),
                errors,
                ..
            } => Ok(Reason::Unauthorised {
                status: *status,
                code: errors.first().map(|e| e.code.clone()),
                who: self.client.who(),
            }),
            RegistryError::Status { status, errors, .. } => Ok(Reason::DestinationError {
                status: Some(*status),
                code: errors.first().map(|e| e.code.clone()),
                detail: e.to_string(),
            }),
            _ => Ok(Reason::DestinationError {
                status: None,
                code: None,
                detail: e.to_string(),
            }),
        }
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
    fn fail(&mut self, reason: Reason) -> Result<(), Fatal> {
        self.verdict.reasons.push(reason);
        Ok(())
    }
}

/// How a child's blobs are named in messages: its platform, or its digest when it has none.
fn child_label(parent: &str, platform: Option<&Platform>, digest: Digest) -> String {
    let own = match platform {
        Some(p) => p.to_string(),
        None => format!("child {}", digest.short()),
    };
    if parent.is_empty() {
        own
    } else {
        format!("{parent} {own}")
    }
}

/// Checks `images` on `jobs` workers. A fatal problem stops the run; tags not reached are `not checked`.
pub fn run(
    checker: &Checker<'_>,
    images: &[Image],
    jobs: usize,
    progress: &Progress,
) -> ValidationResult {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let fatal: Mutex<Option<String>> = Mutex::new(None);
    let verdicts: Mutex<Vec<(usize, Verdict)>> = Mutex::new(Vec::with_capacity(images.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, images.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(image) = images.get(i) else { break };
                    let verdict = if stop.load(Ordering::Relaxed) {
                        Verdict::not_checked(image)
                    } else {
                        match checker.check(image) {
                            Ok(v) => v,
                            Err(Fatal(e)) => {
                                stop.store(true, Ordering::Relaxed);
                                fatal.lock().unwrap().get_or_insert(e);
                                Verdict::not_checked(image)
                            }
                        }
                    };
                    progress.add_bytes(image.size());
                    progress.image_done(&image.reference());
                    verdicts.lock().unwrap().push((i, verdict));
                }
            });
        }
    });
    let mut verdicts = verdicts.into_inner().unwrap();
    verdicts.sort_by_key(|(i, _)| *i);
    ValidationResult {
        verdicts: verdicts.into_iter().map(|(_, v)| v).collect(),
        fatal: fatal.into_inner().unwrap(),
        requests: checker.requests(),
    }
}
