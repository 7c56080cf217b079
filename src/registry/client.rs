//! An HTTP client for one registry: ping, auth, retries, and the blob and manifest operations of the distribution API.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::{self, Response};
use ureq::{Body, SendBody};

use super::auth::{Auth, Challenge, Scope};
use super::credentials::{CredentialSource, Credentials};
use super::endpoint::Endpoint;
use super::error::RegistryError;
use crate::digest::{Digest, Hasher};
use crate::manifest::media_type;
use crate::secret::Secret;
use crate::source::BlobFile;

/// Manifests larger than this are not read back.
const MAX_MANIFEST: u64 = 16 << 20;
/// Error bodies are read up to this size.
const MAX_ERROR_BODY: u64 = 64 << 10;
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(20);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// How to reach and authenticate to a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub endpoint: Endpoint,
    pub tls_verify: bool,
    pub ca_cert: Option<PathBuf>,
    pub credentials: Option<(Credentials, CredentialSource)>,
    /// Retries of a failed request (connection errors, 5xx, 408, 429).
    pub retries: u32,
    /// Connections kept open (sized to the number of workers).
    pub connections: usize,
}

/// What a `HEAD` of a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// A manifest read back from a registry.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
}

/// What `GET /v2/<repo>/tags/list` tells about a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tags {
    /// The repository does not exist (404).
    Unknown,
    /// Every tag of the repository.
    Listed(Vec<String>),
    /// The registry did not give a complete list (paged, refused, or not JSON).
    Unlisted,
}

/// The answer to a cross-repository mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Mounted,
    /// The registry did not mount; it opened an upload session at this URL instead.
    Session(String),
}

#[derive(Clone, Copy)]
enum AuthMode {
    /// Registry API: the challenge's scheme with the call's scopes.
    Registry,
    /// Harbor's REST API: Basic with the credentials.
    Basic,
}

struct Call<'a> {
    method: &'static str,
    url: String,
    scopes: Vec<Scope>,
    headers: Vec<(&'static str, String)>,
    body: &'a [u8],
    auth: AuthMode,
}

/// A client for one registry, shared by every worker of a run.
pub struct Client {
    base: String,
    host: String,
    agent: ureq::Agent,
    auth: Auth,
    retries: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client, finds a scheme that answers `/v2/`, learns the auth challenge and checks credentials.
    pub fn connect(options: ClientOptions) -> Result<Client, RegistryError> {
        let agent = build_agent(&options)?;
        let mut last_error = None;
        for (i, scheme) in options.endpoint.schemes.iter().enumerate() {
            let client = Client {
                base: format!("{scheme}://{}", options.endpoint.host),
                host: options.endpoint.host.clone(),
                agent: agent.clone(),
                auth: Auth::new(
                    options.credentials.clone(),
                    *scheme == "https",
                    !options.tls_verify,
                ),
                retries: options.retries,
            };
            // Only the last scheme to try gets retries: an https probe of a plain-HTTP registry fails fast.
            let last = i + 1 == options.endpoint.schemes.len();
            match client.ping(last) {
                Ok(()) => {
                    client.auth.verify(&client.agent)?;
                    return Ok(client);
                }
                Err(e @ RegistryError::Transport { .. })
                    if i + 1 < options.endpoint.schemes.len() =>
                {
                    crate::debug!("{e}; trying the next scheme");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RegistryError::Protocol(format!("no scheme to reach {}", options.endpoint.host))
        }))
    }

