//! `ferry list` against trees written by docker-registry.
