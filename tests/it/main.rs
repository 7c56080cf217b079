//! ferry's integration tests: one binary, grouped by theme, against real docker-registry processes.

mod util;

mod deploy;
mod export;
mod faults;
mod harbor;
mod hostile;
mod kills;
mod layouts;
mod list;
mod push;
mod race;
mod secrets;
mod shard;
mod stops;
mod tarball;
mod validate;
mod verify;
