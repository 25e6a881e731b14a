//! The former home of the dataset profiles, now [`crate::dataset`]: the same names, re-exported.

pub use crate::dataset::{Dataset, FileKey, Profile};
