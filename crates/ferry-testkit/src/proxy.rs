//! A counting HTTP proxy in front of a real docker-registry, with injectable failures and an optional
//! **Harbor API double**.
//!
//! Every request is forwarded to the registry (bodies streamed both ways, headers passed,
//! `X-Forwarded-Host` set so Distribution builds `Location` URLs that point back at the proxy)
//! and recorded: method, path, query, status, how the body was framed. Tests count upload
//! sessions, mounts, blob PUTs and blob bytes from that log; `GET /_testkit/counts` answers those
//! counts as JSON (for benchmarks run from a shell through `ferry-testkit proxy`).
//!
//! With [`HarborDouble`] configured, the proxy also answers a few endpoints of Harbor 2.x's
//! `/api/v2.0` (shapes from Harbor's `api/v2.0/swagger.yaml`): `GET /ping` ("Pong"),
//! `GET /systeminfo`, `HEAD /projects?project_name=X` (200/404), and `POST /projects`
//! (201 created / 409 exists / 400 bad name / 401 without valid Basic credentials / 403 for a
//! non-admin user). Like Harbor, it refuses writes under `/v2/<project>/...` while the project
//! does not exist (404 `NOT_FOUND`). It is a double: nothing else of Harbor is there.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};
use ureq::http;
use ureq::{Agent, SendBody};

use crate::auth::{User, check_basic, form_pairs};

/// What the proxy saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The status sent back to the client.
    pub status: u16,
    /// The request's `Content-Length` header.
    pub content_length: Option<u64>,
    /// Whether the request body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
    /// Whether this answer was an injected failure (not forwarded).
    pub injected: bool,
}

impl RequestRecord {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `POST /v2/<repo>/blobs/uploads/` (with or without `mount=`).
    pub fn is_upload_post(&self) -> bool {
        self.method == "POST"
            && self.path.starts_with("/v2/")
            && self.path.ends_with("/blobs/uploads/")
    }

    /// An upload session was opened: a plain POST answered 202, or a mount the registry answered 202.
    pub fn opened_upload_session(&self) -> bool {
        self.is_upload_post() && self.status == 202
    }

    /// A cross-repository mount that succeeded (201).
    pub fn is_mount(&self) -> bool {
        self.is_upload_post() && self.param("mount").is_some() && self.status == 201
    }

    /// A blob upload finished: `PUT .../blobs/uploads/<id>?digest=` answered 201. The digest, then.
    pub fn completed_upload(&self) -> Option<&str> {
        (self.method == "PUT" && self.path.contains("/blobs/uploads/") && self.status == 201)
            .then(|| self.param("digest"))
            .flatten()
    }

    /// Blob bytes for an upload session (`PUT` or `PATCH .../blobs/uploads/<id>`), forwarded to the registry.
    pub fn is_upload_data(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "PATCH")
            && self.path.contains("/blobs/uploads/")
            && !self.injected
    }

    /// The repository named in a `/v2/<repo>/(blobs|manifests|tags)/...` path.
    pub fn repository(&self) -> Option<&str> {
        repository_of(&self.path)
    }
}

/// The Harbor API double's accounts and projects.
#[derive(Debug, Clone)]
pub struct HarborDouble {
    /// Accounts the API accepts with Basic credentials.
    pub users: Vec<User>,
    /// Which of them may create projects (Harbor's "system admin"); others get 403.
    pub admins: Vec<String>,
    /// Projects that exist from the start (Harbor ships with `library`).
    pub projects: Vec<String>,
}

impl HarborDouble {
    /// One admin account and the `library` project.
    pub fn with_admin(user: &str, password: &str) -> HarborDouble {
        HarborDouble {
            users: vec![User::new(user, password)],
            admins: vec![user.to_string()],
            projects: vec!["library".to_string()],
        }
    }
}

/// A project created through the double's `POST /api/v2.0/projects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedProject {
    pub name: String,
    /// `metadata.public` as sent.
    pub public: Option<String>,
    /// The account that created it.
    pub by: String,
}

/// Decides from (method, path) whether a fault applies to a request.
type Matcher = Box<dyn Fn(&str, &str) -> bool + Send>;

struct Fault {
    remaining: usize,
    status: u16,
    matches: Matcher,
}

struct State {
    backend: String,
    agent: Agent,
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Vec<Fault>>,
    harbor: Option<Mutex<HarborState>>,
}

