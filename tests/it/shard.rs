//! `--shard` as the pods of a Kubernetes Indexed Job run it: N ferry processes at once against one
//! real docker-registry, K from `JOB_COMPLETION_INDEX`, shared blobs mounted from their home shard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::{
    BulkSpec, Proxy, Pusher, Registry, generate_bulk, generate_standard, upload_counts,
};
use serde_json::Value;

use crate::util::*;

/// The standard scenario (indexes, artifacts, nested names) and a bulk one (many repositories
/// over a few shared base layers) in one tree written by docker-registry.
fn shared_tree(seed: u64) -> Fixture {
    let registry = Registry::start().expect("docker-registry starts");
    let mut truth = generate_standard(&registry, seed).expect("standard scenario");
    let spec = BulkSpec {
        repositories: 12,
        tags_per_repo: 2,
        base_layers: 4,
        base_layer_bytes: 96 << 10,
        unique_layer_bytes: 2048,
        nesting: true,
        seed,
    };
    let bulk = generate_bulk(&registry, &spec).expect("bulk scenario");
    for (_, tag) in bulk.tags {
        truth.add_tag(tag);
    }
    truth.normalize();
    let tree = registry.stop().expect("docker-registry stops");
    Fixture { tree, truth }
}

/// Starts `ferry push --shard auto/N` as pod `index` of an Indexed Job would run it: failed list and report under `dir/shard-<index>/`.
fn start_push_pod(root: &Path, dest: &str, dir: &Path, index: u64, count: u64) -> Child {
    let out = shard_dir(dir, index);
    std::fs::create_dir_all(&out).unwrap();
    ferry_process()
        .current_dir(&out)
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .arg("push")
        .arg(root)
        .args(["-d", dest, "--shard", &format!("auto/{count}"), "-o"])
        .arg(out.join("push-failed.txt"))
        .arg("--report")
        .arg(out.join("report.json"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(out.join("stderr.txt")).unwrap())
        .spawn()
        .expect("ferry starts")
}

fn shard_dir(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("shard-{index}"))
}

/// Waits for every child (at most five minutes in all), asserting each exits 0.
fn wait_all(children: Vec<(u64, Child)>, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    for (index, mut child) in children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("shard {index} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(shard_dir(dir, index).join("stderr.txt")).unwrap();
        assert_eq!(status.code(), Some(0), "shard {index}:\n{stderr}");
    }
}

