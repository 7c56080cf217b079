//! `ferry push` and `validate` against the Harbor double (a double of Harbor 2.x in front of a real
//! docker-registry): robots, rights per project, quotas, immutable tags, cosign on 2.7, refused
//! mounts, expired tokens. Every outcome is read back from the registry behind the double.

use base64::Engine as _;
use ferry_testkit::images::{ArtifactLayer, Format, Pushed, push_artifact, push_image};
use ferry_testkit::media::{COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, OCI_CONFIG};
use ferry_testkit::{
    HarborDouble, HarborVersion, Perm, Platform, Proxy, Pusher, Registry, RequestRecord,
    StoppedTree,
};

use crate::util::*;

const ADMIN: (&str, &str) = ("admin", "Harbor12345");
const ROBOT: &str = "robot$ns+ci";
const ROBOT_SECRET: &str = "Rb0t-s3cret-ns";

/// A storage tree written by a real docker-registry from what `build` pushes.
fn tree(build: impl FnOnce(&Pusher)) -> StoppedTree {
    let reg = Registry::start().unwrap();
    build(&Pusher::new(&reg));
    reg.stop().unwrap()
}

/// An OCI image of `layers` pushed as `repo:tag`.
fn image(p: &Pusher, repo: &str, tag: &str, layers: &[&[u8]]) -> Pushed {
    let amd64 = Platform::new("linux", "amd64", None);
    push_image(
        p,
        repo,
        Some(tag),
        Format::Oci,
        &amd64,
        layers,
        &[("tag", tag)],
        None,
    )
    .unwrap()
}

/// A cosign signature of `subject` pushed under its `sha256-<hex>.sig` tag; the tag.
fn signature(p: &Pusher, repo: &str, subject: &Pushed) -> (String, Pushed) {
    let tag = format!(
        "sha256-{}.sig",
        subject.digest.trim_start_matches("sha256:")
    );
    let payload = serde_json::json!({"critical": {"image": {"docker-manifest-digest": subject.digest}, "type": "cosign container image signature"}}).to_string();
    let config = serde_json::json!({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}).to_string();
    let sig = push_artifact(
        p,
        repo,
        Some(&tag),
        OCI_CONFIG,
        config.as_bytes(),
        &[ArtifactLayer {
            media_type: COSIGN_SIMPLESIGNING,
            bytes: payload.as_bytes(),
            annotations: vec![(COSIGN_SIGNATURE_ANNOTATION, "MEUCIQ")],
        }],
        &[],
    )
    .unwrap();
    (tag, sig)
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(u64::from(seed));
    (0..len).map(|_| rng.u8(..)).collect()
}

/// The digest the registry behind the double serves for `repo:tag`.
fn digest_at(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    Pusher::new(reg)
        .get_manifest(repo, tag)
        .ok()
        .map(|m| m.digest)
}

/// Requests that write (POST, PUT, PATCH) into a repository of `project`.
fn writes_into(proxy: &Proxy, project: &str) -> Vec<RequestRecord> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH"))
        .filter(|r| {
            r.repository()
                .is_some_and(|repo| repo.split('/').next() == Some(project))
        })
        .collect()
}

fn login(user: &str) -> Vec<&str> {
    vec!["--username", user, "--password-stdin"]
}

fn robot_double() -> HarborDouble {
    HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("ns", -1)
        .project("org", -1)
        .project_robot("ns", "ci", ROBOT_SECRET, &[Perm::Push])
}

