//! The registry sink: pushes blobs (HEAD → mount → upload, each digest once per run) and exact manifest bytes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::{BlobAction, Sink, SinkError};
use crate::destination::Mapping;
use crate::digest::Digest;
use crate::engine::once::OnceMap;
use crate::inventory::{BlobRef, Image};
use crate::manifest::{ManifestKind, RawManifest};
use crate::progress::Progress;
use crate::registry::client::Tags;
use crate::registry::{Client, Mount, RegistryError};
use crate::source::BlobFile;

/// A destination repository and a digest in it.
type RepoDigest = (String, Digest);

/// What this run learnt about a destination repository from one `tags/list` before its first image.
#[derive(Clone)]
enum RepoState {
    /// It did not exist: its tags are absent, and its blobs are not HEADed first (a repository
    /// with no tag may still hold blobs of an interrupted run; those are sent again, no harm done).
    New,
    /// It exists with these tags.
    Tags(Arc<HashSet<String>>),
    /// No usable list: HEAD everything.
    Unlisted,
}

/// Pushes into one registry. With `dry_run`, only reads (HEADs) and records what it would do.
pub struct RegistrySink<'a> {
    client: &'a Client,
    mapping: Mapping,
    harbor: bool,
    dry_run: bool,
    /// Per digest: a destination repository that holds it (uploaded this run, or found there).
    homes: OnceMap<Digest, String>,
    /// (repository, digest) pairs known to be at the destination.
    present: Mutex<HashSet<RepoDigest>>,
    /// Per destination repository, what its tag list said at the start.
    repos: OnceMap<String, RepoState>,
    /// Projects that could not be created: their images fail with this reason.
    broken_projects: HashMap<String, String>,
    /// One lock per (repository, manifest digest): Distribution 2.8 can fail concurrent PUTs of one manifest.
    manifest_locks: Mutex<HashMap<RepoDigest, Arc<Mutex<()>>>>,
    /// With `push --verify`: each source blob's hash check, once per run (failures remembered too).
    source_checks: Option<OnceMap<Digest, Result<(), String>>>,
}