fn report(dir: &Path, index: u64) -> Value {
    let path = shard_dir(dir, index).join("report.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// digest → repository from one of a report's shard maps.
fn homes(report: &Value, key: &str) -> BTreeMap<String, String> {
    report["shard"][key]
        .as_object()
        .unwrap_or_else(|| panic!("report has shard.{key}: {report}"))
        .iter()
        .map(|(d, r)| (d.clone(), r.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn three_pods_at_once_push_every_tag_once_and_validate_passes() {
    let fx = shared_tree(71);
    let before = snapshot(fx.root());
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let dir = workdir();
    let pods: Vec<(u64, Child)> = (0..3)
        .map(|k| (k, start_push_pod(fx.root(), &proxy.url(), dir.path(), k, 3)))
        .collect();
    wait_all(pods, dir.path());

    // The union of the shards is every tag, each in exactly one shard, as its report says.
    let mut pushed: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..3 {
        let r = report(dir.path(), k);
        assert_eq!(r["shard"]["index"], k);
        assert_eq!(r["shard"]["count"], 3);
        assert_eq!(r["shard"]["index_from"], "environment");
        for image in r["images"].as_array().unwrap() {
            assert_eq!(image["status"], "copied", "{image}");
            let source = image["source"].as_str().unwrap().to_string();
            assert!(
                pushed.insert(source.clone(), k).is_none(),
                "{source} in two shards"
            );
        }
        assert!(failed_lines(&shard_dir(dir.path(), k).join("push-failed.txt")).is_empty());
    }
    let all: BTreeSet<&String> = fx.truth.tags.keys().collect();
    assert_eq!(pushed.keys().collect::<BTreeSet<_>>(), all);
    assert!(
        (0..3).all(|k| pushed.values().any(|&s| s == k)),
        "every shard had work"
    );

    // The registry saw each tag's manifest PUT exactly once, and holds it with its digest.
    let log = proxy.requests();
    for tag in fx.truth.tags.values() {
        let path = format!(
            "/v2/{}/manifests/{}",
            default_destination(&tag.repository),
            tag.tag
        );
        let puts = log
            .iter()
            .filter(|r| r.method == "PUT" && r.path == path)
            .count();
        assert_eq!(puts, 1, "{path}");
    }
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);

    // Every shard computed the same homes: each shared blob has one home shard, and the others
    // mount it from the same repository.
    let reports: Vec<Value> = (0..3).map(|k| report(dir.path(), k)).collect();
    let mut home_of: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (k, r) in reports.iter().enumerate() {
        for (d, repo) in homes(r, "home_blobs") {
            assert!(
                home_of.insert(d.clone(), (k as u64, repo)).is_none(),
                "{d}: two homes"
            );
        }
    }
    let mut foreign = 0;
    for (k, r) in reports.iter().enumerate() {
        for (d, repo) in homes(r, "foreign_homes") {
            let (home_shard, home_repo) = &home_of[&d];
            assert_ne!(*home_shard, k as u64);
            assert_eq!(*home_repo, repo, "{d}");
            foreign += 1;
        }
    }
    assert!(foreign > 0, "the tree shares blobs across shards");

    // validate (whole, and one pod per shard) finds everything.
    let ran = run(&mut validate_cmd(fx.root(), &reg.url(), dir.path(), &[]));
    assert_eq!(ran.code, 0, "{}", ran.all());
    let mut checked = 0;
    for k in 0..3 {
        let report = dir.path().join(format!("validate-{k}.json"));
        let ran = run(validate_cmd(
            fx.root(),
            &reg.url(),
            dir.path(),
            &["--shard", "auto", "--shards", "3"],
        )
        .env("JOB_COMPLETION_INDEX", k.to_string())
        .arg("--report")
        .arg(&report));
        assert_eq!(ran.code, 0, "{}", ran.all());
        let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(json["shard"], format!("{k}/3"));
        for v in json["images"].as_array().unwrap() {
            assert_eq!(
                pushed[v["source"].as_str().unwrap()],
                k,
                "validate shard {k} checks push shard {k}'s tags"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, fx.truth.tags.len());
    assert_eq!(snapshot(fx.root()), before, "the source is read-only");
}

#[test]
fn a_pod_that_runs_after_the_others_mounts_every_blob_they_are_home_for() {
    let fx = shared_tree(72);
    let reg = Registry::start().unwrap();
    let proxy = Proxy::start(&reg.url()).unwrap();
    let dir = workdir();
    let first: Vec<(u64, Child)> = (0..2)
        .map(|k| (k, start_push_pod(fx.root(), &proxy.url(), dir.path(), k, 3)))
        .collect();
    wait_all(first, dir.path());
    proxy.clear_requests();
    wait_all(
        vec![(2, start_push_pod(fx.root(), &proxy.url(), dir.path(), 2, 3))],
        dir.path(),
    );

    let late = report(dir.path(), 2);
    let foreign = homes(&late, "foreign_homes");
    assert!(
        !foreign.is_empty(),
        "shard 2 needs blobs homed in shards 0 and 1"
    );
    let counts = upload_counts(&proxy.requests());
    let mut mounted = BTreeSet::new();
    for image in late["images"].as_array().unwrap() {
        for b in image["blobs"].as_array().unwrap() {
            let d = b["digest"].as_str().unwrap();
            if foreign.contains_key(d) {
                assert_ne!(b["action"], "uploaded", "{d} is at its home already");
                assert_eq!(counts.completed.get(d), None, "{d} crossed the wire again");
                if b["action"] == "mounted" {
                    mounted.insert(d);
                }
            }
        }
    }
    assert_eq!(
        mounted.len(),
        foreign.len(),
        "each foreign blob mounted: {mounted:?} vs {foreign:?}"
    );
    // The first placement mounted from the home repository itself.
    let log = proxy.requests();
    for (d, home) in &foreign {
        assert!(
            log.iter().any(|r| r.is_mount()
                && r.param("mount") == Some(d.as_str())
                && r.param("from") == Some(home.as_str())),
            "{d} mounted from {home}"
        );
    }
    // The blob bytes shard 2 sent are exactly those its report calls uploaded.
    let uploaded: u64 = late["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["blobs"].as_array().unwrap())
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert_eq!(counts.bytes, uploaded);
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
}

#[test]
fn shard_auto_errors_name_the_variable_and_the_range() {
    let dir = workdir();
    let root = dir.path(); // never read: the shard is resolved first
    let cases: [(&[&str], Option<&str>, &str); 6] = [
        (
            &["--shard", "auto/3"],
            None,
            "JOB_COMPLETION_INDEX, which is not set",
        ),
        (
            &["--shard", "auto/3"],
            Some("3"),
            "JOB_COMPLETION_INDEX=3 is out of range for 3 shards (0 to 2)",
        ),
        (
            &["--shard", "auto", "--shards", "4"],
            Some("x1"),
            "JOB_COMPLETION_INDEX=\"x1\" is not a shard index",
        ),
        (
            &["--shard", "auto"],
            Some("0"),
            "--shard auto needs the number of shards",
        ),
        (
            &["--shard", "auto/3", "--shards", "4"],
            Some("0"),
            "disagree on N",
        ),
        (&["--shards", "3"], Some("0"), "--shard"),
    ];
    for command in ["push", "validate"] {
        for (flags, index, message) in cases {
            let mut cmd = ferry();
            cmd.current_dir(dir.path())
                .arg(command)
                .arg(root)
                .args(["-d", "http://127.0.0.1:9"])
                .args(flags);
            if let Some(i) = index {
                cmd.env("JOB_COMPLETION_INDEX", i);
            }
            let ran = run(&mut cmd);
            assert_eq!(ran.code, 2, "{command} {flags:?}: {}", ran.all());
            assert!(
                ran.stderr.contains(message),
                "{command} {flags:?}: {}",
                ran.stderr
            );
        }
    }
}
