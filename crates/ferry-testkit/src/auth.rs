//! Registry authentication for tests: htpasswd files, and a token issuer that signs JWTs docker-registry trusts.
//!
//! The issuer follows Distribution 2.8's `registry/auth/token`: an ES256 JWS whose `x5c`
//! header holds the signing certificate (listed in the registry's `rootcertbundle`), with
//! `iss` = the configured issuer, `aud` = the service (a string in 2.8), `exp`/`nbf`, and the
//! granted scopes in `access`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;

use crate::tls::SigningCert;

/// One account known to the test auth services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    /// Token auth: only `pull` is granted, whatever is asked.
    pub read_only: bool,
}

impl User {
    pub fn new(name: &str, password: &str) -> User {
        User {
            name: name.to_string(),
            password: password.to_string(),
            read_only: false,
        }
    }

    pub fn read_only(mut self) -> User {
        self.read_only = true;
        self
    }
}

/// How a test registry authenticates clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Anyone may push and pull.
    #[default]
    None,
    /// `auth: htpasswd` with a bcrypt file of these users (Basic challenges).
    Htpasswd { users: Vec<User> },
    /// `auth: token` with a [`TokenIssuer`] run by the harness (Bearer challenges).
    Token {
        users: Vec<User>,
        /// `expires_in` of the tokens issued.
        lifetime: Duration,
    },
}

impl RegistryAuth {
    /// htpasswd auth with one user.
    pub fn htpasswd(user: &str, password: &str) -> RegistryAuth {
        RegistryAuth::Htpasswd {
            users: vec![User::new(user, password)],
        }
    }

    /// Token auth with one user and 5-minute tokens.
    pub fn token(user: &str, password: &str) -> RegistryAuth {
        RegistryAuth::Token {
            users: vec![User::new(user, password)],
            lifetime: Duration::from_secs(300),
        }
    }
}

/// Writes an htpasswd file with bcrypt hashes (the only kind Distribution accepts).
pub fn write_htpasswd(path: &Path, users: &[User]) -> Result<()> {
    let mut text = String::new();
    for u in users {
        // Cost 5 keeps registry-side checks fast; the hash is still a real bcrypt.
        let hash = bcrypt::hash(&u.password, 5).context("bcrypt")?;
        text.push_str(&format!("{}:{hash}\n", u.name));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Checks an `Authorization: Basic ...` value against `users`; the user on success.
pub fn check_basic<'a>(header: Option<&str>, users: &'a [User]) -> Option<&'a User> {
    let encoded = header?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    users
        .iter()
        .find(|u| u.name == name && u.password == password)
}

/// One request the token issuer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The authenticated user; `None` for anonymous or refused requests.
    pub user: Option<String>,
    /// The `scope` parameters as sent.
    pub scopes: Vec<String>,
    pub status: u16,
    /// The token handed out (tests check it never shows up in logs).
    pub token: Option<String>,
    /// The `Authorization` header the request carried, whole (`Basic …`, `Bearer …`): tests
    /// check a realm receives the Basic credentials and never a token.
    pub authorization: Option<String>,
}

impl TokenRequest {
    /// The scheme of [`TokenRequest::authorization`] (`Basic`, `Bearer`).
    pub fn auth_scheme(&self) -> Option<&str> {
        self.authorization.as_deref()?.split_whitespace().next()
    }
}

#[derive(Serialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Serialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

/// A token service on a loopback address (127.0.0.1 unless told): `GET /token?service=&scope=...` with Basic credentials
/// answers `{"token", "access_token", "expires_in", "issued_at"}`. Stops when dropped.
pub struct TokenIssuer {
    host: String,
    port: u16,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<TokenRequest>>>,
}

/// The `service` the registry expects in the token's `aud`.
pub const TOKEN_SERVICE: &str = "ferry-testkit-registry";
/// The `issuer` the registry expects in the token's `iss`.
pub const TOKEN_ISSUER: &str = "ferry-testkit-token-issuer";

struct IssuerState {
    users: Vec<User>,
    lifetime: Duration,
    cert_b64: String,
    key: jsonwebtoken::EncodingKey,
    counter: AtomicU64,
}

