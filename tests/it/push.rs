//! `ferry push` into real docker-registry destinations: digests kept, blobs sent once, auth, TLS, Harbor double, damage.

use base64::Engine as _;
use ferry_testkit::{
    HarborDouble, Proxy, Pusher, Registry, RegistryAuth, RegistryConfig, upload_counts,
};

use crate::util::*;

/// The standard tree lands whole; skopeo reads every tag back; a second run only skips.
#[test]
fn standard_tree_lands_with_digests_and_a_rerun_skips_everything() {
    let fx = standard_tree(11);
    let before = snapshot(fx.root());
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let dir = workdir();
    let dest = format!("http://{}", proxy.host());
    let ran = run(&mut push_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
    for (name, tag) in &fx.truth.tags {
        let raw = skopeo_raw(&format!(
            "docker://{}/{}:{}",
            reg.host(),
            default_destination(&tag.repository),
            tag.tag
        ));
        assert_eq!(sha256(&raw), tag.digest, "skopeo reads {name} back");
    }
    // Each unique blob crossed the wire once; every other repository mounted it or had it.
    let counts = upload_counts(&proxy.requests());
    let unique = fx.truth.all_blobs();
    assert_eq!(
        counts.completed.keys().cloned().collect::<Vec<_>>(),
        unique.keys().cloned().collect::<Vec<_>>()
    );
    assert!(counts.completed.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(counts.sessions, unique.len(), "no session without a blob");
    assert!(counts.mounts > 0);
    for r in proxy.requests() {
        if r.completed_upload().is_some() {
            assert!(!r.chunked && r.content_length.is_some(), "{r:?}");
        }
    }
    assert!(
        std::fs::read_to_string(dir.path().join("failed.txt"))
            .unwrap()
            .is_empty()
    );

    proxy.clear_requests();
    let again = run(&mut push_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(again.code, 0, "{}", again.stderr);
    let writes: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .collect();
    assert!(writes.is_empty(), "second run wrote: {writes:?}");
    let tags = fx.truth.tags.len();
    assert!(
        again
            .stderr
            .contains(&format!("images: 0 pushed, {tags} skipped, 0 failed")),
        "{}",
        again.stderr
    );
    assert_eq!(snapshot(fx.root()), before, "the source is read-only");
}

/// Every tag of the truth at `host` under the default mapping, read back by skopeo with `extra` flags.
fn assert_skopeo_sees_all(host: &str, truth: &ferry_testkit::Truth, extra: &[&str]) {
    for (name, tag) in &truth.tags {
        let reference = format!(
            "docker://{host}/{}:{}",
            default_destination(&tag.repository),
            tag.tag
        );
        assert_eq!(skopeo_digest(&reference, extra), tag.digest, "{name}");
    }
}

fn assert_no_secret(ran: &Ran, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !ran.all().contains(s),
            "secret {s:?} leaked:\n{}",
            ran.all()
        );
    }
}

#[test]
fn htpasswd_auth_pushes_with_the_right_password_and_exits_2_with_a_wrong_one() {
    let fx = standard_tree(21);
    let password = "pw-htpasswd-7Qz";
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd("alice", password),
        ..Default::default()
    })
    .unwrap();
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let report = dir.path().join("report.json");

    let wrong = "wrong-pw-K2v";
    let ran = run(push_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--debug", "--username", "alice", "--password-stdin"],
    )
    .arg("--report")
    .arg(&report)
    .write_stdin(format!("{wrong}\n")));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("alice"), "{}", ran.stderr);
    assert!(ran.stderr.contains("refused"), "{}", ran.stderr);
    assert_no_secret(&ran, &[wrong]);

    let ran = run(push_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--debug", "--username", "alice", "--password-stdin"],
    )
    .arg("--report")
    .arg(&report)
    .write_stdin(format!("{password}\n")));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_no_secret(&ran, &[password]);
    let report_text = std::fs::read_to_string(&report).unwrap();
    assert!(!report_text.contains(password));
    let creds = format!("alice:{password}");
    assert_skopeo_sees_all(
        &reg.host(),
        &fx.truth,
        &["--tls-verify=false", "--creds", &creds],
    );

    // The same credentials from the environment: everything is already there.
    let ran = run(push_cmd(fx.root(), &dest, dir.path(), &[])
        .env("FERRY_USERNAME", "alice")
        .env("FERRY_PASSWORD", password));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.stderr.contains("0 pushed"), "{}", ran.stderr);
}

