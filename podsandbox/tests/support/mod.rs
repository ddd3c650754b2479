//! Helpers shared by the podsandbox integration tests.

// Each test binary uses a part of these helpers.
#[allow(dead_code)]
pub mod netns;
