//! Runs one real `docker-registry` process per test, on a free loopback port, in its own temp dir.

use std::fs::{self, File};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::auth::{RegistryAuth, TOKEN_ISSUER, TOKEN_SERVICE, TokenIssuer, write_htpasswd};
use crate::tls::{TlsFiles, signing_certificate, write_server_certificates};

/// The response header naming the registry instance (see [`RegistryConfig::to_yaml`]).
pub const INSTANCE_HEADER: &str = "X-Ferry-Testkit-Instance";

/// Where the Debian package installs Distribution 2.8.
pub const DEFAULT_BINARY: &str = "/usr/bin/docker-registry";

/// How a [`Registry`] is configured. Build it with struct update syntax so that
/// fields added later (auth, TLS, ...) do not break callers:
/// `RegistryConfig { startup_timeout: Duration::from_secs(30), ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The registry binary; `FERRY_TESTKIT_REGISTRY_BIN` overrides the default.
    pub binary: PathBuf,
    /// `storage.delete.enabled`.
    pub delete_enabled: bool,
    /// `storage.cache.blobdescriptor: inmemory`. Without the cache, removing a
    /// `_layers/.../link` from the storage makes the blob unknown at once (the cache
    /// keeps answering 200 until a restart).
    pub blob_descriptor_cache: bool,
    /// `validation.manifests.urls.allow` regexps; foreign layers need at least one.
    pub manifest_urls_allow: Vec<String>,
    /// `log.level`.
    pub log_level: String,
    /// How long to wait for `GET /v2/` to answer after each spawn.
    pub startup_timeout: Duration,
    /// How many ports to try if the process dies at start (port race).
    pub start_attempts: u32,
    /// How long `stop()` waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Where the temp dir (config, storage, log) is created; `FERRY_TESTKIT_TMPDIR`
    /// overrides the default, the system temp dir. Distribution fsyncs every blob it
    /// writes, so a tmpfs such as `/dev/shm` makes big scenarios about twice as fast.
    pub temp_parent: Option<PathBuf>,
    /// Client authentication: none, htpasswd (Basic) or token (Bearer, issuer run by the harness).
    pub auth: RegistryAuth,
    /// Serve HTTPS with a certificate from a fresh test CA (see [`Registry::ca_cert`]).
    pub tls: bool,
    /// `http.relativeurls`: `Location` headers are paths, not absolute URLs.
    pub relative_urls: bool,
    /// The loopback address the token issuer listens on (token auth): `127.0.0.2` puts the
    /// realm on another host than the registry's `127.0.0.1`.
    pub token_realm_host: String,
    /// `http.host`: the URL the registry builds `Location` headers from (another scheme or
    /// port than the one it serves, as behind a misconfigured load balancer).
    pub external_url: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        let binary = std::env::var_os("FERRY_TESTKIT_REGISTRY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        RegistryConfig {
            binary,
            delete_enabled: true,
            blob_descriptor_cache: true,
            manifest_urls_allow: vec!["^https?://".to_string()],
            log_level: "info".to_string(),
            startup_timeout: Duration::from_secs(10),
            start_attempts: 5,
            stop_timeout: Duration::from_secs(10),
            temp_parent: std::env::var_os("FERRY_TESTKIT_TMPDIR").map(PathBuf::from),
            auth: RegistryAuth::None,
            tls: false,
            relative_urls: false,
            token_realm_host: "127.0.0.1".to_string(),
            external_url: None,
        }
    }
}

impl RegistryConfig {
    /// The registry's YAML config for the given storage folder and port.
    /// `instance` is echoed by the registry in an `X-Ferry-Testkit-Instance` header on
    /// every response, which tells our process apart from another one on the same port.
    pub fn to_yaml(&self, storage_root: &Path, port: u16, instance: &str) -> String {
        self.to_yaml_with(storage_root, port, instance, &Extras::default())
    }

