//! Credentials never leak: not in output, reports, failed lists or files, never in clear, and each server gets only what is meant for it.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ferry_testkit::{Proxy, Registry, RegistryAuth, RegistryConfig, TcpRelay};

use crate::util::{Ran, push_cmd, run, standard_tree, validate_cmd, workdir};

const USER: &str = "mig-user";
/// Distinctive, so a substring search means something.
const PASSWORD: &str = "S3cr3t-Pw-q7Vx2Lm9";
const WRONG: &str = "Wr0ng-Pw-z4Kd8Rt1";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The password and the base64 of `user:password`, labelled for messages.
fn secrets_of(password: &str) -> Vec<(String, String)> {
    vec![
        (format!("password {password}"), password.to_string()),
        (
            format!("base64 of {USER}:{password}"),
            b64(&format!("{USER}:{password}")),
        ),
    ]
}

/// One ferry run and where it ran: its output and every file under its folder are checked.
struct Done {
    what: String,
    ran: Ran,
    dir: tempfile::TempDir,
}

/// Runs `cmd` (made for `dir`) with `--debug` and `--report`, with HOME and the cache inside
/// `dir`, so every file ferry writes lands where the checks look.
fn run_in(what: &str, dir: tempfile::TempDir, mut cmd: assert_cmd::Command) -> Done {
    let home = dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    cmd.arg("--debug")
        .arg("--report")
        .arg(dir.path().join("report.json"))
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join(".cache"));
    let ran = run(&mut cmd);
    Done {
        what: what.to_string(),
        ran,
        dir,
    }
}

/// Every file under `root`, with its bytes.
fn files_under(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), fs::read(e.path()).expect("read")))
        .collect()
}

/// None of `secrets` in the run's stdout, stderr, or any file it wrote (report, failed list, …).
fn assert_nothing_leaks(done: &Done, secrets: &[(String, String)]) {
    let mut places = vec![
        ("stdout".to_string(), done.ran.stdout.clone().into_bytes()),
        ("stderr".to_string(), done.ran.stderr.clone().into_bytes()),
    ];
    for (path, bytes) in files_under(done.dir.path()) {
        places.push((path.display().to_string(), bytes));
    }
    for (place, bytes) in &places {
        let text = String::from_utf8_lossy(bytes);
        for (label, secret) in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{}: {label} in {place}:\n{text}",
                done.what
            );
        }
    }
}

/// The report and the failed list were written (so the checks above looked at them).
fn assert_outputs_written(done: &Done, failed_list: &str) {
    for name in ["report.json", failed_list] {
        assert!(
            done.dir.path().join(name).is_file(),
            "{}: {name} not written:\n{}",
            done.what,
            done.ran.all()
        );
    }
}

/// A manifest PUT of `charts/mychart` answered 400, so the push has a failed image to list.
fn fail_the_chart(proxy: &Proxy) {
    proxy.answer_next(
        1,
        400,
        &[],
        r#"{"errors":[{"code":"MANIFEST_INVALID","message":"ferry-testkit: refused on purpose"}]}"#,
        |m, p| m == "PUT" && p.starts_with("/v2/charts/mychart/manifests/"),
    );
}

/// Writes `{"auths": {host: {"auth": base64(user:password)}}}` as `dir/name`.
fn auth_file(dir: &Path, name: &str, host: &str, password: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let json = serde_json::json!({"auths": {host: {"auth": b64(&format!("{USER}:{password}"))}}});
    fs::write(&path, json.to_string()).unwrap();
    path
}

