//! Application services, the homeserver → service direction: every new
//! room event an application service is interested in (its namespaces of
//! users, rooms and aliases, and the rooms its users are in) is queued for
//! it and pushed to its `url` in transactions.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#pushing-events>
//!
//! Registrations are `myelin_config::appservice`'s; the client API serves
//! the other direction (identity assertion, registration, ping). This
//! component produces no records and answers no requests, so it has no
//! `api` module.

mod consumers;
mod error;
mod interest;
mod metrics;
mod sender;
pub mod service;
mod storage;

pub use error::AppServiceError;
