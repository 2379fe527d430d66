//! Profiles: TOML files describing an image and how to test it.

pub mod de;
pub mod default;
pub mod diag;
pub mod forward;
pub mod json_schema;
pub mod load;
pub mod migrate;
pub mod node;
pub mod schema;
pub mod tests;
pub mod types;
pub mod validate;
pub mod vmtest;

pub use diag::{Loc, ProfileError};
pub use load::{load, LoadedProfile, MAX_INCLUDE_DEPTH};
pub use schema::*;
pub use tests::{Splats, Test, Tests, DEFAULT_TEST_NAME};
pub use types::{Located, Mode, RelPath, Seconds, Size};
