//! The Harbor double against a real docker-registry: each fact it reproduces, asserted over HTTP
//! (status, body, headers), and what reached the registry read back from the registry itself.

use std::time::Duration;

use base64::Engine as _;
use ferry_testkit::media::{
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, Descriptor, ImageIndex, ImageManifest,
    OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, sha256_digest,
};
use ferry_testkit::{
    HarborDouble, HarborVersion, Perm, Proxy, Pusher, Registry, Role, upload_counts,
};

const ADMIN: (&str, &str) = ("admin", "Harbor12345");

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn basic((user, password): (&str, &str)) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// One answer, read whole.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.body)
    }
}

fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut resp = agent().run(b.body(body.to_vec()).unwrap()).unwrap();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Answer {
        status: resp.status().as_u16(),
        headers,
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Harbor's error body: `{"errors":[{"code","message"}]}` and a newline.
fn harbor_error(code: &str, message: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"errors": [{"code": code, "message": message}]})
    )
}

fn start(double: HarborDouble) -> (Registry, Proxy) {
    let reg = Registry::start().unwrap();
    let proxy = Proxy::harbor(&reg.url(), double).unwrap();
    (reg, proxy)
}

/// `POST` then `PUT ?digest=` of `bytes` into `repo`; the PUT's answer (or the POST's if refused).
fn upload(proxy: &Proxy, auth: &str, repo: &str, bytes: &[u8], digest: &str) -> Answer {
    let url = format!("{}/v2/{repo}/blobs/uploads/", proxy.url());
    let post = call("POST", &url, &[("Authorization", auth)], b"");
    if post.status != 202 {
        return post;
    }
    let location = post.header("Location").unwrap().to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    call(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[
            ("Authorization", auth),
            ("Content-Type", "application/octet-stream"),
        ],
        bytes,
    )
}

fn put_manifest(
    proxy: &Proxy,
    auth: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Answer {
    call(
        "PUT",
        &format!("{}/v2/{repo}/manifests/{reference}", proxy.url()),
        &[("Authorization", auth), ("Content-Type", media_type)],
        bytes,
    )
}

/// Pushes a small OCI image (config + one layer) with `p`; its manifest bytes.
fn push_image(p: &Pusher, repo: &str, tag: &str, seed: &str) -> Vec<u8> {
    let config = p
        .push_blob(
            repo,
            format!("{{\"config\":{{}},\"seed\":\"{seed}\"}}").as_bytes(),
        )
        .unwrap()
        .with_media_type(OCI_CONFIG);
    let layer = p
        .push_blob(repo, format!("layer of {seed}").as_bytes())
        .unwrap()
        .with_media_type(OCI_LAYER);
    let bytes = ImageManifest::new(OCI_MANIFEST, config, vec![layer]).to_bytes();
    p.push_manifest(repo, tag, OCI_MANIFEST, &bytes).unwrap();
    bytes
}

/// The claims of a JWT (its middle part).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn token(proxy: &Proxy, auth: Option<&str>, scopes: &[&str]) -> Answer {
    let mut url = format!("{}/service/token?service=harbor-registry", proxy.url());
    for s in scopes {
        url.push_str(&format!("&scope={s}"));
    }
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    call("GET", &url, &headers, b"")
}

