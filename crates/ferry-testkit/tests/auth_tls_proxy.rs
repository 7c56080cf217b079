//! Checks the harness's auth (htpasswd, token issuer), TLS and counting proxy against real docker-registry (the Harbor double: `harbor_double.rs`).

use std::time::Duration;

use base64::Engine as _;
use ferry_testkit::{
    Proxy, Pusher, Registry, RegistryAuth, RegistryConfig, User, check_registry, generate_standard,
    standard::generate_standard_at, upload_counts,
};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn www_authenticate(r: &ureq::http::Response<ureq::Body>) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn htpasswd_registry_takes_only_the_right_password() {
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd("alice", "s3cret-pw"),
        ..Default::default()
    })
    .unwrap();
    let url = format!("{}/v2/", reg.url());
    let a = agent();
    let r = a.get(&url).call().unwrap();
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(&r).starts_with("Basic "), "{r:?}");
    let r = a
        .get(&url)
        .header("Authorization", basic("alice", "wrong"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = a
        .get(&url)
        .header("Authorization", basic("alice", "s3cret-pw"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn token_registry_trusts_the_issuer_and_enforces_scopes() {
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::Token {
            users: vec![
                User::new("bob", "pw-bob"),
                User::new("ro", "pw-ro").read_only(),
            ],
            lifetime: Duration::from_secs(300),
        },
        ..Default::default()
    })
    .unwrap();
    let a = agent();
    let r = a
        .post(format!("{}/v2/team/app/blobs/uploads/", reg.url()))
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = www_authenticate(&r);
    let issuer = reg.token_issuer().unwrap();
    assert!(challenge.contains(&issuer.realm()), "{challenge}");
    // Distribution lists the actions in map order: either way round.
    assert!(
        challenge.contains("scope=\"repository:team/app:pull,push\"")
            || challenge.contains("scope=\"repository:team/app:push,pull\""),
        "{challenge}"
    );

    let token = |user: &str, pw: &str, scope: &str| -> (u16, String) {
        let r = a
            .get(issuer.realm())
            .query("service", ferry_testkit::auth::TOKEN_SERVICE)
            .query("scope", scope)
            .header("Authorization", basic(user, pw))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(&r.into_body().read_to_vec().unwrap()).unwrap();
        (
            status,
            body["token"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (status, _) = token("bob", "nope", "repository:team/app:pull,push");
    assert_eq!(status, 401);

    let (status, t) = token("bob", "pw-bob", "repository:team/app:pull,push");
    assert_eq!(status, 200);
    let r = a
        .post(format!("{}/v2/team/app/blobs/uploads/", reg.url()))
        .header("Authorization", format!("Bearer {t}"))
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 202, "the registry accepts the issuer's token");
    let r = a
        .post(format!("{}/v2/other/app/blobs/uploads/", reg.url()))
        .header("Authorization", format!("Bearer {t}"))
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 401, "a token for one repository opens no other");

    let (status, t) = token("ro", "pw-ro", "repository:team/app:pull,push");
    assert_eq!(status, 200);
    let r = a
        .post(format!("{}/v2/team/app/blobs/uploads/", reg.url()))
        .header("Authorization", format!("Bearer {t}"))
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 401, "a read-only user gets pull only");
    let log = issuer.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].user.as_deref(), Some("bob"));
    assert_eq!(log[1].scopes, vec!["repository:team/app:pull,push"]);
}

#[test]
fn tls_registry_is_trusted_only_with_its_ca() {
    let reg = Registry::start_with(RegistryConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let ca = reg.ca_cert().unwrap();
    assert!(
        std::fs::read_to_string(ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let err = agent().get(format!("{}/v2/", reg.url())).call();
    assert!(err.is_err(), "an unknown CA is refused");
    // skopeo trusts the CA through --cert-dir (a folder of *.crt files).
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(ca, certs.path().join("ca.crt")).unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["list-tags", "--cert-dir"])
        .arg(certs.path())
        .arg(format!("docker://{}/nothing/here", reg.host()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("certificate"),
        "skopeo talks TLS to it: {stderr}"
    );
}

#[test]
fn proxy_forwards_and_counts() {
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let p = Pusher::from_url(&proxy.url());
    let truth = generate_standard_at(&p, 3).unwrap();
    check_registry(&Pusher::new(&reg), &truth).unwrap();
    let log = proxy.requests();
    let counts = upload_counts(&log);
    assert!(counts.sessions > 0);
    assert!(counts.mounts >= 1, "the scenario mounts one blob");
    // The generator uploads shared layers once per repository (no mounts but one).
    assert!(counts.completed.len() >= truth.all_blobs().len());
    let put = log.iter().find(|r| r.completed_upload().is_some()).unwrap();
    assert!(put.content_length.is_some() && !put.chunked);

    proxy.fail_next(2, 503, |m, path| m == "GET" && path == "/v2/");
    let a = agent();
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            a.get(format!("{}/v2/", proxy.url()))
                .call()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(statuses, vec![503, 503, 200]);
}

#[test]
fn proxy_counts_blob_bytes_and_serves_its_counts() {
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let p = Pusher::from_url(&proxy.url());
    let (a, b) = (vec![1u8; 3000], vec![2u8; 500]);
    p.push_blob("x/one", &a).unwrap();
    let d = p.push_blob("x/two", &b).unwrap();
    p.upload_blob("x/three", &b, &d.digest).unwrap();
    let counts = upload_counts(&proxy.requests());
    assert_eq!(counts.bytes, 3000 + 500 + 500, "{counts:?}");
    assert_eq!(counts.completed.values().sum::<usize>(), 3);
    // An injected failure never reached the registry: its body is not counted.
    proxy.fail_next(1, 503, |m, path| {
        m == "PUT" && path.contains("/blobs/uploads/")
    });
    assert!(
        p.upload_blob("x/four", &a, &ferry_testkit::Descriptor::of("x", &a).digest)
            .is_err()
    );
    let text = agent()
        .get(format!(
            "{}{}",
            proxy.url(),
            ferry_testkit::proxy::COUNTS_PATH
        ))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["bytes"], 4000, "{body}");
    assert_eq!(body["sessions"], 4, "{body}");
}

#[test]
fn plain_generation_still_works() {
    let reg = Registry::start().unwrap();
    generate_standard(&reg, 1).unwrap();
}