impl TokenIssuer {
    /// Starts the issuer for `users` on 127.0.0.1, signing with `cert`.
    pub fn start(users: Vec<User>, lifetime: Duration, cert: &SigningCert) -> Result<TokenIssuer> {
        TokenIssuer::start_on("127.0.0.1", users, lifetime, cert)
    }

    /// Starts the issuer on `host` (a loopback address such as `127.0.0.2`, so the realm is
    /// another host than the registry's).
    pub fn start_on(
        host: &str,
        users: Vec<User>,
        lifetime: Duration,
        cert: &SigningCert,
    ) -> Result<TokenIssuer> {
        let server = tiny_http::Server::http(format!("{host}:0"))
            .map_err(|e| anyhow::anyhow!("token issuer cannot listen: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .context("token issuer address")?
            .port();
        let state = Arc::new(IssuerState {
            users,
            lifetime,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(&cert.der),
            key: jsonwebtoken::EncodingKey::from_ec_pem(cert.key_pem.as_bytes())
                .context("token signing key")?,
            counter: AtomicU64::new(0),
        });
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, stop, log) = (server.clone(), stop.clone(), log.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(request) = server.recv() else { break };
                    let (state, log) = (state.clone(), log.clone());
                    thread::spawn(move || answer(request, &state, &log));
                }
            })
        };
        Ok(TokenIssuer {
            host: host.to_string(),
            port,
            server,
            stop,
            thread: Some(thread),
            log,
        })
    }

    /// The realm URL: `http://HOST:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}:{}/token", self.host, self.port)
    }

    /// Every token handed out so far.
    pub fn tokens(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|r| r.token)
            .collect()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut request: tiny_http::Request, state: &IssuerState, log: &Mutex<Vec<TokenRequest>>) {
    let _ = std::io::copy(&mut request.as_reader(), &mut std::io::sink());
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let params: Vec<(String, String)> = form_pairs(query);
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let user = check_basic(authorization.as_deref(), &state.users);
    let mut token = None;
    let (status, body) = if path != "/token" {
        (
            404,
            r#"{"errors":[{"code":"NOT_FOUND","message":"no such path"}]}"#.to_string(),
        )
    } else if authorization.is_some() && user.is_none() {
        (
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication failed"}]}"#.to_string(),
        )
    } else {
        match sign(state, user, &scopes) {
            Ok(t) => {
                let body = serde_json::json!({
                    "token": t,
                    "access_token": t,
                    "expires_in": state.lifetime.as_secs(),
                })
                .to_string();
                token = Some(t);
                (200, body)
            }
            Err(e) => (500, format!("{{\"error\":{:?}}}", e.to_string())),
        }
    };
    log.lock().unwrap().push(TokenRequest {
        user: if status == 200 {
            user.map(|u| u.name.clone())
        } else {
            None
        },
        scopes,
        status,
        token,
        authorization,
    });
    let header =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap();
    let _ = request.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header),
    );
}

/// A JWT granting what was asked, limited to `pull` for read-only users and to nothing for anonymous ones.
fn sign(state: &IssuerState, user: Option<&User>, scopes: &[String]) -> Result<String> {
    let mut granted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    if let Some(user) = user {
        for scope in scopes {
            let mut parts = scope.splitn(3, ':');
            let (Some(kind), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let entry = granted
                .entry((kind.to_string(), name.to_string()))
                .or_default();
            for action in actions.split(',') {
                let allowed = !user.read_only || action == "pull";
                if allowed && !entry.iter().any(|a| a == action) {
                    entry.push(action.to_string());
                }
            }
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let claims = Claims {
        iss: TOKEN_ISSUER.to_string(),
        sub: user.map(|u| u.name.clone()).unwrap_or_default(),
        aud: TOKEN_SERVICE.to_string(),
        exp: now + state.lifetime.as_secs(),
        nbf: now.saturating_sub(5),
        iat: now,
        jti: format!("ferry-testkit-{now}-{n}"),
        access: granted
            .into_iter()
            .map(|((kind, name), actions)| Access {
                kind,
                name,
                actions,
            })
            .collect(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("JWT".to_string());
    header.x5c = Some(vec![state.cert_b64.clone()]);
    Ok(jsonwebtoken::encode(&header, &claims, &state.key)?)
}

/// Splits `a=1&b=2` into decoded pairs.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