/// The robot may push into `ns`, not into `org`: `org` is refused before anything is sent, the
/// rest lands, exit 1; validate reports the same project the same way.
#[test]
fn a_project_robot_pushes_into_its_project_and_another_is_refused_up_front() {
    let fx = standard_tree(61);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::harbor(&reg.url(), robot_double()).unwrap();
    let dir = workdir();
    let report = dir.path().join("report.json");
    let selection = ["--repo", "ns/**", "--repo", "org/**"];
    let args = [&selection[..], &login(ROBOT)].concat();
    let ran = run(push_cmd(fx.root(), &proxy.url(), dir.path(), &args)
        .arg("--report")
        .arg(&report)
        .write_stdin(ROBOT_SECRET));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(!ran.all().contains(ROBOT_SECRET));
    assert_eq!(
        failed_lines(&dir.path().join("failed.txt")),
        ["org/team/sub/app:1.0"]
    );
    let mut ns = fx.truth.clone();
    ns.tags.retain(|_, t| t.repository.starts_with("ns/"));
    assert_eq!(ns.tags.len(), 3);
    assert_tags_at(&Pusher::new(&reg), &ns, default_destination);
    assert_eq!(digest_at(&reg, "org/team/sub/app", "1.0"), None);
    assert!(writes_into(&proxy, "org").is_empty(), "sent into org");
    let reason = format!(
        "user {ROBOT} (from --username/--password-stdin) may not push in Harbor project org"
    );
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.contains("org/team/sub/app:1.0") && l.contains(&reason)),
        "{}",
        ran.stderr
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["harbor_version"], "v2.12.4-6b4981d4");
    assert_eq!(json["harbor_account"]["kind"], "robot");
    assert_eq!(
        json["projects"]["ns"]["granted"],
        serde_json::json!(["pull", "push"])
    );
    assert_eq!(json["projects"]["org"]["granted"], serde_json::json!([]));
    assert!(
        json["projects"]["org"]["problem"]
            .as_str()
            .unwrap()
            .contains(&reason)
    );

    // validate: ns passes; org is a project the robot may not read, said as such.
    let ran =
        run(validate_cmd(fx.root(), &proxy.url(), dir.path(), &args).write_stdin(ROBOT_SECRET));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_eq!(
        failed_lines(&dir.path().join("validate-failed.txt")),
        ["org/team/sub/app:1.0"]
    );
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.contains("org/team/sub/app:1.0")
                && l.contains("may not pull in Harbor project org")),
        "{}",
        ran.stdout
    );
    assert!(
        !ran.all().contains("destination unauthorised"),
        "{}",
        ran.all()
    );
}

/// A wrong robot secret is anonymous to Harbor: found at users/current, exit 2, nothing sent.
#[test]
fn a_wrong_robot_secret_exits_2_before_any_upload() {
    let fx = standard_tree(62);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::harbor(&reg.url(), robot_double()).unwrap();
    let dir = workdir();
    let wrong = "not-the-robot-secret";
    let ran = run(push_cmd(fx.root(), &proxy.url(), dir.path(), &login(ROBOT)).write_stdin(wrong));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(!ran.all().contains(wrong));
    assert!(
        ran.stderr.contains(ROBOT) && ran.stderr.contains("/api/v2.0/users/current"),
        "{}",
        ran.stderr
    );
    assert!(
        proxy.requests().iter().all(|r| r.repository().is_none()),
        "{:?}",
        proxy.requests()
    );
    assert!(proxy.api_calls().iter().all(|(m, _, _)| m == "GET"));
    assert!(Pusher::new(&reg).catalog().unwrap().is_empty());
}

/// `robot$…` names travel from `--username`, from `FERRY_USERNAME` and from an auth file.
#[test]
fn robot_names_with_a_dollar_sign_work_from_flags_environment_and_auth_files() {
    let fx = standard_tree(63);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::harbor(&reg.url(), robot_double()).unwrap();
    let dir = workdir();
    let from_flags = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &[&["--repo", "ns/sub", "--tag", "1.0"][..], &login(ROBOT)].concat(),
    )
    .write_stdin(ROBOT_SECRET));
    assert_eq!(from_flags.code, 0, "{}", from_flags.all());
    let from_env = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--repo", "ns/sub", "--tag", "v1"],
    )
    .env("FERRY_USERNAME", ROBOT)
    .env("FERRY_PASSWORD", ROBOT_SECRET));
    assert_eq!(from_env.code, 0, "{}", from_env.all());
    let authfile = dir.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{ROBOT}:{ROBOT_SECRET}"));
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {proxy.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let from_file = run(push_cmd(
        fx.root(),
        &proxy.url(),
        dir.path(),
        &["--repo", "ns/sub/img"],
    )
    .arg("--authfile")
    .arg(&authfile));
    assert_eq!(from_file.code, 0, "{}", from_file.all());
    for ran in [&from_flags, &from_env, &from_file] {
        assert!(ran.stderr.contains("images: 1 pushed"), "{}", ran.stderr);
        assert!(!ran.all().contains(ROBOT_SECRET));
    }
    let mut ns = fx.truth.clone();
    ns.tags.retain(|_, t| t.repository.starts_with("ns/"));
    assert_tags_at(&Pusher::new(&reg), &ns, default_destination);
    let grants = proxy.token_grants();
    assert!(grants.iter().any(|g| !g.scopes.is_empty()));
    assert!(
        grants
            .iter()
            .filter(|g| !g.scopes.is_empty())
            .all(|g| g.account.as_deref() == Some(ROBOT)),
        "{grants:?}"
    );
}

