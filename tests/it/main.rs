//! ferry's integration tests: one binary, grouped by theme, against real docker-registry processes.

mod util;

mod export;
mod harbor;
mod list;
mod push;
mod stops;
mod validate;
