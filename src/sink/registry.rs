//! The registry sink: pushes blobs (HEAD → mount → upload, each digest once per run) and exact manifest bytes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::{BlobAction, ImageError, Sink, SinkError};
use crate::destination::Mapping;
use crate::digest::Digest;
use crate::engine::Fatal;
use crate::engine::once::{Ids, OnceMap};
use crate::inventory::{BlobRef, Image};
use crate::manifest::{ManifestKind, RawManifest};
use crate::progress::Progress;
use crate::registry::client::Tags;
use crate::registry::error::Brief;
use crate::registry::harbor::{Blocks, Refusal};
use crate::registry::{Client, Mount, RegistryError};
use crate::source::{BlobFile, Source};

/// A destination repository and a digest in it.
/// A (destination repository, digest) pair, the repository as its number in `RegistrySink::ids`.
type RepoDigest = (u32, Digest);

/// What this run learnt about a destination repository from one `tags/list` before its first image.
#[derive(Clone)]
enum RepoState {
    /// It lists no tag (it does not exist, or holds only blobs of an interrupted run): its tags
    /// are absent; its blobs are not HEADed, but each upload starts with a mount from the
    /// repository itself, so a killed run's blobs are found there and not sent again.
    New,
    /// It exists with these tags.
    Tags(Arc<HashSet<String>>),
    /// No usable list: HEAD everything.
    Unlisted,
}

/// Per source blob, whether it hashed right (`push --verify`), or why not.
type SourceChecks = OnceMap<Digest, Result<(), String>>;

/// A lock held while a manifest (or a tag) of one repository is written.
type ManifestLock = Arc<Mutex<()>>;

/// What a run knows about Harbor projects before it starts (from the preflight).
#[derive(Debug, Default, Clone)]
pub struct Projects {
    /// Projects this run may not send into, or not even read, and why.
    pub closed: HashMap<String, Refusal>,
    /// Projects a dry run would create: they hold nothing yet, so nothing is asked there.
    pub absent: HashSet<String>,
}

/// Pushes into one registry. With `dry_run`, only reads (HEADs) and records what it would do.
pub struct RegistrySink<'a> {
    client: &'a Client,
    mapping: Mapping,
    harbor: bool,
    dry_run: bool,
    /// Per digest: a destination repository that holds it (uploaded this run, or found there).
    homes: OnceMap<Digest, String>,
    /// Per (repository, digest): how it got there. One placement at a time: Distribution writes a
    /// repository's blob link by truncate-then-write, so a second concurrent mount could leave a
    /// manifest PUT reading an empty link.
    placed: OnceMap<RepoDigest, BlobAction>,
    ids: Ids,
    /// Per destination repository, what its tag list said at the start.
    repos: OnceMap<String, RepoState>,
    /// Harbor projects closed to this run, from the preflight or learnt from a refusal (a quota
    /// passed): their images fail with that one reason, and nothing more is sent there.
    closed: Mutex<HashMap<String, Refusal>>,
    /// Harbor projects a dry run would create.
    absent: HashSet<String>,
    /// One lock per (repository, manifest digest) and per (repository, tag): Distribution 2.8
    /// can fail concurrent PUTs of one manifest, and tag links are written like blob links.
    manifest_locks: Mutex<HashMap<(String, String), ManifestLock>>,
    /// `--shard`: blobs whose home is another shard's repository, mounted from there before any upload.
    foreign_homes: HashMap<Digest, String>,
    /// With `push --verify`: the source, and each blob's hash check, once per run (failures
    /// remembered too).
    source_checks: Option<(&'a dyn Source, SourceChecks)>,
}

