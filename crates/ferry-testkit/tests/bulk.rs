//! Checks a small bulk scenario: distinct images, shared base layers, names over 1 to 4 levels.

use std::collections::{BTreeMap, BTreeSet};

use ferry_testkit::bulk::bulk_repo_name;
use ferry_testkit::{BulkSpec, Pusher, Registry, check_registry, check_tree, generate_bulk};

#[test]
fn bulk_scenario_matches_registry_and_tree() {
    let spec = BulkSpec {
        repositories: 12,
        tags_per_repo: 3,
        base_layers: 3,
        base_layer_bytes: 2048,
        unique_layer_bytes: 512,
        nesting: true,
        seed: 9,
    };
    let reg = Registry::start().unwrap();
    let truth = generate_bulk(&reg, &spec).unwrap();
    assert_eq!(truth.tags.len(), 36);
    assert!(truth.untagged.is_empty() && truth.uploads.is_empty());

    let digests: BTreeSet<&str> = truth.tags.values().map(|t| t.digest.as_str()).collect();
    assert_eq!(digests.len(), 36, "every tag is a distinct image");
    let kinds: BTreeSet<&str> = truth.tags.values().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["docker", "oci"]));
    let levels: BTreeSet<usize> = truth
        .repositories()
        .iter()
        .map(|r| r.split('/').count())
        .collect();
    assert_eq!(levels, BTreeSet::from([1, 2, 3, 4]));
    for t in truth.tags.values() {
        assert!(
            (3..=4).contains(&t.blobs.len()),
            "config + 1-2 base + 1 own layer"
        );
    }
    let mut repos_per_blob: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in truth.tags.values() {
        for b in &t.blobs {
            repos_per_blob
                .entry(&b.digest)
                .or_default()
                .insert(&t.repository);
        }
    }
    assert!(
        repos_per_blob.values().any(|r| r.len() >= 4),
        "base layers are shared"
    );

    check_registry(&Pusher::new(&reg), &truth).unwrap();
    let stopped = reg.stop().unwrap();
    check_tree(stopped.root(), &truth).unwrap();
}

#[test]
fn bulk_names_are_harbor_valid() {
    for nesting in [true, false] {
        let names: BTreeSet<String> = (0..500).map(|i| bulk_repo_name(i, nesting)).collect();
        assert_eq!(names.len(), 500);
        for n in names {
            assert_eq!(n, n.to_lowercase());
            assert!(
                !n.contains("__") && !n.contains("--") && !n.starts_with('/'),
                "{n}"
            );
        }
    }
}
