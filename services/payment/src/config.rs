//! The payment service's settings: what `orderflow serve payment` reads (flags, environment,
//! `--config` file; see `orderflow_platform::config`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use orderflow_platform::config::parse_duration;
use orderflow_platform::{CommonArgs, Secret};

/// Settings of the payment service.
#[derive(Debug, Clone, Args)]
pub struct PaymentArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the payment service's own database (created if absent).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_PAYMENT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_payment",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_PAYMENT_ADMIN_LISTEN",
        default_value = "127.0.0.1:9102"
    )]
    pub admin_listen: SocketAddr,
    /// Failed charge calls at the payment provider (counted durably per order; database
    /// errors do not count) before the charge is resolved at the provider: a capture found
    /// there makes the order PAID, otherwise the charge is voided and the order FAILED.
    #[arg(
        long = "charge-attempts",
        env = "ORDERFLOW_PAYMENT_CHARGE_ATTEMPTS",
        default_value_t = 5
    )]
    pub charge_attempts: u32,
    /// Failed refund calls at the payment provider (counted durably per order; database
    /// errors do not count) before a refund goes to the dead-letter topic for a redrive.
    #[arg(
        long = "refund-attempts",
        env = "ORDERFLOW_PAYMENT_REFUND_ATTEMPTS",
        default_value_t = 8
    )]
    pub refund_attempts: u32,
    /// How long the simulated payment provider remembers an idempotency key (e.g. `24h`,
    /// `30m`), as a real provider does: it bounds the provider's memory. A charge asked about
    /// after its key was forgotten is unknown to the provider, so keep it longer than an
    /// order can stay in flight.
    #[arg(
        long = "provider-key-retention",
        env = "ORDERFLOW_PAYMENT_PROVIDER_KEY_RETENTION",
        default_value = "24h",
        value_name = "DURATION",
        value_parser = parse_key_retention
    )]
    pub provider_key_retention: Duration,
}

/// The shortest `--provider-key-retention`: a shorter one could forget a key between the
/// retries of one charge, and a retried charge whose reply was lost would capture twice.
pub const MIN_KEY_RETENTION: Duration = Duration::from_secs(60);

fn parse_key_retention(raw: &str) -> Result<Duration, String> {
    let retention = parse_duration(raw)?;
    if retention < MIN_KEY_RETENTION {
        return Err(format!(
            "{raw:?} is shorter than a minute: the provider could forget a key between the \
             retries of one charge"
        ));
    }
    Ok(retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_retention_shorter_than_a_minute_is_refused_by_name() {
        assert_eq!(parse_key_retention("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_key_retention("1m"), Ok(MIN_KEY_RETENTION));
        let error = parse_key_retention("59s").unwrap_err();
        assert!(
            error.contains("\"59s\" is shorter than a minute"),
            "{error}"
        );
    }
}
