//! Verifies a source by reading every byte the selected images need: a verdict per image with
//! every problem found, what hashing found blob by blob, and findings about the rest of the tree.

pub mod findings;
pub mod hash;
pub mod ledger;
pub mod memo;
pub mod record;
pub mod verdict;

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use crate::digest::Digest;
use crate::filter::{Filters, ImageRef};
use crate::inventory::{Image, Inventory, InventoryOptions};
use crate::problem::Problem;
use crate::progress::Progress;
use crate::source::survey::Survey;
use crate::source::{BlobFile, Source, SourceError, Upload};
pub use findings::{Finding, FindingKind};
pub use hash::ReadStrategy;
use hash::{Hashed, hash_all};
use memo::Memo;
pub use record::{BlobIssue, BlobSummary, ImageVerdict, ProblemRecord, Status};

/// What a verification reads.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Also check manifests no tag points at, as `repo@digest` images.
    pub untagged: bool,
    /// Hash every stored blob, referenced or not (needs a survey).
    pub all_blobs: bool,
    /// Threads hashing at once.
    pub jobs: usize,
    pub read: ReadStrategy,
}

/// Everything a verification found.
#[derive(Debug, Serialize)]
pub struct Verification {
    pub images: Vec<ImageVerdict>,
    pub blobs: BlobSummary,
    pub findings: Vec<Finding>,
}

impl Verification {
    /// Whether every selected image is intact and nothing may hide one.
    pub fn all_intact(&self) -> bool {
        self.images.iter().all(|i| i.status == Status::Ok)
            && !self.findings.iter().any(|f| f.kind.is_problem())
    }

    /// Findings counted per kind, in kind order.
    pub fn finding_counts(&self) -> BTreeMap<FindingKind, usize> {
        let mut counts = BTreeMap::new();
        for f in &self.findings {
            *counts.entry(f.kind).or_default() += 1;
        }
        counts
    }
}

/// Each hashed blob's digest and length, or why it could not be read.
pub type Hashes = HashMap<Digest, Result<Hashed, Problem>>;

/// A verification resolved and ready to hash: what it will read is known.
pub struct Plan<'a> {
    memo: Memo<'a>,
    survey: Option<&'a Survey>,
    options: Options,
    images: Vec<Image>,
    /// Untagged revisions not selected: reported as findings, not read further.
    untagged_aside: Vec<Image>,
    uploads: Vec<Upload>,
    scan_problems: Vec<Problem>,
    /// Every digest a readable manifest of the tree references (with a survey).
    referenced: Option<HashSet<Digest>>,
    to_hash: Vec<(Digest, BlobFile)>,
    filters: &'a Filters,
}

impl<'a> Plan<'a> {
    /// Resolves the images `filters` selects, reads every manifest of the tree once (for
    /// orphans, when a survey is given) and lists the blobs to hash.
    pub fn new(
        source: &'a dyn Source,
        survey: Option<&'a Survey>,
        filters: &'a Filters,
        options: Options,
    ) -> Result<Plan<'a>, SourceError> {
        let memo = Memo::new(source);
        let inventory = Inventory::build(
            &memo,
            filters,
            InventoryOptions {
                untagged: true,
                config_platforms: false,
            },
        )?;
        let named = |image: &Image| {
            image.digest.is_some_and(|digest| {
                filters.image_list().is_some_and(|list| {
                    list.contains(&ImageRef::Digest {
                        repository: image.repository.clone(),
                        digest,
                    })
                })
            })
        };
        let (images, untagged_aside): (Vec<Image>, Vec<Image>) = inventory
            .images
            .into_iter()
            .partition(|i| i.tag.is_some() || options.untagged || named(i));
        let referenced = survey.map(|s| referenced_in_tree(&memo, s, &images));

        let mut seen = HashSet::new();
        let mut to_hash = Vec::new();
        for blob in images.iter().flat_map(|i| &i.blobs) {
            if seen.insert(blob.digest)
                && let Ok(file) = memo.blob(&blob.digest)
            {
                to_hash.push((blob.digest, file));
            }
        }
        if options.all_blobs
            && let Some(survey) = survey
        {
            for (digest, file) in &survey.blobs {
                let hashed_as_manifest = memo.get(digest).is_some_and(|r| ledger::was_hashed(&r));
                if !hashed_as_manifest && seen.insert(*digest) {
                    to_hash.push((*digest, file.clone()));
                }
            }
        }
        Ok(Plan {
            memo,
            survey,
            options,
            images,
            untagged_aside,
            uploads: inventory.uploads,
            scan_problems: inventory.problems,
            referenced,
            to_hash,
            filters,
        })
    }

    /// Images selected.
    pub fn images(&self) -> usize {
        self.images.len()
    }

    /// Blob files to hash and their bytes (manifests were read while planning).
    pub fn to_hash(&self) -> (usize, u64) {
        (
            self.to_hash.len(),
            self.to_hash.iter().map(|(_, f)| f.len).sum(),
        )
    }

    /// Hashes every listed blob once and gives each image its verdict.
    pub fn run(self, progress: &Progress) -> Verification {
        let top = self.memo.location().to_path_buf();
        let hashed = hash_all(
            &self.to_hash,
            &top,
            self.options.jobs,
            self.options.read,
            progress,
        );
        let images = self
            .images
            .iter()
            .map(|image| verdict::verdict(image, &self.memo, &hashed))
            .collect();
        let blobs = ledger::blob_summary(&self, &hashed);
        let findings = findings::collect(&findings::Sources {
            survey: self.survey,
            referenced: self.referenced.as_ref(),
            untagged: &self.untagged_aside,
            uploads: &self.uploads,
            scan_problems: &self.scan_problems,
            wanted: &|repo| self.filters.wants_repository(repo),
        });
        Verification {
            images,
            blobs,
            findings,
        }
    }
}

/// Every digest the tree's readable manifests reference, manifests included: revisions and
/// tag histories of every repository, the selected images, and the children of indexes.
fn referenced_in_tree(memo: &Memo, survey: &Survey, images: &[Image]) -> HashSet<Digest> {
    let mut referenced: HashSet<Digest> = HashSet::new();
    let mut frontier: Vec<Digest> = survey
        .repositories
        .values()
        .flat_map(|r| r.manifests.iter().copied())
        .chain(images.iter().filter_map(|i| i.digest))
        .collect();
    for image in images {
        referenced.extend(image.blobs.iter().map(|b| b.digest));
    }
    while !frontier.is_empty() {
        frontier.retain(|d| referenced.insert(*d));
        let found: Vec<(Vec<Digest>, Vec<Digest>)> = frontier
            .par_iter()
            .filter_map(|d| memo.read(d).ok())
            .map(|m| {
                let blobs = m
                    .config()
                    .into_iter()
                    .chain(m.layers())
                    .map(|b| b.digest)
                    .collect();
                let children = m.manifests().iter().map(|c| c.digest).collect();
                (blobs, children)
            })
            .collect();
        frontier.clear();
        for (blobs, children) in found {
            referenced.extend(blobs);
            frontier.extend(children);
        }
    }
    referenced
}