    fn to_yaml_with(
        &self,
        storage_root: &Path,
        port: u16,
        instance: &str,
        extras: &Extras,
    ) -> String {
        let mut y = String::new();
        y.push_str("version: 0.1\n");
        y.push_str("log:\n");
        y.push_str(&format!("  level: {}\n", self.log_level));
        y.push_str("  formatter: text\n");
        y.push_str("  accesslog:\n    disabled: true\n");
        y.push_str("storage:\n");
        if self.blob_descriptor_cache {
            y.push_str("  cache:\n    blobdescriptor: inmemory\n");
        }
        y.push_str("  filesystem:\n");
        y.push_str(&format!(
            "    rootdirectory: {}\n",
            yaml_quote(&storage_root.to_string_lossy())
        ));
        y.push_str("  delete:\n");
        y.push_str(&format!("    enabled: {}\n", self.delete_enabled));
        // Keep unfinished uploads in the tree: the purger would remove them.
        y.push_str("  maintenance:\n    uploadpurging:\n      enabled: false\n");
        y.push_str("http:\n");
        y.push_str(&format!("  addr: 127.0.0.1:{port}\n"));
        y.push_str("  secret: ferry-testkit-not-a-secret\n");
        y.push_str("  headers:\n");
        y.push_str(&format!(
            "    {INSTANCE_HEADER}: [{}]\n",
            yaml_quote(instance)
        ));
        if self.relative_urls {
            y.push_str("  relativeurls: true\n");
        }
        if let Some(url) = &self.external_url {
            y.push_str(&format!("  host: {}\n", yaml_quote(url)));
        }
        if let Some(tls) = &extras.tls {
            y.push_str("  tls:\n");
            y.push_str(&format!(
                "    certificate: {}\n    key: {}\n",
                yaml_quote(&tls.certificate.to_string_lossy()),
                yaml_quote(&tls.key.to_string_lossy())
            ));
        }
        if let Some(path) = &extras.htpasswd {
            y.push_str("auth:\n  htpasswd:\n    realm: ferry-testkit\n");
            y.push_str(&format!(
                "    path: {}\n",
                yaml_quote(&path.to_string_lossy())
            ));
        }
        if let Some((realm, bundle)) = &extras.token {
            y.push_str("auth:\n  token:\n");
            y.push_str(&format!("    realm: {}\n", yaml_quote(realm)));
            y.push_str(&format!("    service: {}\n", yaml_quote(TOKEN_SERVICE)));
            y.push_str(&format!("    issuer: {}\n", yaml_quote(TOKEN_ISSUER)));
            y.push_str(&format!(
                "    rootcertbundle: {}\n",
                yaml_quote(&bundle.to_string_lossy())
            ));
        }
        if !self.manifest_urls_allow.is_empty() {
            y.push_str("validation:\n  manifests:\n    urls:\n      allow:\n");
            for re in &self.manifest_urls_allow {
                y.push_str(&format!("        - {}\n", yaml_quote(re)));
            }
        }
        y
    }
}

/// Files and services made for one registry start (auth, TLS).
#[derive(Default)]
struct Extras {
    tls: Option<TlsFiles>,
    htpasswd: Option<PathBuf>,
    /// Token realm URL and root certificate bundle.
    token: Option<(String, PathBuf)>,
}

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A running `docker-registry` serving plain HTTP without auth on 127.0.0.1.
/// Dropping it kills the process and removes its temp dir.
pub struct Registry {
    port: u16,
    /// The value of the instance header this process answers with.
    instance: String,
    child: Option<Child>,
    config: RegistryConfig,
    storage_root: PathBuf,
    log_path: PathBuf,
    tls: Option<TlsFiles>,
    issuer: Option<TokenIssuer>,
    // Declared last so the process is gone before the folder is removed.
    dir: Option<TempDir>,
}

impl Registry {
    /// Starts a registry with the default config.
    pub fn start() -> Result<Registry> {
        Registry::start_with(RegistryConfig::default())
    }