#[test]
fn token_auth_pushes_with_scoped_tokens_and_refuses_wrong_credentials() {
    let fx = standard_tree(22);
    let password = "pw-token-9Xr";
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::token("bob", password),
        ..Default::default()
    })
    .unwrap();
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let issuer = reg.token_issuer().unwrap();

    // Credentials from an auth file (docker config.json shape).
    let authfile = dir.path().join("auth.json");
    let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {reg.host(): {"auth": encode(&format!("bob:{password}"))}}})
            .to_string(),
    )
    .unwrap();
    let ran = run(push_cmd(fx.root(), &dest, dir.path(), &["--debug"])
        .arg("--authfile")
        .arg(&authfile));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let tokens: Vec<String> = issuer
        .requests()
        .into_iter()
        .filter_map(|r| r.token)
        .collect();
    assert!(!tokens.is_empty());
    let tokens_ref: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_no_secret(&ran, &[password]);
    assert_no_secret(&ran, &tokens_ref);
    // A mount asks for push on the target and pull on the source, in one token.
    let mount_scopes = issuer.requests().into_iter().any(|r| {
        r.scopes.len() == 2
            && r.scopes.iter().any(|s| s.ends_with(":pull,push"))
            && r.scopes.iter().any(|s| s.ends_with(":pull"))
    });
    assert!(mount_scopes, "{:?}", issuer.requests());
    let creds = format!("bob:{password}");
    assert_skopeo_sees_all(
        &reg.host(),
        &fx.truth,
        &["--tls-verify=false", "--creds", &creds],
    );

    let wrong = "not-the-pw-4Hq";
    let ran = run(push_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--debug", "--username", "bob", "--password-stdin"],
    )
    .write_stdin(wrong));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("bob"), "{}", ran.stderr);
    assert!(ran.stderr.contains("refused"), "{}", ran.stderr);
    assert_no_secret(&ran, &[wrong]);

    // No credentials at all: a clear message saying how to give them.
    let ran = run(&mut push_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("--password-stdin"), "{}", ran.stderr);
}

#[test]
fn a_401_mid_run_fetches_a_fresh_token_and_goes_on() {
    let fx = standard_tree(23);
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::token("bob", "pw-bob"),
        ..Default::default()
    })
    .unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    proxy.fail_next(1, 401, |m, p| m == "PUT" && p.contains("/manifests/"));
    let dir = workdir();
    let ran = run(push_cmd(
        fx.root(),
        &format!("http://{}", proxy.host()),
        dir.path(),
        &["--username", "bob", "--password-stdin"],
    )
    .write_stdin("pw-bob"));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(proxy.requests().iter().filter(|r| r.injected).count(), 1);
    assert_skopeo_sees_all(
        &reg.host(),
        &fx.truth,
        &["--tls-verify=false", "--creds", "bob:pw-bob"],
    );
}