/// The actions a token grants on `name`.
fn granted(answer: &Answer, name: &str) -> Vec<String> {
    let t = answer.json()["token"].as_str().unwrap().to_string();
    claims(&t)["access"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| {
            a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap()
}

#[test]
fn ping_and_the_version_by_release() {
    let (_reg, proxy) = start(HarborDouble::with_admin(ADMIN.0, ADMIN.1));
    let ping = call("GET", &format!("{}/api/v2.0/ping", proxy.url()), &[], b"");
    assert_eq!((ping.status, ping.body.as_str()), (200, "Pong"));
    let info = call(
        "GET",
        &format!("{}/api/v2.0/systeminfo", proxy.url()),
        &[],
        b"",
    );
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["harbor_version"], "v2.12.4-6b4981d4");
    assert!(info.json().get("external_url").is_none(), "{info:?}");

    let (_reg, proxy) =
        start(HarborDouble::with_admin(ADMIN.0, ADMIN.1).version(HarborVersion::V2_13));
    let url = format!("{}/api/v2.0/systeminfo", proxy.url());
    let anonymous = call("GET", &url, &[], b"");
    assert_eq!(anonymous.status, 200);
    assert!(
        anonymous.json().get("harbor_version").is_none(),
        "{anonymous:?}"
    );
    let admin = call("GET", &url, &[("Authorization", &basic(ADMIN))], b"");
    assert_eq!(admin.json()["harbor_version"], "v2.13.5-ffae5421");
    assert_eq!(admin.json()["external_url"], proxy.url());
}

#[test]
fn v2_challenges_depend_on_the_authorization_header() {
    let (_reg, proxy) = start(HarborDouble::with_admin(ADMIN.0, ADMIN.1));
    let v2 = format!("{}/v2/", proxy.url());
    let anonymous = call("GET", &v2, &[], b"");
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("Www-Authenticate"),
        Some(
            format!(
                r#"Bearer realm="{}/service/token",service="harbor-registry""#,
                proxy.url()
            )
            .as_str()
        )
    );
    assert_eq!(
        anonymous.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );
    assert_eq!(
        anonymous.body,
        harbor_error("UNAUTHORIZED", "unauthorized: unauthorized")
    );

    let wrong = call(
        "GET",
        &v2,
        &[("Authorization", &basic(("admin", "nope")))],
        b"",
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.header("Www-Authenticate"),
        Some(r#"Basic realm="harbor""#)
    );
    let right = call("GET", &v2, &[("Authorization", &basic(ADMIN))], b"");
    assert_eq!(right.status, 200, "{right:?}");

    // Repository requests name their scope; a push asks pull,push.
    let head = call(
        "HEAD",
        &format!("{}/v2/library/app/manifests/1", proxy.url()),
        &[],
        b"",
    );
    assert_eq!(head.status, 401);
    assert!(
        head.header("Www-Authenticate")
            .unwrap()
            .ends_with(r#",scope="repository:library/app:pull""#),
        "{head:?}"
    );
    let post = call(
        "POST",
        &format!("{}/v2/library/app/blobs/uploads/", proxy.url()),
        &[],
        b"",
    );
    assert_eq!(post.status, 401);
    assert!(
        post.header("Www-Authenticate")
            .unwrap()
            .ends_with(r#",scope="repository:library/app:pull,push""#),
        "{post:?}"
    );
    // One-component names are refused before any auth.
    let single = call(
        "POST",
        &format!("{}/v2/alpine/blobs/uploads/", proxy.url()),
        &[],
        b"",
    );
    assert_eq!(single.status, 400);
    assert_eq!(
        single.body,
        harbor_error(
            "BAD_REQUEST",
            "bad request: invalid repository name: alpine"
        )
    );
}

#[test]
fn the_token_service_grants_what_the_account_has_in_the_project() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("team", -1)
        .user("reader", "reader-pw", &[("team", Role::Guest)])
        .project_robot("team", "ci", "robot-secret", &[Perm::Push]);
    let (_reg, proxy) = start(double);
    let admin = basic(ADMIN);

    let t = token(&proxy, Some(&admin), &["repository:team/app:pull"]);
    assert_eq!(t.status, 200);
    // Every action the admin has, not only the pull that was asked.
    assert_eq!(
        granted(&t, "team/app"),
        ["pull", "push", "delete", "scanner-pull"]
    );
    let body = t.json();
    assert_eq!(body["access_token"], "");
    assert_eq!(body["expires_in"], 1800);
    let c = claims(body["token"].as_str().unwrap());
    assert_eq!(
        (c["iss"].as_str(), c["aud"].as_str(), c["sub"].as_str()),
        (
            Some("harbor-token-issuer"),
            Some("harbor-registry"),
            Some("admin")
        )
    );

    let reader = basic(("reader", "reader-pw"));
    let t = token(&proxy, Some(&reader), &["repository:team/app:pull,push"]);
    assert_eq!(granted(&t, "team/app"), ["pull"]);

    let robot = basic(("robot$team+ci", "robot-secret"));
    let t = token(
        &proxy,
        Some(&robot),
        &[
            "repository:team/app:pull,push",
            "repository:library/x:pull,push",
        ],
    );
    assert_eq!(granted(&t, "team/app"), ["pull", "push"]);
    assert_eq!(granted(&t, "library/x"), ["pull"], "library is public");
    assert_eq!(
        claims(t.json()["token"].as_str().unwrap())["sub"],
        "robot$team+ci"
    );

    // Wrong credentials are anonymous: a token all the same, with public pull only.
    let wrong = basic(("robot$team+ci", "not-the-secret"));
    let t = token(
        &proxy,
        Some(&wrong),
        &["repository:team/app:pull,push", "repository:library/x:pull"],
    );
    assert_eq!(t.status, 200);
    assert!(granted(&t, "team/app").is_empty());
    assert_eq!(granted(&t, "library/x"), ["pull"]);
    assert_eq!(proxy.token_grants().last().unwrap().account, None);
    // ... and without a scope (docker login) 401.
    let t = token(&proxy, Some(&wrong), &[]);
    assert_eq!((t.status, t.body.as_str()), (401, ""));
    // Missing projects and one-component names get nothing.
    let t = token(
        &proxy,
        Some(&admin),
        &["repository:nope/app:pull,push", "repository:alpine:pull"],
    );
    assert!(granted(&t, "nope/app").is_empty());
    assert!(granted(&t, "alpine").is_empty());
    let other = call(
        "GET",
        &format!("{}/service/token?service=other", proxy.url()),
        &[],
        b"",
    );
    assert_eq!(
        (other.status, other.body.as_str()),
        (400, "Unable to handle service: other")
    );

    // Up to 2.8 a token with pull, push and delete also says "*".
    let (_reg, old) =
        start(HarborDouble::with_admin(ADMIN.0, ADMIN.1).version(HarborVersion::V2_8));
    let t = token(&old, Some(&admin), &["repository:library/app:push"]);
    assert_eq!(
        granted(&t, "library/app"),
        ["pull", "push", "delete", "scanner-pull", "*"]
    );
}

#[test]
fn bearer_tokens_and_basic_auth_are_checked_per_project() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("team", -1)
        .project("other", -1)
        .project_robot("team", "ci", "robot-secret", &[Perm::Push]);
    let (reg, proxy) = start(double);
    let robot = basic(("robot$team+ci", "robot-secret"));
    let t = token(
        &proxy,
        Some(&robot),
        &[
            "repository:team/app:pull,push",
            "repository:other/app:pull,push",
        ],
    );
    let bearer = format!("Bearer {}", t.json()["token"].as_str().unwrap());

    // The token allows team, not other.
    let ok = upload(
        &proxy,
        &bearer,
        "team/app",
        b"robot blob",
        &sha256_digest(b"robot blob"),
    );
    assert_eq!(ok.status, 201, "{ok:?}");
    assert!(
        Pusher::new(&reg)
            .blob_exists("team/app", &sha256_digest(b"robot blob"))
            .unwrap()
    );
    let refused = call(
        "POST",
        &format!("{}/v2/other/app/blobs/uploads/", proxy.url()),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(refused.status, 401);
    let message = "unauthorized to access repository: other/app, action: push";
    assert_eq!(
        refused.body,
        harbor_error("UNAUTHORIZED", &format!("{message}: {message}"))
    );
    assert_eq!(
        refused.header("Www-Authenticate"),
        Some(r#"Basic realm="harbor""#)
    );

    // Basic auth works on /v2 too, with the same rights.
    let p = Pusher::with_basic(&proxy.url(), "robot$team+ci", "robot-secret");
    let manifest = push_image(&p, "team/app", "1.0", "basic");
    let back = Pusher::new(&reg).get_manifest("team/app", "1.0").unwrap();
    assert_eq!(back.bytes, manifest);
    let refused = upload(&proxy, &robot, "other/app", b"x", &sha256_digest(b"x"));
    assert_eq!(refused.status, 401);

    // A project that does not exist: 401 with Harbor's doubled message and an empty challenge.
    let missing = call(
        "POST",
        &format!("{}/v2/nope/app/blobs/uploads/", proxy.url()),
        &[("Authorization", &basic(ADMIN))],
        b"",
    );
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.body,
        harbor_error(
            "UNAUTHORIZED",
            "project nope not found: project nope not found"
        )
    );
    assert_eq!(missing.header("Www-Authenticate"), Some(""));
    // Harbor never creates a project on push.
    assert!(!proxy.projects().contains("nope"));
    assert!(upload_counts(&proxy.requests()).sessions >= 1);
}

#[test]
fn an_expired_token_is_refused_as_anonymous_with_a_basic_challenge() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1).project("team", -1);
    let (_reg, proxy) = start(double);
    let t = token(
        &proxy,
        Some(&basic(ADMIN)),
        &["repository:team/app:pull,push"],
    );
    let bearer = format!("Bearer {}", t.json()["token"].as_str().unwrap());
    let post = |auth: &str| {
        call(
            "POST",
            &format!("{}/v2/team/app/blobs/uploads/", proxy.url()),
            &[("Authorization", auth)],
            b"",
        )
    };
    assert_eq!(post(&bearer).status, 202);
    proxy.expire_tokens_when(|m, p| m == "POST" && p.ends_with("/blobs/uploads/"));
    let expired = post(&bearer);
    assert_eq!(expired.status, 401);
    let message = "unauthorized to access repository: team/app, action: push";
    assert_eq!(
        expired.body,
        harbor_error("UNAUTHORIZED", &format!("{message}: {message}"))
    );
    assert_eq!(
        expired.header("Www-Authenticate"),
        Some(r#"Basic realm="harbor""#)
    );
    // A token asked for afterwards is good again.
    let t = token(
        &proxy,
        Some(&basic(ADMIN)),
        &["repository:team/app:pull,push"],
    );
    let fresh = format!("Bearer {}", t.json()["token"].as_str().unwrap());
    assert_eq!(post(&fresh).status, 202);
    assert_eq!(post(&bearer).status, 401);
}

#[test]
fn wrong_or_disabled_robot_secrets_are_anonymous_and_show_only_at_users_current() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("team", -1)
        .user("dev", "dev-pw", &[("team", Role::Developer)])
        .system_robot("sys", "sys-secret", &[("*", &[Perm::Pull, Perm::Push])])
        .project_robot("team", "old", "old-secret", &[Perm::Push])
        .disabled("robot$team+old");
    let (_reg, proxy) = start(double);
    let current = |auth: Option<String>| {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        call(
            "GET",
            &format!("{}/api/v2.0/users/current", proxy.url()),
            &headers,
            b"",
        )
    };
    let anonymous = current(None);
    assert_eq!(
        (anonymous.status, anonymous.body.clone()),
        (401, harbor_error("UNAUTHORIZED", "unauthorized"))
    );
    let wrong = current(Some(basic(("robot$sys", "wrong"))));
    assert_eq!(
        (wrong.status, wrong.body.clone()),
        (401, harbor_error("UNAUTHORIZED", "unauthorized"))
    );
    let disabled = current(Some(basic(("robot$team+old", "old-secret"))));
    assert_eq!(disabled.status, 401);
    let robot = current(Some(basic(("robot$sys", "sys-secret"))));
    assert_eq!(robot.status, 412);
    assert_eq!(
        robot.body,
        harbor_error(
            "PRECONDITION",
            "get current user not available for security context: robot"
        )
    );
    let user = current(Some(basic(("dev", "dev-pw"))));
    assert_eq!(user.status, 200);
    assert_eq!(user.json()["username"], "dev");
    assert_eq!(user.json()["sysadmin_flag"], false);

    // The wrong secret still gets a token (without actions) and the HEAD of a project 401.
    let t = token(
        &proxy,
        Some(&basic(("robot$sys", "wrong"))),
        &["repository:team/app:pull,push"],
    );
    assert_eq!(t.status, 200);
    assert!(granted(&t, "team/app").is_empty());
    let head = call(
        "HEAD",
        &format!("{}/api/v2.0/projects?project_name=team", proxy.url()),
        &[("Authorization", &basic(("robot$sys", "wrong")))],
        b"",
    );
    assert_eq!(head.status, 401);
    let head = call(
        "HEAD",
        &format!("{}/api/v2.0/projects?project_name=team", proxy.url()),
        &[("Authorization", &basic(("robot$sys", "sys-secret")))],
        b"",
    );
    assert_eq!(head.status, 200);
}

