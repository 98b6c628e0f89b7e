//! hostplane's listener agent: the loop every mode shares ([`runner`]), the data-plane
//! client ([`control`]), what every building mode shares ([`builds`]) and the modes'
//! sinks. Container mode ([`containers`]) runs
//! deployments on one Docker or Podman host; render mode ([`kube::files`]) writes their
//! Kubernetes objects as files.

pub mod builds;
pub mod containers;
pub mod control;
pub mod env;
pub mod kube;
pub mod runner;
pub mod spec;