/// push (stdin, then environment), validate (`--authfile`, then `DOCKER_CONFIG`), and a wrong
/// password given each way, all through `proxy`, with `--debug`, `--report` and `-o`.
fn every_way(root: &Path, proxy: &Proxy) -> Vec<Done> {
    let inputs = workdir();
    let dest = format!("http://{}", proxy.host());
    let mut runs = Vec::new();

    fail_the_chart(proxy);
    let dir = workdir();
    let cmd = push_cmd(
        root,
        &dest,
        dir.path(),
        &["--username", USER, "--password-stdin"],
    );
    let mut cmd = cmd;
    cmd.write_stdin(format!("{PASSWORD}\n"));
    let done = run_in("push, --password-stdin", dir, cmd);
    assert_eq!(done.ran.code, 1, "one image fails: {}", done.ran.all());
    assert_outputs_written(&done, "failed.txt");
    let failed = fs::read_to_string(done.dir.path().join("failed.txt")).unwrap();
    assert!(failed.contains("charts/mychart"), "{failed}");
    runs.push(done);

    let dir = workdir();
    let mut cmd = push_cmd(root, &dest, dir.path(), &[]);
    cmd.env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    let done = run_in("push, FERRY_USERNAME/FERRY_PASSWORD", dir, cmd);
    assert_eq!(done.ran.code, 0, "{}", done.ran.all());
    assert_outputs_written(&done, "failed.txt");
    runs.push(done);

    let authfile = auth_file(inputs.path(), "auth.json", &proxy.host(), PASSWORD);
    let dir = workdir();
    let mut cmd = validate_cmd(root, &dest, dir.path(), &["--authfile"]);
    cmd.arg(&authfile);
    let done = run_in("validate, --authfile", dir, cmd);
    assert_eq!(done.ran.code, 0, "{}", done.ran.all());
    assert_outputs_written(&done, "validate-failed.txt");
    runs.push(done);

    auth_file(inputs.path(), "docker/config.json", &proxy.host(), PASSWORD);
    let dir = workdir();
    let mut cmd = validate_cmd(root, &dest, dir.path(), &[]);
    cmd.env("DOCKER_CONFIG", inputs.path().join("docker"));
    let done = run_in("validate, DOCKER_CONFIG config.json", dir, cmd);
    assert_eq!(done.ran.code, 0, "{}", done.ran.all());
    runs.push(done);

    // A failing login, each way.
    let dir = workdir();
    let mut cmd = push_cmd(
        root,
        &dest,
        dir.path(),
        &["--username", USER, "--password-stdin"],
    );
    cmd.write_stdin(WRONG);
    runs.push(run_in("push, wrong password on stdin", dir, cmd));
    let dir = workdir();
    let mut cmd = validate_cmd(root, &dest, dir.path(), &[]);
    cmd.env("FERRY_USERNAME", USER).env("FERRY_PASSWORD", WRONG);
    runs.push(run_in(
        "validate, wrong password in the environment",
        dir,
        cmd,
    ));
    let wrong_file = auth_file(inputs.path(), "wrong.json", &proxy.host(), WRONG);
    let dir = workdir();
    let mut cmd = push_cmd(root, &dest, dir.path(), &["--authfile"]);
    cmd.arg(&wrong_file);
    runs.push(run_in("push, wrong password in an auth file", dir, cmd));
    for done in &runs[4..] {
        assert_eq!(done.ran.code, 2, "{}: {}", done.what, done.ran.all());
        assert!(
            done.ran.stderr.contains(USER) && done.ran.stderr.contains("refused"),
            "{}: says whose credentials were refused: {}",
            done.what,
            done.ran.stderr
        );
    }
    runs
}

/// htpasswd (Basic): no password, no base64 of `user:password` anywhere; the registry gets
/// exactly the Basic credentials it asked for.
#[test]
fn basic_auth_credentials_appear_nowhere() {
    let fx = standard_tree(131);
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd(USER, PASSWORD),
        ..Default::default()
    })
    .unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let runs = every_way(fx.root(), &proxy);

    let mut secrets = secrets_of(PASSWORD);
    secrets.extend(secrets_of(WRONG));
    for done in &runs {
        assert_nothing_leaks(done, &secrets);
    }
    let sent: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.authorization)
        .collect();
    assert!(!sent.is_empty());
    let right = b64(&format!("{USER}:{PASSWORD}"));
    let wrong = b64(&format!("{USER}:{WRONG}"));
    for r in &sent {
        assert_eq!(r.auth_scheme.as_deref(), Some("Basic"), "{r:?}");
        let credential = r.credential.as_deref().unwrap_or_default();
        assert!(credential == right || credential == wrong, "{r:?}");
    }
}

/// Token auth with the realm on another host (127.0.0.2): no password, base64 or token
/// anywhere; the realm gets the Basic credentials and never a token, the registry gets tokens
/// the realm issued and never the Basic credentials.
#[test]
fn bearer_auth_credentials_and_tokens_appear_nowhere_and_each_side_gets_its_own() {
    let fx = standard_tree(132);
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::token(USER, PASSWORD),
        token_realm_host: "127.0.0.2".to_string(),
        ..Default::default()
    })
    .unwrap();
    let issuer = reg.token_issuer().unwrap();
    assert!(issuer.realm().starts_with("http://127.0.0.2:"));
    let proxy = Proxy::start(&reg.url()).unwrap();
    let runs = every_way(fx.root(), &proxy);

    let tokens = issuer.tokens();
    assert!(tokens.len() > 4, "{tokens:?}");
    let mut secrets = secrets_of(PASSWORD);
    secrets.extend(secrets_of(WRONG));
    secrets.extend(
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("token {i}"), t.clone())),
    );
    for done in &runs {
        assert_nothing_leaks(done, &secrets);
    }

    let right = b64(&format!("{USER}:{PASSWORD}"));
    let wrong = b64(&format!("{USER}:{WRONG}"));
    for r in issuer.requests() {
        let got = r.authorization.as_deref().unwrap_or_default();
        assert!(
            got == format!("Basic {right}") || got == format!("Basic {wrong}"),
            "the realm got {got:?}: {r:?}"
        );
    }
    let mut bearer = 0;
    for r in proxy.requests() {
        match r.auth_scheme.as_deref() {
            None => {}
            Some("Bearer") => {
                let token = r.credential.clone().unwrap_or_default();
                assert!(tokens.contains(&token), "not a token of the realm: {r:?}");
                bearer += 1;
            }
            Some(other) => panic!(
                "the registry got {other} credentials after challenging with Bearer: {} {}",
                r.method, r.path
            ),
        }
    }
    assert!(bearer > 0);
}

