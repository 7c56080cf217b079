//! Checks the committed fixture testdata/registry against its truth and against a fresh run.

use std::path::PathBuf;

use ferry_testkit::{Registry, Truth, check_tree, generate_standard, tree};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

#[test]
fn committed_tree_holds_its_truth() {
    let root = testdata().join("registry");
    let truth = Truth::load(testdata().join("registry.truth.json")).unwrap();
    check_tree(&root, &truth).unwrap();
    assert!(tree::v2_dir(&root).join("blobs/sha256").is_dir());
    assert_eq!(truth.tags.len(), 10);
}

#[test]
fn committed_truth_is_what_seed_1_generates() {
    let committed = Truth::load(testdata().join("registry.truth.json")).unwrap();
    let reg = Registry::start().unwrap();
    let mut fresh = generate_standard(&reg, 1).unwrap();
    // Upload uuids are the only thing that differs from run to run.
    for (f, c) in fresh.uploads.iter_mut().zip(&committed.uploads) {
        f.uuid = c.uuid.clone();
    }
    assert_eq!(
        fresh, committed,
        "the standard scenario changed: run scripts/gen-testdata.sh and commit testdata/"
    );
}