/// q/app: six images of a 4 KiB layer each over a shared 2 KiB one; other/app: three more.
fn quota_tree() -> StoppedTree {
    tree(|p| {
        let base = bytes(1, 2048);
        for (repo, count) in [("q/app", 6u8), ("other/app", 3)] {
            for i in 0..count {
                let own = bytes(10 + i + if repo == "q/app" { 0 } else { 100 }, 4096);
                image(p, repo, &format!("v{i}"), &[&base, &own]);
            }
        }
    })
}

/// A dry run shows the quota per project; the push stops sending into q at its first 403
/// DENIED, fails exactly q's images that did not land, and completes `other`.
#[test]
fn a_quota_that_runs_out_mid_run_stops_that_project_only() {
    let source = quota_tree();
    let reg = Registry::start().unwrap();
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("q", 12_000)
        .project("other", -1);
    let proxy = Proxy::harbor(&reg.url(), double).unwrap();
    let dir = workdir();
    let args = [&["-j", "2"][..], &login(ADMIN.0)].concat();

    let plan = run(push_cmd(
        source.root(),
        &proxy.url(),
        dir.path(),
        &[&args[..], &["--dry-run"]].concat(),
    )
    .write_stdin(ADMIN.1));
    assert_eq!(plan.code, 0, "{}", plan.all());
    let table: Vec<&str> = plan
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("PROJECT"))
        .collect();
    assert!(
        table[0].contains("USED") && table[0].contains("RUN ADDS"),
        "{}",
        plan.stdout
    );
    let row = |p: &str| {
        *table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(p))
            .unwrap_or_else(|| panic!("no row for {p}:\n{}", plan.stdout))
    };
    assert!(
        row("q").contains("exists") && row("q").contains("over by"),
        "{}",
        plan.stdout
    );
    assert!(row("q").contains("11.72 KiB"), "the limit: {}", row("q"));
    assert!(row("other").ends_with("unlimited"), "{}", plan.stdout);
    assert!(
        plan.stderr
            .contains("Harbor project q: this run adds up to"),
        "{}",
        plan.stderr
    );
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| !matches!(r.method.as_str(), "POST" | "PUT" | "PATCH")),
        "a dry run writes nothing"
    );
    assert_eq!(proxy.quota("q"), Some((12_000, 0)));

    let ran = run(push_cmd(source.root(), &proxy.url(), dir.path(), &args).write_stdin(ADMIN.1));
    assert_eq!(ran.code, 1, "{}", ran.all());
    let landed: Vec<String> = (0..6)
        .map(|i| format!("v{i}"))
        .filter(|t| digest_at(&reg, "q/app", t).is_some())
        .collect();
    let missing: Vec<String> = (0..6)
        .map(|i| format!("q/app:v{i}"))
        .filter(|r| !landed.iter().any(|t| r.ends_with(&format!(":{t}"))))
        .collect();
    assert!(
        !landed.is_empty() && !missing.is_empty(),
        "landed {landed:?}"
    );
    assert_eq!(failed_lines(&dir.path().join("failed.txt")), missing);
    for i in 0..3 {
        assert!(digest_at(&reg, "other/app", &format!("v{i}")).is_some());
    }
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.contains("q/app:v") && l.contains("quota exceeded in project q: adding ")),
        "{}",
        ran.stderr
    );
    // Nothing new into q once Harbor said no: only what was already on its way (one per job).
    let q = writes_into(&proxy, "q");
    let first_denied = q.iter().position(|r| r.status == 403).unwrap();
    assert!(q.len() - first_denied - 1 <= 2, "{:#?}", &q[first_denied..]);
    let (limit, used) = proxy.quota("q").unwrap();
    assert!(used <= limit);
}

