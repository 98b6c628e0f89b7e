//! The operations: what each request does, between the transports and the store. The
//! JSON API's handlers, the console's pages and the data plane's routes parse their
//! input, call an operation here, and render what it returns; the rules an operation
//! applies (who may act, the plan, checks across rows, what a change implies for keys
//! and caches) are written here once. Outside this module only authentication
//! (`auth.rs`), the registry's token check (`registry.rs`) and the metrics page
//! (`telemetry.rs`) read the store.

pub mod agent_auth;
pub mod dataplane;
pub mod deployments;
pub mod integrations;
pub mod listeners;
pub mod sessions;
pub mod uploads;
