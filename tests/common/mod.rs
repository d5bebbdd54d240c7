//! Helpers shared by the integration tests that need more than a local directory.
#![allow(dead_code)]

pub mod s3;
pub mod tools;