impl<'a> RegistrySink<'a> {
    pub fn new(
        client: &'a Client,
        mapping: Mapping,
        harbor: bool,
        dry_run: bool,
        projects: Projects,
    ) -> RegistrySink<'a> {
        RegistrySink {
            client,
            mapping,
            harbor,
            dry_run,
            homes: OnceMap::new(),
            placed: OnceMap::new(),
            ids: Ids::default(),
            repos: OnceMap::new(),
            closed: Mutex::new(projects.closed),
            absent: projects.absent,
            manifest_locks: Mutex::new(HashMap::new()),
            foreign_homes: HashMap::new(),
            source_checks: None,
        }
    }

    /// Sizes the placement map for `placements` (repository, blob) pairs, at most: the sum of
    /// the images' blob counts.
    pub fn expecting(mut self, placements: usize) -> Self {
        self.placed = OnceMap::with_capacity(placements);
        self
    }

    /// Hashes each source blob before an image that needs it is completed with a mounted or
    /// present copy (`push --verify`); an upload is hashed on the way anyway.
    pub fn verifying_sources(mut self, source: Option<&'a dyn Source>) -> Self {
        self.source_checks = source.map(|s| (s, OnceMap::new()));
        self
    }

    /// With `--verify`, fails the image when the source file of `blob` does not hash to its digest.
    fn check_source(&self, blob: &BlobRef) -> Result<(), SinkError> {
        let Some((source, checks)) = &self.source_checks else {
            return Ok(());
        };
        let (result, _) = checks
            .run(&blob.digest, || {
                let file = match source.blob(&blob.digest) {
                    Ok(f) => f,
                    Err(p) => return Ok(Err(p.to_string())),
                };
                let hashed = crate::verify::hash::hash_file(
                    &file,
                    crate::verify::ReadStrategy::default(),
                    &mut Vec::new(),
                    &|_| {},
                );
                Ok::<_, std::convert::Infallible>(match hashed {
                    Ok(h) if h.digest == blob.digest => Ok(()),
                    Ok(h) => Err(crate::problem::Problem::CorruptBlob {
                        digest: blob.digest,
                        path: file.name(),
                        found: h.digest,
                        len: h.len,
                    }
                    .to_string()),
                    Err(e) => Err(format!("cannot read {}: {e}", file.name().display())),
                })
            })
            .unwrap_or_else(|never| match never {});
        result.map_err(|e| SinkError::invalid(format!("{}: {e}", blob.role)))
    }

    /// Blobs other shards are home for (digest → their home repository), see `shard::homes`.
    pub fn with_foreign_homes(mut self, homes: HashMap<Digest, String>) -> Self {
        self.foreign_homes = homes;
        self
    }

    /// A registry error as the sink's verdict: the end of the run, or this image's failure.
    fn error(&self, e: RegistryError) -> SinkError {
        classify(self.client, self.harbor, e)
    }

    /// The refusal that closes the project of `repository` to this step (`writes`: it sends something).
    fn closed(&self, repository: &str, writes: bool) -> Option<Refusal> {
        let project = crate::destination::project_of(repository);
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        let refusal = closed.get(project)?;
        match refusal.blocks() {
            Some((_, Blocks::Everything)) => Some(refusal.clone()),
            Some((_, Blocks::Writes)) if writes => Some(refusal.clone()),
            _ => None,
        }
    }

    /// Fails a write at once when its project is closed.
    fn open_for_writes(&self, repository: &str) -> Result<(), SinkError> {
        match self.closed(repository, true) {
            Some(r) => Err(SinkError::Image(ImageError::Harbor(r))),
            None => Ok(()),
        }
    }

    /// Closes a project to the rest of the run when Harbor refused it as a whole (a quota
    /// passed, the project gone, a right missing).
    fn learn<T>(&self, result: Result<T, SinkError>) -> Result<T, SinkError> {
        if let Err(SinkError::Image(ImageError::Harbor(r))) = &result
            && let Some((project, _)) = r.blocks()
        {
            let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
            if !closed.contains_key(project) {
                crate::warn!("nothing more is sent into Harbor project {project}: {r}");
                closed.insert(project.to_string(), r.clone());
            }
        }
        result
    }

    /// Whether the project of `repository` is one a dry run would create (it holds nothing).
    fn absent(&self, repository: &str) -> bool {
        self.absent
            .contains(crate::destination::project_of(repository))
    }

    fn lock(&self, repository: &str, reference: String) -> ManifestLock {
        self.manifest_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((repository.to_string(), reference))
            .or_default()
            .clone()
    }

    /// Forgets the lock of (`repository`, `reference`) once nobody holds or waits for it: the
    /// map stays as small as the work in flight, not as big as the tree.
    fn unlock(&self, repository: &str, reference: String, lock: ManifestLock) {
        drop(lock);
        let mut locks = self
            .manifest_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (repository.to_string(), reference);
        // Clones are taken under this map's lock, so a count of 1 means nobody else has one.
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&key);
        }
    }

    /// The repository's state, listing its tags once per run. A listing that fails is learnt
    /// once too: the repository is then treated as unlisted (every tag and blob HEADed).
    fn repo_state(&self, repository: &str) -> Result<RepoState, SinkError> {
        if self.absent(repository) {
            return Ok(RepoState::New);
        }
        let (state, _) = self.repos.run(&repository.to_string(), || {
            Ok::<_, SinkError>(match self.client.tags(repository) {
                Ok(Tags::Unknown) => RepoState::New,
                Ok(Tags::Listed(t)) => RepoState::Tags(Arc::new(t.into_iter().collect())),
                Ok(Tags::Unlisted) => RepoState::Unlisted,
                Err(e) => match self.error(e) {
                    harbor @ SinkError::Image(ImageError::Harbor(_)) => return Err(harbor),
                    SinkError::Image(e) => {
                        crate::warn!(
                            "cannot list the tags of {repository} ({e}); checking each of its images instead"
                        );
                        RepoState::Unlisted
                    }
                    fatal => return Err(fatal),
                },
            })
        })?;
        Ok(state)
    }

    fn mark_present(&self, repository: &str, digest: Digest) {
        self.placed
            .set((self.ids.of(repository), digest), BlobAction::Present);
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
            self.check_source(b)?;
            if self.placed.get(&(self.ids.of(target), b.digest)).is_some() {
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

    /// Gets one blob into `target`: mount from where this run already has it, else HEAD, else
    /// upload (each digest uploaded once per run; other repositories wait and mount).
    fn place(
        &self,
        target: &String,
        blob: &BlobRef,
        file: &BlobFile,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        // Another repository got it this run: mount straight away (a mount of a blob the
        // repository already holds succeeds too), one request instead of HEAD + mount.
        if let Some(home) = self.homes.get(&blob.digest) {
            return self.link_from(target, blob, file, &home, progress);
        }
        // `--shard`: another shard is home for it; mount from there, upload if that does not work.
        if let Some(home) = self.foreign_homes.get(&blob.digest)
            && home != target
        {
            let mut action = BlobAction::Present;
            let (here, placed_here) = self.homes.run(&blob.digest, || {
                action = self.mount_or_upload(target, blob, file, home, progress)?;
                Ok::<_, SinkError>(target.clone())
            })?;
            if placed_here {
                return Ok(action);
            }
            return self.link_from(target, blob, file, &here, progress);
        }
        // A repository that lists tags is asked first (HEAD). One that lists none is not: a
        // mount from itself opens the upload instead (below), which also finds the blobs a run
        // killed before that repository's first tag left there, at no request more.
        let new_repo =
            self.absent(target) || matches!(self.repos.get(target), Some(RepoState::New));
        if !new_repo
            && self
                .client
                .head_blob(target, &blob.digest)
                .map_err(|e| self.error(e))?
                .is_some()
        {
            let _ = self.homes.run(&blob.digest, || Ok::<_, ()>(target.clone()));
            return Ok(BlobAction::Present);
        }
        let mut action = BlobAction::Uploaded;
        let (home, placed_here) = self.homes.run(&blob.digest, || {
            if !self.dry_run {
                action = if new_repo && !self.absent(target) {
                    // A mount from the repository itself: Distribution answers 201 when a
                    // killed run left the blob linked there (nothing is sent again), and
                    // otherwise opens the session the upload goes through (no request more).
                    self.mount_or_upload(target, blob, file, target, progress)?
                } else {
                    self.client
                        .upload_blob(target, &blob.digest, file, None, &|n| progress.add_bytes(n))
                        .map_err(|e| self.error(e))?;
                    BlobAction::Uploaded
                };
            }
            Ok::<_, SinkError>(target.clone())
        })?;
        if placed_here {
            return Ok(action);
        }
        self.link_from(target, blob, file, &home, progress)
    }

    /// Mounts a blob from `home`; uploads it, through the session the mount opened when it did,
    /// when the mount is not done. `home` is another shard's home repository (which may not hold
    /// it yet, or whose project may not exist yet), or `target` itself, where a blob already
    /// linked is found at no request more than a plain upload.
    fn mount_or_upload(
        &self,
        target: &String,
        blob: &BlobRef,
        file: &BlobFile,
        home: &str,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        if self.dry_run {
            return Ok(BlobAction::Mounted);
        }
        let session = match self.client.mount_blob(target, &blob.digest, home) {
            Ok(Mount::Mounted) if home == target.as_str() => return Ok(BlobAction::Present),
            Ok(Mount::Mounted) => return Ok(BlobAction::Mounted),
            Ok(Mount::Session(url)) => {
                crate::debug!("{target}: {} not yet at {home}; uploading", blob.digest);
                Some(url)
            }
            Err(e) => match self.error(e) {
                SinkError::Image(e) => {
                    crate::debug!(
                        "{target}: mount of {} from {home} refused ({e}); uploading",
                        blob.digest
                    );
                    None
                }
                stop => return Err(stop),
            },
        };
        self.client
            .upload_blob(target, &blob.digest, file, session, &|n| {
                progress.add_bytes(n)
            })
            .map_err(|e| self.error(e))?;
        Ok(BlobAction::Uploaded)
    }

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
            return Ok(BlobAction::Present);
        }
        if self.dry_run {
            return Ok(BlobAction::Mounted);
        }
        let session = match self.client.mount_blob(target, &blob.digest, home) {
            Ok(Mount::Mounted) => return Ok(BlobAction::Mounted),
            Ok(Mount::Session(url)) => Some(url),
            // Harbor refuses a mount from a project the account cannot pull, with no session.
            Err(e) if self.mount_refused(target, &e) => {
                crate::debug!(
                    "{target}: mount of {} from {home} refused ({}); uploading",
                    blob.digest,
                    Brief(&e)
                );
                None
            }
            Err(e) => return Err(self.error(e)),
        };
        crate::debug!(
            "{target}: {} not mounted from {home}; uploading",
            blob.digest
        );
        self.client
            .upload_blob(target, &blob.digest, file, session, &|n| {
                progress.add_bytes(n)
            })
            .map_err(|e| self.error(e))?;
        Ok(BlobAction::Uploaded)
    }

    /// A mount answered 401 or 403 for a reason other than the target itself (its quota, its
    /// project, the right to push there): an upload may still go through.
    fn mount_refused(&self, target: &str, e: &RegistryError) -> bool {
        if !matches!(e.status(), Some(401 | 403)) {
            return false;
        }
        let project = crate::destination::project_of(target);
        match Refusal::recognise(e, &self.client.who()) {
            Some(r) => r.blocks().is_none_or(|(p, _)| p != project),
            None => true,
        }
    }
}

