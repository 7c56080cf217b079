//! Referrers after their subjects: which image of a run a cosign signature (or a manifest with a
//! `subject`) refers to, the order that puts it after that image, and the latch a copy waits on.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::stop::Stop;
use crate::digest::Digest;
use crate::inventory::Image;

/// How long a referrer waits for its subject before it is pushed anyway.
pub const SUBJECT_WAIT_MAX: Duration = Duration::from_secs(30 * 60);
/// How often a wait looks at the stop switch.
const POLL: Duration = Duration::from_millis(100);

/// The digest an image refers to: a cosign tag `sha256-<hex>.sig` (`.att`, `.sbom`), or the
/// `subject` of its top manifest.
pub fn subject_digest(image: &Image) -> Option<Digest> {
    if let Some(hex) = image.tag.as_deref().and_then(|t| t.strip_prefix("sha256-")) {
        for suffix in [".sig", ".att", ".sbom"] {
            if let Some(d) = hex
                .strip_suffix(suffix)
                .and_then(|h| Digest::parse(&format!("sha256:{h}")).ok())
            {
                return Some(d);
            }
        }
    }
    image.manifest()?.subject()
}

/// Per image, the image of the same repository that holds its subject (the one whose top
/// manifest it is, else one that contains it), when it is in the run. Cycles are cut.
pub fn subjects(images: &[Image]) -> Vec<Option<usize>> {
    let mut holders: HashMap<(&str, Digest), Vec<(bool, usize)>> = HashMap::new();
    for (i, image) in images.iter().enumerate() {
        let count = image.manifests.len();
        for (k, m) in image.manifests.iter().enumerate() {
            holders
                .entry((image.repository.as_str(), m.digest()))
                .or_default()
                .push((k + 1 == count, i));
        }
    }
    let mut edges: Vec<Option<usize>> = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let digest = subject_digest(image)?;
            let found = holders.get(&(image.repository.as_str(), digest))?;
            // A top manifest first, then the first image that holds it; never the image itself.
            let mut candidates: Vec<&(bool, usize)> =
                found.iter().filter(|(_, j)| *j != i).collect();
            candidates.sort_by_key(|(top, j)| (!top, *j));
            candidates.first().map(|(_, j)| *j)
        })
        .collect();
    for i in 0..edges.len() {
        let mut at = edges[i];
        for _ in 0..edges.len() {
            match at {
                Some(j) if j == i => {
                    edges[i] = None;
                    break;
                }
                Some(j) => at = edges[j],
                None => break,
            }
        }
    }
    edges
}

/// `order` with every image moved after its subject (otherwise unchanged).
pub fn after_subjects(order: Vec<usize>, subjects: &[Option<usize>]) -> Vec<usize> {
    let mut emitted = vec![false; subjects.len()];
    let mut waiting: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut out = Vec::with_capacity(order.len());
    fn emit(
        i: usize,
        out: &mut Vec<usize>,
        emitted: &mut [bool],
        waiting: &mut HashMap<usize, Vec<usize>>,
    ) {
        out.push(i);
        emitted[i] = true;
        for w in waiting.remove(&i).unwrap_or_default() {
            emit(w, out, emitted, waiting);
        }
    }
    for i in order {
        match subjects.get(i).copied().flatten() {
            Some(s) if !emitted[s] => waiting.entry(s).or_default().push(i),
            _ => emit(i, &mut out, &mut emitted, &mut waiting),
        }
    }
    // Subjects outside `order` (not expected): their referrers go last.
    let mut rest: Vec<usize> = waiting.into_values().flatten().collect();
    rest.sort_unstable();
    out.extend(rest);
    out
}

/// How a subject ended, as its referrer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectEnd {
    /// Pushed, or already there.
    Done,
    /// Not pushed, for this reason.
    Failed(String),
}

/// What a referrer learns by waiting for its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The subject is not in this run.
    NoSubject,
    Ended {
        subject: String,
        end: SubjectEnd,
    },
    /// The subject was still in progress after the bound.
    TimedOut {
        subject: String,
    },
    /// The run is stopping.
    Stopped,
}

/// The subjects of a run's images, with one latch per image that opens when its copy ends.
/// Only images that have a subject, or are one, are kept: a tree without signatures costs
/// nothing here, whatever its size.
pub struct Subjects {
    /// Per kept image: the kept image that is its subject.
    edges: Vec<Option<usize>>,
    index: HashMap<String, usize>,
    references: Vec<String>,
    ends: Mutex<Vec<Option<SubjectEnd>>>,
    changed: Condvar,
}

impl Subjects {
    pub fn of(images: &[Image]) -> Subjects {
        Subjects::from_edges(images, &subjects(images))
    }

