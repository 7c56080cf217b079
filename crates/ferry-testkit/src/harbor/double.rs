//! The Harbor double as a proxy hook: sends each request to the part of Harbor that answers it,
//! with Harbor's session cookie (`sid`) and CSRF check on the way.

use std::any::Any;
use std::sync::{Arc, Mutex};

use globset::{GlobBuilder, GlobMatcher};

use super::errors::error;
use super::security::{Signer, random_string};
use super::store::Store;
use super::{HarborDouble, api, token, v2};
use crate::proxy::{AfterAction, Decision, Hook, Incoming, Reply};

/// The running double: its configuration, token key and database.
pub struct Double {
    pub config: HarborDouble,
    /// Harbor's external URL (`ext_endpoint`): the proxy's own URL.
    pub url: String,
    pub signer: Signer,
    pub store: Arc<Mutex<Store>>,
    /// Immutable rules: (project, repositories, tags).
    immutable: Vec<(String, GlobMatcher, GlobMatcher)>,
    /// A test's trigger: the first request it matches makes every earlier token expire.
    pub expire_when: Mutex<Option<ExpireTrigger>>,
}

/// Decides from (method, path) when tokens expire.
pub type ExpireTrigger = Box<dyn Fn(&str, &str) -> bool + Send>;

impl Double {
    pub fn new(config: HarborDouble, url: &str) -> Double {
        let glob = |pattern: &str| {
            GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .unwrap_or_else(|e| panic!("immutable rule pattern {pattern:?}: {e}"))
                .compile_matcher()
        };
        let immutable = config
            .immutable
            .iter()
            .map(|r| (r.project.clone(), glob(&r.repositories), glob(&r.tags)))
            .collect();
        Double {
            store: Arc::new(Mutex::new(Store::new(&config))),
            url: url.to_string(),
            signer: Signer::new(),
            immutable,
            expire_when: Mutex::new(None),
            config,
        }
    }

    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.lock().unwrap())
    }

    pub fn with_store_mut<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.lock().unwrap())
    }

    /// Whether a rule makes `repository:tag` of `project` immutable (`repository` without project).
    pub fn immutable(&self, project: &str, repository: &str, tag: &str) -> bool {
        self.immutable.iter().any(|(p, repos, tags)| {
            p == project && repos.is_match(repository) && tags.is_match(tag)
        })
    }
}

/// Headers Harbor adds to answers that reach its router: a new `sid` cookie, the CSRF token.
#[derive(Debug, Default)]
pub struct Session {
    headers: Vec<(String, String)>,
}

impl Session {
    /// The decision with the session headers on whatever is finally answered.
    pub fn finish(&self, decision: Decision) -> Decision {
        let headers = self.headers.clone();
        if headers.is_empty() {
            return decision;
        }
        match decision {
            Decision::Answer(mut reply) => {
                reply.headers.extend(headers);
                Decision::Answer(reply)
            }
            Decision::Forward { body, after } => Decision::Forward {
                body,
                after: Some(Box::new(move |answered| {
                    let action = match after {
                        Some(f) => f(answered),
                        None => AfterAction::Pass(Vec::new()),
                    };
                    match action {
                        AfterAction::Pass(mut h) => {
                            h.extend(headers);
                            AfterAction::Pass(h)
                        }
                        AfterAction::Replace(mut reply) => {
                            reply.headers.extend(headers);
                            AfterAction::Replace(reply)
                        }
                    }
                })),
            },
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Hook for Double {
    fn decide(&self, mut req: Incoming<'_>) -> Decision {
        {
            let mut trigger = self.expire_when.lock().unwrap();
            if trigger.as_ref().is_some_and(|t| t(req.method, req.path)) {
                *trigger = None;
                self.signer.expire_all();
            }
        }
        let sid = cookie(req.header("Cookie"), "sid").map(str::to_string);
        let mut session = Session::default();
        if sid.is_some() {
            // gorilla/csrf only guards requests that carry Harbor's session (`csrfSkipper`).
            let token = random_string(32);
            let sent = req.header("X-Harbor-CSRF-Token").map(str::to_string);
            let mut store = self.store.lock().unwrap();
            let valid = sent.is_some_and(|t| store.csrf_tokens.contains(&t));
            store.csrf_tokens.insert(token.clone());
            if !matches!(req.method, "GET" | "HEAD" | "OPTIONS" | "TRACE") && !valid {
                let reply =
                    error("FORBIDDEN", "CSRF token invalid").header("X-Harbor-CSRF-Token", &token);
                return Decision::Answer(reply);
            }
            session
                .headers
                .push(("X-Harbor-CSRF-Token".to_string(), token));
        }
        {
            // beego starts a session for every request it routes and sets its cookie once.
            let mut store = self.store.lock().unwrap();
            if !sid.is_some_and(|s| store.sids.contains(&s)) {
                let mut rng = fastrand::Rng::new();
                let new = hex::encode((0..16).map(|_| rng.u8(..)).collect::<Vec<u8>>());
                store.sids.insert(new.clone());
                session.headers.push((
                    "Set-Cookie".to_string(),
                    format!("sid={new}; Path=/; HttpOnly"),
                ));
            }
        }
        if req.path == "/v2" || req.path.starts_with("/v2/") {
            return v2::handle(self, req, &session);
        }
        let reply = if req.path == "/service/token" {
            if req.method == "GET" {
                token::handle(self, &req)
            } else {
                Reply::new(405).body("text/plain; charset=utf-8", "Method Not Allowed")
            }
        } else if req.path.starts_with("/api/v2.0/") {
            api::handle(self, &mut req)
        } else {
            error(
                "NOT_FOUND",
                &format!(
                    "{} is not served by the ferry-testkit Harbor double",
                    req.path
                ),
            )
        };
        session.finish(Decision::Answer(reply))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_escapes() {
        assert_eq!(cookie(Some("a=1; sid=abc"), "sid"), Some("abc"));
        assert_eq!(cookie(Some("a=1"), "sid"), None);
        assert_eq!(query_escape("p/r x"), "p%2Fr+x");
    }
}
