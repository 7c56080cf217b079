//! Registry credentials: flags, environment, auth files (containers auth.json, docker config.json) and credential helpers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde::Deserialize;

use crate::secret::Secret;

/// A username and password (or token) for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// Where credentials came from, for messages (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Flags,
    Environment,
    AuthFile(PathBuf),
    Helper(String),
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Flags => f.write_str("--username/--password-stdin"),
            CredentialSource::Environment => f.write_str("FERRY_USERNAME/FERRY_PASSWORD"),
            CredentialSource::AuthFile(p) => write!(f, "auth file {}", p.display()),
            CredentialSource::Helper(h) => write!(f, "credential helper docker-credential-{h}"),
        }
    }
}

/// What the user gave on the command line and in the environment.
#[derive(Clone, Debug, Default)]
pub struct CredentialOptions {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub authfile: Option<PathBuf>,
    pub env_username: Option<String>,
    pub env_password: Option<Secret>,
    /// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR`, `$HOME`, `$DOCKER_CONFIG`.
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
}

impl CredentialOptions {
    /// Reads the environment variables ferry honours.
    pub fn from_env() -> CredentialOptions {
        let path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let text = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        CredentialOptions {
            env_username: text("FERRY_USERNAME"),
            env_password: text("FERRY_PASSWORD").map(Secret::new),
            registry_auth_file: path("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: path("XDG_RUNTIME_DIR"),
            home: path("HOME"),
            docker_config: path("DOCKER_CONFIG"),
            ..CredentialOptions::default()
        }
    }

    /// Auth files in the order they are consulted; an explicit `--authfile` is the only one then.
    fn auth_files(&self) -> Vec<PathBuf> {
        if let Some(f) = &self.authfile {
            return vec![f.clone()];
        }
        let mut files = Vec::new();
        files.extend(self.registry_auth_file.clone());
        if let Some(x) = &self.xdg_runtime_dir {
            files.push(x.join("containers/auth.json"));
        }
        if let Some(h) = &self.home {
            files.push(h.join(".config/containers/auth.json"));
        }
        match (&self.docker_config, &self.home) {
            (Some(d), _) => files.push(d.join("config.json")),
            (None, Some(h)) => files.push(h.join(".docker/config.json")),
            _ => {}
        }
        files
    }

    /// Finds credentials for `host` (`name[:port]`): flags, then environment, then auth files.
    pub fn resolve(&self, host: &str) -> anyhow::Result<Option<(Credentials, CredentialSource)>> {
        if let Some(username) = &self.username {
            let password = self
                .password
                .clone()
                .or_else(|| self.env_password.clone())
                .with_context(|| {
                    format!("--username {username} needs a password: pass it with --password-stdin or FERRY_PASSWORD")
                })?;
            return Ok(Some((
                Credentials {
                    username: username.clone(),
                    password,
                },
                CredentialSource::Flags,
            )));
        }
        if self.password.is_some() {
            bail!("--password-stdin needs --username (or FERRY_USERNAME)");
        }
        match (&self.env_username, &self.env_password) {
            (Some(u), Some(p)) => {
                return Ok(Some((
                    Credentials {
                        username: u.clone(),
                        password: p.clone(),
                    },
                    CredentialSource::Environment,
                )));
            }
            (Some(_), None) => bail!("FERRY_USERNAME is set but FERRY_PASSWORD is not"),
            _ => {}
        }
        if let Some(f) = &self.authfile
            && !f.exists()
        {
            bail!("--authfile {} does not exist", f.display());
        }
        for file in self.auth_files() {
            if !file.exists() {
                continue;
            }
            if let Some(found) = lookup_auth_file(&file, host)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// Reads the password given on stdin (one line or the whole input, trailing newline removed).
pub fn read_password_stdin(mut input: impl Read) -> anyhow::Result<Secret> {
    let mut s = String::new();
    input
        .read_to_string(&mut s)
        .context("cannot read the password from stdin")?;
    let trimmed = s.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        bail!("--password-stdin: stdin held no password");
    }
    Ok(Secret::new(trimmed))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// `https://host:port/v1/` and `host:port` name the same registry.
fn normalize_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn lookup_auth_file(
    file: &Path,
    host: &str,
) -> anyhow::Result<Option<(Credentials, CredentialSource)>> {
    let text =
        std::fs::read(file).with_context(|| format!("cannot read auth file {}", file.display()))?;
    lookup_auth_text(file, &text, host)
}

/// The credentials for `host` in the text of the auth file `file` (named in errors, which never
/// quote the file's values).
pub fn lookup_auth_text(
    file: &Path,
    text: &[u8],
    host: &str,
) -> anyhow::Result<Option<(Credentials, CredentialSource)>> {
    // serde's message would quote the offending value, which may be a password: say where only.
    let parsed: AuthFile = serde_json::from_slice(text).map_err(|e| {
        anyhow::anyhow!(
            "auth file {} is not a valid auth file ({})",
            file.display(),
            json_error_position(&e)
        )
    })?;
    if let Some(helper) = parsed
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_key(k) == host)
        .map(|(_, v)| v.clone())
    {
        return run_helper(&helper, host).map(|c| c.map(|c| (c, CredentialSource::Helper(helper))));
    }
    let entry = parsed
        .auths
        .iter()
        .find(|(k, _)| *k == host)
        .or_else(|| parsed.auths.iter().find(|(k, _)| normalize_key(k) == host));
    if let Some((key, entry)) = entry {
        let source = CredentialSource::AuthFile(file.to_path_buf());
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .with_context(|| {
                    format!("auth file {}: entry {key:?} has an \"auth\" that is not base64 of user:password", file.display())
                })?;
            let Some((user, pass)) = decoded.split_once(':') else {
                bail!(
                    "auth file {}: entry {key:?} has an \"auth\" without a ':' between user and password",
                    file.display()
                );
            };
            return Ok(Some((
                Credentials {
                    username: user.to_string(),
                    password: Secret::new(pass),
                },
                source,
            )));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some((
                Credentials {
                    username: u.clone(),
                    password: Secret::new(p.clone()),
                },
                source,
            )));
        }
        if entry.identitytoken.is_some() {
            bail!(
                "auth file {}: entry {key:?} holds an identity token, which ferry does not support; log in with a username and password or robot account",
                file.display()
            );
        }
    }
    if let Some(store) = parsed.creds_store.filter(|s| !s.is_empty()) {
        return run_helper(&store, host).map(|c| c.map(|c| (c, CredentialSource::Helper(store))));
    }
    Ok(None)
}

/// What kind of JSON error happened and where, without the text serde quotes from the document.
pub(crate) fn json_error_position(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "cannot be read",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a value of the wrong type or shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperReply {
    username: String,
    secret: String,
}

/// Runs `docker-credential-<name> get` with the host on stdin.
fn run_helper(name: &str, host: &str) -> anyhow::Result<Option<Credentials>> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run credential helper {program}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(host.as_bytes())
        .with_context(|| format!("cannot talk to credential helper {program}"))?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("credential helper {program} failed"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        bail!(
            "credential helper {program} failed for {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "credential helper {program} answered something that is not its JSON ({})",
            json_error_position(&e)
        )
    })?;
    if reply.username == "<token>" {
        bail!(
            "credential helper {program} gave an identity token for {host}, which ferry does not support"
        );
    }
    Ok(Some(Credentials {
        username: reply.username,
        password: Secret::new(reply.secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(json: &str) -> (tempfile::TempDir, CredentialOptions) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        std::fs::write(&f, json).unwrap();
        let opts = CredentialOptions {
            authfile: Some(f),
            ..CredentialOptions::default()
        };
        (dir, opts)
    }

    #[test]
    fn reads_auth_entries_by_host() {
        // "alice:s3cr3t:x" — passwords may hold ':'.
        let (_d, opts) = with_file(
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"YWxpY2U6czNjcjN0Ong="},"other":{"username":"bob","password":"pw"}}}"#,
        );
        let (c, src) = opts.resolve("reg.example:5000").unwrap().unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password.expose(), "s3cr3t:x");
        assert!(matches!(src, CredentialSource::AuthFile(_)));
        assert_eq!(opts.resolve("other").unwrap().unwrap().0.username, "bob");
        assert!(opts.resolve("nowhere:1").unwrap().is_none());
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn flags_win_and_need_a_password() {
        let opts = CredentialOptions {
            username: Some("u".into()),
            ..CredentialOptions::default()
        };
        assert!(opts.resolve("h").is_err());
        let opts = CredentialOptions {
            username: Some("u".into()),
            password: Some(Secret::new("p")),
            env_username: Some("e".into()),
            env_password: Some(Secret::new("q")),
            ..CredentialOptions::default()
        };
        let (c, src) = opts.resolve("h").unwrap().unwrap();
        assert_eq!((c.username.as_str(), src), ("u", CredentialSource::Flags));
    }

