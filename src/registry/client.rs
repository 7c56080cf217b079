//! An HTTP client for one registry: ping, auth, retries, and the blob and manifest operations of the distribution API.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use ureq::http::{self, Response};
use ureq::{Body, SendBody};

use super::auth::{Auth, Challenge, Scope};
use super::credentials::{CredentialSource, Credentials};
use super::endpoint::Endpoint;
use super::error::{Brief, RegistryError, retry_after};
use crate::digest::{Digest, Hasher};
use crate::engine::{Fatal, Stop, retries};
use crate::manifest::{MAX_MANIFEST_BYTES, media_type};
use crate::secret::Secret;
use crate::source::BlobFile;

/// Error bodies are read up to this size.
const MAX_ERROR_BODY: u64 = 64 << 10;
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(20);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// Retries of one call stop when the next wait would end later than this after its first try.
const RETRY_BUDGET: Duration = Duration::from_secs(180);
/// Connecting never waits longer than this, even with a longer `--timeout`.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// A liveness ping waits at most this long for an answer.
const PING_TIMEOUT_MAX: Duration = Duration::from_secs(15);
/// Before each ping of a liveness check: an answer to any of them means the destination is there.
const PING_PAUSES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(2),
    Duration::from_secs(5),
];
/// A ping answered this recently stands for the destination being there.
const PING_FRESH: Duration = Duration::from_secs(5);
/// Transport failures in a row, over all workers, that make the next one check liveness first.
const FAILURES_TOGETHER: u32 = 3;

/// How to reach and authenticate to a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub endpoint: Endpoint,
    pub tls_verify: bool,
    pub ca_cert: Option<PathBuf>,
    pub credentials: Option<(Credentials, CredentialSource)>,
    /// Retries of a failed request (connection errors, 5xx, 408, 429).
    pub retries: u32,
    /// No progress for this long fails a request (`--timeout`).
    pub timeout: Duration,
    /// Connections kept open (sized to the number of workers).
    pub connections: usize,
    /// The run's stop switch: retry waits and uploads end when it is set.
    pub stop: Stop,
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
    /// No credentials: a question anyone may ask (Harbor's ping), put to a server that may not
    /// be Harbor and may have asked for tokens only.
    Anonymous,
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
    /// No progress for this long fails a request (connect, each read, each write).
    timeout: Duration,
    health: Health,
    stop: Stop,
    /// Retries made so far, by every thread (each thread's own are in `engine::retries` too).
    retried: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// What the workers of a run learn together about whether the destination is still there.
#[derive(Default)]
struct Health {
    /// Transport failures in a row (any worker, any request) since the last answer, and when the first came.
    failing: Mutex<Option<(SystemTime, u32)>>,
    /// When a ping last got an answer. Held while pinging, so concurrent callers wait for that answer.
    pinged: Mutex<Option<Instant>>,
    /// Set once the destination is found gone: every later call fails with it at once.
    gone: OnceLock<Fatal>,
}

impl Health {
    fn answered(&self) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Records one transport failure; returns how many came in a row and since when.
    fn failed(&self) -> (SystemTime, u32) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failing.get_or_insert((SystemTime::now(), 0));
        entry.1 += 1;
        *entry
    }
}