#[test]
fn projects_are_created_as_harbor_allows() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("team", -1)
        .user("dev", "dev-pw", &[])
        .project_robot("team", "ci", "robot-secret", &[Perm::Push])
        .system_robot(
            "maker",
            "maker-secret",
            &[("*", &[Perm::Pull, Perm::Push, Perm::CreateProject])],
        );
    let (reg, proxy) = start(double.clone());
    let create = |auth: Option<(&str, &str)>, body: serde_json::Value| {
        let header = auth.map(basic);
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(h) = &header {
            headers.push(("Authorization", h));
        }
        call(
            "POST",
            &format!("{}/api/v2.0/projects", proxy.url()),
            &headers,
            body.to_string().as_bytes(),
        )
    };
    let named = |n: &str| serde_json::json!({"project_name": n, "metadata": {"public": "false"}});

    let anonymous = create(None, named("p1"));
    assert_eq!(
        (anonymous.status, anonymous.body.clone()),
        (401, harbor_error("UNAUTHORIZED", "unauthorized"))
    );
    let robot = create(Some(("robot$team+ci", "robot-secret")), named("p1"));
    assert_eq!(
        (robot.status, robot.body.clone()),
        (
            403,
            harbor_error("FORBIDDEN", "Only system level robot can create project")
        )
    );
    let created = create(
        Some(ADMIN),
        serde_json::json!({"project_name": "p1", "metadata": {"public": "false"}, "storage_limit": 5000}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("Location"), Some("/api/v2.0/projects/3"));
    assert_eq!(proxy.quota("p1"), Some((5000, 0)));
    let again = create(Some(ADMIN), named("p1"));
    assert_eq!(
        (again.status, again.body.clone()),
        (
            409,
            harbor_error("CONFLICT", "The project named p1 already exists")
        )
    );
    let bad = create(Some(ADMIN), named("le__gacy"));
    assert_eq!(
        (bad.status, bad.body.clone()),
        (
            400,
            harbor_error(
                "BAD_REQUEST",
                "project name is not in lower case or contains illegal characters"
            )
        )
    );
    let public = create(
        Some(ADMIN),
        serde_json::json!({"project_name": "p2", "metadata": {"public": "yes"}}),
    );
    assert_eq!(
        (public.status, public.body.clone()),
        (
            400,
            harbor_error(
                "BAD_REQUEST",
                "metadata.public should only be 'true' or 'false', but got: 'yes'"
            )
        )
    );
    // By default everyone may create projects; a non-admin's storage_limit is ignored.
    let by_user = create(
        Some(("dev", "dev-pw")),
        serde_json::json!({"project_name": "p2", "storage_limit": 10}),
    );
    assert_eq!(by_user.status, 201);
    assert_eq!(proxy.quota("p2"), Some((-1, 0)));
    let created = proxy.created_projects();
    assert_eq!(
        created
            .iter()
            .map(|c| (c.name.as_str(), c.by.as_str()))
            .collect::<Vec<_>>(),
        [("p1", "admin"), ("p2", "dev")]
    );

    // With admin-only creation: users are refused, a system robot allowed to create is not.
    let (_reg2, strict) = start(double.admin_only_project_creation());
    let url = format!("{}/api/v2.0/projects", strict.url());
    let body = named("p3").to_string();
    let user = call(
        "POST",
        &url,
        &[("Authorization", &basic(("dev", "dev-pw")))],
        body.as_bytes(),
    );
    assert_eq!(
        (user.status, user.body.clone()),
        (
            403,
            harbor_error("FORBIDDEN", "Only system admin can create project")
        )
    );
    let maker = call(
        "POST",
        &url,
        &[("Authorization", &basic(("robot$maker", "maker-secret")))],
        body.as_bytes(),
    );
    assert_eq!(maker.status, 201);

    // HEAD ?project_name= for any logged-in caller.
    let head = |name: &str, auth: &str| {
        call(
            "HEAD",
            &format!("{}/api/v2.0/projects?project_name={name}", proxy.url()),
            &[("Authorization", auth)],
            b"",
        )
        .status
    };
    let robot = basic(("robot$team+ci", "robot-secret"));
    assert_eq!((head("p1", &robot), head("zzz", &robot)), (200, 404));
    // A created project takes pushes; it reaches the registry.
    let p = Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1);
    let bytes = push_image(&p, "p1/app", "1", "created");
    assert_eq!(
        Pusher::new(&reg).get_manifest("p1/app", "1").unwrap().bytes,
        bytes
    );
    // The user who created p2 is its project admin: a token grants every action there.
    let t = token(
        &proxy,
        Some(&basic(("dev", "dev-pw"))),
        &["repository:p2/app:pull,push", "repository:p1/app:pull,push"],
    );
    assert_eq!(granted(&t, "p2/app"), ["pull", "push", "delete"]);
    assert!(granted(&t, "p1/app").is_empty(), "p1 is admin's");
}