struct HarborState {
    config: HarborDouble,
    projects: BTreeSet<String>,
    created: Vec<CreatedProject>,
    /// Every API call: (method, path, status).
    api_calls: Vec<(String, String, u16)>,
}

/// A proxy on 127.0.0.1 in front of `backend`; stops when dropped.
pub struct Proxy {
    port: u16,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<State>,
}

impl Proxy {
    /// A counting proxy in front of the registry at `backend` (`http://127.0.0.1:PORT`).
    pub fn start(backend: &str) -> Result<Proxy> {
        Proxy::start_with(backend, None)
    }

    /// A proxy that also plays Harbor's project API.
    pub fn harbor(backend: &str, double: HarborDouble) -> Result<Proxy> {
        Proxy::start_with(backend, Some(double))
    }

    fn start_with(backend: &str, harbor: Option<HarborDouble>) -> Result<Proxy> {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| anyhow::anyhow!("proxy cannot listen: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .context("proxy address")?
            .port();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let state = Arc::new(State {
            backend: backend.trim_end_matches('/').to_string(),
            agent,
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            harbor: harbor.map(|config| {
                Mutex::new(HarborState {
                    projects: config.projects.iter().cloned().collect(),
                    config,
                    created: Vec::new(),
                    api_calls: Vec::new(),
                })
            }),
        });
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stop, state) = (server.clone(), stop.clone(), state.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(request) = server.recv() else { break };
                    let state = state.clone();
                    thread::spawn(move || handle(request, &state));
                }
            })
        };
        Ok(Proxy {
            port,
            server,
            stop,
            thread: Some(thread),
            state,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Every request seen so far, in the order they were answered.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.log.lock().unwrap().clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state.log.lock().unwrap().clear();
    }

    /// Answers the next `count` requests for which `matches(method, path)` holds with `status`
    /// (and a registry error body), without forwarding them.
    pub fn fail_next(
        &self,
        count: usize,
        status: u16,
        matches: impl Fn(&str, &str) -> bool + Send + 'static,
    ) {
        self.state.faults.lock().unwrap().push(Fault {
            remaining: count,
            status,
            matches: Box::new(matches),
        });
    }

    /// Harbor double: projects that exist now.
    pub fn projects(&self) -> BTreeSet<String> {
        self.with_harbor(|h| h.projects.clone())
    }

    /// Harbor double: projects created through the API, in order.
    pub fn created_projects(&self) -> Vec<CreatedProject> {
        self.with_harbor(|h| h.created.clone())
    }

    /// Harbor double: every `/api/v2.0` call as (method, path with query, status).
    pub fn api_calls(&self) -> Vec<(String, String, u16)> {
        self.with_harbor(|h| h.api_calls.clone())
    }

    fn with_harbor<T>(&self, f: impl FnOnce(&HarborState) -> T) -> T {
        let h = self
            .state
            .harbor
            .as_ref()
            .expect("this proxy has no Harbor double");
        f(&h.lock().unwrap())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header_value(request: &tiny_http::Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

/// `GET` here answers [`upload_counts`] of the log so far, as JSON.
pub const COUNTS_PATH: &str = "/_testkit/counts";

/// `/v2/<repo>/blobs/...` → `<repo>`.
pub fn repository_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map(|i| &rest[..i])
}

fn handle(mut request: tiny_http::Request, state: &State) {
    let method = request.method().as_str().to_uppercase();
    let url = request.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.clone(), String::new()),
    };
    let mut record = RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: form_pairs(&query),
        status: 0,
        content_length: header_value(&request, "Content-Length").and_then(|v| v.parse().ok()),
        chunked: header_value(&request, "Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked")),
        authorization: header_value(&request, "Authorization").is_some(),
        injected: false,
    };

    let injected = {
        let mut faults = state.faults.lock().unwrap();
        faults
            .iter_mut()
            .find(|f| f.remaining > 0 && (f.matches)(&method, &path))
            .map(|f| {
                f.remaining -= 1;
                f.status
            })
    };
    // Benchmarks in shell read the counts here (`ferry-testkit proxy`); not a registry path, not logged.
    if injected.is_none() && method == "GET" && path == COUNTS_PATH {
        let counts = upload_counts(&state.log.lock().unwrap());
        let body = serde_json::to_string(&counts).expect("counts serialise");
        respond_json(request, 200, &body, |_| {});
        return;
    }
    record.injected = injected.is_some();
    if injected.is_some() {
        let _ = io::copy(&mut request.as_reader(), &mut io::sink());
    }
    let harbor_reply = match (&state.harbor, injected) {
        (Some(harbor), None) => harbor_answer(&mut request, harbor, &method, &path, &record),
        _ => None,
    };
    // The log gets the record before the client gets its answer, so a client that reads the log
    // after an answer finds that request in it.
    let done = move |status: u16| {
        let mut record = record;
        record.status = status;
        state.log.lock().unwrap().push(record);
    };
    match (injected, harbor_reply) {
        (Some(status), _) => respond_json(
            request,
            status,
            r#"{"errors":[{"code":"UNAVAILABLE","message":"ferry-testkit proxy: injected failure"}]}"#,
            done,
        ),
        (None, Some((status, body))) => respond_json(request, status, &body, done),
        (None, None) => forward(request, state, &method, &url, done),
    }
}