#[test]
fn self_signed_https_needs_ca_cert_or_tls_verify_false() {
    let fx = standard_tree(24);
    let dir = workdir();
    let reg = Registry::start_with(RegistryConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let ran = run(&mut push_cmd(fx.root(), &reg.host(), dir.path(), &[]));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("--ca-cert"), "{}", ran.stderr);
    assert!(ran.stderr.contains("--tls-verify=false"), "{}", ran.stderr);
    assert!(ran.stderr.contains(&reg.host()), "{}", ran.stderr);

    let ran = run(push_cmd(fx.root(), &reg.host(), dir.path(), &[])
        .arg("--ca-cert")
        .arg(reg.ca_cert().unwrap()));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let certs = workdir();
    std::fs::copy(reg.ca_cert().unwrap(), certs.path().join("ca.crt")).unwrap();
    let cert_dir = certs.path().to_str().unwrap().to_string();
    assert_skopeo_sees_all(&reg.host(), &fx.truth, &["--cert-dir", &cert_dir]);

    let other = Registry::start_with(RegistryConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let ran = run(&mut push_cmd(
        fx.root(),
        &other.host(),
        dir.path(),
        &["--tls-verify=false"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_skopeo_sees_all(&other.host(), &fx.truth, &["--tls-verify=false"]);
}

#[test]
fn tls_verify_false_falls_back_to_plain_http() {
    let fx = standard_tree(25);
    let dir = workdir();
    let reg = Registry::start().unwrap();
    let ran = run(&mut push_cmd(fx.root(), &reg.host(), dir.path(), &[]));
    assert_eq!(ran.code, 2, "https only by default: {}", ran.all());
    let ran = run(&mut push_cmd(
        fx.root(),
        &reg.host(),
        dir.path(),
        &["--tls-verify=false"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
}

/// The digest of a blob that only `reference`'s image uses.
fn blob_only_in(truth: &ferry_testkit::Truth, reference: &str) -> String {
    let image = &truth.tags[reference];
    image
        .blobs
        .iter()
        .rev()
        .find(|b| {
            truth
                .tags
                .iter()
                .filter(|(k, t)| k.as_str() != reference && t.digest != image.digest)
                .all(|(_, t)| t.blobs.iter().all(|o| o.digest != b.digest))
        })
        .unwrap_or_else(|| panic!("{reference} has no blob of its own"))
        .digest
        .clone()
}

#[test]
fn a_damaged_tree_pushes_every_healthy_image_and_names_each_broken_one() {
    use ferry_testkit::tree;
    let fx = standard_tree(31);
    let root = fx.root();
    let missing = blob_only_in(&fx.truth, "charts/mychart:0.1.0");
    std::fs::remove_file(tree::blob_data(root, &missing)).unwrap();
    let corrupt = blob_only_in(&fx.truth, "ns/sub/img:2.0");
    let corrupt_file = tree::blob_data(root, &corrupt);
    let mut bytes = std::fs::read(&corrupt_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&corrupt_file, &bytes).unwrap();
    std::fs::write(
        tree::tag_current_link(root, "multi/oci-app", "1.0"),
        "garbage",
    )
    .unwrap();
    let before = snapshot(root);

    let reg = Registry::start().unwrap();
    let dir = workdir();
    let ran = run(&mut push_cmd(root, &reg.url(), dir.path(), &[]));
    assert_eq!(ran.code, 1, "{}", ran.all());
    let failed = std::fs::read_to_string(dir.path().join("failed.txt")).unwrap();
    let mut failed: Vec<&str> = failed.lines().collect();
    failed.sort();
    assert_eq!(
        failed,
        vec![
            "charts/mychart:0.1.0",
            "multi/oci-app:1.0",
            "ns/sub/img:2.0"
        ]
    );
    let line = |reference: &str| {
        ran.stderr
            .lines()
            .find(|l| l.contains("error") && l.contains(reference))
            .unwrap_or_else(|| panic!("no error line for {reference}:\n{}", ran.stderr))
            .to_string()
    };
    assert!(
        line("charts/mychart:0.1.0").contains(&missing),
        "{}",
        ran.stderr
    );
    assert!(line("multi/oci-app:1.0").contains("link"), "{}", ran.stderr);
    let corrupt_line = line("ns/sub/img:2.0");
    assert!(
        corrupt_line.contains(&corrupt_file.display().to_string())
            && corrupt_line.contains("corrupt"),
        "{corrupt_line}"
    );
    // Nothing with the corrupt digest reached the destination.
    assert!(!tree::blob_data(reg.storage_root(), &corrupt).exists());
    assert!(
        !Pusher::new(&reg)
            .blob_exists("ns/sub/img", &corrupt)
            .unwrap()
    );

    let mut healthy = fx.truth.clone();
    for r in &failed {
        healthy.tags.remove(*r);
    }
    assert_tags_at(&Pusher::new(&reg), &healthy, default_destination);
    assert_eq!(snapshot(root), before, "the source is read-only");
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let fx = standard_tree(32);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let dir = workdir();
    // Half the tree is there already: the plan says which images it would skip.
    let ran = run(&mut push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--repo", "alpine"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let storage_before = snapshot(reg.storage_root());
    proxy.clear_requests();

    let ran = run(&mut push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--dry-run"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let writes: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| !matches!(r.method.as_str(), "GET" | "HEAD"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(snapshot(reg.storage_root()), storage_before);
    assert!(
        ran.stdout.contains("skip  alpine:3.19 → library/alpine"),
        "{}",
        ran.stdout
    );
    let push_line = ran
        .stdout
        .lines()
        .find(|l| l.starts_with("push  org/team/sub/app:1.0 → org/team/sub/app"))
        .unwrap_or_else(|| panic!("{}", ran.stdout));
    assert!(push_line.contains("upload"), "{push_line}");
    assert_eq!(
        ran.stdout
            .lines()
            .filter(|l| l.starts_with("push  "))
            .count(),
        fx.truth
            .tags
            .keys()
            .filter(|k| !k.starts_with("alpine:"))
            .count()
    );
    assert!(ran.stderr.contains("to push"), "{}", ran.stderr);
}

#[test]
fn project_and_default_project_decide_where_images_land() {
    let fx = standard_tree(33);
    let reg = Registry::start().unwrap();
    let dir = workdir();
    let ran = run(&mut push_cmd(
        fx.root(),
        &reg.url(),
        dir.path(),
        &["--project", "mirror"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_tags_at(&Pusher::new(&reg), &fx.truth, |r| format!("mirror/{r}"));

    let other = Registry::start().unwrap();
    let ran = run(&mut push_cmd(
        fx.root(),
        &other.url(),
        dir.path(),
        &["--default-project", "base"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_tags_at(&Pusher::new(&other), &fx.truth, |r| {
        if r.contains('/') {
            r.to_string()
        } else {
            format!("base/{r}")
        }
    });
    let catalog = Pusher::new(&other).catalog().unwrap();
    assert!(catalog.contains(&"base/alpine".to_string()), "{catalog:?}");
    assert!(
        !catalog.iter().any(|r| r.starts_with("library/")),
        "{catalog:?}"
    );
}

/// Projects the standard tree needs besides `library` (which Harbor has from the start).
fn standard_projects(truth: &ferry_testkit::Truth) -> std::collections::BTreeSet<String> {
    truth
        .tags
        .values()
        .map(|t| default_destination(&t.repository))
        .map(|d| d.split('/').next().unwrap().to_string())
        .filter(|p| p != "library")
        .collect()
}

fn project_posts(proxy: &Proxy) -> usize {
    proxy
        .api_calls()
        .iter()
        .filter(|(m, p, _)| m == "POST" && p == "/api/v2.0/projects")
        .count()
}

#[test]
fn harbor_projects_are_created_through_the_api_by_an_admin() {
    let fx = standard_tree(41);
    let reg = Registry::start().unwrap();
    let proxy =
        Proxy::harbor(&reg.url(), HarborDouble::with_admin("admin", "Harbor12345")).unwrap();
    let dir = workdir();
    let login = ["--username", "admin", "--password-stdin"];

    let ran = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &[&login[..], &["--dry-run"]].concat(),
    )
    .write_stdin("Harbor12345"));
    assert_eq!(ran.code, 0, "{}", ran.all());
    for p in standard_projects(&fx.truth) {
        assert!(
            ran.stderr
                .contains(&format!("would create Harbor project {p}")),
            "{}",
            ran.stderr
        );
    }
    assert_eq!(project_posts(&proxy), 0, "a dry run creates nothing");

    let ran = run(push_cmd(fx.root(), &proxy.url(), dir.path(), &login).write_stdin("Harbor12345"));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.stderr.contains("(Harbor)"), "{}", ran.stderr);
    let created = proxy.created_projects();
    let names: std::collections::BTreeSet<String> =
        created.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, standard_projects(&fx.truth));
    assert_eq!(created.len(), names.len(), "each project created once");
    assert!(
        created
            .iter()
            .all(|c| c.public.as_deref() == Some("false") && c.by == "admin")
    );
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);

    let ran = run(push_cmd(fx.root(), &proxy.url(), dir.path(), &login).write_stdin("Harbor12345"));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(
        project_posts(&proxy),
        names.len(),
        "existing projects are not created again"
    );
}

#[test]
fn harbor_refusals_name_the_account() {
    let fx = standard_tree(42);
    let reg = Registry::start().unwrap();
    // Harbor set to admin-only project creation; dev is a developer of `library` only.
    let double = HarborDouble::with_admin("admin", "Harbor12345")
        .user(
            "dev",
            "dev-pw-3Lm",
            &[("library", ferry_testkit::Role::Developer)],
        )
        .admin_only_project_creation();
    let proxy = Proxy::harbor(&reg.url(), double).unwrap();
    let dir = workdir();

    // A user who may not create projects: those images fail, the rest (library) is pushed.
    let ran = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--username", "dev", "--password-stdin"],
    )
    .write_stdin("dev-pw-3Lm"));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.contains("user dev") && l.contains("403")),
        "{}",
        ran.stderr
    );
    assert_no_secret(&ran, &["dev-pw-3Lm"]);
    let failed = std::fs::read_to_string(dir.path().join("failed.txt")).unwrap();
    let expected: Vec<&String> = fx
        .truth
        .tags
        .keys()
        .filter(|k| !k.starts_with("alpine:"))
        .collect();
    let mut got: Vec<&str> = failed.lines().collect();
    got.sort();
    assert_eq!(got, expected.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let mut library = fx.truth.clone();
    library.tags.retain(|k, _| k.starts_with("alpine:"));
    assert_tags_at(&Pusher::new(&reg), &library, default_destination);

    // A wrong password: nothing can be done, exit 2.
    let ran = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--debug", "--username", "admin", "--password-stdin"],
    )
    .write_stdin("not-Harbor12345"));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("user admin"), "{}", ran.stderr);
    assert_no_secret(&ran, &["not-Harbor12345"]);
}

#[test]
fn no_create_projects_leaves_harbor_projects_alone() {
    let fx = standard_tree(43);
    let reg = Registry::start().unwrap();
    let proxy =
        Proxy::harbor(&reg.url(), HarborDouble::with_admin("admin", "Harbor12345")).unwrap();
    let dir = workdir();
    let ran = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &[
            "--no-create-projects",
            "--username",
            "admin",
            "--password-stdin",
        ],
    )
    .write_stdin("Harbor12345"));
    assert_eq!(ran.code, 1, "{}", ran.all());
    // Projects are looked up (HEAD), never created.
    assert_eq!(project_posts(&proxy), 0);
    assert!(proxy.created_projects().is_empty());
    // Nothing was sent into the missing projects.
    assert!(
        proxy
            .requests()
            .iter()
            .filter_map(|r| r
                .repository()
                .map(|repo| repo.split('/').next().unwrap().to_string()))
            .all(|project| project == "library"),
        "{:?}",
        proxy.requests()
    );
    assert!(
        ran.stderr.contains("project ns not found"),
        "{}",
        ran.stderr
    );
    let mut library = fx.truth.clone();
    library.tags.retain(|k, _| k.starts_with("alpine:"));
    assert_tags_at(&Pusher::new(&reg), &library, default_destination);

    // validate says the same: those tags fail as a missing project, library passes.
    let ran = run(validate_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--username", "admin", "--password-stdin"],
    )
    .write_stdin("Harbor12345"));
    assert_eq!(ran.code, 1, "{}", ran.all());
    let failed = failed_lines(&dir.path().join("validate-failed.txt"));
    let expected: Vec<String> = fx
        .truth
        .tags
        .keys()
        .filter(|k| !k.starts_with("alpine:"))
        .cloned()
        .collect();
    assert_eq!(failed, expected);
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("ns/sub:1.0") && l.ends_with("Harbor project ns not found")),
        "{}",
        ran.stdout
    );
}

