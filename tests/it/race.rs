//! Many first pushes at once of images that share blobs within each repository: each
//! (repository, digest) is placed once at a time, so no manifest PUT meets a half-written link.

use std::time::Instant;

use ferry_testkit::{BulkSpec, Pusher, Registry, generate_bulk};

use crate::util::*;

/// 120 repositories × 3 tags, every image on one shared base layer (so the three images of a
/// repository need the same blob there at the same time), pushed with `-j 16` into three fresh
/// registries in turn. Before the once-per-(repository, digest) placement, a second mount of
/// the base layer into a repository could truncate its link file while another image's
/// manifest PUT read it: `400 MANIFEST_BLOB_UNKNOWN` / `DIGEST_INVALID`. Zero failures allowed.
#[test]
fn first_pushes_of_shared_blobs_at_j16_never_race() {
    let source = Registry::start().expect("docker-registry starts");
    let truth = generate_bulk(
        &source,
        &BulkSpec {
            repositories: 120,
            tags_per_repo: 3,
            base_layers: 1,
            base_layer_bytes: 2048,
            unique_layer_bytes: 64,
            nesting: true,
            seed: 13,
        },
    )
    .expect("bulk scenario pushes");
    let tree = source.stop().expect("docker-registry stops");
    assert_eq!(truth.tags.len(), 360);
    for round in 1..=3 {
        let reg = Registry::start().unwrap();
        let dir = workdir();
        let started = Instant::now();
        let ran = run(&mut push_cmd(
            tree.root(),
            &reg.url(),
            dir.path(),
            &["-j", "16"],
        ));
        let took = started.elapsed();
        assert_eq!(ran.code, 0, "round {round}:\n{}", ran.stderr);
        assert!(
            ran.stderr.contains("images: 360 pushed, 0 skipped, 0 failed"),
            "round {round}:\n{}",
            ran.stderr
        );
        assert_tags_at(&Pusher::new(&reg), &truth, default_destination);
        eprintln!("race round {round}: push took {:.1} s", took.as_secs_f64());
    }
}
