//! The baseline engine's side of the seam with the gateway: the plain events it learns from.
//!
//! - [`RequestEvent`]: one per request the gateway answered, whatever the outcome.
//! - [`RuntimeSample`]: the gateway's runtime (tokio scheduler, its monitored tasks, the
//!   process) every sampling interval.
//!
//! These types depend on no HTTP crate: the gateway translates its requests into them. Learning
//! (baselines, entity behaviour, risk) is not built yet; see the README.

pub mod event;

pub use event::{
    hash_user_agent, AuthOutcome, Decision, Method, Outcome, Protocol, RequestEvent, RuntimeSample, TaskSample,
    TlsVersion,
};