    /// As `of`, from the edges [`subjects`] gave for `images`.
    pub fn from_edges(images: &[Image], edges: &[Option<usize>]) -> Subjects {
        let mut kept: Vec<usize> = edges
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|s| [i, s]))
            .flatten()
            .collect();
        kept.sort_unstable();
        kept.dedup();
        let slot = |i: usize| kept.binary_search(&i).ok();
        let references: Vec<String> = kept.iter().map(|&i| images[i].reference()).collect();
        Subjects {
            edges: kept.iter().map(|&i| edges[i].and_then(slot)).collect(),
            index: references
                .iter()
                .enumerate()
                .map(|(k, r)| (r.clone(), k))
                .collect(),
            ends: Mutex::new(vec![None; references.len()]),
            references,
            changed: Condvar::new(),
        }
    }

    /// Waits (up to `bound`, and while the run goes on) for the subject of `image` to end.
    pub fn wait(&self, image: &Image, stop: &Stop, bound: Duration) -> Waited {
        let Some(s) = self
            .index
            .get(&image.reference())
            .and_then(|&i| self.edges[i])
        else {
            return Waited::NoSubject;
        };
        let subject = self.references[s].clone();
        let started = Instant::now();
        let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(end) = &ends[s] {
                return Waited::Ended {
                    subject,
                    end: end.clone(),
                };
            }
            if stop.is_stopping() {
                return Waited::Stopped;
            }
            let left = bound.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Waited::TimedOut { subject };
            }
            ends = self
                .changed
                .wait_timeout(ends, left.min(POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Records how the copy of `image` ended and wakes its referrers.
    pub fn finished(&self, image: &Image, end: SubjectEnd) {
        if let Some(&i) = self.index.get(&image.reference()) {
            let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
            ends[i].get_or_insert(end);
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ManifestRef;
    use crate::manifest::RawManifest;

    fn image(repository: &str, tag: &str, manifests: &[&str]) -> Image {
        let manifests: Vec<ManifestRef> = manifests
            .iter()
            .map(|m| ManifestRef::of(&RawManifest::parse(m.as_bytes().to_vec()).unwrap()))
            .collect();
        Image {
            repository: repository.into(),
            tag: Some(tag.into()),
            digest: manifests.last().map(|m| m.digest()),
            refs: vec![Default::default(); manifests.len()],
            manifests,
            blobs: Vec::new(),
            foreign: Vec::new(),
            platforms: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn oci(config: u8, subject: Option<Digest>) -> String {
        let subject = subject
            .map(|d| {
                format!(
                    r#","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1}}"#
                )
            })
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},"layers":[]{subject}}}"#,
            Digest::of(&[config])
        )
    }

    #[test]
    fn referrers_go_after_their_subjects_in_the_same_repository() {
        let subject = oci(1, None);
        let d = Digest::of(subject.as_bytes());
        let sig_tag = format!("sha256-{}.sig", d.hex());
        let images = vec![
            image("p/app", &sig_tag, &[&oci(2, None)]),
            image("p/app", "referrer", &[&oci(3, Some(d))]),
            image("p/other", &sig_tag, &[&oci(4, None)]),
            image("p/app", "v1", &[&subject]),
        ];
        assert_eq!(subject_digest(&images[0]), Some(d));
        assert_eq!(subject_digest(&images[1]), Some(d));
        let edges = subjects(&images);
        assert_eq!(edges, vec![Some(3), Some(3), None, None]);
        assert_eq!(after_subjects(vec![0, 1, 2, 3], &edges), vec![2, 3, 0, 1]);
        assert_eq!(after_subjects(vec![3, 2, 1, 0], &edges), vec![3, 2, 1, 0]);
    }

    #[test]
    fn only_subjects_and_their_referrers_are_kept() {
        let subject = oci(1, None);
        let d = Digest::of(subject.as_bytes());
        let plain: Vec<Image> = (0..50u8)
            .map(|i| image("p/app", &format!("t{i}"), &[&oci(i + 10, None)]))
            .collect();
        assert!(Subjects::of(&plain).references.is_empty());
        let mut images = plain;
        images.push(image("p/app", "v1", &[&subject]));
        images.push(image("p/app", "referrer", &[&oci(3, Some(d))]));
        let kept = Subjects::of(&images);
        assert_eq!(kept.references, vec!["p/app:v1", "p/app:referrer"]);
        assert_eq!(kept.edges, vec![None, Some(0)]);
    }

    #[test]
    fn a_referrer_waits_for_its_subject_and_learns_how_it_ended() {
        let subject = oci(1, None);
        let d = Digest::of(subject.as_bytes());
        let images = vec![
            image("p/app", "v1", &[&subject]),
            image(
                "p/app",
                &format!("sha256-{}.sig", d.hex()),
                &[&oci(2, None)],
            ),
        ];
        let subjects = Subjects::of(&images);
        let stop = Stop::new();
        assert_eq!(
            subjects.wait(&images[0], &stop, Duration::from_secs(1)),
            Waited::NoSubject
        );
        assert_eq!(
            subjects.wait(&images[1], &stop, Duration::from_millis(50)),
            Waited::TimedOut {
                subject: "p/app:v1".into()
            }
        );
        std::thread::scope(|s| {
            let waiter = s.spawn(|| subjects.wait(&images[1], &stop, Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(50));
            subjects.finished(&images[0], SubjectEnd::Failed("quota".into()));
            assert_eq!(
                waiter.join().unwrap(),
                Waited::Ended {
                    subject: "p/app:v1".into(),
                    end: SubjectEnd::Failed("quota".into())
                }
            );
        });
    }
}