/// A registry error as a copy or a check sees it: the destination gone, the credentials refused,
/// or the run stopping end the run; Harbor's refusals and anything else fail one image.
pub fn classify(client: &Client, harbor: bool, e: RegistryError) -> SinkError {
    // Harbor's refusals concern one project or one tag, not the whole destination.
    if harbor && let Some(r) = Refusal::recognise(&e, &client.who()) {
        return SinkError::Image(ImageError::Harbor(r));
    }
    match e {
        RegistryError::Gone(f) => SinkError::Fatal(f),
        RegistryError::Stopped => SinkError::Stopped,
        e @ (RegistryError::Auth(_)
        | RegistryError::Certificate { .. }
        | RegistryError::PlainHttp { .. }) => SinkError::Fatal(Fatal::Refused {
            destination: client.host().to_string(),
            message: e.to_string(),
        }),
        e if e.status() == Some(401) => {
            let hint = if client.has_credentials() {
                format!("the destination refused {}", client.who())
            } else {
                "the destination needs credentials: pass --username with --password-stdin, set FERRY_USERNAME/FERRY_PASSWORD, or use --authfile".to_string()
            };
            SinkError::Fatal(Fatal::Refused {
                destination: client.host().to_string(),
                message: format!("{e} ({hint})"),
            })
        }
        e if e.storage_full().is_some() => SinkError::Fatal(Fatal::DestinationFull {
            destination: client.host().to_string(),
            detail: e.storage_full().unwrap_or_default().to_string(),
        }),
        e if e.status() == Some(403) => SinkError::Image(ImageError::Registry {
            error: e,
            hint: Some(format!("{} may not push here", client.who())),
        }),
        e => SinkError::Image(e.into()),
    }
}

