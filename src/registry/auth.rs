//! Registry authentication: `WWW-Authenticate` challenges, Basic, and Bearer tokens per scope (cached until expiry).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use super::credentials::{CredentialSource, Credentials};
use super::error::RegistryError;
use crate::secret::Secret;

/// Tokens without `expires_in` live this long (the distribution token spec's default).
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// Renew this much before expiry, so a token never dies mid-request.
const RENEW_MARGIN: Duration = Duration::from_secs(10);
/// A longer `expires_in` is taken as this (a huge one would overflow the renewal time).
pub const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 60 * 60);

/// An access the registry must grant: `repository:<name>:<actions>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub repository: String,
    pub actions: &'static str,
}

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            actions: "pull",
        }
    }
    pub fn push(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            actions: "pull,push",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "repository:{}:{}", self.repository, self.actions)
    }
}

/// How the registry wants to be authenticated, learnt from its challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// Picks the first scheme ferry speaks from a `WWW-Authenticate` value.
    pub fn parse(header: &str) -> Option<Challenge> {
        if let Some(c) = Self::first_known(header) {
            return Some(c);
        }
        // A challenge the parser cannot read (`NTLM abc=` before `Bearer …`) must not hide the
        // one ferry speaks: try again from each later challenge that starts after a comma.
        header
            .match_indices(',')
            .map(|(i, _)| header[i + 1..].trim_start())
            .filter(|rest| {
                let scheme = rest.split([' ', '\t']).next().unwrap_or_default();
                scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic")
            })
            .find_map(Self::first_known)
    }

    fn first_known(header: &str) -> Option<Challenge> {
        let challenges = http_auth::parse_challenges(header).ok()?;
        for c in challenges {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if c.scheme.eq_ignore_ascii_case("bearer") {
                return Some(Challenge::Bearer {
                    realm: param("realm")?,
                    service: param("service"),
                });
            }
            if c.scheme.eq_ignore_ascii_case("basic") {
                return Some(Challenge::Basic);
            }
        }
        None
    }
}

struct Token {
    value: Secret,
    renew_at: Instant,
}