/// An immutable tag holding the same digest counts as done; holding another, it fails as
/// "immutable in Harbor", asked once.
#[test]
fn immutable_tags_skip_the_same_digest_and_fail_another_once() {
    let source = tree(|p| {
        image(p, "p/app", "v1", &[&bytes(1, 1000)]);
        image(p, "p/app", "v2", &[&bytes(2, 1000)]);
    });
    let reg = Registry::start().unwrap();
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("p", -1)
        .immutable("p", "**", "v*");
    let proxy = Proxy::harbor(&reg.url(), double).unwrap();
    let dir = workdir();
    let first = run(push_cmd(
        source.root(),
        &proxy.url(),
        dir.path(),
        &[&["--tag", "v1"][..], &login(ADMIN.0)].concat(),
    )
    .write_stdin(ADMIN.1));
    assert_eq!(first.code, 0, "{}", first.all());
    let v1 = digest_at(&reg, "p/app", "v1").unwrap();
    // Someone else pushed another image to v2 first.
    let other = image(
        &Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1),
        "p/app",
        "v2",
        &[&bytes(3, 1000)],
    );
    proxy.clear_requests();

    let ran = run(
        push_cmd(source.root(), &proxy.url(), dir.path(), &login(ADMIN.0)).write_stdin(ADMIN.1),
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_eq!(failed_lines(&dir.path().join("failed.txt")), ["p/app:v2"]);
    assert!(
        ran.stderr.lines().any(|l| l.contains("p/app:v2")
            && l.contains("immutable in Harbor: Failed to process request due to 'app:v2' configured as immutable.")),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("0 pushed, 1 skipped, 1 failed"),
        "{}",
        ran.stderr
    );
    assert_eq!(digest_at(&reg, "p/app", "v1"), Some(v1));
    assert_eq!(digest_at(&reg, "p/app", "v2"), Some(other.digest));
    let puts = |tag: &str| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path == format!("/v2/p/app/manifests/{tag}"))
            .count()
    };
    assert_eq!(
        (puts("v1"), puts("v2")),
        (0, 1),
        "v2 asked once, v1 not at all"
    );
}

/// Harbor 2.7 refuses a cosign signature whose subject it does not have yet: ferry pushes each
/// signature after its subject, with one job and with four.
#[test]
fn signatures_and_their_subjects_in_one_run_on_harbor_2_7() {
    let mut signatures = Vec::new();
    let source = tree(|p| {
        for (i, tag) in ["v1", "v2"].iter().enumerate() {
            let subject = image(p, "p/app", tag, &[&bytes(20 + i as u8, 512 << 10)]);
            let (sig_tag, sig) = signature(p, "p/app", &subject);
            signatures.push((tag.to_string(), subject.digest, sig_tag, sig.digest));
        }
    });
    for jobs in ["1", "4"] {
        let reg = Registry::start().unwrap();
        let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
            .version(HarborVersion::V2_7)
            .project("p", -1);
        let proxy = Proxy::harbor(&reg.url(), double).unwrap();
        let dir = workdir();
        let ran = run(push_cmd(
            source.root(),
            &proxy.url(),
            dir.path(),
            &[&["-j", jobs][..], &login(ADMIN.0)].concat(),
        )
        .write_stdin(ADMIN.1));
        assert_eq!(ran.code, 0, "-j {jobs}: {}", ran.all());
        let tags = proxy.harbor_tags("p/app").unwrap();
        let log = proxy.requests();
        let put_at = |tag: &str| {
            log.iter()
                .position(|r| r.method == "PUT" && r.path == format!("/v2/p/app/manifests/{tag}"))
                .unwrap_or_else(|| panic!("-j {jobs}: no PUT of {tag}"))
        };
        for (tag, subject, sig_tag, sig) in &signatures {
            assert_eq!(digest_at(&reg, "p/app", tag).as_ref(), Some(subject));
            assert_eq!(digest_at(&reg, "p/app", sig_tag).as_ref(), Some(sig));
            assert!(
                tags.contains(sig_tag),
                "-j {jobs}: Harbor knows {sig_tag}: {tags:?}"
            );
            assert!(
                put_at(tag) < put_at(sig_tag),
                "-j {jobs}: {tag} before its signature"
            );
        }
        assert!(log.iter().all(|r| r.status != 404 || r.method != "PUT"));
    }
}

