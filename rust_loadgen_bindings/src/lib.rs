//! mlbuild-loadgen: the official MLPerf LoadGen C++ core, compiled unmodified
//! from its sdist (see build.rs), exposed to Rust (`runtime`) and, with the
//! `python` feature, to Python as the `mlbuild_loadgen` module.

pub mod conf;
pub mod ffi;
pub mod registry;
pub mod runtime;

#[cfg(feature = "python")]
mod python;
