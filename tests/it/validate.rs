//! `ferry validate` against real docker-registry destinations: damage made through the API and the
//! storage is named exactly, a push of the failed list repairs it, platforms, mapping, credentials.

use std::collections::BTreeMap;
use std::fs;

use base64::Engine as _;
use ferry_testkit::standard::repos;
use ferry_testkit::{Pusher, Registry, RegistryAuth, RegistryConfig, TaggedImage, Truth, tree};
use serde_json::Value;

use crate::util::*;

/// A destination whose blob HEADs see storage damage at once (no descriptor cache).
fn destination() -> Registry {
    Registry::start_with(RegistryConfig {
        blob_descriptor_cache: false,
        ..Default::default()
    })
    .expect("docker-registry starts")
}

/// The tag of `repository` in the truth that `pick` chooses (the first in name order).
fn tag_in<'t>(
    truth: &'t Truth,
    repository: &str,
    pick: impl Fn(&TaggedImage) -> bool,
) -> &'t TaggedImage {
    truth
        .tags
        .values()
        .find(|t| t.repository == repository && pick(t))
        .unwrap_or_else(|| panic!("no such tag in {repository}"))
}

/// `ferry validate --format json`: the verdicts by source `repo:tag`.
fn verdicts(ran: &Ran) -> BTreeMap<String, Value> {
    let list: Vec<Value> = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", ran.stdout, ran.stderr));
    list.into_iter()
        .map(|v| (v["source"].as_str().unwrap().to_string(), v))
        .collect()
}