/// Against a plain-HTTP registry, credentials go over the wire in clear only when the user said
/// so (`--tls-verify=false` or an `http://` destination). A recording TCP relay in front of the
/// registry sees every byte ferry sends.
#[test]
fn plain_http_carries_credentials_only_when_asked() {
    let fx = standard_tree(133);
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd(USER, PASSWORD),
        ..Default::default()
    })
    .unwrap();
    let relay = TcpRelay::start().unwrap();
    relay.set_backend(reg.port());
    let clear = b64(&format!("{USER}:{PASSWORD}"));
    let wire = |relay: &TcpRelay| String::from_utf8_lossy(&relay.client_bytes()).into_owned();

    let dir = workdir();
    for extra in [&[][..], &["--tls-verify=true"][..]] {
        let mut cmd = push_cmd(fx.root(), &relay.host(), dir.path(), extra);
        cmd.env("FERRY_USERNAME", USER)
            .env("FERRY_PASSWORD", PASSWORD);
        let done = run_in("push to a plain-HTTP registry, https asked", workdir(), cmd);
        assert_eq!(done.ran.code, 2, "{}", done.ran.all());
        assert!(
            done.ran
                .stderr
                .contains(&format!("{} answers plain HTTP, not HTTPS", relay.host()))
                && done.ran.stderr.contains("--tls-verify=false"),
            "says why and how to allow it: {}",
            done.ran.stderr
        );
        assert!(
            !done.ran.stderr.contains("retry"),
            "not retried: {}",
            done.ran.stderr
        );
        assert_nothing_leaks(&done, &secrets_of(PASSWORD));
    }
    let seen = wire(&relay);
    assert!(!seen.is_empty(), "ferry tried the relay");
    assert!(!seen.contains(&clear), "credentials went in clear");
    assert!(!seen.contains(PASSWORD));

    // Allowed: the relay then sees them, which shows it would have seen them above.
    let mut cmd = validate_cmd(
        fx.root(),
        &relay.host(),
        dir.path(),
        &["--tls-verify=false"],
    );
    cmd.env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    let done = run_in("validate, --tls-verify=false", workdir(), cmd);
    assert_eq!(
        done.ran.code,
        1,
        "nothing was pushed yet: {}",
        done.ran.all()
    );
    assert!(wire(&relay).contains(&clear));
    let mut cmd = push_cmd(
        fx.root(),
        &format!("http://{}", relay.host()),
        dir.path(),
        &[],
    );
    cmd.env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    let done = run_in("push, http://", workdir(), cmd);
    assert_eq!(done.ran.code, 0, "{}", done.ran.all());
    assert_nothing_leaks(&done, &secrets_of(PASSWORD));
}

