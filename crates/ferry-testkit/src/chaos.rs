//! A TCP relay on loopback that injects seeded random faults into the HTTP/1.1 requests it passes
//! on: connections cut mid request body or mid answer, 5xx answers and 429s with `Retry-After`.
//!
//! It sits in front of a [`crate::Proxy`] (which logs what reaches the registry): clients talk to
//! [`Chaos::url`]. The relay reads each request's head and frames its body (`Content-Length` or
//! chunked) and the answer's, so it knows where every request on a kept-alive connection starts.
//! Only `/v2/<something>` requests are faulted; `GET /v2/` (the first probe, liveness pings) never
//! is. Which fault hits a request depends only on the seed, its method, its path (an upload
//! session's id left out; a blob upload's `digest=` or a mount's `mount=` put in) and how many
//! requests with the same method and path came before it: the same seed gives the same faults to
//! the same run, whatever the interleaving of unrelated requests. Every fault is logged
//! ([`Chaos::faults`]) before the client can see it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::auth::form_pairs;

/// How often each fault is injected, in percent of faultable requests, and the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChaosSpec {
    pub seed: u64,
    /// The connection is closed mid request body (requests with a body, half the time) or mid
    /// answer (the request reached the registry; the client never gets the whole answer).
    pub cut_percent: u64,
    /// 500, 502 or 503 with a registry error body.
    pub server_error_percent: u64,
    /// 429 with `Retry-After`: `1` half the time, an HTTP date about 1 s ahead the other half.
    pub throttle_percent: u64,
}

impl ChaosSpec {
    /// 5 % of each kind.
    pub fn new(seed: u64) -> ChaosSpec {
        ChaosSpec {
            seed,
            cut_percent: 5,
            server_error_percent: 5,
            throttle_percent: 5,
        }
    }
}

/// What the relay did to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Closed after part of the request body; nothing was forwarded.
    CutRequest,
    /// Forwarded; the answer was cut after part of it (its head, or half its body).
    CutAnswer,
    /// Answered 500, 502 or 503 without forwarding.
    ServerError(u16),
    /// Answered 429 with `Retry-After: 1`.
    ThrottledSeconds,
    /// Answered 429 with `Retry-After: <IMF-fixdate about 1 s ahead>`.
    ThrottledDate,
}

impl FaultKind {
    /// A short name for tables: `cut-request`, `cut-answer`, `5xx`, `429-seconds`, `429-date`.
    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::CutRequest => "cut-request",
            FaultKind::CutAnswer => "cut-answer",
            FaultKind::ServerError(_) => "5xx",
            FaultKind::ThrottledSeconds => "429-seconds",
            FaultKind::ThrottledDate => "429-date",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// For [`FaultKind::CutAnswer`]: the status the registry (through the proxy) answered.
    pub forwarded_status: Option<u16>,
}

impl FaultRecord {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A blob upload the registry completed although the client never got its answer: the
    /// digest of a `PUT .../blobs/uploads/<id>?digest=` whose 201 was cut.
    pub fn completed_unseen(&self) -> Option<&str> {
        (self.kind == FaultKind::CutAnswer
            && self.method == "PUT"
            && self.path.contains("/blobs/uploads/")
            && self.forwarded_status == Some(201))
        .then(|| self.param("digest"))
        .flatten()
    }
}

struct Shared {
    upstream: String,
    spec: ChaosSpec,
    /// Requests seen per (method, normalised path), for the seeded decision.
    seen: Mutex<HashMap<String, u64>>,
    log: Mutex<Vec<FaultRecord>>,
}

