//! Typed registry errors: HTTP status with the OCI / Harbor error codes, transport failures, and which are worth retrying.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::digest::Digest;
use crate::engine::Fatal;

/// One entry of a registry's `{"errors": [...]}` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// What the registry could not write because its storage is full (`detail` of Distribution's
    /// 500 `UNKNOWN`: "write …: no space left on device", or the filesystem driver's error
    /// object with errno 28 / 122).
    #[serde(default, rename = "detail", deserialize_with = "storage_full")]
    pub storage_full: Option<String>,
}

/// ENOSPC and EDQUOT on Linux, as Distribution's filesystem driver puts them in `Enclosed.Err`.
const NO_SPACE_ERRNOS: [u64; 2] = [28, 122];

/// Reads an error's `detail` (any JSON) and keeps it only when it says the storage is full.
fn storage_full<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let detail = serde_json::Value::deserialize(d)?;
    Ok(storage_full_detail(&detail))
}

/// Distribution 2.8 says a full disk two ways: a string from `io.Copy` of an upload ("write
/// /var/lib/registry/…/data: no space left on device"), or the driver's error as an object,
/// `{"DriverName":"filesystem","Enclosed":{"Op":"write","Path":"…","Err":28}}`.
fn storage_full_detail(detail: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match detail {
        Value::String(s) => {
            let lower = s.to_ascii_lowercase();
            (lower.contains("no space left on device") || lower.contains("disk quota exceeded"))
                .then(|| s.chars().take(400).collect())
        }
        Value::Object(map) => {
            // An `*os.PathError` (`{"Op","Path","Err":28}`), bare or as the driver's `Enclosed`.
            if let Some(errno) = map.get("Err").and_then(Value::as_u64)
                && NO_SPACE_ERRNOS.contains(&errno)
            {
                let op = map.get("Op").and_then(Value::as_str).unwrap_or("write");
                let path = map.get("Path").and_then(Value::as_str).unwrap_or("");
                let what = if errno == 28 {
                    "no space left on device"
                } else {
                    "disk quota exceeded"
                };
                let path: String = path.chars().take(300).collect();
                return Some(format!("{op} {path}: {what}"));
            }
            map.values().find_map(storage_full_detail)
        }
        Value::Array(items) => items.iter().find_map(storage_full_detail),
        _ => None,
    }
}

/// Error codes from the distribution spec and Harbor's API that ferry acts on.
pub mod code {
    pub const BLOB_UNKNOWN: &str = "BLOB_UNKNOWN";
    pub const DIGEST_INVALID: &str = "DIGEST_INVALID";
    pub const MANIFEST_INVALID: &str = "MANIFEST_INVALID";
    pub const MANIFEST_BLOB_UNKNOWN: &str = "MANIFEST_BLOB_UNKNOWN";
    pub const MANIFEST_UNKNOWN: &str = "MANIFEST_UNKNOWN";
    pub const NAME_UNKNOWN: &str = "NAME_UNKNOWN";
    pub const DENIED: &str = "DENIED";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const TOOMANYREQUESTS: &str = "TOOMANYREQUESTS";
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// Harbor's own codes.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const TOO_MANY_REQUEST: &str = "TOO_MANY_REQUEST";
    pub const FORBIDDEN: &str = "FORBIDDEN";
}

/// What went wrong talking to a registry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error status.
    #[error("{method} {url}: {}", status_text(*status, errors))]
    Status {
        method: String,
        url: String,
        status: u16,
        errors: Vec<ApiError>,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, or no progress within the stall timeout (`timeout`).
    #[error("{method} {url}: {error}")]
    Transport {
        method: String,
        url: String,
        error: String,
        timeout: bool,
    },
    /// The destination stopped answering and a ping of `/v2/` failed too: the run cannot go on.
    #[error("{0}")]
    Gone(Fatal),
    /// The run is stopping; the request was not sent or was cut short.
    #[error("the run is stopping")]
    Stopped,
    /// The server's certificate is not trusted.
    #[error(
        "TLS certificate of {host} is not trusted ({error}); pass --ca-cert FILE with the CA that signed it, or --tls-verify=false to skip verification"
    )]
    Certificate { host: String, error: String },
    /// An `https://` destination answered in plain HTTP: nothing is sent there in clear unless
    /// the user says so.
    #[error(
        "{host} answers plain HTTP, not HTTPS; ferry sends nothing in clear unless asked: give the destination as http://{host}, or pass --tls-verify=false (credentials then travel unencrypted)"
    )]
    PlainHttp { host: String },
    /// Credentials missing or refused (the message says which account and where they came from).
    #[error("{0}")]
    Auth(String),
    /// The registry stored something other than what was sent.
    #[error("{url}: the registry reports digest {found}, the source has {expected}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        found: String,
    },
    /// The local file did not hold what its digest promises; nothing was committed.
    #[error("{0}")]
    Local(String),
    /// The registry answered something that does not follow the protocol.
    #[error("{0}")]
    Protocol(String),
}

