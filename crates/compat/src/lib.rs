//! FastAPI and pydantic v2 wire emulation.
//!
//! This crate knows nothing about hostplane's resources. It turns raw request parts into
//! Python-like values and validation errors that are what a FastAPI service running
//! pydantic v2 would answer, field for field.

pub mod body;
pub mod error;
pub mod format;
pub mod json;
pub mod query;
pub mod schema;
pub mod validate;
pub mod value;

pub use error::{ErrorItem, Errors, Loc};
pub use value::Value;
