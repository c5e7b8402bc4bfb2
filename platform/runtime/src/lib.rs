//! Plumbing every orderflow service shares, so each service is only its domain logic:
//! Kafka clients, the transactional outbox and its relay, the idempotent consumer loop with
//! retries and dead letters, health, metrics, retention purge, telemetry and graceful
//! shutdown; rebuilding a projection from the log; the platform's tables (outbox, dedup
//! records) and layered configuration.

pub mod config;
pub mod consumer;
pub mod dlq;
pub mod health;
pub mod kafka;
pub mod metrics;
pub mod migrations;
pub mod outbox;
pub mod producer;
pub mod progress;
pub mod purge;
pub mod replay;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
pub mod vacuum;

pub use config::{CommonArgs, EventBusArgs, KafkaArgs, RetentionArgs, Secret, ServeArgs};
pub use consumer::{ConsumerLoop, HandleError, Handler, MessageContext};
pub use health::Health;
pub use metrics::Metrics;
pub use outbox::{Outbox, OutboxRows, OutboxSignal, Published, Relay};
pub use service::ServiceKit;