#[test]
fn the_summary_shows_the_quota_to_those_who_may_read_it() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("team", 10_240)
        .user("guest", "guest-pw", &[("team", Role::Guest)])
        .project_robot("team", "ci", "robot-secret", &[Perm::Push])
        .project_robot(
            "team",
            "reader",
            "reader-secret",
            &[Perm::Pull, Perm::ReadProject],
        );
    let (_reg, proxy) = start(double);
    let summary = |name: &str, auth: Option<(&str, &str)>| {
        let header = auth.map(basic);
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| ("Authorization", h))
            .into_iter()
            .collect();
        call(
            "GET",
            &format!("{}/api/v2.0/projects/{name}/summary", proxy.url()),
            &headers,
            b"",
        )
    };
    let p = Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1);
    push_image(&p, "team/app", "1", "summary");
    let (hard, used) = proxy.quota("team").unwrap();
    assert_eq!(hard, 10_240);
    assert!(used > 0);

    let admin = summary("team", Some(ADMIN));
    assert_eq!(admin.status, 200);
    assert_eq!(admin.json()["quota"]["hard"]["storage"], 10_240);
    assert_eq!(admin.json()["quota"]["used"]["storage"], used);
    assert_eq!(admin.json()["repo_count"], 1);
    assert_eq!(
        summary("team", Some(("guest", "guest-pw"))).json()["quota"]["used"]["storage"],
        used
    );
    // A robot with project read but not quota read sees no quota; one without project read, 403.
    let reader = summary("team", Some(("robot$team+reader", "reader-secret")));
    assert_eq!(reader.status, 200);
    assert!(reader.json().get("quota").is_none(), "{reader:?}");
    let ci = summary("team", Some(("robot$team+ci", "robot-secret")));
    assert_eq!(
        (ci.status, ci.body.clone()),
        (403, harbor_error("FORBIDDEN", "forbidden"))
    );
    assert_eq!(summary("team", None).status, 401);
    let missing = summary("nope", Some(ADMIN));
    assert_eq!(
        (missing.status, missing.body.clone()),
        (404, harbor_error("NOT_FOUND", "project nope not found"))
    );
}