fn messages(verdict: &Value) -> Vec<String> {
    verdict["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect()
}

/// The layers of a manifest held by the registry, in order.
fn layers_of(p: &Pusher, repository: &str, digest: &str) -> Vec<String> {
    let m = p.get_manifest(repository, digest).unwrap();
    let json: Value = serde_json::from_slice(&m.bytes).unwrap();
    json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The acceptance test of the issue: a whole push validates; four kinds of damage, made through the
/// registry API and its storage, are named exactly; `push --images` of the failed list repairs them.
#[test]
fn damage_is_named_exactly_and_a_push_of_the_failed_list_repairs_it() {
    let fx = standard_tree(31);
    let before = snapshot(fx.root());
    let reg = destination();
    let p = Pusher::new(&reg);
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let failed = dir.path().join("validate-failed.txt");
    let ran = run(&mut push_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);

    let ran = run(&mut validate_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--format", "json"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(failed_lines(&failed).is_empty());
    let all = verdicts(&ran);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        fx.truth.tags.keys().collect::<Vec<_>>()
    );
    for (name, t) in &fx.truth.tags {
        let v = &all[name];
        assert_eq!(v["status"], "pass", "{name}: {v}");
        assert_eq!(v["found"], t.digest.as_str(), "{name}");
        assert_eq!(
            v["target"],
            format!("{}:{}", default_destination(&t.repository), t.tag),
            "{name}"
        );
        assert_eq!(v["manifests_checked"], t.children.len(), "{name}");
        assert_eq!(
            v["blobs_checked"],
            t.blobs.len(),
            "{name}: every blob, once"
        );
    }

    // 1. A tag's manifest deleted (Distribution deletes by digest: every tag on it goes).
    let chart = tag_in(&fx.truth, repos::CHARTS_MYCHART, |_| true);
    p.delete_manifest(repos::CHARTS_MYCHART, &chart.digest)
        .unwrap();
    // 2. A tag re-pointed at another image of its repository.
    let moved = tag_in(&fx.truth, repos::NS_SUB, |t| t.tag == "1.0");
    let other = tag_in(&fx.truth, repos::NS_SUB, |t| t.digest != moved.digest);
    let m = p.get_manifest(repos::NS_SUB, &other.digest).unwrap();
    p.push_manifest(repos::NS_SUB, &moved.tag, &m.media_type, &m.bytes)
        .unwrap();
    // 3. One child of an index deleted.
    let list = tag_in(&fx.truth, repos::ORG_TEAM_SUB_APP, |t| {
        !t.children.is_empty()
    });
    let (child, child_platform) = (&list.children[1], list.platforms[1].label());
    p.delete_manifest(repos::ORG_TEAM_SUB_APP, child).unwrap();
    // 4. One layer unlinked from one repository in the destination's storage.
    let img = tag_in(&fx.truth, repos::NS_SUB_IMG, |t| t.children.is_empty());
    let layers = layers_of(&p, repos::NS_SUB_IMG, &img.digest);
    let (n, layer) = (layers.len(), layers.last().unwrap().clone());
    fs::remove_file(tree::layer_link(
        reg.storage_root(),
        repos::NS_SUB_IMG,
        &layer,
    ))
    .unwrap();
    assert!(!p.blob_exists(repos::NS_SUB_IMG, &layer).unwrap());

    // What each tag must say, worked out from the truth.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, t) in &fx.truth.tags {
        let mut reasons = Vec::new();
        if t.repository == repos::CHARTS_MYCHART && t.digest == chart.digest {
            reasons.push("missing tag".to_string());
        }
        if t.repository == repos::NS_SUB && t.tag == moved.tag {
            reasons.push(format!(
                "digest differs: dest {} != source {}",
                other.digest, moved.digest
            ));
        }
        if t.repository == repos::ORG_TEAM_SUB_APP && t.children.contains(child) {
            reasons.push(format!("missing child {child} ({child_platform})"));
        }
        if t.repository == repos::NS_SUB_IMG && t.blobs.iter().any(|b| b.digest == layer) {
            assert!(
                t.children.is_empty(),
                "{name}: the role below is a single image's"
            );
            reasons.push(format!("missing blob {layer} (layer {n})"));
        }
        if !reasons.is_empty() {
            expected.insert(name.clone(), reasons);
        }
    }
    assert_eq!(expected.len(), 4, "{expected:?}");

    let ran = run(&mut validate_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_eq!(
        failed_lines(&failed),
        expected.keys().cloned().collect::<Vec<_>>()
    );
    for reasons in expected.values() {
        for r in reasons {
            assert!(
                ran.stdout.contains(r.as_str()),
                "table lacks {r:?}:\n{}",
                ran.stdout
            );
        }
    }
    assert!(
        ran.stderr.contains(&format!(
            "{} passed, 4 failed (digest differs 1, missing blob 1, missing child 1, missing tag 1)",
            fx.truth.tags.len() - 4
        )),
        "{}",
        ran.stderr
    );

    let report = dir.path().join("report.json");
    let ran = run(validate_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--format", "json", "-j", "8"],
    )
    .arg("--report")
    .arg(&report));
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    for (name, v) in verdicts(&ran) {
        match expected.get(&name) {
            Some(reasons) => {
                assert_eq!(v["status"], "fail", "{name}");
                assert_eq!(&messages(&v), reasons, "{name}");
            }
            None => assert_eq!(v["status"], "pass", "{name}: {v}"),
        }
    }
    let report: Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["command"], "validate");
    assert_eq!(report["counts"]["failed"], 4);
    assert_eq!(report["counts"]["reasons"]["missing blob"], 1);
    assert_eq!(
        report["images"].as_array().unwrap().len(),
        fx.truth.tags.len()
    );

    // --shallow asks no blob: the unlinked layer goes unseen, the rest does not.
    let ran = run(&mut validate_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--shallow"],
    ));
    assert_eq!(ran.code, 1, "{}", ran.all());
    let mut shallow: Vec<String> = expected
        .iter()
        .filter(|(_, r)| !r[0].starts_with("missing blob"))
        .map(|(n, _)| n.clone())
        .collect();
    shallow.sort();
    assert_eq!(failed_lines(&failed), shallow);

    // The failed list of the full run, pushed again, repairs every tag.
    run(&mut validate_cmd(fx.root(), &dest, dir.path(), &[]));
    let ran = run(&mut push_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--images", failed.to_str().unwrap()],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.stderr.contains("images: 4 pushed"), "{}", ran.stderr);
    let ran = run(&mut validate_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(failed_lines(&failed).is_empty());
    assert!(p.blob_exists(repos::NS_SUB_IMG, &layer).unwrap());
    for name in expected.keys() {
        let t = &fx.truth.tags[name];
        let raw = skopeo_raw(&format!(
            "docker://{}/{}:{}",
            reg.host(),
            default_destination(&t.repository),
            t.tag
        ));
        assert_eq!(sha256(&raw), t.digest, "skopeo reads {name} back");
    }
    assert_eq!(snapshot(fx.root()), before, "the source is read-only");
}

/// Replaces `repo:tag` at the destination by an index holding the source index's entries that
/// `keep` keeps, after `edit`; returns the new digest.
fn push_edited_index(
    p: &Pusher,
    repository: &str,
    tag: &str,
    edit: impl Fn(&mut Vec<Value>),
) -> String {
    let m = p.get_manifest(repository, tag).unwrap();
    let mut index: Value = serde_json::from_slice(&m.bytes).unwrap();
    let mut entries = index["manifests"].as_array().unwrap().clone();
    edit(&mut entries);
    index["manifests"] = Value::Array(entries);
    let bytes = serde_json::to_vec_pretty(&index).unwrap();
    p.push_manifest(repository, tag, &m.media_type, &bytes)
        .unwrap()
}

/// Hangar's semantics: with -a/--os a destination index that differs from the source's is judged
/// by the selected entries (digest and platform), and both sides are printed; without, the digest rules.
#[test]
fn arch_and_os_compare_the_selected_index_entries_like_hangar() {
    let fx = standard_tree(32);
    let reg = Registry::start().unwrap();
    let p = Pusher::new(&reg);
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let ran = run(&mut push_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);

    // The OCI index loses its arm/v7 entry (as a mirror of amd64,arm64 only would have it).
    let oci = tag_in(&fx.truth, repos::MULTI_OCI_APP, |t| !t.children.is_empty());
    let oci_name = format!("{}:{}", oci.repository, oci.tag);
    let arm_v7 = oci
        .platforms
        .iter()
        .position(|p| p.architecture == "arm")
        .unwrap();
    let subset = push_edited_index(&p, repos::MULTI_OCI_APP, &oci.tag, |e| {
        e.retain(|m| m["platform"]["architecture"] != "arm")
    });
    // The Docker list's arm64 entry points at the amd64 image.
    let list = tag_in(&fx.truth, repos::ORG_TEAM_SUB_APP, |t| {
        !t.children.is_empty()
    });
    let list_name = format!("{}:{}", list.repository, list.tag);
    let arm64 = list
        .platforms
        .iter()
        .position(|p| p.architecture == "arm64")
        .unwrap();
    let amd64 = list
        .platforms
        .iter()
        .position(|p| p.architecture == "amd64")
        .unwrap();
    let swapped = push_edited_index(&p, repos::ORG_TEAM_SUB_APP, &list.tag, |e| {
        e[arm64]["digest"] = e[amd64]["digest"].clone();
        e[arm64]["size"] = e[amd64]["size"].clone();
    });

    let validate = |extra: &[&str]| {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(extra);
        let ran = run(&mut validate_cmd(fx.root(), &dest, dir.path(), &args));
        let v = verdicts(&ran);
        (ran, v)
    };

    // No selection: digests must match; both sides are printed.
    let (ran, v) = validate(&[]);
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert_eq!(
        messages(&v[&oci_name]),
        [format!(
            "digest differs: dest {subset} != source {}",
            oci.digest
        )]
    );
    assert_eq!(v[&oci_name]["srcSpec"].as_array().unwrap().len(), 3);
    assert_eq!(v[&oci_name]["dstSpec"].as_array().unwrap().len(), 2);
    assert_eq!(
        messages(&v[&list_name]),
        [format!(
            "digest differs: dest {swapped} != source {}",
            list.digest
        )]
    );
    assert!(
        ran.stderr.contains(&format!("{oci_name} srcSpec: [")),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(&format!("{oci_name} dstSpec: [")),
        "{}",
        ran.stderr
    );

    // amd64 only: both indexes hold the source's amd64 entry, and its image is whole.
    let (ran, v) = validate(&["-a", "amd64"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(v[&oci_name]["found"], subset.as_str());
    assert_eq!(v[&oci_name]["manifests_checked"], 1);

    // arm64: the list names another image for it.
    let (ran, v) = validate(&["--arch=arm64"]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_eq!(v[&oci_name]["status"], "pass");
    assert_eq!(
        messages(&v[&list_name]),
        [format!(
            "digest differs: dest {} != source {} (linux/arm64)",
            list.children[amd64], list.children[arm64]
        )]
    );
    assert_eq!(
        failed_lines(&dir.path().join("validate-failed.txt")),
        vec![list_name.clone()]
    );

    // arm (any variant): the OCI index lost it.
    let (ran, v) = validate(&["-a", "arm", "--os", "linux"]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_eq!(
        messages(&v[&oci_name]),
        [format!(
            "missing child {} (linux/arm/v7): not in destination index {subset}",
            oci.children[arm_v7]
        )]
    );
    assert_eq!(v[&list_name]["status"], "pass");
    assert_eq!(v[&oci_name]["dstSpec"], Value::Array(Vec::new()));

    // An OS no entry has: only the indexes themselves are looked at, and that is said.
    let (ran, v) = validate(&["--os", "windows", "-a", "amd64"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(v[&oci_name]["status"], "pass");
    assert!(
        ran.stderr
            .contains("no index entry for arch amd64, os windows"),
        "{}",
        ran.stderr
    );
}

/// A tree damaged after the push: its broken image is a source problem, kept out of the failed list.
#[test]
fn a_broken_source_image_is_a_source_problem_not_a_destination_failure() {
    let fx = standard_tree(33);
    let reg = Registry::start().unwrap();
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let ran = run(&mut push_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);

    // A blob only one tag uses goes missing from the source.
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, t) in &fx.truth.tags {
        for b in &t.blobs {
            users.entry(&b.digest).or_default().push(name);
        }
    }
    let (blob, broken) = users
        .iter()
        .find(|(_, names)| names.len() == 1)
        .map(|(b, names)| (b.to_string(), names[0].to_string()))
        .unwrap();
    fs::remove_file(tree::blob_data(fx.root(), &blob)).unwrap();

    let ran = run(&mut validate_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--format", "json"],
    ));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(failed_lines(&dir.path().join("validate-failed.txt")).is_empty());
    for (name, v) in verdicts(&ran) {
        if name == broken {
            assert_eq!(v["status"], "source-problem", "{v}");
            let problems = v["source_problems"].to_string();
            assert!(problems.contains(&blob), "{problems}");
        } else {
            assert_eq!(v["status"], "pass", "{name}: {v}");
        }
    }
    assert!(ran.stderr.contains("1 source problems"), "{}", ran.stderr);
}

/// Validate looks where push wrote under the same mapping, and nowhere else.
#[test]
fn validate_maps_repositories_like_push() {
    let fx = standard_tree(34);
    let reg = Registry::start().unwrap();
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let ran = run(&mut push_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--project", "mirror"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let ran = run(&mut validate_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--project", "mirror", "--format", "json"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    for (name, v) in verdicts(&ran) {
        let t = &fx.truth.tags[&name];
        assert_eq!(v["target"], format!("mirror/{}:{}", t.repository, t.tag));
    }

    // Under the default mapping nothing is there; the failed list names every tag.
    let ran = run(&mut validate_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--format", "json"],
    ));
    assert_eq!(ran.code, 1, "{}", ran.all());
    for v in verdicts(&ran).values() {
        assert_eq!(messages(v), ["missing tag"]);
    }
    assert_eq!(
        failed_lines(&dir.path().join("validate-failed.txt")),
        fx.truth.tags.keys().cloned().collect::<Vec<_>>()
    );

    // Filters select what is checked.
    let ran = run(&mut validate_cmd(
        fx.root(),
        &dest,
        dir.path(),
        &["--project", "mirror", "--repo", "ns/**", "--format", "json"],
    ));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let checked: Vec<String> = verdicts(&ran).into_keys().collect();
    let wanted: Vec<String> = fx
        .truth
        .tags
        .iter()
        .filter(|(_, t)| t.repository.starts_with("ns/"))
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(checked, wanted);
}

/// Nothing listening: exit 2 before anything is checked.
#[test]
fn an_unreachable_destination_exits_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = workdir();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/registry");
    let ran = run(&mut validate_cmd(
        &source,
        &format!("http://127.0.0.1:{port}"),
        dir.path(),
        &["--retries", "0"],
    ));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(
        ran.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        ran.stderr
    );
}

/// Every credential source works; no credentials, or a wrong password, exit 2 and print no secret.
#[test]
fn validate_with_each_credential_source_and_a_wrong_password_exits_2() {
    let fx = standard_tree(35);
    let password = "pw-validate-4Hs";
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd("carol", password),
        ..Default::default()
    })
    .unwrap();
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let ran = run(push_cmd(fx.root(), &dest, dir.path(), &[])
        .env("FERRY_USERNAME", "carol")
        .env("FERRY_PASSWORD", password));
    assert_eq!(ran.code, 0, "{}", ran.all());

    let auth = base64::engine::general_purpose::STANDARD.encode(format!("carol:{password}"));
    let auths = serde_json::json!({"auths": {reg.host(): {"auth": auth}}}).to_string();
    let authfile = dir.path().join("auth.json");
    fs::write(&authfile, &auths).unwrap();
    let docker = dir.path().join("docker");
    fs::create_dir(&docker).unwrap();
    fs::write(docker.join("config.json"), &auths).unwrap();
    let tags = fx.truth.tags.len();
    let passes = |ran: Ran, source: &str| {
        assert_eq!(ran.code, 0, "{source}: {}", ran.all());
        assert!(
            ran.stderr.contains(&format!("{tags} passed, 0 failed")),
            "{source}: {}",
            ran.stderr
        );
        assert!(!ran.all().contains(password), "{source}: password printed");
    };
    passes(
        run(validate_cmd(
            fx.root(),
            &dest,
            dir.path(),
            &["--debug", "--username", "carol", "--password-stdin"],
        )
        .write_stdin(format!("{password}\n"))),
        "--password-stdin",
    );
    passes(
        run(validate_cmd(fx.root(), &dest, dir.path(), &[])
            .env("FERRY_USERNAME", "carol")
            .env("FERRY_PASSWORD", password)),
        "environment",
    );
    passes(
        run(validate_cmd(fx.root(), &dest, dir.path(), &["--authfile"]).arg(&authfile)),
        "--authfile",
    );
    passes(
        run(validate_cmd(fx.root(), &dest, dir.path(), &[]).env("REGISTRY_AUTH_FILE", &authfile)),
        "REGISTRY_AUTH_FILE",
    );
    passes(
        run(validate_cmd(fx.root(), &dest, dir.path(), &["--debug"]).env("DOCKER_CONFIG", &docker)),
        "DOCKER_CONFIG",
    );

    // A credential helper named by `credsStore`: a double of docker-credential-* that answers
    // `get` for this host only, put first on PATH.
    let helpers = dir.path().join("helpers");
    fs::create_dir(&helpers).unwrap();
    let helper = helpers.join("docker-credential-ferrydouble");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\n[ \"$host\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"carol\",\"Secret\":\"{password}\"}}' \"$host\"\n",
            reg.host()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    fs::write(store.join("config.json"), r#"{"credsStore":"ferrydouble"}"#).unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    passes(
        run(validate_cmd(fx.root(), &dest, dir.path(), &["--debug"])
            .env("DOCKER_CONFIG", &store)
            .env("PATH", &path)),
        "credential helper",
    );

    // No credentials at all: the destination refuses every read, which is exit 2, not a list of failures.
    let ran = run(&mut validate_cmd(fx.root(), &dest, dir.path(), &[]));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("needs credentials"), "{}", ran.stderr);

    let wrong = "wrong-pw-8Jd";
    for debug in [&[][..], &["--debug"][..]] {
        let mut args = vec!["--username", "carol", "--password-stdin"];
        args.extend_from_slice(debug);
        let ran = run(
            validate_cmd(fx.root(), &dest, dir.path(), &args).write_stdin(format!("{wrong}\n"))
        );
        assert_eq!(ran.code, 2, "{}", ran.all());
        assert!(
            ran.stderr.contains("carol") && ran.stderr.contains("refused"),
            "{}",
            ran.stderr
        );
        assert!(
            !ran.all().contains(wrong),
            "wrong password printed:\n{}",
            ran.all()
        );
    }
    let ran = run(validate_cmd(fx.root(), &dest, dir.path(), &["--debug"])
        .env("FERRY_USERNAME", "carol")
        .env("FERRY_PASSWORD", wrong));
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(
        !ran.all().contains(wrong),
        "wrong password printed:\n{}",
        ran.all()
    );
}

/// Token auth: a user who may only pull can validate.
#[test]
fn a_pull_only_token_user_can_validate() {
    let fx = standard_tree(36);
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::Token {
            users: vec![
                ferry_testkit::User::new("dave", "pw-dave"),
                ferry_testkit::User::new("erin", "pw-erin").read_only(),
            ],
            lifetime: std::time::Duration::from_secs(300),
        },
        ..Default::default()
    })
    .unwrap();
    let dir = workdir();
    let dest = format!("http://{}", reg.host());
    let ran = run(push_cmd(fx.root(), &dest, dir.path(), &[])
        .env("FERRY_USERNAME", "dave")
        .env("FERRY_PASSWORD", "pw-dave"));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let ran = run(validate_cmd(fx.root(), &dest, dir.path(), &[])
        .env("FERRY_USERNAME", "erin")
        .env("FERRY_PASSWORD", "pw-erin"));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(failed_lines(&dir.path().join("validate-failed.txt")).is_empty());
}