impl Client {
    /// Builds the client, finds a scheme that answers `/v2/` and learns the auth challenge (a
    /// Basic challenge checks the credentials too; `check_credentials` does for tokens).
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
                timeout: options.timeout,
                health: Health::default(),
                stop: options.stop.clone(),
                retried: AtomicU64::new(0),
            };
            // Only the last scheme to try gets retries: an https probe of a plain-HTTP registry fails fast.
            let last = i + 1 == options.endpoint.schemes.len();
            let probed = if last {
                client.retrying("GET", &format!("{}/v2/", client.base), || client.probe())
            } else {
                client.probe()
            };
            match probed {
                Ok(()) => return Ok(client),
                Err(e @ (RegistryError::Transport { .. } | RegistryError::PlainHttp { .. }))
                    if !last =>
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

    /// Requests retried so far in this run, over every thread.
    pub fn retries(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    pub fn has_credentials(&self) -> bool {
        self.auth.has_credentials()
    }

    /// Asks the token service for a token without scope, as `docker login` does: refused
    /// credentials fail here, before anything is sent.
    pub fn check_credentials(&self) -> Result<(), RegistryError> {
        self.retrying("GET", "the token service", || self.auth.verify(&self.agent))
    }

    /// The actions the destination's token for `repository:<repository>:pull,push` grants there
    /// (from its `access` claim); `None` when it does not use tokens or they do not say.
    pub fn granted(&self, repository: &str) -> Result<Option<Vec<String>>, RegistryError> {
        self.retrying("GET", "the token service", || {
            self.auth.granted(&self.agent, &Scope::push(repository))
        })
    }

    /// "user alice (from …)" or "no credentials", for messages about refusals.
    pub fn who(&self) -> String {
        self.auth.who()
    }

    /// The first `GET /v2/`: learns the challenge and, for Basic, checks the credentials.
    fn probe(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let response = self.send_once("GET", &url, &[], None, SendBody::none(), true)?;
        let status = response.status().as_u16();
        match status {
            200 => Ok(()),
            401 => {
                let header = header(&response, "www-authenticate").unwrap_or_default();
                let challenge = Challenge::parse(&header).ok_or_else(|| {
                    RegistryError::Protocol(format!(
                        "GET {url}: 401 with a challenge ferry cannot answer: {header:?}"
                    ))
                })?;
                self.auth.set_challenge(challenge.clone());
                if challenge == Challenge::Basic && self.auth.has_credentials() {
                    let check = self.send_once(
                        "GET",
                        &url,
                        &[],
                        self.auth.basic(),
                        SendBody::none(),
                        true,
                    )?;
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
            s if is_temporary_status(s) => Err(error_from("GET", &url, response)),
            _ => Err(error_from("GET", &url, response)),
        }
    }

    /// Sends one request; no retries. Status codes are returned, not turned into errors.
    /// `ping` uses the short timeouts of a liveness check.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&'static str, String)],
        authorization: Option<Secret>,
        body: SendBody<'_>,
        ping: bool,
    ) -> Result<Response<Body>, RegistryError> {
        if self.stop.is_stopping() {
            return Err(RegistryError::Stopped);
        }
        let mut builder = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        if let Some(a) = authorization
            && host_of(url) == Some(self.host.as_str())
        {
            // A `Location` on the registry's host but over plain HTTP (a load balancer that
            // does not say it terminates TLS) would carry the credentials in clear.
            if self.base.starts_with("https://")
                && !url.starts_with("https://")
                && !self.auth.plain_http_allowed()
            {
                return Err(RegistryError::Auth(format!(
                    "{method} {}: the registry sent ferry to plain HTTP while it is HTTPS; ferry does not send credentials in clear (fix the registry's external URL, or pass --tls-verify=false to allow plain HTTP)",
                    loggable(url)
                )));
            }
            builder = builder.header("Authorization", a.expose());
        }
        let request = builder.body(body).map_err(|e| {
            RegistryError::Protocol(format!(
                "{method} {}: cannot build the request: {e}",
                loggable(url)
            ))
        })?;
        let timeout = if ping {
            self.ping_timeout()
        } else {
            self.timeout
        };
        let request = self
            .agent
            .configure_request(request)
            .timeout_connect(Some(timeout.min(CONNECT_TIMEOUT_MAX)))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(write_timeout(timeout)))
            .build();
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
                if r.status().as_u16() < 500 {
                    self.health.answered();
                }
                Ok(r)
            }
            Err(_) if self.stop.is_stopping() => Err(RegistryError::Stopped),
            Err(e) => {
                crate::debug!("{method} {} -> error in {ms} ms: {e}", loggable(url));
                Err(transport_error(method, url, &self.host, e, timeout))
            }
        }
    }

    fn ping_timeout(&self) -> Duration {
        self.timeout.min(PING_TIMEOUT_MAX)
    }

    /// Runs `attempt` until it succeeds or fails for good: temporary failures (transport, 5xx, 408,
    /// 429) are retried with backoff within `--retries` and the retry budget, each retry said on
    /// stderr. A stall, the last retry of a transport failure, or several in a row across workers
    /// first ask whether the destination is still there: if a ping fails too, the call (and every
    /// later one) fails with `RegistryError::Gone`. Each retry is counted: in the client's total
    /// and in the calling thread's (`engine::retries`), which the engine gives to the image.
    fn retrying<T>(
        &self,
        method: &str,
        what: &str,
        mut attempt: impl FnMut() -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let started = Instant::now();
        let mut retry = 0;
        loop {
            if let Some(gone) = self.health.gone.get() {
                return Err(RegistryError::Gone(gone.clone()));
            }
            let error = match attempt() {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if self.stop.is_stopping() {
                return Err(RegistryError::Stopped);
            }
            if !error.temporary() {
                return Err(error);
            }
            let last = retry >= self.retries;
            // A gateway in front of a dead registry answers 502/503: that is no answer either.
            let no_answer = matches!(error, RegistryError::Transport { .. })
                || error.status().is_some_and(|s| s >= 500);
            if no_answer {
                let (_, in_a_row) = self.health.failed();
                if error.is_timeout() || last || in_a_row >= FAILURES_TOGETHER {
                    self.confirm_alive(&error)?;
                }
            }
            let delay = self.delay(retry + 1, &error);
            if last || started.elapsed() + delay > RETRY_BUDGET {
                return Err(error);
            }
            retry += 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
            retries::record();
            crate::warn!(
                "{method} {}: {}; retry {retry}/{} in {:.1} s",
                loggable(what),
                Brief(&error),
                self.retries,
                delay.as_secs_f64()
            );
            if self.stop.sleep(delay) {
                return Err(RegistryError::Stopped);
            }
        }
    }

    /// Pings `/v2/` (three tries over a few seconds) after failures that look like no answer: an
    /// answer below 500 means the destination is there and the caller may retry; none (or only
    /// gateway errors) means it is gone, for every caller.
    fn confirm_alive(&self, error: &RegistryError) -> Result<(), RegistryError> {
        let mut pinged = self.health.pinged.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gone) = self.health.gone.get() {
            return Err(RegistryError::Gone(gone.clone()));
        }
        if pinged.is_some_and(|t| t.elapsed() < PING_FRESH) {
            return Ok(());
        }
        let url = format!("{}/v2/", self.base);
        let mut last = String::new();
        for (i, pause) in PING_PAUSES.iter().enumerate() {
            if i > 0 && self.stop.sleep(*pause) {
                return Err(RegistryError::Stopped);
            }
            match self.send_once("GET", &url, &[], None, SendBody::none(), true) {
                Ok(response) if response.status().as_u16() < 500 => {
                    drain(response);
                    *pinged = Some(Instant::now());
                    crate::debug!("{url} answers; the failure was not the destination's death");
                    return Ok(());
                }
                Ok(response) => last = error_from("GET", &url, response).to_string(),
                Err(RegistryError::Stopped) => return Err(RegistryError::Stopped),
                // Silent for the stall timeout and then for a ping too: no need to wait more.
                Err(e) if e.is_timeout() && error.is_timeout() => {
                    last = e.to_string();
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let since = self
            .health
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(since, _)| since)
            .unwrap_or_else(SystemTime::now);
        let detail = match error {
            RegistryError::Transport { error, .. } => error.clone(),
            other => format!("{}", Brief(other)),
        };
        crate::debug!("ping of {url} failed too: {last}");
        let gone = if error.is_timeout() {
            Fatal::Stalled {
                destination: self.host.clone(),
                since,
                timeout: self.timeout,
                error: detail,
            }
        } else {
            Fatal::Unreachable {
                destination: self.host.clone(),
                since,
                error: detail,
            }
        };
        let gone = self.health.gone.get_or_init(|| gone).clone();
        Err(RegistryError::Gone(gone))
    }

    /// Sends a call with a replayable body: auth header, one re-auth on 401, retries with backoff.
    fn call(&self, call: &Call<'_>) -> Result<Response<Body>, RegistryError> {
        self.retrying(call.method, &call.url, || self.attempt(call))
    }

    /// Like `call`, and reads the body (up to `limit` bytes) inside the retries: a connection cut
    /// mid-body is retried like any other transport failure.
    fn call_read(
        &self,
        call: &Call<'_>,
        limit: u64,
    ) -> Result<(http::response::Parts, Vec<u8>), RegistryError> {
        self.retrying(call.method, &call.url, || {
            let response = self.attempt(call)?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .into_with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(|e| {
                    transport_error(call.method, &call.url, &self.host, e, self.timeout)
                })?;
            Ok((parts, bytes))
        })
    }

    /// One try of a call (with one immediate re-auth on 401); temporary statuses come back as errors.
    fn attempt(&self, call: &Call<'_>) -> Result<Response<Body>, RegistryError> {
        let mut reauthed = false;
        loop {
            let authorization = match call.auth {
                AuthMode::Registry => self.auth.header(&self.agent, &call.scopes)?,
                AuthMode::Basic => self.auth.basic(),
                AuthMode::Anonymous => None,
            };
            let mut headers = call.headers.clone();
            if matches!(call.method, "POST" | "PUT" | "PATCH") {
                headers.push(("Content-Length", call.body.len().to_string()));
            }
            let mut bytes = call.body;
            let response = if bytes.is_empty() {
                let none = SendBody::none();
                self.send_once(call.method, &call.url, &headers, authorization, none, false)?
            } else {
                let body = SendBody::from_reader(&mut bytes);
                self.send_once(call.method, &call.url, &headers, authorization, body, false)?
            };
            let status = response.status().as_u16();
            if status == 401 && !reauthed && matches!(call.auth, AuthMode::Registry) {
                reauthed = true;
                self.learn_challenge(&response, &call.scopes);
                drain(response);
                continue;
            }
            if is_temporary_status(status) {
                return Err(error_from(call.method, &call.url, response));
            }
            return Ok(response);
        }
    }

    /// After a 401: adopt a changed challenge and drop the cached token. Harbor answers every
    /// refused request that carried a token (an expired one too) with `Basic realm="harbor"`:
    /// tokens stay the way in, so a Bearer challenge is never traded for Basic.
    fn learn_challenge(&self, response: &Response<Body>, scopes: &[Scope]) {
        let current = self.auth.challenge();
        if let Some(c) = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            && c != current
            && !(c == Challenge::Basic && matches!(current, Challenge::Bearer { .. }))
        {
            self.auth.set_challenge(c);
        }
        self.auth.forget(scopes);
    }

    /// How long to wait before retry number `retry`: the registry's `Retry-After` when it gave
    /// one (capped), else exponential backoff with jitter.
    fn delay(&self, retry: u32, error: &RegistryError) -> Duration {
        if let RegistryError::Status {
            retry_after: Some(d),
            ..
        } = error
        {
            return (*d).min(RETRY_AFTER_MAX);
        }
        let exp = BACKOFF_BASE
            .saturating_mul(1 << retry.min(10))
            .min(BACKOFF_MAX);
        exp.mul_f64(0.5 + fastrand::f64())
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
        let (parts, bytes) = self.call_read(&call, MAX_MANIFEST_BYTES)?;
        Ok(match parts.status.as_u16() {
            200 if !parts.headers.contains_key("link") => {
                #[derive(serde::Deserialize)]
                struct List {
                    tags: Option<Vec<String>>,
                }
                serde_json::from_slice::<List>(&bytes)
                    .map(|l| Tags::Listed(l.tags.unwrap_or_default()))
                    .unwrap_or(Tags::Unlisted)
            }
            404 => Tags::Unknown,
            _ => Tags::Unlisted,
        })
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
        let (parts, bytes) = self.call_read(&call, MAX_MANIFEST_BYTES)?;
        match parts.status.as_u16() {
            200 => Ok(Some(FetchedManifest {
                media_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                bytes,
            })),
            404 => Ok(None),
            _ => Err(status_error(call.method, &call.url, &parts, &bytes)),
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

    /// Opens an upload session (`POST /v2/<repo>/blobs/uploads/`), one try.
    fn start_upload(&self, repository: &str) -> Result<String, RegistryError> {
        let call = self.registry_call(
            "POST",
            format!("/v2/{repository}/blobs/uploads/"),
            vec![Scope::push(repository)],
            Vec::new(),
            &[],
        );
        let response = self.attempt(&call)?;
        match response.status().as_u16() {
            202 => {
                let location = self.location(&call, &response);
                drain(response);
                location
            }
            _ => Err(error_from(call.method, &call.url, response)),
        }
    }

    /// Uploads a blob in one streamed `PUT ?digest=`, hashing on the way: if the bytes do not hash
    /// to `digest` the request is cut before its last byte, so nothing is committed. A failed try
    /// is retried on a fresh session. `session` is a session already opened (by a mount).
    pub fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        blob: &BlobFile,
        mut session: Option<String>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let what = format!("{}/v2/{repository}/blobs/uploads/ ({digest})", self.base);
        let mut reauthed = false;
        self.retrying("PUT", &what, || {
            loop {
                let location = match session.take() {
                    Some(l) => l,
                    None => self.start_upload(repository)?,
                };
                let response =
                    self.put_blob_bytes(repository, digest, blob, &location, on_bytes)?;
                match response.status().as_u16() {
                    201 => {
                        drain(response);
                        return Ok(());
                    }
                    // A token that expired during a long upload: once, renew it and send again.
                    401 if !reauthed => {
                        reauthed = true;
                        self.learn_challenge(&response, &[Scope::push(repository)]);
                        drain(response);
                    }
                    _ => return Err(error_from("PUT", &location, response)),
                }
            }
        })
    }

    /// One `PUT <location>&digest=` streaming the blob's bytes through a verifying reader.
    fn put_blob_bytes(
        &self,
        repository: &str,
        digest: &Digest,
        blob: &BlobFile,
        location: &str,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Response<Body>, RegistryError> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let name = blob.name();
        let file = blob.open().map_err(|e| {
            RegistryError::Local(format!("cannot open blob file {}: {e}", name.display()))
        })?;
        let mismatch = Arc::new(Mutex::new(None));
        let mut reader = VerifyingReader {
            inner: file,
            hasher: Some(Hasher::new()),
            expected: *digest,
            expected_len: blob.len,
            seen: 0,
            mismatch: mismatch.clone(),
            path: &name,
            on_bytes,
            stop: &self.stop,
        };
        let authorization = self.auth.header(&self.agent, &[Scope::push(repository)])?;
        let headers = [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Length", blob.len.to_string()),
        ];
        let outcome = self.send_once(
            "PUT",
            &url,
            &headers,
            authorization,
            SendBody::from_reader(&mut reader),
            false,
        );
        if let Some(m) = mismatch.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(RegistryError::Local(m));
        }
        outcome
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
        self.api_with(method, path, json, &[])
    }

    /// `GET path` of Harbor's REST API without credentials, for what Harbor answers anyone
    /// (`/api/v2.0/ping`): a registry that is not Harbor never gets the Basic credentials.
    pub fn api_anonymous(&self, path: &str) -> Result<(u16, Vec<u8>), RegistryError> {
        self.api_call("GET", path, None, &[], AuthMode::Anonymous)
    }

    /// `api` with extra request headers.
    pub fn api_with(
        &self,
        method: &'static str,
        path: &str,
        json: Option<&serde_json::Value>,
        extra: &[(&'static str, &str)],
    ) -> Result<(u16, Vec<u8>), RegistryError> {
        self.api_call(method, path, json, extra, AuthMode::Basic)
    }

    fn api_call(
        &self,
        method: &'static str,
        path: &str,
        json: Option<&serde_json::Value>,
        extra: &[(&'static str, &str)],
        auth: AuthMode,
    ) -> Result<(u16, Vec<u8>), RegistryError> {
        let body = json.map(|j| j.to_string().into_bytes()).unwrap_or_default();
        let mut headers = vec![("Accept", "application/json".to_string())];
        headers.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        if json.is_some() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        let call = Call {
            method,
            url: format!("{}{path}", self.base),
            scopes: Vec::new(),
            headers,
            body: &body,
            auth,
        };
        let (parts, bytes) = self.call_read(&call, MAX_ERROR_BODY)?;
        let status = parts.status.as_u16();
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
        .timeout_connect(Some(options.timeout.min(CONNECT_TIMEOUT_MAX)))
        .timeout_per_read(Some(options.timeout))
        .timeout_per_write(Some(write_timeout(options.timeout)))
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// The per-write limit that gives up a write after about `timeout` without progress. A blocked
/// socket write that copied some bytes returns them when its limit runs out, and the writer
/// tries again; a peer that stops reading is only noticed after two or three such writes
/// (measured on loopback: 1.5 × the limit at half of it), so each gets a third.
fn write_timeout(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(500))
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
    /// A stopping run cuts the upload at the next read.
    stop: &'a Stop,
}

impl Read for VerifyingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        if self.stop.is_stopping() {
            return Err(io::Error::other("the run is stopping; upload cut short"));
        }
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
    let (parts, body) = response.into_parts();
    let bytes = body
        .into_with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_vec()
        .unwrap_or_default();
    status_error(method, url, &parts, &bytes)
}

/// A typed error from an answer whose body was already read.
fn status_error(
    method: &str,
    url: &str,
    parts: &http::response::Parts,
    body: &[u8],
) -> RegistryError {
    let retry_after = parts
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, SystemTime::now()));
    RegistryError::Status {
        method: method.to_string(),
        url: loggable(url),
        status: parts.status.as_u16(),
        errors: RegistryError::parse_errors(body),
        retry_after,
    }
}

/// A request that got no answer, typed: an untrusted certificate, a stall, or a connection failure.
pub(crate) fn transport_error(
    method: &str,
    url: &str,
    host: &str,
    e: ureq::Error,
    timeout: Duration,
) -> RegistryError {
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
    // rustls reading an HTTP answer where a TLS record should be.
    if url.starts_with("https://") && text.contains("InvalidContentType") {
        return RegistryError::PlainHttp {
            host: host.to_string(),
        };
    }
    let stalled = match &e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ),
        _ => false,
    };
    let error = if stalled {
        format!("no progress for {} s ({text})", timeout.as_secs())
    } else {
        text
    };
    RegistryError::Transport {
        method: method.to_string(),
        url: loggable(url),
        error,
        timeout: stalled,
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
            let stop = Stop::new();
            let mut r = VerifyingReader {
                inner: File::open(&path).unwrap().take(len),
                hasher: Some(Hasher::new()),
                expected,
                expected_len: len,
                seen: 0,
                mismatch: mismatch.clone(),
                path: &path,
                on_bytes: &|_| {},
                stop: &stop,
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
