//! Checks the standard scenario against a live registry, skopeo, and the storage tree it leaves.

use std::fs;
use std::process::Command;

use ferry_testkit::media::{self, sha256_digest};
use ferry_testkit::standard::repos;
use ferry_testkit::{Pusher, Registry, Truth, check_registry, check_tree, generate_standard, tree};

fn kinds(truth: &Truth) -> Vec<&str> {
    let mut k: Vec<&str> = truth.tags.values().map(|t| t.kind.as_str()).collect();
    k.sort();
    k.dedup();
    k
}

#[test]
fn standard_scenario_is_what_the_registry_serves_and_stores() {
    let reg = Registry::start().unwrap();
    let truth = generate_standard(&reg, 1).unwrap();
    let p = Pusher::new(&reg);

    // Every case is present.
    assert_eq!(
        kinds(&truth),
        ["artifact", "docker", "docker-list", "oci", "oci-index"]
    );
    assert_eq!(
        truth.tags["alpine:3.19"].digest,
        truth.tags["alpine:latest"].digest
    );
    let sig_tag = format!(
        "alpine:sha256-{}.sig",
        &truth.tags["alpine:3.19"].digest[7..]
    );
    assert_eq!(truth.tags[&sig_tag].kind, "artifact");
    assert_eq!(truth.tags["charts/mychart:0.1.0"].kind, "artifact");
    assert_eq!(truth.tags["legacy/foreign:1.0"].foreign_layers.len(), 1);
    for index in ["org/team/sub/app:1.0", "multi/oci-app:1.0"] {
        let labels: Vec<String> = truth.tags[index]
            .platforms
            .iter()
            .map(|p| p.label())
            .collect();
        assert_eq!(labels, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
        assert_eq!(truth.tags[index].children.len(), 3);
    }
    assert_eq!(truth.untagged.len(), 2);
    assert_eq!(truth.uploads.len(), 1);
    let shared = truth
        .all_blobs()
        .into_keys()
        .filter(|d| {
            let repos: std::collections::BTreeSet<_> = truth
                .tags
                .values()
                .filter(|t| t.blobs.iter().any(|b| &b.digest == d))
                .map(|t| &t.repository)
                .collect();
            repos.len() >= 3
        })
        .count();
    assert!(
        shared >= 1,
        "a base layer is shared by several repositories"
    );
    for repo in truth.repositories() {
        assert_eq!(repo, repo.to_lowercase());
        assert!(!repo.contains("__") && !repo.contains("--"), "{repo}");
    }

    // The registry API agrees with the truth.
    check_registry(&p, &truth).unwrap();
    let mut catalog = p.catalog().unwrap();
    catalog.sort();
    assert_eq!(
        catalog,
        truth.repositories().into_iter().collect::<Vec<_>>()
    );

    // skopeo, an independent client, fetches the same bytes.
    for name in ["alpine:3.19", "multi/oci-app:1.0", "charts/mychart:0.1.0"] {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{name}", reg.host()))
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sha256_digest(&out.stdout),
            truth.tags[name].digest,
            "{name}"
        );
    }

    // The tree the stopped registry leaves holds the same.
    let stopped = reg.stop().unwrap();
    let root = stopped.root();
    check_tree(root, &truth).unwrap();
    for image in truth.tags.values() {
        let link = tree::tag_current_link(root, &image.repository, &image.tag);
        assert_eq!(
            fs::read_to_string(&link).unwrap(),
            image.digest,
            "{}",
            link.display()
        );
    }
    // The moved tag keeps both digests in its index; current points at the new one.
    let moved = tree::repo_dir(root, repos::NS_SUB).join("_manifests/tags/v1/index/sha256");
    let mut entries: Vec<String> = fs::read_dir(&moved)
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    entries.sort();
    let mut want = vec![
        truth.tags["ns/sub:v1"].digest.clone(),
        truth.untagged[0].digest.clone(),
    ];
    want.sort();
    assert_eq!(truth.untagged[0].repository, repos::NS_SUB);
    assert_eq!(entries, want);
    // The unfinished upload holds the bytes PATCHed into it.
    let up = &truth.uploads[0];
    let data = tree::upload_dir(root, &up.repository, &up.uuid).join("data");
    assert_eq!(fs::metadata(data).unwrap().len(), 300);
}

#[test]
fn same_seed_gives_same_truth_and_other_seed_differs() {
    let run = |seed| {
        let reg = Registry::start().unwrap();
        let mut truth = generate_standard(&reg, seed).unwrap();
        truth.uploads.clear();
        truth
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(5));
        let b = s.spawn(|| run(5));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, b);
    let c = run(6);
    assert_eq!(a.tags.keys().collect::<Vec<_>>().len(), c.tags.len());
    assert_ne!(a.tags["alpine:3.19"].digest, c.tags["alpine:3.19"].digest);
}

#[test]
fn truth_round_trips_through_json() {
    let reg = Registry::start().unwrap();
    let truth = generate_standard(&reg, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.truth.json");
    truth.save(&path).unwrap();
    assert_eq!(Truth::load(&path).unwrap(), truth);
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let image = &json["tags"]["multi/oci-app:1.0"];
    assert_eq!(image["media_type"], media::OCI_INDEX);
    assert_eq!(image["platforms"][2]["variant"], "v7");
    assert!(
        json["untagged"][0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(json["uploads"][0]["uuid"].is_string());
}