/// An HTTPS registry whose token realm is plain HTTP: ferry does not send the credentials
/// there (exit 2, saying why and how to allow it) unless `--tls-verify=false` allows plain HTTP.
#[test]
fn an_http_realm_of_an_https_registry_gets_no_credentials_unless_plain_http_is_allowed() {
    let fx = standard_tree(134);
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::token(USER, PASSWORD),
        token_realm_host: "127.0.0.2".to_string(),
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let issuer = reg.token_issuer().unwrap();
    assert!(issuer.realm().starts_with("http://"));
    let ca = reg.ca_cert().unwrap().to_path_buf();

    let dir = workdir();
    let mut cmd = push_cmd(fx.root(), &reg.host(), dir.path(), &["--ca-cert"]);
    cmd.arg(&ca)
        .env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    let push = run_in("push, http realm", workdir(), cmd);
    let mut cmd = validate_cmd(fx.root(), &reg.host(), dir.path(), &["--ca-cert"]);
    cmd.arg(&ca)
        .args(["--username", USER, "--password-stdin"])
        .write_stdin(PASSWORD);
    let validate = run_in("validate, http realm", workdir(), cmd);
    for done in [&push, &validate] {
        assert_eq!(done.ran.code, 2, "{}: {}", done.what, done.ran.all());
        assert!(
            done.ran.stderr.contains("plain-HTTP token service")
                && done.ran.stderr.contains(&issuer.realm())
                && done.ran.stderr.contains("--tls-verify=false"),
            "{}: {}",
            done.what,
            done.ran.stderr
        );
        assert_nothing_leaks(done, &secrets_of(PASSWORD));
    }
    assert!(
        issuer.requests().is_empty(),
        "the realm was asked: {:?}",
        issuer.requests()
    );

    let mut cmd = push_cmd(fx.root(), &reg.host(), dir.path(), &["--tls-verify=false"]);
    cmd.env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    let done = run_in("push, http realm, --tls-verify=false", workdir(), cmd);
    assert_eq!(done.ran.code, 0, "{}", done.ran.all());
    let mut secrets = secrets_of(PASSWORD);
    secrets.extend(
        issuer
            .tokens()
            .into_iter()
            .map(|t| ("a token".to_string(), t)),
    );
    assert_nothing_leaks(&done, &secrets);
    assert!(!issuer.requests().is_empty());
}

/// An HTTPS registry that sends uploads to `http://` on its own host (a load balancer that
/// terminates TLS without telling the registry): ferry does not follow with the credentials in
/// clear. The registry's `Location` URLs point at a recording TCP relay in front of it.
#[test]
fn an_upload_location_downgraded_to_http_gets_no_credentials() {
    let fx = standard_tree(135);
    let relay = TcpRelay::start().unwrap();
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd(USER, PASSWORD),
        tls: true,
        external_url: Some(format!("http://{}", relay.host())),
        ..Default::default()
    })
    .unwrap();
    relay.set_backend(reg.port());
    let ca = reg.ca_cert().unwrap().to_path_buf();
    let clear = b64(&format!("{USER}:{PASSWORD}"));

    let dir = workdir();
    let mut cmd = push_cmd(fx.root(), &relay.host(), dir.path(), &["--ca-cert"]);
    cmd.arg(&ca)
        .env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    let done = run_in("push, Location on http://", workdir(), cmd);
    let seen = String::from_utf8_lossy(&relay.client_bytes()).into_owned();
    assert!(!seen.is_empty(), "ferry went through the relay");
    assert!(
        !seen.contains(&clear),
        "credentials went in clear to the Location: {}",
        done.ran.all()
    );
    assert_eq!(done.ran.code, 2, "{}", done.ran.all());
    assert!(
        done.ran.stderr.contains("plain HTTP") && done.ran.stderr.contains("--tls-verify=false"),
        "{}",
        done.ran.stderr
    );
    assert_nothing_leaks(&done, &secrets_of(PASSWORD));
}

/// A registry that redirects blob reads to another host (storage behind a CDN): the other host
/// gets no credentials (`ferry validate` follows the redirect without its `Authorization`).
#[test]
fn a_redirect_to_another_host_carries_no_credentials() {
    let fx = standard_tree(136);
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd(USER, PASSWORD),
        ..Default::default()
    })
    .unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let elsewhere = Proxy::start(&reg.url()).unwrap();
    let dest = format!("http://{}", proxy.host());
    let dir = workdir();
    let mut cmd = push_cmd(fx.root(), &dest, dir.path(), &[]);
    cmd.env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    assert_eq!(run(&mut cmd).code, 0);

    let target = format!(
        "{}/v2/library/alpine/blobs/sha256:{}",
        elsewhere.url(),
        "0".repeat(64)
    );
    proxy.answer_next(usize::MAX, 307, &[("Location", &target)], "", |m, p| {
        m == "HEAD" && p.contains("/blobs/")
    });
    let mut cmd = validate_cmd(fx.root(), &dest, dir.path(), &[]);
    cmd.env("FERRY_USERNAME", USER)
        .env("FERRY_PASSWORD", PASSWORD);
    let done = run_in("validate, blobs redirected", workdir(), cmd);
    assert_eq!(done.ran.code, 1, "{}", done.ran.all());
    let followed = elsewhere.requests();
    assert!(!followed.is_empty(), "{}", done.ran.all());
    for r in &followed {
        assert!(!r.authorization, "credentials followed the redirect: {r:?}");
    }
    assert_nothing_leaks(&done, &secrets_of(PASSWORD));
}