impl<'a> RegistrySink<'a> {
    pub fn new(
        client: &'a Client,
        mapping: Mapping,
        harbor: bool,
        dry_run: bool,
        broken_projects: HashMap<String, String>,
    ) -> RegistrySink<'a> {
        RegistrySink {
            client,
            mapping,
            harbor,
            dry_run,
            homes: OnceMap::new(),
            present: Mutex::new(HashSet::new()),
            repos: OnceMap::new(),
            broken_projects,
            manifest_locks: Mutex::new(HashMap::new()),
            source_checks: None,
        }
    }

    /// Hashes each source blob before it is mounted or found present (`push --verify`); an
    /// upload is hashed on the way anyway.
    pub fn verifying_sources(mut self, verify: bool) -> Self {
        self.source_checks = verify.then(OnceMap::new);
        self
    }

    /// With `--verify`, fails the image when the source file of `blob` does not hash to its digest.
    fn check_source(&self, blob: &BlobRef, file: &BlobFile) -> Result<(), SinkError> {
        let Some(checks) = &self.source_checks else {
            return Ok(());
        };
        let (result, _) = checks
            .run(&blob.digest, || {
                let hashed = crate::verify::hash::hash_file(
                    &file.path,
                    crate::verify::ReadStrategy::default(),
                    &mut Vec::new(),
                    &|_| {},
                );
                Ok::<_, std::convert::Infallible>(match hashed {
                    Ok(h) if h.digest == blob.digest => Ok(()),
                    Ok(h) => Err(crate::problem::Problem::CorruptBlob {
                        digest: blob.digest,
                        path: file.path.clone(),
                        found: h.digest,
                        len: h.len,
                    }
                    .to_string()),
                    Err(e) => Err(format!("cannot read {}: {e}", file.path.display())),
                })
            })
            .unwrap_or_else(|never| match never {});
        result.map_err(|e| SinkError::Image(format!("{}: {e}", blob.role)))
    }

    /// Records that an upload (hashed on the way) proved the source blob right.
    fn source_proven(&self, digest: Digest) {
        if let Some(checks) = &self.source_checks {
            checks.set(digest, Ok(()));
        }
    }

    fn error(&self, e: RegistryError) -> SinkError {
        if e.is_unauthorized() {
            let hint = if self.client.has_credentials() {
                format!("the destination refused {}", self.client.who())
            } else {
                "the destination needs credentials: pass --username with --password-stdin, set FERRY_USERNAME/FERRY_PASSWORD, or use --authfile".to_string()
            };
            SinkError::Fatal(format!("{e} ({hint})"))
        } else if e.status() == Some(403) {
            SinkError::Image(format!("{e} ({} may not push here)", self.client.who()))
        } else {
            SinkError::Image(e.to_string())
        }
    }

    fn manifest_lock(&self, repository: &str, digest: Digest) -> Arc<Mutex<()>> {
        self.manifest_locks
            .lock()
            .unwrap()
            .entry((repository.to_string(), digest))
            .or_default()
            .clone()
    }

    /// The repository's state, listing its tags once per run.
    fn repo_state(&self, repository: &str) -> Result<RepoState, SinkError> {
        let (state, _) = self.repos.run(&repository.to_string(), || {
            Ok::<_, SinkError>(
                match self.client.tags(repository).map_err(|e| self.error(e))? {
                    Tags::Unknown => RepoState::New,
                    Tags::Listed(t) => RepoState::Tags(Arc::new(t.into_iter().collect())),
                    Tags::Unlisted => RepoState::Unlisted,
                },
            )
        })?;
        Ok(state)
    }

    fn mark_present(&self, repository: &str, digest: Digest) {
        self.present
            .lock()
            .unwrap()
            .insert((repository.to_string(), digest));
    }

    /// Whether an image whose top manifest is at `target` also has its children and blobs there:
    /// a registry can keep a manifest whose children or blobs are gone (Harbor after GC), and only
    /// what is whole may be skipped, so a retry from `ferry validate`'s failed list repairs it.
    fn children_and_blobs_present(
        &self,
        target: &String,
        image: &Image,
    ) -> Result<bool, SinkError> {
        let children = &image.manifests[..image.manifests.len().saturating_sub(1)];
        for child in children {
            let head = self
                .client
                .head_manifest(target, &child.digest().to_string())
                .map_err(|e| self.error(e))?;
            if head.is_none() {
                crate::debug!(
                    "{target}: child {} is missing; pushing again",
                    child.digest()
                );
                return Ok(false);
            }
        }
        for b in &image.blobs {
            if let Some(file) = &b.file {
                self.check_source(b, file)?;
            }
            let key = (target.clone(), b.digest);
            if self.present.lock().unwrap().contains(&key) {
                continue;
            }
            let head = self
                .client
                .head_blob(target, &b.digest)
                .map_err(|e| self.error(e))?;
            if head.is_none() {
                crate::debug!("{target}: blob {} is missing; pushing again", b.digest);
                return Ok(false);
            }
            self.mark_present(target, b.digest);
            let _ = self.homes.run(&b.digest, || Ok::<_, ()>(target.clone()));
        }
        Ok(true)
    }
}

impl RegistrySink<'_> {
    /// Links a blob that repository `home` holds into `target`: by mount, or by upload when the registry will not mount.
    fn link_from(
        &self,
        target: &String,
        blob: &BlobRef,
        file: &BlobFile,
        home: &str,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        if home == target {
            self.mark_present(target, blob.digest);
            return Ok(BlobAction::Present);
        }
        if self.dry_run {
            return Ok(BlobAction::Mounted);
        }
        let action = match self
            .client
            .mount_blob(target, &blob.digest, home)
            .map_err(|e| self.error(e))?
        {
            Mount::Mounted => BlobAction::Mounted,
            Mount::Session(url) => {
                crate::debug!(
                    "{target}: mount of {} from {home} refused; uploading",
                    blob.digest
                );
                self.client
                    .upload_blob(
                        target,
                        &blob.digest,
                        &file.path,
                        blob.size,
                        Some(url),
                        &|n| progress.add_bytes(n),
                    )
                    .map_err(|e| self.error(e))?;
                BlobAction::Uploaded
            }
        };
        self.mark_present(target, blob.digest);
        Ok(action)
    }
}