fn status_text(status: u16, errors: &[ApiError]) -> String {
    let mut s = status.to_string();
    for e in errors {
        s.push(' ');
        s.push_str(&e.code);
        if !e.message.is_empty() {
            s.push_str(": ");
            s.push_str(&e.message);
        }
    }
    s
}

impl RegistryError {
    /// Worth another try: connection failures, 5xx, 408, 429 and the too-many-requests codes; not a
    /// registry whose storage is full (a retry would hit the same full disk).
    pub fn temporary(&self) -> bool {
        if self.storage_full().is_some() {
            return false;
        }
        match self {
            RegistryError::Status { status, errors, .. } => {
                *status >= 500
                    || *status == 408
                    || *status == 429
                    || errors.iter().any(|e| {
                        matches!(
                            e.code.as_str(),
                            code::TOOMANYREQUESTS | code::TOO_MANY_REQUEST | code::UNAVAILABLE
                        )
                    })
            }
            RegistryError::Transport { .. } => true,
            _ => false,
        }
    }

    /// What the registry could not write, when it answered that its storage is full.
    pub fn storage_full(&self) -> Option<&str> {
        match self {
            RegistryError::Status { errors, .. } => {
                errors.iter().find_map(|e| e.storage_full.as_deref())
            }
            _ => None,
        }
    }

    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn has_code(&self, wanted: &str) -> bool {
        matches!(self, RegistryError::Status { errors, .. } if errors.iter().any(|e| e.code == wanted))
    }

    /// A transport failure that was a stall (no progress within the timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, RegistryError::Transport { timeout: true, .. })
    }

    /// Parses an error body (`{"errors":[...]}`); anything else gives no codes.
    pub fn parse_errors(body: &[u8]) -> Vec<ApiError> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            errors: Vec<ApiError>,
        }
        serde_json::from_slice::<Body>(body)
            .map(|b| b.errors)
            .unwrap_or_default()
    }
}

/// How long a `Retry-After` value asks to wait: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past means no wait; anything else is not understood.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A short form for summaries: `404 MANIFEST_UNKNOWN`.
pub struct Brief<'a>(pub &'a RegistryError);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RegistryError::Status { status, errors, .. } => {
                write!(f, "{status}")?;
                if let Some(e) = errors.first() {
                    write!(f, " {}", e.code)?;
                }
                Ok(())
            }
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_retries() {
        let status = |s: u16, code: &str| RegistryError::Status {
            method: "PUT".into(),
            url: "u".into(),
            status: s,
            errors: vec![ApiError {
                code: code.into(),
                message: String::new(),
                storage_full: None,
            }],
            retry_after: None,
        };
        assert!(status(503, "").temporary());
        assert!(status(429, code::TOOMANYREQUESTS).temporary());
        assert!(status(400, code::TOO_MANY_REQUEST).temporary());
        assert!(!status(400, code::MANIFEST_INVALID).temporary());
        assert!(!status(404, code::BLOB_UNKNOWN).temporary());
        assert_eq!(
            status(404, code::MANIFEST_UNKNOWN).to_string(),
            "PUT u: 404 MANIFEST_UNKNOWN"
        );
        let parsed = RegistryError::parse_errors(
            br#"{"errors":[{"code":"DENIED","message":"no","detail":{}}]}"#,
        );
        assert_eq!(parsed[0].code, "DENIED");
        assert!(RegistryError::parse_errors(b"<html>").is_empty());
    }

    #[test]
    fn a_full_registry_storage_is_told_from_other_500s() {
        let status = |body: &[u8]| RegistryError::Status {
            method: "PUT".into(),
            url: "u".into(),
            status: 500,
            errors: RegistryError::parse_errors(body),
            retry_after: None,
        };
        // Both answers docker-registry 2.8.2 gave on a full tmpfs (tests/it/kills.rs).
        let upload = status(
            br#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"write /var/lib/registry/docker/registry/v2/repositories/t/_uploads/a1/data: no space left on device"}]}"#,
        );
        assert_eq!(
            upload.storage_full(),
            Some(
                "write /var/lib/registry/docker/registry/v2/repositories/t/_uploads/a1/data: no space left on device"
            )
        );
        assert!(!upload.temporary());
        let session = status(
            br#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"DriverName":"filesystem","Enclosed":{"Op":"write","Path":"/r/_uploads/b2/startedat","Err":28}}}]}"#,
        );
        assert_eq!(
            session.storage_full(),
            Some("write /r/_uploads/b2/startedat: no space left on device")
        );
        let bare = status(
            br#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"Op":"write","Path":"/r/_uploads/c3/data","Err":28}}]}"#,
        );
        assert_eq!(
            bare.storage_full(),
            Some("write /r/_uploads/c3/data: no space left on device")
        );
        let other = status(
            br#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"DriverName":"filesystem","Enclosed":{"Op":"write","Path":"/r/x","Err":5}}}]}"#,
        );
        assert_eq!(other.storage_full(), None);
        assert!(other.temporary());
        assert_eq!(
            status(br#"{"errors":[{"code":"UNKNOWN","detail":"no"}]}"#).storage_full(),
            None
        );
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 03:00:00 GMT").unwrap();
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 02 Dec 2026 03:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Wed, 02 Dec 2026 02:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }
}