/// Harbor refuses a mount from a project the account cannot pull with 401 and no session
/// (the double's own test shows it); ferry uploads instead. A consistent account never meets
/// it in one run, so the answer is Harbor's, injected once per try of the mount.
#[test]
fn a_refused_cross_project_mount_falls_back_to_an_upload() {
    let shared = bytes(40, 8192);
    let source = tree(|p| {
        image(p, "a/x", "1", &[&shared, &bytes(41, 100)]);
        image(p, "b/y", "1", &[&shared, &bytes(42, 100)]);
    });
    let reg = Registry::start().unwrap();
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("a", -1)
        .project("b", -1);
    let proxy = Proxy::harbor(&reg.url(), double).unwrap();
    let message = "unauthorized to access repository: a/x, action: pull";
    let body = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": format!("{message}: {message}")}]}).to_string();
    proxy.answer_next(
        2,
        401,
        &[("Www-Authenticate", r#"Basic realm="harbor""#)],
        &body,
        |m, p| m == "POST" && p == "/v2/b/y/blobs/uploads/",
    );
    let dir = workdir();
    let ran = run(push_cmd(
        source.root(),
        &proxy.url(),
        dir.path(),
        &[&["-j", "1", "--debug"][..], &login(ADMIN.0)].concat(),
    )
    .write_stdin(ADMIN.1));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let shared_digest = ferry_testkit::media::sha256_digest(&shared);
    let log = proxy.requests();
    let into_b: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.repository() == Some("b/y") && r.method != "HEAD" && r.method != "GET")
        .collect();
    assert!(
        into_b[0].injected && into_b[0].param("mount") == Some(shared_digest.as_str()),
        "{into_b:#?}"
    );
    assert!(into_b[1].injected, "{into_b:#?}");
    assert!(
        into_b[2].is_upload_post() && into_b[2].param("mount").is_none() && into_b[2].status == 202,
        "{into_b:#?}"
    );
    assert_eq!(into_b[3].completed_upload(), Some(shared_digest.as_str()));
    assert!(
        Pusher::new(&reg)
            .blob_exists("b/y", &shared_digest)
            .unwrap()
    );
    for repo in ["a/x", "b/y"] {
        assert!(digest_at(&reg, repo, "1").is_some(), "{repo}");
    }
}

/// Harbor answers a request with an expired token 401 `Basic realm="harbor"`: ferry asks for a
/// fresh token and goes on, never switching to Basic auth on `/v2`.
#[test]
fn an_expired_token_mid_run_is_renewed_not_traded_for_basic_auth() {
    let fx = standard_tree(64);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::harbor(&reg.url(), HarborDouble::with_admin(ADMIN.0, ADMIN.1)).unwrap();
    proxy.expire_tokens_when(|m, p| m == "PUT" && p.contains("/manifests/"));
    let dir = workdir();
    let ran =
        run(push_cmd(fx.root(), &proxy.url(), dir.path(), &login(ADMIN.0)).write_stdin(ADMIN.1));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
    let log = proxy.requests();
    assert!(
        log.iter()
            .any(|r| r.status == 401 && r.method == "PUT" && r.path.contains("/manifests/")),
        "the token did expire"
    );
    let schemes: Vec<(&str, Option<&str>)> = log
        .iter()
        .filter(|r| r.repository().is_some())
        .map(|r| (r.path.as_str(), r.auth_scheme.as_deref()))
        .filter(|(_, s)| *s != Some("Bearer"))
        .collect();
    assert!(schemes.is_empty(), "{schemes:#?}");
}