    /// `scheme://host[:port]`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn has_credentials(&self) -> bool {
        self.auth.has_credentials()
    }

    /// "user alice (from …)" or "no credentials", for messages about refusals.
    pub fn who(&self) -> String {
        self.auth.who()
    }

    fn ping(&self, retry: bool) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let mut attempt = 0;
        let response = loop {
            let error = match self.send_once("GET", &url, &[], None, SendBody::none()) {
                Ok(r)
                    if is_temporary_status(r.status().as_u16())
                        && retry
                        && attempt < self.retries =>
                {
                    error_from("GET", &url, r)
                }
                Ok(r) => break r,
                Err(e) if e.temporary() && retry && attempt < self.retries => e,
                Err(e) => return Err(e),
            };
            attempt += 1;
            self.backoff(attempt, &error);
        };
        let status = response.status().as_u16();
        match status {
            200 => Ok(()),
            401 => {
                let header = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let challenge = Challenge::parse(&header).ok_or_else(|| {
                    RegistryError::Protocol(format!(
                        "GET {url}: 401 with a challenge ferry cannot answer: {header:?}"
                    ))
                })?;
                self.auth.set_challenge(challenge.clone());
                if challenge == Challenge::Basic && self.auth.has_credentials() {
                    let check =
                        self.send_once("GET", &url, &[], self.auth.basic(), SendBody::none())?;
                    if check.status().as_u16() == 401 {
                        return Err(RegistryError::Auth(format!(
                            "{} refused the credentials of {}",
                            self.host,
                            self.auth.who()
                        )));
                    }
                }
                Ok(())
            }
            _ => Err(error_from("GET", &url, response)),
        }
    }

    /// Sends one request; no retries. Status codes are returned, not turned into errors.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&'static str, String)],
        authorization: Option<Secret>,
        body: SendBody<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        if let Some(a) = authorization
            && host_of(url) == Some(self.host.as_str())
        {
            builder = builder.header("Authorization", a.expose());
        }
        let request = builder.body(body).map_err(|e| RegistryError::Transport {
            method: method.to_string(),
            url: loggable(url),
            error: e.to_string(),
        })?;
        let started = Instant::now();
        let result = self.agent.run(request);
        let ms = started.elapsed().as_millis();
        match result {
            Ok(r) => {
                crate::debug!(
                    "{method} {} -> {} in {ms} ms",
                    loggable(url),
                    r.status().as_u16()
                );
                Ok(r)
            }
            Err(e) => {
                crate::debug!("{method} {} -> error in {ms} ms: {e}", loggable(url));
                Err(transport_error(method, url, &self.host, e))
            }
        }
    }

    /// Sends a call with a replayable body: auth header, one re-auth on 401, retries with backoff.
    fn call(&self, call: &Call<'_>) -> Result<Response<Body>, RegistryError> {
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let authorization = match call.auth {
                AuthMode::Registry => self.auth.header(&self.agent, &call.scopes)?,
                AuthMode::Basic => self.auth.basic(),
            };
            let mut headers = call.headers.clone();
            if matches!(call.method, "POST" | "PUT" | "PATCH") {
                headers.push(("Content-Length", call.body.len().to_string()));
            }
            let mut bytes = call.body;
            let outcome = if bytes.is_empty() {
                self.send_once(
                    call.method,
                    &call.url,
                    &headers,
                    authorization,
                    SendBody::none(),
                )
            } else {
                let body = SendBody::from_reader(&mut bytes);
                self.send_once(call.method, &call.url, &headers, authorization, body)
            };
            let error = match outcome {
                Ok(r)
                    if r.status().as_u16() == 401
                        && !reauthed
                        && matches!(call.auth, AuthMode::Registry) =>
                {
                    reauthed = true;
                    self.learn_challenge(&r, &call.scopes);
                    continue;
                }
                Ok(r) if is_temporary_status(r.status().as_u16()) && attempt < self.retries => {
                    error_from(call.method, &call.url, r)
                }
                Ok(r) => return Ok(r),
                Err(e) if e.temporary() && attempt < self.retries => e,
                Err(e) => return Err(e),
            };
            attempt += 1;
            self.backoff(attempt, &error);
        }
    }

    /// After a 401: adopt a changed challenge and drop the cached token.
    fn learn_challenge(&self, response: &Response<Body>, scopes: &[Scope]) {
        if let Some(c) = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            && c != self.auth.challenge()
        {
            self.auth.set_challenge(c);
        }
        self.auth.forget(scopes);
    }

    fn backoff(&self, attempt: u32, error: &RegistryError) {
        let exp = BACKOFF_BASE
            .saturating_mul(1 << attempt.min(10))
            .min(BACKOFF_MAX);
        let jittered = exp.mul_f64(0.5 + fastrand::f64());
        let delay = match error {
            RegistryError::Status {
                retry_after: Some(d),
                ..
            } => (*d).min(RETRY_AFTER_MAX),
            _ => jittered,
        };
        crate::debug!(
            "retry {attempt}/{} in {} ms after: {error}",
            self.retries,
            delay.as_millis()
        );
        std::thread::sleep(delay);
    }

    fn registry_call<'a>(
        &self,
        method: &'static str,
        path: String,
        scopes: Vec<Scope>,
        headers: Vec<(&'static str, String)>,
        body: &'a [u8],
    ) -> Call<'a> {
        Call {
            method,
            url: format!("{}{path}", self.base),
            scopes,
            headers,
            body,
            auth: AuthMode::Registry,
        }
    }

    fn accept_manifests() -> (&'static str, String) {
        ("Accept", media_type::ACCEPT_ALL.join(", "))
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`; `None` when the registry does not have it.
    pub fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let call = self.registry_call(
            "HEAD",
            format!("/v2/{repository}/manifests/{reference}"),
            vec![Scope::pull(repository)],
            vec![Self::accept_manifests()],
            &[],
        );
        let response = self.call(&call)?;
        match response.status().as_u16() {
            200 => Ok(Some(ManifestHead {
                digest: header(&response, "docker-content-digest")
                    .and_then(|d| Digest::parse(&d).ok()),
                media_type: header(&response, "content-type"),
                size: header(&response, "content-length").and_then(|s| s.parse().ok()),
            })),
            404 => Ok(None),
            _ => Err(error_from(call.method, &call.url, response)),
        }
    }

    /// `GET /v2/<repo>/tags/list`: `Tags::Unknown` when the repository does not exist (404),
    /// `Tags::Unlisted` when the registry pages the list or will not list it.
    pub fn tags(&self, repository: &str) -> Result<Tags, RegistryError> {
        let call = self.registry_call(
            "GET",
            format!("/v2/{repository}/tags/list"),
            vec![Scope::pull(repository)],
            vec![("Accept", "application/json".to_string())],
            &[],
        );
        let response = self.call(&call)?;
        match response.status().as_u16() {
            200 if header(&response, "link").is_none() => {
                #[derive(serde::Deserialize)]
                struct List {
                    tags: Option<Vec<String>>,
                }
                let bytes = response
                    .into_body()
                    .with_config()
                    .limit(MAX_MANIFEST)
                    .read_to_vec()
                    .map_err(|e| transport_error("GET", &call.url, &self.host, e))?;
                Ok(serde_json::from_slice::<List>(&bytes)
                    .map(|l| Tags::Listed(l.tags.unwrap_or_default()))
                    .unwrap_or(Tags::Unlisted))
            }
            status => {
                drain(response);
                Ok(if status == 404 {
                    Tags::Unknown
                } else {
                    Tags::Unlisted
                })
            }
        }
    }

    /// `GET /v2/<repo>/manifests/<reference>`: the exact bytes the registry serves.
    pub fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        let call = self.registry_call(
            "GET",
            format!("/v2/{repository}/manifests/{reference}"),
            vec![Scope::pull(repository)],
            vec![Self::accept_manifests()],
            &[],
        );
        let response = self.call(&call)?;
        match response.status().as_u16() {
            200 => {
                let media_type = header(&response, "content-type");
                let bytes = response
                    .into_body()
                    .with_config()
                    .limit(MAX_MANIFEST)
                    .read_to_vec()
                    .map_err(|e| transport_error("GET", &call.url, &self.host, e))?;
                Ok(Some(FetchedManifest { bytes, media_type }))
            }
            404 => {
                drain(response);
                Ok(None)
            }
            _ => Err(error_from(call.method, &call.url, response)),
        }
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: the size when present, `None` when not.
    pub fn head_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let call = self.registry_call(
            "HEAD",
            format!("/v2/{repository}/blobs/{digest}"),
            vec![Scope::pull(repository)],
            Vec::new(),
            &[],
        );
        let response = self.call(&call)?;
        match response.status().as_u16() {
            200 => Ok(Some(
                header(&response, "content-length")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => Err(error_from(call.method, &call.url, response)),
        }
    }

    /// Asks the registry to mount `digest` from repository `from` into `repository`.
    pub fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RegistryError> {
        let call = self.registry_call(
            "POST",
            format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}"),
            vec![Scope::push(repository), Scope::pull(from)],
            Vec::new(),
            &[],
        );
        let response = self.call(&call)?;
        match response.status().as_u16() {
            201 => Ok(Mount::Mounted),
            202 => Ok(Mount::Session(self.location(&call, &response)?)),
            _ => Err(error_from(call.method, &call.url, response)),
        }
    }

    /// Opens an upload session: `POST /v2/<repo>/blobs/uploads/`.
    pub fn start_upload(&self, repository: &str) -> Result<String, RegistryError> {
        let call = self.registry_call(
            "POST",
            format!("/v2/{repository}/blobs/uploads/"),
            vec![Scope::push(repository)],
            Vec::new(),
            &[],
        );
        let response = self.call(&call)?;
        match response.status().as_u16() {
            202 => self.location(&call, &response),
            _ => Err(error_from(call.method, &call.url, response)),
        }
    }

    /// Uploads a blob from a local file in one streamed `PUT ?digest=`, hashing on the way: if the
    /// file does not hash to `digest` the request is cut before its last byte, so nothing is committed.
    /// A failed attempt is retried on a fresh session. `session` is a session already opened (by a mount).
    pub fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        file: &BlobFile,
        len: u64,
        mut session: Option<String>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let mut attempt = 0;
        loop {
            let location = match session.take() {
                Some(l) => l,
                None => self.start_upload(repository)?,
            };
            let separator = if location.contains('?') { '&' } else { '?' };
            let url = format!("{location}{separator}digest={digest}");
            let path = file.name();
            let mut bytes = file.open().map_err(|e| {
                RegistryError::Local(format!("cannot open blob file {}: {e}", path.display()))
            })?;
            bytes.set_limit(len.min(file.len));
            let mismatch = Arc::new(Mutex::new(None));
            let mut reader = VerifyingReader {
                inner: bytes,
                hasher: Some(Hasher::new()),
                expected: *digest,
                expected_len: len,
                seen: 0,
                mismatch: mismatch.clone(),
                path: &path,
                on_bytes,
            };
            let authorization = self.auth.header(&self.agent, &[Scope::push(repository)])?;
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Length", len.to_string()),
            ];
            let outcome = self.send_once(
                "PUT",
                &url,
                &headers,
                authorization,
                SendBody::from_reader(&mut reader),
            );
            if let Some(m) = mismatch.lock().unwrap().take() {
                return Err(RegistryError::Local(m));
            }
            let error = match outcome {
                Ok(r) if r.status().as_u16() == 201 => return Ok(()),
                Ok(r) if r.status().as_u16() == 401 && attempt == 0 => {
                    self.learn_challenge(&r, &[Scope::push(repository)]);
                    error_from("PUT", &url, r)
                }
                Ok(r) => {
                    let e = error_from("PUT", &url, r);
                    if !e.temporary() {
                        return Err(e);
                    }
                    e
                }
                Err(e) if e.temporary() => e,
                Err(e) => return Err(e),
            };
            if attempt >= self.retries {
                return Err(error);
            }
            attempt += 1;
            self.backoff(attempt, &error);
        }
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the exact bytes; checks the digest the registry computed.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let call = self.registry_call(
            "PUT",
            format!("/v2/{repository}/manifests/{reference}"),
            vec![Scope::push(repository)],
            vec![("Content-Type", media_type.to_string())],
            bytes,
        );
        let response = self.call(&call)?;
        if response.status().as_u16() != 201 {
            return Err(error_from(call.method, &call.url, response));
        }
        let expected = Digest::of(bytes);
        match header(&response, "docker-content-digest") {
            Some(found) if found != expected.to_string() => Err(RegistryError::DigestMismatch {
                url: call.url,
                expected,
                found,
            }),
            _ => Ok(()),
        }
    }

    /// A call to Harbor's REST API (`/api/v2.0/...`) with Basic credentials; returns status and body.
    pub fn api(
        &self,
        method: &'static str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), RegistryError> {
        let body = json.map(|j| j.to_string().into_bytes()).unwrap_or_default();
        let mut headers = vec![("Accept", "application/json".to_string())];
        if json.is_some() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        let call = Call {
            method,
            url: format!("{}{path}", self.base),
            scopes: Vec::new(),
            headers,
            body: &body,
            auth: AuthMode::Basic,
        };
        let response = self.call(&call)?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_vec()
            .unwrap_or_default();
        Ok((status, bytes))
    }

    /// The `Location` of a response, made absolute.
    fn location(
        &self,
        call: &Call<'_>,
        response: &Response<Body>,
    ) -> Result<String, RegistryError> {
        let location = header(response, "location").ok_or_else(|| {
            RegistryError::Protocol(format!(
                "{} {}: {} without a Location header",
                call.method,
                loggable(&call.url),
                response.status().as_u16()
            ))
        })?;
        if location.starts_with("http://") || location.starts_with("https://") {
            Ok(location)
        } else if location.starts_with('/') {
            Ok(format!("{}{location}", self.base))
        } else {
            Err(RegistryError::Protocol(format!(
                "{} {}: Location {location:?} is not a URL or an absolute path",
                call.method,
                loggable(&call.url)
            )))
        }
    }
}

fn build_agent(options: &ClientOptions) -> Result<ureq::Agent, RegistryError> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder().disable_verification(!options.tls_verify);
    if let Some(path) = &options.ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            RegistryError::Local(format!("cannot read --ca-cert {}: {e}", path.display()))
        })?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(RegistryError::Local(format!(
                "--ca-cert {} holds no PEM certificate",
                path.display()
            )));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    let config = ureq::Agent::config_builder()
        .proxy(proxy_for(&options.endpoint.host))
        .http_status_as_error(false)
        .tls_config(tls.build())
        .max_idle_connections(options.connections.max(1) * 2)
        .max_idle_connections_per_host(options.connections.max(1) * 2)
        .max_redirects(5)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(600)))
        .timeout_per_read(Some(Duration::from_secs(300)))
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// The proxy from `ALL_PROXY` / `HTTPS_PROXY` / `HTTP_PROXY` (and `NO_PROXY`), like skopeo;
/// never one for a loopback registry.
fn proxy_for(host: &str) -> Option<ureq::Proxy> {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return None;
    }
    let proxy = ureq::Proxy::try_from_env();
    if let Some(p) = &proxy {
        crate::debug!(
            "using the proxy at {}:{} from the environment",
            p.host(),
            p.port()
        );
    }
    proxy
}

/// Streams a file while hashing it; refuses to hand over the last bytes when the digest or size is wrong.
struct VerifyingReader<'a> {
    inner: io::Take<File>,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_len: u64,
    seen: u64,
    mismatch: Arc<Mutex<Option<String>>>,
    path: &'a Path,
    on_bytes: &'a (dyn Fn(u64) + Sync),
}

impl Read for VerifyingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        let n = self.inner.read(buf)?;
        hasher.update(&buf[..n]);
        self.seen += n as u64;
        if n > 0 && self.seen < self.expected_len {
            (self.on_bytes)(n as u64);
            return Ok(n);
        }
        let (found, len) = self.hasher.take().expect("hasher present").finish();
        if found != self.expected || len != self.expected_len {
            let message = format!(
                "blob file {} is corrupt: expected {} ({} bytes), found {found} ({len} bytes); upload cancelled",
                self.path.display(),
                self.expected,
                self.expected_len
            );
            *self.mismatch.lock().unwrap() = Some(message.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

/// Reads what is left of an error body so the connection goes back to the pool.
fn drain(response: Response<Body>) {
    let _ = response
        .into_body()
        .with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_vec();
}

fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn is_temporary_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// Turns an error response into a typed error, reading its `{"errors": [...]}` body.
fn error_from(method: &str, url: &str, response: Response<Body>) -> RegistryError {
    let status = response.status().as_u16();
    let retry_after = header(&response, "retry-after")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .into_body()
        .with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_vec()
        .unwrap_or_default();
    RegistryError::Status {
        method: method.to_string(),
        url: loggable(url),
        status,
        errors: RegistryError::parse_errors(&body),
        retry_after,
    }
}

fn transport_error(method: &str, url: &str, host: &str, e: ureq::Error) -> RegistryError {
    let text = e.to_string();
    // rustls errors often arrive wrapped in an io::Error ("io: invalid peer certificate: UnknownIssuer").
    let certificate = matches!(
        e,
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Io(_)
    ) && text.to_ascii_lowercase().contains("certificate");
    if certificate {
        return RegistryError::Certificate {
            host: host.to_string(),
            error: text,
        };
    }
    RegistryError::Transport {
        method: method.to_string(),
        url: loggable(url),
        error: text,
    }
}

/// The host (and port) of an absolute URL.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?']).next().unwrap_or(rest))
}

/// A URL fit for messages: upload-session state parameters are shortened.
fn loggable(url: &str) -> String {
    match url.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.starts_with('_') => format!("{k}=…"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", kept.join("&"))
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_never_use_a_proxy() {
        for host in ["127.0.0.1:5000", "localhost", "[::1]:443", "127.1.2.3"] {
            assert!(proxy_for(host).is_none(), "{host}");
        }
    }

    #[test]
    fn urls_for_messages() {
        assert_eq!(host_of("http://127.0.0.1:5000/v2/"), Some("127.0.0.1:5000"));
        assert_eq!(host_of("https://h?x"), Some("h"));
        assert_eq!(
            loggable("http://h/v2/a/blobs/uploads/u?_state=abc&digest=sha256:1"),
            "http://h/v2/a/blobs/uploads/u?_state=…&digest=sha256:1"
        );
    }

    #[test]
    fn verifying_reader_refuses_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"hello world").unwrap();
        let read_all = |expected: Digest, len: u64| {
            let mismatch = Arc::new(Mutex::new(None));
            let mut r = VerifyingReader {
                inner: File::open(&path).unwrap().take(len),
                hasher: Some(Hasher::new()),
                expected,
                expected_len: len,
                seen: 0,
                mismatch: mismatch.clone(),
                path: &path,
                on_bytes: &|_| {},
            };
            let mut out = Vec::new();
            let res = r.read_to_end(&mut out);
            (res.is_ok(), mismatch.lock().unwrap().clone())
        };
        assert_eq!(read_all(Digest::of(b"hello world"), 11), (true, None));
        let (ok, msg) = read_all(Digest::of(b"hello there"), 11);
        assert!(!ok);
        assert!(msg.unwrap().contains("is corrupt"));
        let (ok, _) = read_all(Digest::of(b"hello world!"), 12);
        assert!(!ok, "a short file must be refused");
    }
}