#[test]
fn quotas_count_the_bytes_let_through_and_deny_past_the_limit() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1).project("q", 10_240);
    let (reg, proxy) = start(double);
    let admin = basic(ADMIN);
    let a = vec![b'a'; 6000];
    let put = upload(&proxy, &admin, "q/one", &a, &sha256_digest(&a));
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(proxy.quota("q"), Some((10_240, 6000)));

    let b = vec![b'b'; 5000];
    let denied = upload(&proxy, &admin, "q/one", &b, &sha256_digest(&b));
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.body,
        harbor_error(
            "DENIED",
            "adding 4.9 KiB of storage resource, which when updated to current usage of 5.9 KiB will exceed the configured upper limit of 10.0 KiB."
        )
    );
    let backend = Pusher::new(&reg);
    assert!(!backend.blob_exists("q/one", &sha256_digest(&b)).unwrap());
    assert_eq!(proxy.quota("q"), Some((10_240, 6000)));

    // A blob the project holds costs nothing again, in another repository too.
    let again = upload(&proxy, &admin, "q/two", &a, &sha256_digest(&a));
    assert_eq!(again.status, 201);
    assert_eq!(proxy.quota("q").unwrap().1, 6000);
    // A refused upload (wrong digest) gives its reservation back.
    let c = vec![b'c'; 100];
    let wrong = upload(
        &proxy,
        &admin,
        "q/one",
        &c,
        &sha256_digest(b"something else"),
    );
    assert_eq!(wrong.status, 400, "{wrong:?}");
    assert_eq!(proxy.quota("q").unwrap().1, 6000);

    // A mount from another project costs the blob's size.
    let l = vec![b'l'; 3000];
    assert_eq!(
        upload(&proxy, &admin, "library/base", &l, &sha256_digest(&l)).status,
        201
    );
    let mount = call(
        "POST",
        &format!(
            "{}/v2/q/three/blobs/uploads/?mount={}&from=library/base",
            proxy.url(),
            sha256_digest(&l)
        ),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(mount.status, 201, "{mount:?}");
    assert_eq!(proxy.quota("q").unwrap().1, 9000);

    // A manifest costs its own size (its blobs are already counted).
    let config = br#"{"config":{}}"#.to_vec();
    assert_eq!(
        upload(&proxy, &admin, "q/three", &config, &sha256_digest(&config)).status,
        201
    );
    let manifest = ImageManifest::new(
        OCI_MANIFEST,
        Descriptor::of(OCI_CONFIG, &config),
        vec![Descriptor::of(OCI_LAYER, &l)],
    )
    .to_bytes();
    let put = put_manifest(&proxy, &admin, "q/three", "1", OCI_MANIFEST, &manifest);
    assert_eq!(put.status, 201, "{put:?}");
    let used = 9000 + config.len() as i64 + manifest.len() as i64;
    assert_eq!(proxy.quota("q").unwrap().1, used);
    assert_eq!(
        backend.get_manifest("q/three", "1").unwrap().bytes,
        manifest
    );

    // Over the limit already (an admin lowered it), even the 0-byte check of a POST fails (2.9+).
    proxy.set_storage_limit("q", 1024);
    let post = call(
        "POST",
        &format!("{}/v2/q/one/blobs/uploads/", proxy.url()),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(post.status, 403);
    let message = post.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with(
            "subtracting 0 B of storage resource, which when updated to current usage of "
        ),
        "{message}"
    );
    assert!(
        message.ends_with(" KiB will exceed the configured upper limit of 1.0 KiB."),
        "{message}"
    );

    // Harbor 2.8 did not check the quota on POST.
    let (_reg, old) = start(
        HarborDouble::with_admin(ADMIN.0, ADMIN.1)
            .version(HarborVersion::V2_8)
            .project("q", 1024),
    );
    let a = vec![b'a'; 2000];
    let denied = upload(&old, &admin, "q/one", &a, &sha256_digest(&a));
    assert_eq!(denied.status, 403, "the PUT is refused");
    assert_eq!(old.quota("q"), Some((1024, 0)));
    old.set_storage_limit("q", 0);
    let post = call(
        "POST",
        &format!("{}/v2/q/one/blobs/uploads/", old.url()),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(post.status, 202);
}

#[test]
fn immutable_tags_refuse_a_second_push_even_of_identical_bytes() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("p", -1)
        .immutable("p", "**", "v*");
    let (reg, proxy) = start(double);
    let admin = basic(ADMIN);
    let p = Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1);
    let first = push_image(&p, "p/team/app", "v1", "first");
    let same = put_manifest(&proxy, &admin, "p/team/app", "v1", OCI_MANIFEST, &first);
    assert_eq!(same.status, 412);
    assert_eq!(
        same.body,
        harbor_error(
            "PRECONDITION",
            "Failed to process request due to 'team/app:v1' configured as immutable."
        )
    );
    let second = push_image(
        &Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1),
        "p/team/app",
        "scratch",
        "second",
    );
    let other = put_manifest(&proxy, &admin, "p/team/app", "v1", OCI_MANIFEST, &second);
    assert_eq!(other.status, 412);
    let backend = Pusher::new(&reg);
    assert_eq!(
        backend.get_manifest("p/team/app", "v1").unwrap().bytes,
        first
    );
    // Tags the rule does not match move freely; a new matching tag is taken once.
    assert_eq!(
        put_manifest(&proxy, &admin, "p/team/app", "latest", OCI_MANIFEST, &first).status,
        201
    );
    assert_eq!(
        put_manifest(
            &proxy,
            &admin,
            "p/team/app",
            "latest",
            OCI_MANIFEST,
            &second
        )
        .status,
        201
    );
    assert_eq!(
        put_manifest(&proxy, &admin, "p/team/app", "v2", OCI_MANIFEST, &second).status,
        201
    );
    assert_eq!(
        backend.get_manifest("p/team/app", "latest").unwrap().bytes,
        second
    );
}

