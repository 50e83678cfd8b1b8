//! What Tally's services truly share.
//!
//! - [`event`]: the event envelope, its validation and its stored form;
//! - [`config`]: configuration loading (defaults, file, environment);
//! - [`auth`]: JWT bearer authentication and scopes;
//! - [`http`]: problem+json errors and request-body reading;
//! - [`nats`]: connecting and applying the stream/consumer definitions;
//! - [`store`]: the ClickHouse client and schema migrations;
//! - [`metrics`]: the Prometheus recorder and every metric name;
//! - [`telemetry`] and [`shutdown`].

pub mod auth;
pub mod config;
pub mod event;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use config::Config;
