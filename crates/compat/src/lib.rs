//! FastAPI and pydantic v2 wire emulation.
//!
//! This crate knows nothing about hostplane's resources. It turns raw request parts into
//! Python-like values and validation errors that are byte-for-byte what a FastAPI
//! service running pydantic v2 would answer.

pub mod json;
pub mod value;

pub use value::Value;
