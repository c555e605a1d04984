//! The baseline engine's side of the seam with the gateway: the plain events it learns from.
//!
//! - [`RequestEvent`]: one per request the gateway answered, whatever the outcome.
//! - [`RuntimeSample`]: the gateway's runtime (tokio scheduler, its monitored tasks, the
//!   process) every sampling interval.
//!
//! - [`series::Detector`]: the streaming detector for one series (level, spread, daily and
//!   weekly seasonality, robust to outliers, causal), and [`csv::score`] to run it offline.
//!
//! These types depend on no HTTP crate: the gateway translates its requests into them. Entity
//! behaviour, risk and the engine's own tasks are not built yet; see the README.

pub mod assess;
pub mod csv;
pub mod engine;
pub mod entity;
pub mod event;
pub mod population;
pub mod risk;
pub mod series;
pub mod store;

pub use event::{
    hash_path, hash_user_agent, AuthOutcome, Decision, Method, Outcome, Protocol, RequestEvent, RuntimeSample,
    TaskSample, TlsVersion,
};