    #[test]
    fn debug_of_every_credential_type_hides_the_secrets() {
        let options = CredentialOptions {
            username: Some("alice".into()),
            password: Some(Secret::new("flag-pw-8Jq")),
            env_username: Some("bob".into()),
            env_password: Some(Secret::new("env-pw-3Lz")),
            ..CredentialOptions::default()
        };
        let shown = format!("{options:?} {options:#?}");
        assert!(
            shown.contains("alice") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(
            !shown.contains("flag-pw-8Jq") && !shown.contains("env-pw-3Lz"),
            "{shown}"
        );
        let (credentials, source) = options.resolve("reg:5000").unwrap().unwrap();
        let shown = format!("{credentials:?} {credentials:#?} {source:?} {source}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("flag-pw-8Jq"), "{shown}");
        // From an auth file: the base64 of user:password is no more shown than the password.
        let (_d, opts) = with_file(r#"{"auths":{"reg:5000":{"auth":"YWxpY2U6ZmlsZS1wdy01Tmc="}}}"#);
        let (c, src) = opts.resolve("reg:5000").unwrap().unwrap();
        assert_eq!(c.password.expose(), "file-pw-5Ng");
        let shown = format!("{c:?} {src:?} {src} {opts:?}");
        assert!(
            !shown.contains("file-pw-5Ng") && !shown.contains("YWxpY2U6"),
            "{shown}"
        );
    }

    #[test]
    fn password_stdin_drops_the_newline() {
        assert_eq!(read_password_stdin(&b"pw\n"[..]).unwrap().expose(), "pw");
        assert!(read_password_stdin(&b"\n"[..]).is_err());
    }
}