    /// Starts a registry with `config`; retries on another port if the process dies at start.
    pub fn start_with(config: RegistryConfig) -> Result<Registry> {
        if !config.binary.exists() {
            bail!(
                "registry binary {} not found (install the Debian package docker-registry)",
                config.binary.display()
            );
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("ferry-registry-");
        let dir = match &config.temp_parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .context("creating registry temp dir")?;
        let storage_root = dir.path().join("storage");
        fs::create_dir_all(&storage_root)?;
        let log_path = dir.path().join("registry.log");
        let config_path = dir.path().join("config.yml");
        let mut extras = Extras::default();
        let mut issuer = None;
        if config.tls {
            extras.tls = Some(write_server_certificates(dir.path())?);
        }
        match &config.auth {
            RegistryAuth::None => {}
            RegistryAuth::Htpasswd { users } => {
                let path = dir.path().join("htpasswd");
                write_htpasswd(&path, users)?;
                extras.htpasswd = Some(path);
            }
            RegistryAuth::Token { users, lifetime } => {
                let cert = signing_certificate()?;
                let bundle = dir.path().join("token-root.pem");
                fs::write(&bundle, &cert.pem)?;
                let started = TokenIssuer::start_on(
                    &config.token_realm_host,
                    users.clone(),
                    *lifetime,
                    &cert,
                )?;
                extras.token = Some((started.realm(), bundle));
                issuer = Some(started);
            }
        }

        let attempts = config.start_attempts.max(1);
        let mut failures = Vec::new();
        for attempt in 1..=attempts {
            let port = free_port()?;
            let instance = format!(
                "{}-{port}-{attempt}",
                dir.path().file_name().unwrap_or_default().to_string_lossy()
            );
            fs::write(
                &config_path,
                config.to_yaml_with(&storage_root, port, &instance, &extras),
            )
            .context("writing registry config")?;
            let log = File::create(&log_path).context("creating registry log")?;
            let mut cmd = Command::new(&config.binary);
            cmd.arg("serve")
                .arg(&config_path)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // Environment variables named REGISTRY_* override the config file.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(key);
                }
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("spawning {}", config.binary.display()))?;
            let mut reg = Registry {
                port,
                instance: instance.clone(),
                child: Some(child),
                config: config.clone(),
                storage_root: storage_root.clone(),
                log_path: log_path.clone(),
                tls: extras.tls.clone(),
                issuer: None,
                dir: None,
            };
            match reg.wait_ready(&instance) {
                Ok(()) => {
                    reg.dir = Some(dir);
                    reg.issuer = issuer;
                    return Ok(reg);
                }
                Err(e) => {
                    reg.kill_child();
                    let tail = log_tail(&log_path, 20);
                    failures.push(format!(
                        "attempt {attempt} on port {port}: {e:#}\n--- registry log tail ---\n{tail}"
                    ));
                }
            }
        }
        Err(anyhow!(
            "docker-registry did not start after {attempts} attempts\n{}",
            failures.join("\n")
        ))
    }

    /// Waits until `GET /v2/` answers 200 with our instance header: an answer without it
    /// would come from another test's registry that won the race for the port.
    fn wait_ready(&mut self, instance: &str) -> Result<()> {
        let deadline = Instant::now() + self.config.startup_timeout;
        let agent = match &self.tls {
            Some(tls) => crate::https_agent(Duration::from_secs(2), &tls.ca)?,
            None => crate::http_agent(Duration::from_secs(2)),
        };
        let url = format!("{}/v2/", self.url());
        // With auth on, an unauthenticated ping is answered 401.
        let ready_status = if self.config.auth == RegistryAuth::None {
            200
        } else {
            401
        };
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("registry exited early with {status}");
            }
            if let Ok(resp) = agent.get(&url).call() {
                let ours = resp
                    .headers()
                    .get(INSTANCE_HEADER)
                    .is_some_and(|v| v.as_bytes() == instance.as_bytes());
                if resp.status() == ready_status && ours {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "GET {url} did not answer 200 within {:?}",
                    self.config.startup_timeout
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, or `https://` when the registry serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed the registry's certificate, when it serves TLS.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// The token issuer, when the registry uses token auth.
    pub fn token_issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    /// The port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder that contains `docker/registry/v2` (the registry's `rootdirectory`).
    pub fn storage_root(&self) -> &Path {
        &self.storage_root
    }

    /// The file receiving the registry's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the registry log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// The OS process id of the registry.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM, waits for the process to exit (SIGKILL after the stop timeout),
    /// and hands back the storage tree it wrote.
    pub fn stop(mut self) -> Result<StoppedTree> {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            if child.try_wait()?.is_none() {
                let _ = kill(pid, Signal::SIGTERM);
                let deadline = Instant::now() + self.config.stop_timeout;
                loop {
                    if child.try_wait()?.is_some() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let dir = self
            .dir
            .take()
            .expect("a started registry owns its temp dir");
        Ok(StoppedTree {
            dir,
            storage_root: self.storage_root.clone(),
            log_path: self.log_path.clone(),
        })
    }

    /// Sends `signal` to the registry process: SIGSTOP freezes it (it still accepts connections,
    /// through the kernel, and answers nothing), SIGCONT thaws it.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().context("the registry is not running")?;
        kill(Pid::from_raw(pid as i32), signal).with_context(|| format!("kill -{signal} {pid}"))
    }

    /// Kills the process at once (SIGKILL), as a crash would; the storage stays for `restart`.
    pub fn crash(&mut self) {
        self.kill_child();
    }

    /// Starts the registry again on the same port, config and storage (after `crash`).
    pub fn restart(&mut self) -> Result<()> {
        self.kill_child();
        let dir = self
            .dir
            .as_ref()
            .context("a started registry owns its temp dir")?
            .path()
            .to_path_buf();
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .context("opening registry log")?;
        let mut cmd = Command::new(&self.config.binary);
        cmd.arg("serve")
            .arg(dir.join("config.yml"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawning {}", self.config.binary.display()))?,
        );
        let instance = self.instance.clone();
        self.wait_ready(&instance)
            .with_context(|| format!("restart; log tail:\n{}", self.log_tail(20)))
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill_child();
    }
}

/// The storage folder of a stopped registry; removed when dropped.
pub struct StoppedTree {
    dir: TempDir,
    storage_root: PathBuf,
    log_path: PathBuf,
}

impl StoppedTree {
    /// The storage root: the folder containing `docker/registry/v2`.
    pub fn root(&self) -> &Path {
        &self.storage_root
    }

    /// `root()/docker/registry/v2`.
    pub fn v2(&self) -> PathBuf {
        self.storage_root.join("docker/registry/v2")
    }

    /// The registry's log file (it lives beside the storage root).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Gives up ownership of the temp dir; its `storage/` subfolder is the storage root.
    pub fn into_temp_dir(self) -> TempDir {
        self.dir
    }

    /// Keeps the folder on disk (not removed on drop) and returns the storage root.
    pub fn keep(self) -> PathBuf {
        let root = self.storage_root.clone();
        let _ = self.dir.keep();
        root
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