/// Authentication state for one registry, shared by all workers.
pub struct Auth {
    challenge: RwLock<Challenge>,
    credentials: Option<(Credentials, CredentialSource)>,
    tokens: Mutex<HashMap<String, Token>>,
    /// Whether the registry URL is HTTPS (credentials never go to a plain-HTTP realm elsewhere).
    registry_https: bool,
    insecure: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("challenge", &*self.challenge.read().unwrap())
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenReply {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(
        credentials: Option<(Credentials, CredentialSource)>,
        registry_https: bool,
        insecure: bool,
    ) -> Auth {
        Auth {
            challenge: RwLock::new(Challenge::None),
            credentials,
            tokens: Mutex::new(HashMap::new()),
            registry_https,
            insecure,
        }
    }

    pub fn challenge(&self) -> Challenge {
        self.challenge.read().unwrap().clone()
    }

    pub fn set_challenge(&self, c: Challenge) {
        *self.challenge.write().unwrap() = c;
    }

    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Whether the user allowed plain HTTP (`--tls-verify=false`), so credentials may travel
    /// in clear to the registry's host or its token service.
    pub fn plain_http_allowed(&self) -> bool {
        self.insecure
    }

    /// "user alice (from auth file …)" or "no credentials", for messages.
    pub fn who(&self) -> String {
        match &self.credentials {
            Some((c, src)) => format!("user {} (from {src})", c.username),
            None => "no credentials (anonymous)".to_string(),
        }
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a token when needed.
    pub fn header(
        &self,
        agent: &ureq::Agent,
        scopes: &[Scope],
    ) -> Result<Option<Secret>, RegistryError> {
        match self.challenge() {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(self.basic()),
            Challenge::Bearer { realm, service } => {
                let token = self.token(agent, &realm, service.as_deref(), scopes)?;
                Ok(Some(Secret::new(format!("Bearer {}", token.expose()))))
            }
        }
    }

    /// The actions the registry's token for `scope` grants on its repository, read from the
    /// token's `access` claim (the token is kept for the requests that follow); `None` when the
    /// registry does not hand out tokens or its tokens do not say.
    pub fn granted(
        &self,
        agent: &ureq::Agent,
        scope: &Scope,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let Challenge::Bearer { realm, service } = self.challenge() else {
            return Ok(None);
        };
        let token = self.token(
            agent,
            &realm,
            service.as_deref(),
            std::slice::from_ref(scope),
        )?;
        Ok(super::jwt::granted(token.expose(), &scope.repository))
    }

    /// A cached token for `scopes`, or a fresh one.
    fn token(
        &self,
        agent: &ureq::Agent,
        realm: &str,
        service: Option<&str>,
        scopes: &[Scope],
    ) -> Result<Secret, RegistryError> {
        let key = scope_key(scopes);
        if let Some(t) = self.tokens.lock().unwrap().get(&key)
            && Instant::now() < t.renew_at
        {
            return Ok(t.value.clone());
        }
        let token = self.fetch_token(agent, realm, service, scopes)?;
        let value = token.value.clone();
        self.tokens.lock().unwrap().insert(key, token);
        Ok(value)
    }

    /// `Basic` with the credentials, for Basic challenges and Harbor's API.
    pub fn basic(&self) -> Option<Secret> {
        self.credentials.as_ref().map(|(c, _)| {
            Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    c.username,
                    c.password.expose()
                ))
            ))
        })
    }

    /// Forgets the token for `scopes` (after a 401), so the next request fetches a fresh one.
    pub fn forget(&self, scopes: &[Scope]) {
        self.tokens.lock().unwrap().remove(&scope_key(scopes));
    }

    fn fetch_token(
        &self,
        agent: &ureq::Agent,
        realm: &str,
        service: Option<&str>,
        scopes: &[Scope],
    ) -> Result<Token, RegistryError> {
        let realm_https = realm.starts_with("https://");
        if !realm_https && !realm.starts_with("http://") {
            return Err(RegistryError::Protocol(format!(
                "the registry's token realm {realm:?} is not an http(s) URL"
            )));
        }
        if self.registry_https && !realm_https && !self.insecure && self.credentials.is_some() {
            return Err(RegistryError::Auth(format!(
                "the registry sends credentials to a plain-HTTP token service {realm}; refusing (pass --tls-verify=false to allow it)"
            )));
        }
        let mut request = agent.get(realm);
        if let Some(s) = service {
            request = request.query("service", s);
        }
        for scope in scopes {
            request = request.query("scope", scope.to_string());
        }
        if let Some((c, _)) = &self.credentials {
            request = request.query("account", &c.username);
        }
        if let Some(basic) = self.basic() {
            request = request.header("Authorization", basic.expose());
        }
        let started = Instant::now();
        let response = request.call().map_err(|e| token_transport(realm, e))?;
        let status = response.status().as_u16();
        crate::debug!(
            "GET {realm} (token{}{}) -> {status} in {} ms",
            if scopes.is_empty() { "" } else { " for " },
            scope_key(scopes),
            started.elapsed().as_millis()
        );
        let mut body = response.into_body();
        let bytes = body
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| token_transport(realm, e))?;
        if status == 401 || status == 403 {
            return Err(RegistryError::Auth(format!(
                "the token service {realm} refused {}: {status}",
                self.who()
            )));
        }
        if !(200..300).contains(&status) {
            return Err(RegistryError::Status {
                method: "GET".into(),
                url: realm.to_string(),
                status,
                errors: RegistryError::parse_errors(&bytes),
                retry_after: None,
            });
        }
        let (value, life) = token_reply(realm, &bytes)?;
        Ok(Token {
            value,
            renew_at: started
                + life
                    .saturating_sub(RENEW_MARGIN)
                    .max(Duration::from_secs(1)),
        })
    }

    /// Checks the credentials at the start of a run (a token with no scope, like `docker login`).
    pub fn verify(&self, agent: &ureq::Agent) -> Result<(), RegistryError> {
        if let Challenge::Bearer { realm, service } = self.challenge()
            && self.credentials.is_some()
        {
            self.fetch_token(agent, &realm, service.as_deref(), &[])?;
        }
        Ok(())
    }
}

/// Reads a token service's answer: the token (`token`, else `access_token`) and how long to use
/// it (`expires_in`, capped at [`MAX_TOKEN_LIFE`]). Errors never quote the body: it may hold a token.
pub fn token_reply(realm: &str, body: &[u8]) -> Result<(Secret, Duration), RegistryError> {
    let reply: TokenReply = serde_json::from_slice(body).map_err(|e| {
        RegistryError::Protocol(format!(
            "the token service {realm} answered something that is not a token ({})",
            super::credentials::json_error_position(&e)
        ))
    })?;
    let value = reply
        .token
        .or(reply.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            RegistryError::Protocol(format!("the token service {realm} gave an empty token"))
        })?;
    let life = reply
        .expires_in
        .map_or(DEFAULT_TOKEN_LIFE, Duration::from_secs)
        .min(MAX_TOKEN_LIFE);
    Ok((Secret::new(value), life))
}

/// A token request that got no answer (retried by the caller like any other request).
fn token_transport(realm: &str, e: ureq::Error) -> RegistryError {
    RegistryError::Transport {
        method: "GET".into(),
        url: realm.to_string(),
        timeout: matches!(e, ureq::Error::Timeout(_)),
        error: e.to_string(),
    }
}

fn scope_key(scopes: &[Scope]) -> String {
    let mut parts: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    parts.sort();
    parts.dedup();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://harbor.example/service/token",service="harbor-registry",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://harbor.example/service/token".into(),
                service: Some("harbor-registry".into())
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(
            scope_key(&[Scope::push("b"), Scope::pull("a"), Scope::push("b")]),
            "repository:a:pull repository:b:pull,push"
        );
    }

    #[test]
    fn debug_hides_credentials() {
        let auth = Auth::new(
            Some((
                Credentials {
                    username: "u".into(),
                    password: Secret::new("topsecret"),
                },
                CredentialSource::Flags,
            )),
            true,
            false,
        );
        assert!(!format!("{auth:?}").contains("topsecret"));
        assert!(auth.basic().is_some());
    }
}
