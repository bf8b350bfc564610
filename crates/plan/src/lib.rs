//! `smith plan`: capacity and cost of running MisterSmith on AWS for N agents, and the
//! deployment generated from the same plan.
//!
//! Pure computation, no I/O beyond what the caller hands in: a [`Request`] (agents, profile,
//! model, prices, an optional measured baseline) becomes a [`Plan`] ([`plan`]), which
//! [`render`] prints as a table, markdown or JSON (with the bill in the seed's cost
//! [`categories`] beside the seed's figures) and [`emit`] turns into CloudFormation or
//! Kubernetes manifests.
//!
//! Two models size the fleet: [`Model::Seed`] takes the seed capacity plan's assumptions and
//! reproduces its figures (correcting the ones that do not follow from its own inputs);
//! [`Model::Measured`] sizes from this project's benchmark output (`smith bench --scenario
//! baseline --out FILE`). Both price every line from the same dated [`prices::Prices`].

pub mod baseline;
pub mod categories;
pub mod emit;
pub mod model;
pub mod prices;
pub mod render;

pub use baseline::Baseline;
pub use model::{plan, Model, Plan, Profile, Request};
pub use prices::Prices;

/// What can go wrong making a plan. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("price file {0}")]
    Prices(String),
    #[error("baseline {0}")]
    Baseline(String),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

impl Error {
    /// A stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid_request",
            Error::Prices(_) => "invalid_prices",
            Error::Baseline(_) => "invalid_baseline",
            Error::Write { .. } => "write_failed",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