#[test]
fn manifests_harbor_refuses_unknown_types_and_foreign_children() {
    let (reg, proxy) = start(HarborDouble::with_admin(ADMIN.0, ADMIN.1).project("p", -1));
    let admin = basic(ADMIN);
    let p = Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1);
    let child = push_image(&p, "p/app", "child", "child");
    let odd = put_manifest(
        &proxy,
        &admin,
        "p/app",
        "odd",
        "application/vnd.example.thing+json",
        &child,
    );
    assert_eq!(odd.status, 400);
    assert_eq!(
        odd.body,
        harbor_error(
            "MANIFEST_INVALID",
            "unmarshal manifest failed: missing signature key"
        )
    );
    let backend = Pusher::new(&reg);
    assert!(!backend.tags("p/app").unwrap().contains(&"odd".to_string()));

    // An index of children Harbor holds is taken.
    let index = ImageIndex::new(OCI_INDEX, vec![Descriptor::of(OCI_MANIFEST, &child)]).to_bytes();
    assert_eq!(
        put_manifest(&proxy, &admin, "p/app", "multi", OCI_INDEX, &index).status,
        201
    );
    // A child written to the registry behind Harbor's back is no artifact: 404 after the
    // registry took the index, and Harbor does not know the tag.
    let stray = push_image(&backend, "p/app", "stray", "stray");
    let index = ImageIndex::new(OCI_INDEX, vec![Descriptor::of(OCI_MANIFEST, &stray)]).to_bytes();
    let refused = put_manifest(&proxy, &admin, "p/app", "bad", OCI_INDEX, &index);
    assert_eq!(refused.status, 404);
    assert_eq!(
        refused.body,
        harbor_error(
            "NOT_FOUND",
            &format!("artifact p/app@{} not found", sha256_digest(&stray))
        )
    );
    let get = call(
        "GET",
        &format!("{}/v2/p/app/manifests/bad", proxy.url()),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(
        (get.status, get.body.clone()),
        (
            404,
            harbor_error("NOT_FOUND", "artifact p/app:bad not found")
        )
    );
    assert_eq!(proxy.harbor_tags("p/app").unwrap(), ["child", "multi"]);
}