#[test]
fn names_harbor_would_refuse_are_reported_before_anything_is_sent() {
    let fx = standard_tree(44);
    let repos = fx.root().join("docker/registry/v2/repositories");
    // `le__gacy` is a valid Distribution name component but not a Harbor project name.
    std::fs::rename(repos.join("legacy"), repos.join("le__gacy")).unwrap();
    let reg = Registry::start().unwrap();
    let proxy =
        Proxy::harbor(&reg.url(), HarborDouble::with_admin("admin", "Harbor12345")).unwrap();
    let dir = workdir();
    let ran = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--username", "admin", "--password-stdin"],
    )
    .write_stdin("Harbor12345"));
    assert_eq!(ran.code, 1, "{}", ran.all());
    let failed = std::fs::read_to_string(dir.path().join("failed.txt")).unwrap();
    assert_eq!(
        failed.lines().collect::<Vec<_>>(),
        vec!["le__gacy/foreign:1.0"]
    );
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.contains("le__gacy/foreign:1.0") && l.contains("Harbor would refuse")),
        "{}",
        ran.stderr
    );
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| !r.path.contains("le__gacy"))
    );
    assert!(
        proxy
            .api_calls()
            .iter()
            .all(|(_, p, _)| !p.contains("le__gacy"))
    );
    // The same tree into a plain registry: the name is fine there.
    let plain = Registry::start().unwrap();
    let ran = run(&mut push_cmd(
        fx.root(),
        &plain.url(),
        dir.path(),
        &["--repo", "le__gacy/**"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
}

#[test]
fn two_shards_push_everything_once() {
    let fx = standard_tree(51);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let dir = workdir();
    let mut pushed = 0;
    for shard in ["0/2", "1/2"] {
        let report = dir.path().join(format!("report-{}.json", &shard[..1]));
        let ran = run(
            push_cmd(fx.root(), &proxy.url(), dir.path(), &["--shard", shard])
                .arg("--report")
                .arg(&report),
        );
        assert_eq!(ran.code, 0, "{}", ran.all());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let images = json["images"].as_array().unwrap();
        assert!(images.iter().all(|i| i["status"] == "copied"), "{json}");
        pushed += images.len();
        // Within one shard each blob is sent once (shards on other machines cannot mount from each other).
        let counts = upload_counts(&proxy.requests());
        assert!(counts.completed.values().all(|&n| n == 1), "{counts:?}");
        proxy.clear_requests();
    }
    assert_eq!(pushed, fx.truth.tags.len(), "each tag in exactly one shard");
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
}

#[test]
fn report_has_every_image_and_blob_outcome() {
    let fx = standard_tree(52);
    let reg = Registry::start().unwrap();
    let dir = workdir();
    let report = dir.path().join("report.json");
    let ran = run(push_cmd(fx.root(), &reg.url(), dir.path(), &[])
        .arg("--report")
        .arg(&report));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["command"], "push");
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), fx.truth.tags.len());
    let mut uploaded = std::collections::BTreeMap::new();
    for image in images {
        let source = image["source"].as_str().unwrap();
        let truth = &fx.truth.tags[source];
        assert_eq!(image["digest"], truth.digest, "{source}");
        assert_eq!(image["target"], default_destination(&truth.repository));
        // Two tags of one digest: the second finds the image there.
        let blobs = image["blobs"].as_array().unwrap();
        if image["status"] == "skipped" {
            assert!(blobs.is_empty());
            continue;
        }
        assert_eq!(image["status"], "copied", "{image}");
        let mut got: Vec<&str> = blobs
            .iter()
            .map(|b| b["digest"].as_str().unwrap())
            .collect();
        got.sort();
        let mut want: Vec<&str> = truth.blobs.iter().map(|b| b.digest.as_str()).collect();
        want.sort();
        assert_eq!(got, want, "{source}");
        for b in blobs {
            let action = b["action"].as_str().unwrap();
            assert!(["uploaded", "mounted", "present"].contains(&action), "{b}");
            if action == "uploaded" {
                *uploaded
                    .entry(b["digest"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    let unique = fx.truth.all_blobs();
    assert_eq!(uploaded.len(), unique.len());
    assert!(uploaded.values().all(|&n| n == 1), "{uploaded:?}");
    assert_eq!(
        json["counts"]["copied"].as_u64().unwrap() + json["counts"]["skipped"].as_u64().unwrap(),
        images.len() as u64
    );
}

#[test]
fn retries_recover_from_503s_and_retries_0_fails_clearly() {
    let fx = standard_tree(53);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let dir = workdir();
    let blob_put = |m: &str, p: &str| m == "PUT" && p.contains("/blobs/uploads/");
    proxy.fail_next(1, 503, |m, p| m == "GET" && p == "/v2/");
    proxy.fail_next(3, 503, blob_put);
    proxy.fail_next(2, 503, |m, p| m == "PUT" && p.contains("/manifests/"));
    proxy.fail_next(2, 503, |m, p| m == "GET" && p.ends_with("/tags/list"));
    let report = dir.path().join("report.json");
    let ran = run(push_cmd(fx.root(), &proxy.url(), dir.path(), &[])
        .arg("--report")
        .arg(&report));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(proxy.requests().iter().filter(|r| r.injected).count(), 8);
    // Each 503 was one retry: the probe's counts for the run, the seven others for images.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["retries"]["total"], 8, "{}", json["retries"]);
    assert_eq!(json["retries"]["run"], 1, "{}", json["retries"]);
    let per_image: u64 = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["retries"].as_u64().unwrap())
        .sum();
    assert_eq!(per_image, 7);
    assert!(ran.stderr.contains("; 8 retries"), "{}", ran.stderr);
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
    // A retried upload starts a fresh session: one more session per failed PUT.
    let counts = upload_counts(&proxy.requests());
    assert_eq!(counts.sessions, fx.truth.all_blobs().len() + 3);

    let other = Registry::start().unwrap();
    let proxy = Proxy::start(&other.url()).unwrap();
    proxy.fail_next(1, 503, |m, p| m == "PUT" && p.contains("/manifests/"));
    let ran = run(&mut push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--retries", "0", "-j", "1"],
    ));
    assert_eq!(ran.code, 1, "{}", ran.all());
    // One image failed on the 503; a signature of it, if any, fails for it.
    let failed = std::fs::read_to_string(dir.path().join("failed.txt")).unwrap();
    let line_of = |r: &str| {
        ran.stderr
            .lines()
            .find(|l| l.contains(&format!("{r} →")))
            .unwrap_or_else(|| panic!("no error line for {r}:\n{}", ran.stderr))
            .to_string()
    };
    let (hit, referrers): (Vec<&str>, Vec<&str>) = failed
        .lines()
        .partition(|r| !line_of(r).contains("its subject"));
    assert_eq!(hit.len(), 1, "{failed}");
    assert!(line_of(hit[0]).contains("503"), "{}", ran.stderr);
    for r in referrers {
        assert!(r.contains(".sig"), "{failed}");
        assert!(
            line_of(r).contains(&format!("its subject {} was not pushed", hit[0])),
            "{}",
            ran.stderr
        );
    }

    // The destination down at the start: exit 2 naming it.
    let ran = run(&mut push_cmd(
        fx.root(),
        "http://127.0.0.1:9",
        dir.path(),
        &["--retries", "1"],
    ));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("127.0.0.1:9"), "{}", ran.stderr);
}

#[test]
fn relative_locations_and_proxy_variables_do_not_get_in_the_way() {
    let fx = standard_tree(54);
    let reg = Registry::start_with(RegistryConfig {
        relative_urls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = workdir();
    // A dead proxy in the environment: loopback destinations never go through it.
    let ran = run(push_cmd(fx.root(), &reg.url(), dir.path(), &[])
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9"));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
    assert!(
        !ran.stderr.contains('\u{1b}'),
        "no terminal escapes when stderr is not a terminal"
    );
    assert!(ran.stderr.contains("images: "), "a summary: {}", ran.stderr);
    // --quiet: nothing but errors, and a second run has none.
    let ran = run(&mut push_cmd(
        fx.root(),
        &reg.url(),
        dir.path(),
        &["--quiet"],
    ));
    assert_eq!((ran.code, ran.stderr.as_str()), (0, ""));
}

#[test]
fn schema1_images_are_listed_as_such_and_skipped_by_push_with_a_reason() {
    use ferry_testkit::tree;
    let fx = standard_tree(41);
    let root = fx.root();
    // Hand-made: Distribution 2.8 refuses unsigned schema1 pushes, so this test writes a schema1
    // manifest into the tree the way Distribution stores one (a blob + tag and revision links),
    // reusing a layer the registry wrote.
    let layer = &fx.truth.tags["alpine:latest"].blobs[1].digest;
    let manifest = format!(
        r#"{{"schemaVersion":1,"name":"legacy/old","tag":"1.0","architecture":"amd64","fsLayers":[{{"blobSum":"{layer}"}}],"history":[{{"v1Compatibility":"{{}}"}}]}}"#
    );
    let digest = sha256(manifest.as_bytes());
    let data = tree::blob_data(root, &digest);
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::fs::write(&data, &manifest).unwrap();
    for (link, target) in [
        (tree::tag_current_link(root, "legacy/old", "1.0"), &digest),
        (tree::revision_link(root, "legacy/old", &digest), &digest),
        (tree::layer_link(root, "legacy/old", layer), layer),
    ] {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::fs::write(&link, target).unwrap();
    }

    let listed =
        run(ferry()
            .arg("list")
            .arg(root)
            .args(["--repo", "legacy/old", "--format", "json"]));
    assert_eq!(listed.code, 0, "{}", listed.all());
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(rows[0]["type"], "schema1");
    assert_eq!(rows[0]["digest"], digest.as_str());

    let reg = Registry::start().unwrap();
    let dir = workdir();
    let ran = run(&mut push_cmd(root, &reg.url(), dir.path(), &[]));
    assert_eq!(ran.code, 1, "{}", ran.all());
    let failed = std::fs::read_to_string(dir.path().join("failed.txt")).unwrap();
    assert_eq!(failed, "legacy/old:1.0\n");
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.contains("legacy/old:1.0") && l.contains("schema1")),
        "{}",
        ran.stderr
    );
    assert!(
        Pusher::new(&reg).get_manifest("legacy/old", "1.0").is_err(),
        "nothing was pushed for the schema1 image"
    );
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
}

#[test]
fn a_tag_list_that_keeps_failing_is_asked_once_per_run_and_its_images_still_go() {
    let fx = standard_tree(54);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let dir = workdir();
    let listing = |m: &str, p: &str| m == "GET" && p == "/v2/library/alpine/tags/list";
    proxy.fail_next(1000, 500, listing);
    let ran = run(&mut push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--retries", "2", "-j", "4"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
    // Three tags of alpine wait on one listing: 1 try + 2 retries, learnt once, not per worker.
    let asked = proxy
        .requests()
        .iter()
        .filter(|r| listing(&r.method, &r.path))
        .count();
    assert_eq!(asked, 3, "{}", ran.stderr);
    assert_eq!(
        ran.stderr
            .matches("cannot list the tags of library/alpine")
            .count(),
        1,
        "{}",
        ran.stderr
    );
    // Each retry is said on stderr, with the reason.
    assert_eq!(
        ran.stderr
            .lines()
            .filter(|l| l.contains("tags/list") && l.contains("500") && l.contains("retry"))
            .count(),
        2,
        "{}",
        ran.stderr
    );
}
