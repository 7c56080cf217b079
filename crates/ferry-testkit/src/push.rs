//! A minimal registry v2 HTTP client that pushes synthetic blobs and manifests to create fixtures.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ureq::Agent;
use ureq::http::Response;

use crate::media::{ACCEPT_ALL_MANIFESTS, Descriptor, sha256_digest};
use crate::registry::Registry;
use crate::truth::UnfinishedUpload;

/// Pushes to one registry over plain HTTP. Cheap to clone; clones share connections
/// and the memory of which blobs are already linked in which repository.
#[derive(Clone)]
pub struct Pusher {
    base: String,
    agent: Agent,
    /// (repository, digest) pairs known to be linked, so `push_blob` can skip the HEAD.
    known: Arc<Mutex<HashSet<(String, String)>>>,
}

/// A manifest as served by `GET /v2/<repo>/manifests/<reference>`.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The `Content-Type` header.
    pub media_type: String,
    /// The `Docker-Content-Digest` header.
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Pusher {
    /// A pusher for a running [`Registry`].
    pub fn new(registry: &Registry) -> Pusher {
        Pusher::from_url(&registry.url())
    }

    /// A pusher for any registry base URL such as `http://127.0.0.1:5000`.
    pub fn from_url(base: &str) -> Pusher {
        Pusher {
            base: base.trim_end_matches('/').to_string(),
            agent: crate::http_agent(Duration::from_secs(60)),
            known: Arc::default(),
        }
    }

    /// A pusher sending `Authorization: Basic` with every request (Harbor takes Basic on `/v2`).
    pub fn with_basic(base: &str, user: &str, password: &str) -> Pusher {
        use base64::Engine as _;
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let value = ureq::http::HeaderValue::from_str(&value).expect("a valid header value");
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .middleware(
                move |mut req: ureq::http::Request<ureq::SendBody>,
                      next: ureq::middleware::MiddlewareNext| {
                    req.headers_mut()
                        .insert(ureq::http::header::AUTHORIZATION, value.clone());
                    next.handle(req)
                },
            )
            .build()
            .into();
        Pusher {
            base: base.trim_end_matches('/').to_string(),
            agent,
            known: Arc::default(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{}", self.base, location)
        } else {
            format!("{}/{}", self.base, location)
        }
    }

    /// True if `HEAD /v2/<repo>/blobs/<digest>` answers 200 (the blob is linked in `repo`).
    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let resp = self
            .agent
            .head(&url)
            .call()
            .with_context(|| format!("HEAD {url}"))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => bail!("HEAD {url}: unexpected status {s}"),
        }
    }

    /// Uploads `data` into `repo` unless it is already linked there (known from an earlier
    /// push through this pusher or one of its clones, or found by `HEAD`).
    /// The descriptor's media type is `application/octet-stream`; set the real one with
    /// [`Descriptor::with_media_type`].
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> Result<Descriptor> {
        let desc = Descriptor::of("application/octet-stream", data);
        let key = (repo.to_string(), desc.digest.clone());
        if self.known.lock().unwrap().contains(&key) {
            return Ok(desc);
        }
        if !self.blob_exists(repo, &desc.digest)? {
            self.upload_blob(repo, data, &desc.digest)?;
        }
        self.known.lock().unwrap().insert(key);
        Ok(desc)
    }

    /// Like [`Pusher::push_blob`] but sets the descriptor's media type.
    pub fn push_blob_typed(&self, repo: &str, media_type: &str, data: &[u8]) -> Result<Descriptor> {
        Ok(self.push_blob(repo, data)?.with_media_type(media_type))
    }

    /// Always uploads (no HEAD first): `POST /blobs/uploads/`, then a monolithic
    /// `PUT <location>&digest=` carrying the whole blob.
    pub fn upload_blob(&self, repo: &str, data: &[u8], digest: &str) -> Result<()> {
        let location = self.start_upload(repo)?;
        let resp = self
            .agent
            .put(&location)
            .query("digest", digest)
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .with_context(|| format!("PUT {location}"))?;
        expect_status(resp, 201, &format!("PUT blob {digest} into {repo}"))?;
        Ok(())
    }

    /// `POST /v2/<repo>/blobs/uploads/`; returns the absolute upload location.
    fn start_upload(&self, repo: &str) -> Result<String> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = self
            .agent
            .post(&url)
            .send_empty()
            .with_context(|| format!("POST {url}"))?;
        let resp = expect_status(resp, 202, &format!("POST {url}"))?;
        let location = header(&resp, "Location").context("upload POST without Location")?;
        Ok(self.resolve(&location))
    }

    /// Cross-repository mount (`POST ...?mount=<digest>&from=<repo>`). Returns false if the
    /// registry refused to mount (the upload session it opened instead is cancelled).
    pub fn mount_blob(&self, repo: &str, from: &str, digest: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = self
            .agent
            .post(&url)
            .query("mount", digest)
            .query("from", from)
            .send_empty()
            .with_context(|| format!("POST {url} mount"))?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                if let Some(loc) = header(&resp, "Location") {
                    let loc = self.resolve(&loc);
                    let _ = self.agent.delete(&loc).call();
                }
                Ok(false)
            }
            _ => {
                expect_status(
                    resp,
                    201,
                    &format!("mount {digest} from {from} into {repo}"),
                )?;
                unreachable!()
            }
        }
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `Content-Type: media_type`.
    /// Checks that `Docker-Content-Digest` is the sha256 of `bytes` and returns it.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let resp = self
            .agent
            .put(&url)
            .header("Content-Type", media_type)
            .send(bytes)
            .with_context(|| format!("PUT {url}"))?;
        let resp = expect_status(resp, 201, &format!("PUT manifest {repo}:{reference}"))?;
        let expected = sha256_digest(bytes);
        let got = header(&resp, "Docker-Content-Digest").unwrap_or_default();
        if got != expected {
            bail!(
                "PUT manifest {repo}:{reference}: registry says digest {got:?}, bytes hash to {expected}"
            );
        }
        Ok(expected)
    }

    /// `GET /v2/<repo>/manifests/<reference>` accepting all four manifest media types.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        self.get_manifest_accepting(repo, reference, ACCEPT_ALL_MANIFESTS)
    }

    /// `GET /v2/<repo>/manifests/<reference>` with the given `Accept` header.
    pub fn get_manifest_accepting(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
    ) -> Result<FetchedManifest> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let resp = self
            .agent
            .get(&url)
            .header("Accept", accept)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let mut resp = expect_status(resp, 200, &format!("GET manifest {repo}:{reference}"))?;
        let media_type = header(&resp, "Content-Type").unwrap_or_default();
        let digest = header(&resp, "Docker-Content-Digest").unwrap_or_default();
        let bytes = resp.body_mut().read_to_vec()?;
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`.
    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let resp = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let mut resp = expect_status(resp, 200, &format!("GET blob {repo}@{digest}"))?;
        Ok(resp.body_mut().with_config().limit(1 << 30).read_to_vec()?)
    }

    /// `GET /v2/<repo>/tags/list`, in the order the registry gives (Distribution 2.8 does
    /// not sort it); `"tags": null` (a repository whose tags were all deleted) gives none.
    pub fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let url = format!("{}/v2/{repo}/tags/list", self.base);
        let resp = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let mut resp = expect_status(resp, 200, &format!("GET {url}"))?;
        let v: serde_json::Value = serde_json::from_slice(&resp.body_mut().read_to_vec()?)?;
        Ok(v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every repository the registry knows, from `GET /v2/_catalog` pages of 1000
    /// (Distribution refuses `n` above its `catalog.maxentries`, 1000 by default).
    pub fn catalog(&self) -> Result<Vec<String>> {
        let url = format!("{}/v2/_catalog", self.base);
        let mut all: Vec<String> = Vec::new();
        loop {
            let mut req = self.agent.get(&url).query("n", "1000");
            if let Some(last) = all.last() {
                req = req.query("last", last);
            }
            let resp = req.call().with_context(|| format!("GET {url}"))?;
            let mut resp = expect_status(resp, 200, &format!("GET {url}"))?;
            let more = header(&resp, "Link").is_some_and(|l| l.contains("rel=\"next\""));
            let v: serde_json::Value = serde_json::from_slice(&resp.body_mut().read_to_vec()?)?;
            let page: Vec<String> = v["repositories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let empty = page.is_empty();
            all.extend(page);
            if !more || empty {
                return Ok(all);
            }
        }
    }

    /// `DELETE /v2/<repo>/manifests/<digest>` (needs `storage.delete.enabled`). Distribution
    /// removes the revision link and every tag whose current link points at the digest.
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base);
        let resp = self
            .agent
            .delete(&url)
            .call()
            .with_context(|| format!("DELETE {url}"))?;
        expect_status(resp, 202, &format!("DELETE manifest {repo}@{digest}"))?;
        Ok(())
    }

    /// Opens an upload session, PATCHes `partial` into it and never finishes it, which
    /// leaves `repositories/<repo>/_uploads/<uuid>/` in the storage tree.
    pub fn start_unfinished_upload(&self, repo: &str, partial: &[u8]) -> Result<UnfinishedUpload> {
        let location = self.start_upload(repo)?;
        let resp = self
            .agent
            .patch(&location)
            .header("Content-Type", "application/octet-stream")
            .send(partial)
            .with_context(|| format!("PATCH {location}"))?;
        let resp = expect_status(resp, 202, &format!("PATCH upload in {repo}"))?;
        let uuid = header(&resp, "Docker-Upload-UUID")
            .or_else(|| upload_uuid_from_location(&location))
            .context("PATCH answer names no upload uuid")?;
        Ok(UnfinishedUpload {
            repository: repo.to_string(),
            uuid,
        })
    }
}

fn upload_uuid_from_location(location: &str) -> Option<String> {
    let path = location.split('?').next()?;
    path.rsplit('/').find(|s| !s.is_empty()).map(str::to_string)
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Passes the response through if its status is `want`, else fails with the body.
fn expect_status(
    mut resp: Response<ureq::Body>,
    want: u16,
    what: &str,
) -> Result<Response<ureq::Body>> {
    let status = resp.status().as_u16();
    if status == want {
        return Ok(resp);
    }
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    bail!("{what}: status {status} (wanted {want}): {}", body.trim())
}
