//! `ferry cache list|clean`: the folders compressed archives were extracted into.

use std::io::{self, Write};

use anyhow::Context;
use indicatif::HumanBytes;

use super::Outcome;
use crate::cli::CacheCommand;
use crate::source::cache::{self, Identity};
use crate::{error, note};

pub fn run(command: &CacheCommand) -> anyhow::Result<Outcome> {
    match command {
        CacheCommand::List(args) => {
            let base = cache::base(args.cache_dir.as_deref())?;
            let entries = cache::entries(&base)
                .with_context(|| format!("cannot read cache folder {}", base.display()))?;
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            for e in &entries {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    e.folder.display(),
                    if e.complete { "complete" } else { "incomplete" },
                    HumanBytes(e.bytes),
                    e.archive
                        .as_ref()
                        .map(|a| a.display().to_string())
                        .unwrap_or_else(|| "-".to_string())
                )?;
            }
            out.flush()?;
            let total: u64 = entries.iter().map(|e| e.bytes).sum();
            note!(
                "{} cache folders in {}, {}",
                entries.len(),
                base.display(),
                HumanBytes(total)
            );
            Ok(Outcome::Done)
        }
        CacheCommand::Clean(args) => {
            let base = cache::base(args.cache.cache_dir.as_deref())?;
            let entries = cache::entries(&base)
                .with_context(|| format!("cannot read cache folder {}", base.display()))?;
            let wanted: Vec<_> = args
                .archives
                .iter()
                .map(|a| {
                    Identity::of(a, None)
                        .map(|i| i.archive)
                        .with_context(|| format!("cannot read {}", a.display()))
                })
                .collect::<anyhow::Result<_>>()?;
            let mut removed = (0usize, 0u64);
            let mut busy = 0;
            for e in entries {
                let chosen =
                    wanted.is_empty() || e.archive.as_ref().is_some_and(|a| wanted.contains(a));
                if !chosen {
                    continue;
                }
                match cache::remove(&e.folder) {
                    Ok(()) => {
                        removed.0 += 1;
                        removed.1 += e.bytes;
                    }
                    Err(err) => {
                        error!("{err}");
                        busy += 1;
                    }
                }
            }
            note!(
                "removed {} cache folders ({}) from {}",
                removed.0,
                HumanBytes(removed.1),
                base.display()
            );
            Ok(if busy == 0 {
                Outcome::Done
            } else {
                Outcome::SomeFailed
            })
        }
    }
}
