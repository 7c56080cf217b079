//! Test harness for ferry: starts real docker-registry instances and fills them with synthetic images.
