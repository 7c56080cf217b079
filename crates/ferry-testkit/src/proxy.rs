//! A counting HTTP proxy in front of a real docker-registry, with injectable failures and a hook
//! that lets a double (the Harbor double, [`crate::harbor`]) answer or watch each request.
//!
//! Every request is forwarded to the registry (bodies streamed both ways, headers passed,
//! `X-Forwarded-Host` set so Distribution builds `Location` URLs that point back at the proxy)
//! and recorded: method, path, query, status, how the body was framed. Tests count upload
//! sessions, mounts, blob PUTs and blob bytes from that log; `GET /_testkit/counts` answers those
//! counts as JSON (for benchmarks run from a shell through `ferry-testkit proxy`). A request is
//! logged before its answer is sent. Forwarded requests have connect and overall timeouts; the
//! accept loop ends when the proxy drops.

use std::any::Any;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};
use ureq::http;
use ureq::{Agent, SendBody};

use crate::auth::form_pairs;

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
    /// Its scheme (`Basic`, `Bearer`), when it did.
    pub auth_scheme: Option<String>,
    /// The header's value after the scheme (the base64 of `user:password`, or the token):
    /// tests check what the registry received.
    pub credential: Option<String>,
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

/// Decides from (method, path) whether a fault applies to a request.
type Matcher = Box<dyn Fn(&str, &str) -> bool + Send>;

struct Fault {
    remaining: usize,
    reply: Reply,
    matches: Matcher,
}

/// An answer the proxy sends itself, without asking the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }
}

/// One request as a hook sees it. The body is still unread: a hook reads it only when it must
/// (manifests, API calls), so blob uploads stream through untouched.
pub(crate) struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string as sent (without `?`).
    pub raw_query: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub body: &'a mut dyn Read,
}

impl Incoming<'_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Reads the whole body, up to `limit` bytes.
    pub fn read_body(&mut self, limit: u64) -> Vec<u8> {
        let mut body = Vec::new();
        let _ = self.body.take(limit).read_to_end(&mut body);
        body
    }
}

/// What the registry answered to a forwarded request (its body is not read).
pub(crate) struct Answered {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Answered {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a hook does with the registry's answer: pass it on (with extra headers) or replace it.
pub(crate) enum AfterAction {
    Pass(Vec<(String, String)>),
    Replace(Reply),
}

/// Runs once the registry has answered a forwarded request.
pub(crate) type After = Box<dyn FnOnce(&Answered) -> AfterAction + Send>;

/// A hook's decision about one request.
pub(crate) enum Decision {
    /// Answer without asking the registry.
    Answer(Reply),
    /// Forward to the registry; `body` replaces the request body when the hook had to read it.
    Forward {
        body: Option<Vec<u8>>,
        after: Option<After>,
    },
}

impl Decision {
    pub fn forward() -> Decision {
        Decision::Forward {
            body: None,
            after: None,
        }
    }
}

/// A double in front of the registry: sees every request that is not an injected failure.
pub(crate) trait Hook: Send + Sync {
    fn decide(&self, request: Incoming<'_>) -> Decision;
    /// For the double's own accessors on [`Proxy`].
    fn as_any(&self) -> &dyn Any;
}

struct State {
    backend: String,
    agent: Agent,
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Vec<Fault>>,
    hook: Option<Arc<dyn Hook>>,
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
        Proxy::start_hooked(backend, |_| None)
    }

    /// A proxy whose hook is made once its URL (`http://127.0.0.1:PORT`) is known.
    pub(crate) fn start_hooked(
        backend: &str,
        make_hook: impl FnOnce(&str) -> Option<Arc<dyn Hook>>,
    ) -> Result<Proxy> {
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
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let state = Arc::new(State {
            backend: backend.trim_end_matches('/').to_string(),
            agent,
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            hook: make_hook(&format!("http://127.0.0.1:{port}")),
        });
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        nudge_connections(port, stop.clone());
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

    /// Runs `f` on the requests seen so far without copying the log (for tests that poll it
    /// often); requests wait for their answer while it runs.
    pub fn inspect_requests<T>(&self, f: impl FnOnce(&[RequestRecord]) -> T) -> T {
        f(&self.state.log.lock().unwrap())
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
        let reply = Reply::new(status).body(
            "application/json",
            r#"{"errors":[{"code":"UNAVAILABLE","message":"ferry-testkit proxy: injected failure"}]}"#,
        );
        self.state.faults.lock().unwrap().push(Fault {
            remaining: count,
            reply,
            matches: Box::new(matches),
        });
    }

    /// Answers the next `count` requests for which `matches(method, path)` holds with `status`,
    /// `headers` and `body` (JSON), without forwarding them: an answer some server gives that the
    /// registry behind the proxy would not.
    pub fn answer_next(
        &self,
        count: usize,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        matches: impl Fn(&str, &str) -> bool + Send + 'static,
    ) {
        let mut reply = Reply::new(status).body("application/json", body);
        for (k, v) in headers {
            reply = reply.header(k, v);
        }
        self.state.faults.lock().unwrap().push(Fault {
            remaining: count,
            reply,
            matches: Box::new(matches),
        });
    }

    /// The hook, for the double that installed it.
    pub(crate) fn hook(&self) -> Option<&dyn Hook> {
        self.state.hook.as_deref()
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

/// Works around a race in tiny_http 0.12's thread pool: when two connections arrive while one
/// worker is idle, both are queued on that one worker, which takes the first and keeps it for the
/// connection's whole keep-alive life; the second waits, unread, until some worker ends a
/// connection. Seen as a request answered only after the client's 60 s read timeout (two
/// `tags/list` requests sat in the proxy's socket buffers with no thread reading them, while
/// the same runs straight at the registry never stalled). A connection opened and closed here
/// every 200 ms makes the pool run a task that ends at once, so a worker comes back for the
/// queue.
fn nudge_connections(port: u16, stop: Arc<AtomicBool>) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(200));
            let _ = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1));
        }
    });
}

