//! Shared helpers for the end-to-end tests: build and run the `drbot` binary, temp configs.
