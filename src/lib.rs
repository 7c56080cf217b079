//! ferry: moves container images out of a Docker Distribution storage tree, digests unchanged.

pub mod app;
pub mod cli;
pub mod destination;
pub mod digest;
pub mod engine;
pub mod filter;
pub mod inventory;
pub mod manifest;
pub mod messages;
pub mod names;
pub mod preflight;
pub mod problem;
pub mod progress;
#[cfg(test)]
mod properties;
pub mod registry;
pub mod report;
pub mod secret;
pub mod shard;
pub mod sink;
pub mod source;
pub mod validate;
pub mod verify;