impl Sink for RegistrySink<'_> {
    type Target = String;

    fn target(&self, image: &Image) -> Result<String, String> {
        if let Some(m) = image.manifest()
            && m.kind() == ManifestKind::Schema1
        {
            return Err(format!(
                "schema1 manifest {}: its digest depends on the repository name inside it, so it cannot keep its digest at the destination; not pushed",
                m.digest()
            ));
        }
        let destination = self.mapping.destination(&image.repository);
        self.mapping.check(&destination, self.harbor)?;
        let project = crate::destination::project_of(&destination);
        if let Some(reason) = self.broken_projects.get(project) {
            return Err(reason.clone());
        }
        Ok(destination)
    }

    fn image_present(&self, target: &String, image: &Image) -> Result<bool, SinkError> {
        let (Some(digest), Some(manifest)) = (image.digest, image.manifest()) else {
            return Ok(false);
        };
        // A tag the repository does not list (or a repository that does not exist) needs no HEAD.
        match (self.repo_state(target)?, &image.tag) {
            (RepoState::New, _) => return Ok(false),
            (RepoState::Tags(tags), Some(tag)) if !tags.contains(tag) => return Ok(false),
            _ => {}
        }
        let reference = image.tag.clone().unwrap_or_else(|| digest.to_string());
        let head = self
            .client
            .head_manifest(target, &reference)
            .map_err(|e| self.error(e))?;
        let found = match head {
            None => return Ok(false),
            Some(h) => match h.digest {
                Some(d) => d,
                // Registries that leave the digest out of HEAD: read the bytes and hash them.
                None => match self
                    .client
                    .get_manifest(target, &reference)
                    .map_err(|e| self.error(e))?
                {
                    Some(m) => Digest::of(&m.bytes),
                    None => return Ok(false),
                },
            },
        };
        if found == manifest.digest() {
            return self.children_and_blobs_present(target, image);
        }
        Ok(false)
    }

    fn put_blob(
        &self,
        target: &String,
        blob: &BlobRef,
        file: &BlobFile,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        let key = (target.clone(), blob.digest);
        if self.present.lock().unwrap().contains(&key) {
            self.check_source(blob, file)?;
            return Ok(BlobAction::Present);
        }
        // Another repository got it this run: mount straight away (a mount of a blob the
        // repository already holds succeeds too), one request instead of HEAD + mount.
        if let Some(home) = self.homes.get(&blob.digest) {
            self.check_source(blob, file)?;
            return self.link_from(target, blob, file, &home, progress);
        }
        let new_repo = matches!(self.repos.get(target), Some(RepoState::New));
        if !new_repo
            && self
                .client
                .head_blob(target, &blob.digest)
                .map_err(|e| self.error(e))?
                .is_some()
        {
            self.check_source(blob, file)?;
            self.mark_present(target, blob.digest);
            let _ = self.homes.run(&blob.digest, || Ok::<_, ()>(target.clone()));
            return Ok(BlobAction::Present);
        }
        let upload = |session: Option<String>| -> Result<(), SinkError> {
            if self.dry_run {
                return Ok(());
            }
            self.client
                .upload_blob(target, &blob.digest, &file.path, blob.size, session, &|n| {
                    progress.add_bytes(n)
                })
                .map_err(|e| self.error(e))
        };
        let (home, uploaded_here) = self.homes.run(&blob.digest, || {
            upload(None)?;
            Ok::<_, SinkError>(target.clone())
        })?;
        if uploaded_here {
            if !self.dry_run {
                self.source_proven(blob.digest);
            }
            self.mark_present(target, blob.digest);
            return Ok(BlobAction::Uploaded);
        }
        self.check_source(blob, file)?;
        self.link_from(target, blob, file, &home, progress)
    }

    fn put_manifest(
        &self,
        target: &String,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), SinkError> {
        if self.dry_run {
            return Ok(());
        }
        let digest = manifest.digest();
        let reference = tag
            .map(str::to_string)
            .unwrap_or_else(|| digest.to_string());
        let lock = self.manifest_lock(target, digest);
        let _held = lock.lock().unwrap();
        self.client
            .put_manifest(target, &reference, manifest.media_type(), manifest.bytes())
            .map_err(|e| self.error(e))
    }
}
