//! Many first pushes at once of images that share blobs within each repository: each
//! (repository, digest) is placed once at a time, so no manifest PUT meets a half-written link.

use std::time::Instant;

use ferry_testkit::{BulkSpec, Pusher, Registry, generate_bulk};

use crate::util::*;

/// 40 repositories × 10 tags on a pool of two base layers (every image has one or both), pushed
/// with `-j 32` into three fresh registries in turn: the ten images of a repository need the same
/// blobs there at the same time. Before the once-per-(repository, digest) placement, a second
/// mount of a base layer into a repository could truncate its link file while another image's
/// manifest PUT read it: `400 DIGEST_INVALID / MANIFEST_BLOB_UNKNOWN`. Zero failures allowed.
/// With the placement guard disabled it failed 5 runs of 5 (6 pushes of 7); about 40 s on 2 busy cores.
#[test]
fn first_pushes_of_shared_blobs_at_j32_never_race() {
    let source = Registry::start().expect("docker-registry starts");
    let truth = generate_bulk(
        &source,
        &BulkSpec {
            repositories: 40,
            tags_per_repo: 10,
            base_layers: 2,
            base_layer_bytes: 2048,
            unique_layer_bytes: 64,
            nesting: true,
            seed: 13,
        },
    )
    .expect("bulk scenario pushes");
    let tree = source.stop().expect("docker-registry stops");
    assert_eq!(truth.tags.len(), 400);
    for round in 1..=3 {
        let reg = Registry::start().unwrap();
        let dir = workdir();
        let started = Instant::now();
        let ran = run(&mut push_cmd(
            tree.root(),
            &reg.url(),
            dir.path(),
            &["-j", "32"],
        ));
        let took = started.elapsed();
        assert_eq!(ran.code, 0, "round {round}:\n{}", ran.stderr);
        assert!(
            ran.stderr
                .contains("images: 400 pushed, 0 skipped, 0 failed"),
            "round {round}:\n{}",
            ran.stderr
        );
        assert_tags_at(&Pusher::new(&reg), &truth, default_destination);
        eprintln!("race round {round}: push took {:.1} s", took.as_secs_f64());
    }
}
