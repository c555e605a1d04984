//! Identity: who is calling and how strongly they proved it.
//!
//! In the data path this will sit between routing and forwarding (the `identify` stage of
//! `../shared/ARCHITECTURE.md`). Built so far: [`jwt`], the verification of bearer tokens against
//! a provider's keys. Not built yet: OIDC discovery and JWKS fetching, the per-route bearer
//! requirement, browser sessions, step-up and identity headers to upstreams; requests are not
//! authenticated yet.

pub mod jwt;