/// A cosign-style signature manifest of `subject` (an OCI manifest with a simplesigning layer).
fn signature(p: &Pusher, repo: &str, seed: &str) -> Vec<u8> {
    let config = p
        .push_blob(repo, format!("{{\"sig\":\"{seed}\"}}").as_bytes())
        .unwrap()
        .with_media_type(OCI_CONFIG);
    let payload = p
        .push_blob(
            repo,
            format!("{{\"critical\":{{\"seed\":\"{seed}\"}}}}").as_bytes(),
        )
        .unwrap()
        .with_media_type(COSIGN_SIMPLESIGNING)
        .with_annotation(COSIGN_SIGNATURE_ANNOTATION, "MEUCIQ");
    ImageManifest::new(OCI_MANIFEST, config, vec![payload]).to_bytes()
}

#[test]
fn cosign_signatures_need_their_subject_up_to_2_7() {
    let subject_bytes = |p: &Pusher| {
        let config = p
            .push_blob("p/app", br#"{"subject":true}"#)
            .unwrap()
            .with_media_type(OCI_CONFIG);
        let layer = p
            .push_blob("p/app", b"subject layer")
            .unwrap()
            .with_media_type(OCI_LAYER);
        ImageManifest::new(OCI_MANIFEST, config, vec![layer]).to_bytes()
    };
    for (version, refused) in [
        (HarborVersion::V2_7, true),
        (HarborVersion::V2_5, true),
        (HarborVersion::V2_8, false),
        (HarborVersion::V2_12, false),
    ] {
        let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
            .version(version)
            .project("p", -1);
        let (reg, proxy) = start(double);
        let admin = basic(ADMIN);
        let p = Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1);
        let subject = subject_bytes(&p);
        let digest = sha256_digest(&subject);
        let sig_tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
        let sig = signature(&p, "p/app", "one");
        let first = put_manifest(&proxy, &admin, "p/app", &sig_tag, OCI_MANIFEST, &sig);
        if refused {
            assert_eq!(first.status, 404, "{version:?}: {first:?}");
            assert_eq!(
                first.body,
                harbor_error("NOT_FOUND", &format!("artifact p/app@{digest} not found"))
            );
            assert!(
                proxy
                    .harbor_tags("p/app")
                    .is_none_or(|t| !t.contains(&sig_tag))
            );
        } else {
            assert_eq!(first.status, 201, "{version:?}: {first:?}");
        }
        // Subject first, then its signature: taken by every version.
        assert_eq!(
            put_manifest(&proxy, &admin, "p/app", "1.0", OCI_MANIFEST, &subject).status,
            201
        );
        assert_eq!(
            put_manifest(&proxy, &admin, "p/app", &sig_tag, OCI_MANIFEST, &sig).status,
            201
        );
        assert_eq!(
            Pusher::new(&reg)
                .get_manifest("p/app", &sig_tag)
                .unwrap()
                .bytes,
            sig
        );

        // Harbor up to 2.7 has no `subject` handling: such a manifest is just an artifact.
        let mut with_subject: serde_json::Value = serde_json::from_slice(&sig).unwrap();
        with_subject["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sha256_digest(b"absent"), "size": 6});
        let bytes = serde_json::to_vec(&with_subject).unwrap();
        assert_eq!(
            put_manifest(&proxy, &admin, "p/app", "referrer", OCI_MANIFEST, &bytes).status,
            201,
            "{version:?}"
        );
    }
}

#[test]
fn a_session_cookie_sent_back_makes_writes_fail_the_csrf_check() {
    let (_reg, proxy) = start(HarborDouble::with_admin(ADMIN.0, ADMIN.1));
    let admin = basic(ADMIN);
    let ping = call("GET", &format!("{}/api/v2.0/ping", proxy.url()), &[], b"");
    let set_cookie = ping.header("Set-Cookie").unwrap().to_string();
    let sid = set_cookie
        .strip_prefix("sid=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        sid.len() == 32 && sid.chars().all(|c| c.is_ascii_hexdigit()),
        "{set_cookie}"
    );
    assert!(set_cookie.ends_with("; Path=/; HttpOnly"), "{set_cookie}");

    let cookie = format!("sid={sid}");
    let url = format!("{}/v2/library/app/blobs/uploads/", proxy.url());
    proxy.clear_requests();
    let refused = call(
        "POST",
        &url,
        &[("Authorization", &admin), ("Cookie", &cookie)],
        b"",
    );
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body,
        harbor_error("FORBIDDEN", "CSRF token invalid")
    );
    assert!(refused.header("X-Harbor-CSRF-Token").is_some());
    assert_eq!(upload_counts(&proxy.requests()).sessions, 0);
    let create = call(
        "POST",
        &format!("{}/api/v2.0/projects", proxy.url()),
        &[("Authorization", &admin), ("Cookie", &cookie)],
        br#"{"project_name":"x"}"#,
    );
    assert_eq!(
        (create.status, create.body.clone()),
        (403, harbor_error("FORBIDDEN", "CSRF token invalid"))
    );
    assert!(!proxy.projects().contains("x"));

    // Reads pass and hand out a token; a write carrying it passes too. Without the cookie, no check.
    let read = call(
        "GET",
        &format!("{}/v2/", proxy.url()),
        &[("Authorization", &admin), ("Cookie", &cookie)],
        b"",
    );
    assert_eq!(read.status, 200);
    assert!(
        read.header("Set-Cookie").is_none(),
        "a known session keeps its cookie"
    );
    let csrf = read.header("X-Harbor-CSRF-Token").unwrap().to_string();
    let with_token = call(
        "POST",
        &url,
        &[
            ("Authorization", &admin),
            ("Cookie", &cookie),
            ("X-Harbor-CSRF-Token", &csrf),
        ],
        b"",
    );
    assert_eq!(with_token.status, 202, "{with_token:?}");
    assert_eq!(
        call("POST", &url, &[("Authorization", &admin)], b"").status,
        202
    );
}

