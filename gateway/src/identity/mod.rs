//! Identity: who is calling and how strongly they proved it.
//!
//! In the data path this sits between routing and forwarding (the `identify` stage of
//! `../shared/ARCHITECTURE.md`). Built so far: [`jwt`], the verification of bearer tokens
//! against a provider's keys; [`provider`], discovery, the key set kept fresh, and a cache of
//! verified tokens; the pipeline's bearer check for routes with `auth.bearer`. Not built yet:
//! browser sessions, claims and authentication-strength requirements, step-up, identity headers
//! to upstreams, revocation.

pub mod jwt;
pub mod provider;