impl Sink for RegistrySink<'_> {
    type Target = String;

    fn target(&self, image: &Image) -> Result<String, ImageError> {
        if let Some(m) = image.manifest()
            && m.kind() == ManifestKind::Schema1
        {
            return Err(ImageError::Invalid(format!(
                "schema1 manifest {}: its digest depends on the repository name inside it, so it cannot keep its digest at the destination; not pushed",
                m.digest()
            )));
        }
        let destination = self.mapping.destination(&image.repository);
        self.mapping
            .check(&destination, self.harbor)
            .map_err(ImageError::Invalid)?;
        if let Some(r) = self.closed(&destination, false) {
            return Err(ImageError::Harbor(r));
        }
        Ok(destination)
    }

    fn image_present(&self, target: &String, image: &Image) -> Result<bool, SinkError> {
        self.learn(self.present(target, image))
    }

    fn put_blob(
        &self,
        target: &String,
        blob: &BlobRef,
        file: &BlobFile,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError> {
        self.open_for_writes(target)?;
        let key = (self.ids.of(target), blob.digest);
        let (action, here) = self.learn(
            self.placed
                .run(&key, || self.place(target, blob, file, progress)),
        )?;
        match (here, action) {
            // Hashed on its way up: the source is proven.
            (true, BlobAction::Uploaded) if !self.dry_run => {
                if let Some((_, checks)) = &self.source_checks {
                    checks.set(blob.digest, Ok(()));
                }
            }
            // Mounted or already there: with --verify, the source must still hold those bytes
            // before a manifest may point at them.
            _ => self.check_source(blob)?,
        }
        Ok(if here { action } else { BlobAction::Present })
    }

    fn put_manifest(
        &self,
        target: &String,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), SinkError> {
        self.open_for_writes(target)?;
        if self.dry_run {
            return Ok(());
        }
        self.learn(self.store_manifest(target, manifest, tag))
    }
}

impl RegistrySink<'_> {
    /// Whether the image is whole at `target` (see `Sink::image_present`).
    fn present(&self, target: &String, image: &Image) -> Result<bool, SinkError> {
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

    /// One manifest PUT, under the locks of its digest and tag.
    fn store_manifest(
        &self,
        target: &str,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), SinkError> {
        let digest = manifest.digest();
        let by_digest = self.lock(target, digest.to_string());
        let digest_held = by_digest.lock().unwrap_or_else(|e| e.into_inner());
        // Always in this order (digest, then tag), so two locks never wait on each other.
        let by_tag = tag.map(|t| self.lock(target, format!("tag {t}")));
        let tag_held = by_tag
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
        let reference = tag
            .map(str::to_string)
            .unwrap_or_else(|| digest.to_string());
        let put = self
            .client
            .put_manifest(target, &reference, manifest.media_type(), manifest.bytes())
            .map_err(|e| self.error(e));
        drop(tag_held);
        if let (Some(t), Some(l)) = (tag, by_tag) {
            self.unlock(target, format!("tag {t}"), l);
        }
        drop(digest_held);
        self.unlock(target, digest.to_string(), by_digest);
        put
    }
}