/// The relay on 127.0.0.1; stops accepting when dropped.
pub struct Chaos {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// Every socket read or write gives up after this long without progress.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Request and answer heads are at most this long.
const MAX_HEAD: usize = 64 << 10;

impl Chaos {
    /// A relay in front of `upstream` (`http://127.0.0.1:PORT` or `127.0.0.1:PORT`).
    pub fn start(upstream: &str, spec: ChaosSpec) -> Result<Chaos> {
        let listener = TcpListener::bind("127.0.0.1:0").context("chaos relay cannot listen")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            spec,
            seen: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, shared) = (stop.clone(), shared.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let shared = shared.clone();
                    thread::spawn(move || {
                        let _ = relay(client, &shared);
                    });
                }
            })
        };
        Ok(Chaos {
            port,
            stop,
            thread: Some(thread),
            shared,
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

    /// Every fault injected so far, in order.
    pub fn faults(&self) -> Vec<FaultRecord> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the faults and the per-request counts (the next run starts from the seed again).
    pub fn reset(&self) {
        self.shared.log.lock().unwrap().clear();
        self.shared.seen.lock().unwrap().clear();
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request or answer head, parsed as far as framing needs.
struct Head {
    bytes: Vec<u8>,
    /// Request: method and target. Answer: status in `status`.
    method: String,
    target: String,
    status: u16,
    length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// Reads a head (up to the blank line); `None` at a clean end of stream before any byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut bytes = Vec::new();
    loop {
        let before = bytes.len();
        let n = r.take(MAX_HEAD as u64).read_until(b'\n', &mut bytes)?;
        if n == 0 {
            if before == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if bytes.len() > MAX_HEAD {
            return Err(io::Error::other("head too long"));
        }
        let line = &bytes[before..];
        if (line == b"\r\n" || line == b"\n") && before > 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (a, b) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut head = Head {
        bytes,
        method: String::new(),
        target: String::new(),
        status: 0,
        length: None,
        chunked: false,
        close: false,
    };
    if a.starts_with("HTTP/") {
        head.status = b.parse().unwrap_or(0);
    } else {
        head.method = a.to_ascii_uppercase();
        head.target = b.to_string();
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            head.length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(head))
}

/// Copies exactly `n` bytes.
fn copy_exact(r: &mut impl Read, w: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), w)?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Copies a chunked body as it is, trailers included.
fn copy_chunked(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<()> {
    loop {
        let mut line = Vec::new();
        r.take(4096).read_until(b'\n', &mut line)?;
        w.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        let size = text.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {text:?}")))?;
        if size == 0 {
            loop {
                let mut trailer = Vec::new();
                let n = r.take(4096).read_until(b'\n', &mut trailer)?;
                w.write_all(&trailer)?;
                if n == 0 || trailer == b"\r\n" || trailer == b"\n" {
                    return Ok(());
                }
            }
        }
        copy_exact(r, w, size + 2)?;
    }
}

/// Copies a request body by its framing.
fn copy_request_body(head: &Head, r: &mut impl BufRead, w: &mut impl Write) -> io::Result<()> {
    if head.chunked {
        copy_chunked(r, w)
    } else {
        copy_exact(r, w, head.length.unwrap_or(0))
    }
}

fn answer_has_body(method: &str, status: u16) -> bool {
    !(method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304)
}

/// Passes requests on until either side closes, injecting the faults the seed decides.
fn relay(client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    let cut = |a: &TcpStream, b: Option<&(BufReader<TcpStream>, TcpStream)>| {
        let _ = a.shutdown(Shutdown::Both);
        if let Some((_, u)) = b {
            let _ = u.shutdown(Shutdown::Both);
        }
    };
    while let Some(request) = read_head(&mut from_client)? {
        let has_body = request.chunked || request.length.is_some_and(|n| n > 0);
        let fault = decide(shared, &request, has_body);
        let (path, query) = match request.target.split_once('?') {
            Some((p, q)) => (p.to_string(), form_pairs(q)),
            None => (request.target.clone(), Vec::new()),
        };
        let record = |kind: FaultKind, forwarded_status: Option<u16>| {
            shared.log.lock().unwrap().push(FaultRecord {
                kind,
                method: request.method.clone(),
                path: path.clone(),
                query: query.clone(),
                forwarded_status,
            });
        };
        match fault {
            Some(FaultKind::CutRequest) => {
                // Take part of the body, forward nothing, close.
                let part = request.length.map_or(1, |n| (n / 2).max(1));
                let _ = copy_exact(&mut from_client, &mut io::sink(), part);
                record(FaultKind::CutRequest, None);
                cut(&to_client, upstream.as_ref());
                return Ok(());
            }
            Some(
                kind @ (FaultKind::ServerError(_)
                | FaultKind::ThrottledSeconds
                | FaultKind::ThrottledDate),
            ) => {
                copy_request_body(&request, &mut from_client, &mut io::sink())?;
                record(kind, None);
                to_client.write_all(&injected_answer(kind, &request.method))?;
                to_client.flush()?;
                continue;
            }
            Some(FaultKind::CutAnswer) | None => {}
        }
        if upstream.is_none() {
            let u = TcpStream::connect(&shared.upstream)?;
            u.set_read_timeout(Some(IO_TIMEOUT))?;
            u.set_write_timeout(Some(IO_TIMEOUT))?;
            upstream = Some((BufReader::new(u.try_clone()?), u));
        }
        let (from_up, to_up) = upstream.as_mut().expect("connected");
        to_up.write_all(&request.bytes)?;
        copy_request_body(&request, &mut from_client, to_up)?;
        to_up.flush()?;
        let Some(answer) = read_head(from_up)? else {
            cut(&to_client, upstream.as_ref());
            return Ok(());
        };
        let body = answer_has_body(&request.method, answer.status);
        if fault == Some(FaultKind::CutAnswer) {
            record(FaultKind::CutAnswer, Some(answer.status));
            match answer.length.filter(|&n| body && n > 1) {
                Some(n) => {
                    to_client.write_all(&answer.bytes)?;
                    let _ = copy_exact(from_up, &mut to_client, n / 2);
                }
                None => to_client.write_all(&answer.bytes[..answer.bytes.len() / 2])?,
            }
            let _ = to_client.flush();
            cut(&to_client, upstream.as_ref());
            return Ok(());
        }
        to_client.write_all(&answer.bytes)?;
        let until_close = body && !answer.chunked && answer.length.is_none();
        if body {
            if answer.chunked {
                copy_chunked(from_up, &mut to_client)?;
            } else if let Some(n) = answer.length {
                copy_exact(from_up, &mut to_client, n)?;
            } else {
                io::copy(from_up, &mut to_client)?;
            }
        }
        to_client.flush()?;
        if until_close || answer.close || request.close {
            cut(&to_client, upstream.as_ref());
            return Ok(());
        }
    }
    cut(&to_client, upstream.as_ref());
    Ok(())
}

/// The fault (if any) the seed gives this request.
fn decide(shared: &Shared, request: &Head, has_body: bool) -> Option<FaultKind> {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    if !path.starts_with("/v2/") || path == "/v2/" {
        return None;
    }
    let key = format!("{} {}", request.method, normalised(path, query));
    let n = {
        let mut seen = shared.seen.lock().unwrap();
        let n = seen.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    let h = mix(shared.spec.seed ^ fnv1a(key.as_bytes()) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let roll = h % 100;
    let pick = h >> 32;
    let spec = &shared.spec;
    if roll < spec.cut_percent {
        Some(if has_body && pick.is_multiple_of(2) {
            FaultKind::CutRequest
        } else {
            FaultKind::CutAnswer
        })
    } else if roll < spec.cut_percent + spec.server_error_percent {
        Some(FaultKind::ServerError([500, 502, 503][(pick % 3) as usize]))
    } else if roll < spec.cut_percent + spec.server_error_percent + spec.throttle_percent {
        Some(if pick.is_multiple_of(2) {
            FaultKind::ThrottledSeconds
        } else {
            FaultKind::ThrottledDate
        })
    } else {
        None
    }
}

/// The path with an upload session's id dropped and the parameters that name a blob kept.
fn normalised(path: &str, query: &str) -> String {
    let Some(i) = path.find("/blobs/uploads/") else {
        return path.to_string();
    };
    let base = &path[..i + "/blobs/uploads/".len()];
    let named: Vec<String> = form_pairs(query)
        .into_iter()
        .filter(|(k, _)| k == "digest" || k == "mount")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{base}?{}", named.join("&"))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The whole answer the relay sends for an injected status (no body for a HEAD).
fn injected_answer(kind: FaultKind, method: &str) -> Vec<u8> {
    let (status, reason, code, retry_after) = match kind {
        FaultKind::ServerError(500) => (500, "Internal Server Error", "UNKNOWN", None),
        FaultKind::ServerError(502) => (502, "Bad Gateway", "UNAVAILABLE", None),
        FaultKind::ServerError(s) => (s, "Service Unavailable", "UNAVAILABLE", None),
        FaultKind::ThrottledSeconds => (
            429,
            "Too Many Requests",
            "TOOMANYREQUESTS",
            Some("1".to_string()),
        ),
        FaultKind::ThrottledDate => (
            429,
            "Too Many Requests",
            "TOOMANYREQUESTS",
            Some(httpdate::fmt_http_date(
                SystemTime::now() + Duration::from_secs(1),
            )),
        ),
        FaultKind::CutRequest | FaultKind::CutAnswer => unreachable!("not an answer"),
    };
    let body = format!(
        r#"{{"errors":[{{"code":"{code}","message":"ferry-testkit chaos: injected {status}"}}]}}"#
    );
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(v) = retry_after {
        head += &format!("Retry-After: {v}\r\n");
    }
    head += "\r\n";
    let mut out = head.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths_are_keyed_by_digest_not_session() {
        assert_eq!(
            normalised(
                "/v2/a/b/blobs/uploads/1234-uuid",
                "_state=xyz&digest=sha256%3Aab"
            ),
            "/v2/a/b/blobs/uploads/?digest=sha256:ab"
        );
        assert_eq!(normalised("/v2/a/manifests/v1", ""), "/v2/a/manifests/v1");
    }

    #[test]
    fn injected_answers_frame_like_a_server() {
        let a = String::from_utf8(injected_answer(FaultKind::ThrottledSeconds, "GET")).unwrap();
        assert!(a.starts_with("HTTP/1.1 429 "), "{a}");
        assert!(a.contains("Retry-After: 1\r\n"), "{a}");
        let (_, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(a.contains(&format!("Content-Length: {}\r\n", body.len())));
        let head = injected_answer(FaultKind::ServerError(503), "HEAD");
        assert!(head.ends_with(b"\r\n\r\n"), "no body for HEAD");
        let date = String::from_utf8(injected_answer(FaultKind::ThrottledDate, "GET")).unwrap();
        assert!(date.contains(" GMT\r\n"), "{date}");
    }
}