fn header_value(request: &tiny_http::Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

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
        auth_scheme: header_value(&request, "Authorization")
            .and_then(|a| a.split_whitespace().next().map(str::to_string)),
        credential: header_value(&request, "Authorization")
            .and_then(|a| a.split_once(' ').map(|(_, v)| v.trim().to_string())),
        injected: false,
    };

    let injected = {
        let mut faults = state.faults.lock().unwrap();
        faults
            .iter_mut()
            .find(|f| f.remaining > 0 && (f.matches)(&method, &path))
            .map(|f| {
                f.remaining -= 1;
                f.reply.clone()
            })
    };
    // Benchmarks in shell read the counts here (`ferry-testkit proxy`); not a registry path, not logged.
    if injected.is_none() && method == "GET" && path == COUNTS_PATH {
        let counts = upload_counts(&state.log.lock().unwrap());
        let body = serde_json::to_string(&counts).expect("counts serialise");
        respond(
            request,
            Reply::new(200).body("application/json", body),
            |_| {},
        );
        return;
    }
    record.injected = injected.is_some();
    // The log gets the record before the client gets its answer, so a client that reads the log
    // right after an answer finds that request in it.
    let logged = |record: RequestRecord| {
        move |status: u16| {
            let mut record = record;
            record.status = status;
            state.log.lock().unwrap().push(record);
        }
    };
    if let Some(reply) = injected {
        let _ = io::copy(&mut request.as_reader(), &mut io::sink());
        respond(request, reply, logged(record))
    } else if let Some(hook) = &state.hook {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
            .collect();
        let decision = hook.decide(Incoming {
            method: &method,
            path: &path,
            raw_query: &query,
            query: &record.query,
            headers: &headers,
            body: request.as_reader(),
        });
        match decision {
            Decision::Answer(reply) => {
                // The client may still be sending a body nobody read.
                let _ = io::copy(&mut request.as_reader().take(64 << 20), &mut io::sink());
                respond(request, reply, logged(record))
            }
            Decision::Forward { body, after } => {
                forward(request, state, &method, &url, body, after, logged(record))
            }
        }
    } else {
        forward(request, state, &method, &url, None, None, logged(record))
    }
}

/// `GET` here answers [`upload_counts`] of the log so far, as JSON.
pub const COUNTS_PATH: &str = "/_testkit/counts";

/// Sends `reply`; `done(status)` runs just before.
fn respond(request: tiny_http::Request, reply: Reply, done: impl FnOnce(u16)) {
    let status = reply.status;
    let mut response = tiny_http::Response::from_data(reply.body).with_status_code(status);
    for (name, value) in &reply.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    done(status);
    let _ = request.respond(response);
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

/// Forwards a request to the registry and streams its answer back (unless `after` replaces it);
/// `done(status)` runs just before the answer is sent.
#[allow(clippy::too_many_arguments)]
fn forward(
    mut request: tiny_http::Request,
    state: &State,
    method: &str,
    url: &str,
    replaced_body: Option<Vec<u8>>,
    after: Option<After>,
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
    let content_length = match &replaced_body {
        Some(b) => Some(b.len() as u64),
        None => content_length,
    };
    let has_body = content_length.is_some_and(|n| n > 0) || (chunked && replaced_body.is_none());
    if let Some(n) = content_length.filter(|&n| n > 0) {
        builder = builder.header("Content-Length", n.to_string());
    } else if !has_body && matches!(method, "POST" | "PUT" | "PATCH") {
        builder = builder.header("Content-Length", "0");
    }
    let result = if let Some(bytes) = replaced_body.filter(|b| !b.is_empty()) {
        match builder.body(bytes) {
            Ok(r) => state.agent.run(r).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    } else if has_body {
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
            let mut reply = Reply::new(502).body("application/json", body.to_string());
            if let Some(after) = after {
                let answered = Answered {
                    status: 502,
                    headers: reply.headers.clone(),
                };
                if let AfterAction::Replace(r) = after(&answered) {
                    reply = r;
                }
            }
            return respond(request, reply, done);
        }
    };
    let status = response.status().as_u16();
    let mut extra = Vec::new();
    if let Some(after) = after {
        let answered = Answered {
            status,
            headers: response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
        };
        match after(&answered) {
            AfterAction::Replace(reply) => {
                let _ = io::copy(
                    &mut response.into_body().into_reader().take(64 << 20),
                    &mut io::sink(),
                );
                return respond(request, reply, done);
            }
            AfterAction::Pass(headers) => extra = headers,
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &extra {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            headers.push(h);
        }
    }
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