#[test]
fn a_cross_project_mount_needs_pull_on_the_source_and_never_falls_back() {
    let double = HarborDouble::with_admin(ADMIN.0, ADMIN.1)
        .project("a", -1)
        .project("b", -1)
        .user("dev", "dev-pw", &[("b", Role::Developer)])
        .user(
            "both",
            "both-pw",
            &[("b", Role::Developer), ("a", Role::Guest)],
        );
    let (reg, proxy) = start(double);
    let blob = b"shared layer".to_vec();
    let digest = sha256_digest(&blob);
    assert_eq!(
        upload(&proxy, &basic(ADMIN), "a/x", &blob, &digest).status,
        201
    );
    let mount_url = format!(
        "{}/v2/b/y/blobs/uploads/?mount={digest}&from=a/x",
        proxy.url()
    );

    proxy.clear_requests();
    let refused = call(
        "POST",
        &mount_url,
        &[("Authorization", &basic(("dev", "dev-pw")))],
        b"",
    );
    assert_eq!(refused.status, 401);
    let message = "unauthorized to access repository: a/x, action: pull";
    assert_eq!(
        refused.body,
        harbor_error("UNAUTHORIZED", &format!("{message}: {message}"))
    );
    assert_eq!(
        refused.header("Www-Authenticate"),
        Some(r#"Basic realm="harbor""#)
    );
    assert!(refused.header("Location").is_none());
    assert_eq!(
        upload_counts(&proxy.requests()).sessions,
        0,
        "no upload session instead"
    );
    let backend = Pusher::new(&reg);
    assert!(!backend.blob_exists("b/y", &digest).unwrap());

    let mounted = call(
        "POST",
        &mount_url,
        &[("Authorization", &basic(("both", "both-pw")))],
        b"",
    );
    assert_eq!(mounted.status, 201, "{mounted:?}");
    assert!(backend.blob_exists("b/y", &digest).unwrap());
    // A `from` without a project is a bad request.
    let single = call(
        "POST",
        &format!(
            "{}/v2/b/y/blobs/uploads/?mount={digest}&from=alpine",
            proxy.url()
        ),
        &[("Authorization", &basic(ADMIN))],
        b"",
    );
    assert_eq!(
        (single.status, single.body.clone()),
        (
            400,
            harbor_error(
                "BAD_REQUEST",
                "bad request: invalid repository name: alpine"
            )
        )
    );
}

#[test]
fn manifest_reads_and_tag_lists_come_from_harbors_database() {
    let (_reg, proxy) = start(HarborDouble::with_admin(ADMIN.0, ADMIN.1).project("p", -1));
    let admin = basic(ADMIN);
    let get = |path: &str| {
        call(
            "GET",
            &format!("{}{path}", proxy.url()),
            &[("Authorization", &admin)],
            b"",
        )
    };
    let none = get("/v2/p/none/tags/list");
    assert_eq!(
        (none.status, none.body.clone()),
        (
            404,
            harbor_error("NOT_FOUND", "repository p/none not found")
        )
    );

    let p = Pusher::with_basic(&proxy.url(), ADMIN.0, ADMIN.1);
    let manifest = push_image(&p, "p/app", "c", "tags");
    for tag in ["a", "b"] {
        assert_eq!(
            put_manifest(&proxy, &admin, "p/app", tag, OCI_MANIFEST, &manifest).status,
            201
        );
    }
    let list = get("/v2/p/app/tags/list");
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body,
        "{\"name\":\"p/app\",\"tags\":[\"a\",\"b\",\"c\"]}\n"
    );
    let page = get("/v2/p/app/tags/list?n=1");
    assert_eq!(page.json()["tags"], serde_json::json!(["a"]));
    assert_eq!(
        page.header("Link"),
        Some(r#"</v2/p/app/tags/list?last=a&n=1>; rel="next""#)
    );
    let last = get("/v2/p/app/tags/list?n=2&last=a");
    assert_eq!(last.json()["tags"], serde_json::json!(["b", "c"]));
    assert!(last.header("Link").is_none());

    let missing = get("/v2/p/app/manifests/nope");
    assert_eq!(
        (missing.status, missing.body.clone()),
        (
            404,
            harbor_error("NOT_FOUND", "artifact p/app:nope not found")
        )
    );
    let unknown = sha256_digest(b"unknown");
    let by_digest = get(&format!("/v2/p/app/manifests/{unknown}"));
    assert_eq!(
        by_digest.body,
        harbor_error("NOT_FOUND", &format!("artifact p/app@{unknown} not found"))
    );
    let head = call(
        "HEAD",
        &format!("{}/v2/p/app/blobs/{unknown}", proxy.url()),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(head.status, 404);
    let found = call(
        "GET",
        &format!("{}/v2/p/app/manifests/b", proxy.url()),
        &[("Authorization", &admin), ("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(found.status, 200, "{found:?}");
    assert_eq!(found.body.as_bytes(), manifest.as_slice());
    assert_eq!(
        found.header("Docker-Content-Digest"),
        Some(sha256_digest(&manifest).as_str())
    );
}
