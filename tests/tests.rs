//! Handler integration tests.