/// Answers with a JSON body; `done(status)` runs just before the answer is sent.
fn respond_json(request: tiny_http::Request, status: u16, body: &str, done: impl FnOnce(u16)) {
    let header =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap();
    done(status);
    let _ = request.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header),
    );
}

/// The Harbor double's answer, or `None` to forward the request to the registry.
fn harbor_answer(
    request: &mut tiny_http::Request,
    harbor: &Mutex<HarborState>,
    method: &str,
    path: &str,
    record: &RequestRecord,
) -> Option<(u16, String)> {
    let err = |code: &str, message: &str| {
        serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string()
    };
    if let Some(repo) = repository_of(path) {
        // Harbor refuses writes into a project that does not exist.
        if matches!(method, "POST" | "PUT" | "PATCH") {
            let project = repo.split('/').next().unwrap_or(repo);
            if !harbor.lock().unwrap().projects.contains(project) {
                let _ = io::copy(&mut request.as_reader(), &mut io::sink());
                let msg = format!("project {project} not found");
                return Some((404, err("NOT_FOUND", &msg)));
            }
        }
        return None;
    }
    let api = path.strip_prefix("/api/v2.0")?;
    let mut body = Vec::new();
    let _ = request.as_reader().take(1 << 20).read_to_end(&mut body);
    let authorization = header_value(request, "Authorization");
    let mut h = harbor.lock().unwrap();
    let user = check_basic(authorization.as_deref(), &h.config.users).map(|u| u.name.clone());
    let (status, reply) = match (method, api) {
        ("GET", "/ping") => (200, "Pong".to_string()),
        ("GET", "/systeminfo") => (
            200,
            serde_json::json!({"harbor_version": "ferry-testkit Harbor double", "auth_mode": "db_auth"})
                .to_string(),
        ),
        ("HEAD", "/projects") => match record.param("project_name") {
            Some(name) if h.projects.contains(name) => (200, String::new()),
            Some(_) => (404, String::new()),
            None => (400, err("BAD_REQUEST", "project_name is required")),
        },
        ("POST", "/projects") => {
            let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            let name = parsed
                .as_ref()
                .and_then(|v| v.get("project_name"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let public = parsed
                .as_ref()
                .and_then(|v| v.pointer("/metadata/public"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            match (user, name) {
                (None, _) => (401, err("UNAUTHORIZED", "UnAuthorized")),
                (Some(u), _) if !h.config.admins.contains(&u) => (
                    403,
                    err("FORBIDDEN", "Only system admin can create project"),
                ),
                (Some(_), None) => (400, err("BAD_REQUEST", "project_name is required")),
                (Some(_), Some(n)) if !harbor_project_name_ok(&n) => {
                    (400, err("BAD_REQUEST", &format!("invalid project name {n:?}")))
                }
                (Some(_), Some(n)) if h.projects.contains(&n) => (
                    409,
                    err("CONFLICT", &format!("The project named {n} already exists")),
                ),
                (Some(u), Some(n)) => {
                    h.projects.insert(n.clone());
                    h.created.push(CreatedProject {
                        name: n,
                        public,
                        by: u,
                    });
                    (201, String::new())
                }
            }
        }
        _ => (404, err("NOT_FOUND", "not served by the ferry-testkit Harbor double")),
    };
    let full = if record.query.is_empty() {
        path.to_string()
    } else {
        format!(
            "{path}?{}",
            request.url().split_once('?').map(|x| x.1).unwrap_or("")
        )
    };
    h.api_calls.push((method.to_string(), full, status));
    Some((status, reply))
}

/// Harbor's project name rule: `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`, 1 to 255 characters.
fn harbor_project_name_ok(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 255
        && name
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.chars().all(alnum))
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "expect",
    "accept-encoding",
    "proxy-connection",
];

/// Forwards a request to the registry and streams its answer back; returns the status.
/// Forwards to the registry and streams its answer back; `done(status)` runs just before that.
fn forward(
    mut request: tiny_http::Request,
    state: &State,
    method: &str,
    url: &str,
    done: impl FnOnce(u16),
) {
    let host = header_value(&request, "Host").unwrap_or_default();
    let content_length =
        header_value(&request, "Content-Length").and_then(|v| v.parse::<u64>().ok());
    let chunked = header_value(&request, "Transfer-Encoding").is_some();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("{}{url}", state.backend));
    for h in request.headers() {
        let name = h.field.as_str().as_str();
        if HOP_BY_HOP.iter().any(|x| name.eq_ignore_ascii_case(x)) {
            continue;
        }
        builder = builder.header(name, h.value.as_str());
    }
    builder = builder
        .header("X-Forwarded-Host", host)
        .header("X-Forwarded-Proto", "http");
    let has_body = content_length.is_some_and(|n| n > 0) || chunked;
    if let Some(n) = content_length.filter(|&n| n > 0) {
        builder = builder.header("Content-Length", n.to_string());
    } else if !has_body && matches!(method, "POST" | "PUT" | "PATCH") {
        builder = builder.header("Content-Length", "0");
    }
    let result = if has_body {
        let mut reader = request.as_reader();
        match builder.body(SendBody::from_reader(&mut reader)) {
            Ok(r) => state.agent.run(r).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    } else {
        match builder.body(SendBody::none()) {
            Ok(r) => state.agent.run(r).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let body = serde_json::json!({"errors": [{"code": "UNAVAILABLE", "message": format!("ferry-testkit proxy: backend failed: {e}")}]});
            return respond_json(request, 502, &body.to_string(), done);
        }
    };
    let status = response.status().as_u16();
    let mut headers = Vec::new();
    let mut length = None;
    for (name, value) in response.headers() {
        if name.as_str().eq_ignore_ascii_case("content-length") {
            length = value.to_str().ok().and_then(|v| v.parse::<usize>().ok());
            continue;
        }
        if HOP_BY_HOP
            .iter()
            .any(|x| name.as_str().eq_ignore_ascii_case(x))
        {
            continue;
        }
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_str().as_bytes(), value.as_bytes()) {
            headers.push(h);
        }
    }
    let reader: Box<dyn Read> = if method == "HEAD" {
        Box::new(io::empty())
    } else {
        Box::new(response.into_body().into_reader())
    };
    let mut out = tiny_http::Response::new(status.into(), headers, reader, length, None);
    // Keep Content-Length on big bodies (and on HEAD) instead of switching to chunked.
    out = out.with_chunked_threshold(usize::MAX);
    done(status);
    let _ = request.respond(out);
}

/// Sums of a request log that tests and benchmarks look at.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploadCounts {
    /// Upload sessions opened (POST answered 202, mount or not).
    pub sessions: usize,
    /// Mounts answered 201.
    pub mounts: usize,
    /// Completed blob uploads per digest.
    pub completed: BTreeMap<String, usize>,
    /// Blob bytes sent to the registry: the `Content-Length` of every forwarded upload `PUT`/`PATCH`.
    pub bytes: u64,
}

/// Counts upload sessions, mounts and completed uploads in `log`.
pub fn upload_counts(log: &[RequestRecord]) -> UploadCounts {
    let mut c = UploadCounts::default();
    for r in log {
        if r.opened_upload_session() {
            c.sessions += 1;
        }
        if r.is_mount() {
            c.mounts += 1;
        }
        if let Some(d) = r.completed_upload() {
            *c.completed.entry(d.to_string()).or_default() += 1;
        }
        if r.is_upload_data() {
            c.bytes += r.content_length.unwrap_or(0);
        }
    }
    c
}
