//! Settings shared by the services, from flags or environment variables (flags win).

use std::time::Duration;

use clap::Args;
use orderflow_events::Topics;

/// How a service reaches Kafka.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(
        long = "kafka-brokers",
        env = "ORDERFLOW_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Prefix for every topic name (lets several deployments or tests share a broker).
    #[arg(
        long = "topic-prefix",
        env = "ORDERFLOW_TOPIC_PREFIX",
        default_value = ""
    )]
    pub topic_prefix: String,
    /// Partitions for topics the service creates when they are missing.
    #[arg(
        long = "topic-partitions",
        env = "ORDERFLOW_TOPIC_PARTITIONS",
        default_value_t = 1
    )]
    pub partitions: i32,
    /// Longest time a fetch waits for data. Some brokers (tansu) hold every fetch this long,
    /// so it bounds each hop's latency; lower costs broker CPU while idle.
    #[arg(
        long = "fetch-wait-ms",
        env = "ORDERFLOW_FETCH_WAIT_MS",
        default_value_t = 25
    )]
    pub fetch_wait_ms: u32,
    /// Producer linger: how long to wait to batch messages.
    #[arg(long = "linger-ms", env = "ORDERFLOW_LINGER_MS", default_value_t = 2)]
    pub linger_ms: u32,
    /// Suffix for consumer group names (lets tests run isolated groups on one broker).
    #[arg(
        long = "group-suffix",
        env = "ORDERFLOW_GROUP_SUFFIX",
        default_value = ""
    )]
    pub group_suffix: String,
    /// Stable id of this instance within its consumer group (static membership), so a
    /// restarted instance takes its partitions back without waiting for a rebalance.
    #[arg(
        long = "instance-id",
        env = "ORDERFLOW_INSTANCE_ID",
        default_value = "0"
    )]
    pub instance_id: String,
    /// Most messages a consumer applies in one database transaction (one commit for many;
    /// per-order order and exactly-once effects are kept). 1 applies each message in its own
    /// transaction. Only what has already arrived is batched, so a light load still goes one
    /// message at a time without waiting (docs/performance.md).
    #[arg(
        long = "consumer-batch",
        env = "ORDERFLOW_CONSUMER_BATCH",
        default_value_t = DEFAULT_CONSUMER_BATCH
    )]
    pub consumer_batch: usize,
}

/// The consumer batch size: the benchmark's best on this machine (docs/performance.md).
pub const DEFAULT_CONSUMER_BATCH: usize = 64;

impl KafkaArgs {
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    pub fn group(&self, service: &str) -> String {
        format!("{}{service}{}", self.topic_prefix, self.group_suffix)
    }

    pub fn fetch_wait(&self) -> Duration {
        Duration::from_millis(u64::from(self.fetch_wait_ms))
    }
}

/// Settings every event-driven service has.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Schema registry URL (Confluent REST API).
    #[arg(
        long = "registry-url",
        env = "ORDERFLOW_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry_url: String,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

const DEFAULT_OUTBOX_RETENTION: &str = "24h";
/// Kafka's default `log.retention.hours` (168).
const DEFAULT_BROKER_RETENTION: &str = "7d";
const DEFAULT_DEDUP_RETENTION: &str = DEFAULT_BROKER_RETENTION;
const DEFAULT_PURGE_INTERVAL: &str = "5m";
const DEFAULT_PURGE_BATCH: i64 = 10_000;

/// How long the outbox and the dedup records are kept, and how the purge runs.
///
/// `processed_events` is what makes a redelivered event a no-op, and the broker can deliver
/// an event again for as long as it still holds it: after a lost offset commit, a consumer
/// group reset to the earliest offset, a new instance without committed offsets. A record
/// is written after the event was appended to its topic, so keeping it at least as long as
/// the broker keeps messages (`dedup >= broker`) outlives every copy the broker can hand
/// out. A shorter dedup retention is refused at start-up ([`RetentionArgs::validate`]):
/// purging a record while its event can still arrive would apply the event twice.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// How long published outbox rows are kept (e.g. `24h`, `30m`, `7d`). Unpublished rows
    /// are never purged, whatever their age.
    #[arg(
        long = "outbox-retention",
        env = "ORDERFLOW_OUTBOX_RETENTION",
        default_value = DEFAULT_OUTBOX_RETENTION,
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub outbox: Duration,
    /// How long processed-event (dedup) records are kept; must not be shorter than
    /// `--broker-retention`.
    #[arg(
        long = "dedup-retention",
        env = "ORDERFLOW_DEDUP_RETENTION",
        default_value = DEFAULT_DEDUP_RETENTION,
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub dedup: Duration,
    /// The broker's message retention for the consumed topics (Kafka's `retention.ms`):
    /// the window in which an event can be delivered again.
    #[arg(
        long = "broker-retention",
        env = "ORDERFLOW_BROKER_RETENTION",
        default_value = DEFAULT_BROKER_RETENTION,
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub broker: Duration,
    /// How often the purge runs.
    #[arg(
        long = "purge-interval",
        env = "ORDERFLOW_PURGE_INTERVAL",
        default_value = DEFAULT_PURGE_INTERVAL,
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub purge_interval: Duration,
    /// Rows deleted per statement, so the purge never holds locks for long.
    #[arg(
        long = "purge-batch",
        env = "ORDERFLOW_PURGE_BATCH",
        default_value_t = DEFAULT_PURGE_BATCH,
        value_name = "ROWS"
    )]
    pub purge_batch: i64,
}

impl Default for RetentionArgs {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        let default = |s| parse_duration(s).expect("default durations parse");
        RetentionArgs {
            outbox: default(DEFAULT_OUTBOX_RETENTION),
            dedup: default(DEFAULT_DEDUP_RETENTION),
            broker: default(DEFAULT_BROKER_RETENTION),
            purge_interval: default(DEFAULT_PURGE_INTERVAL),
            purge_batch: DEFAULT_PURGE_BATCH,
        }
    }
}

/// Retention settings that would break a guarantee or cannot run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "--dedup-retention ({}) is shorter than --broker-retention ({}): an event \
         the broker still holds could be delivered again after its dedup record was purged, \
         and be applied twice",
        Written(*dedup),
        Written(*broker)
    )]
    DedupShorterThanBroker { dedup: Duration, broker: Duration },
    #[error("--purge-interval must be longer than zero")]
    ZeroInterval,
    #[error("--purge-batch must be at least 1, got {0}")]
    EmptyBatch(i64),
}

impl RetentionArgs {
    /// Refuses settings under which the purge could remove a dedup record still needed.
    pub fn validate(&self) -> Result<(), RetentionError> {
        if self.dedup < self.broker {
            return Err(RetentionError::DedupShorterThanBroker {
                dedup: self.dedup,
                broker: self.broker,
            });
        }
        if self.purge_interval.is_zero() {
            return Err(RetentionError::ZeroInterval);
        }
        if self.purge_batch < 1 {
            return Err(RetentionError::EmptyBatch(self.purge_batch));
        }
        Ok(())
    }
}

/// Parses a duration written as a whole number and a unit: `500ms`, `30s`, `5m`, `24h`, `7d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{raw:?} has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} does not start with a whole number"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{raw:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => Err(format!(
            "{raw:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
        )),
    }
}

/// A duration as [`parse_duration`] reads it, in its largest exact unit (`7d`, `90m`).
struct Written(Duration);

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let (unit, size) = [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ]
        .into_iter()
        .find(|(_, size)| ms > 0 && ms.is_multiple_of(*size))
        .unwrap_or(("ms", 1));
        write!(f, "{}{unit}", ms / size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        retention: RetentionArgs,
    }

    #[test]
    fn durations_parse_with_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "10", "h", "1.5h", "3w", "-1d", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        for (duration, written) in [
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_secs(5400), "90m"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(Written(duration).to_string(), written);
            assert_eq!(parse_duration(written), Ok(duration));
        }
    }

    #[test]
    fn flags_set_every_retention_setting() {
        let defaults = RetentionArgs::default();
        assert_eq!(defaults.outbox, Duration::from_secs(24 * 3600));
        assert_eq!(defaults.dedup, Duration::from_secs(7 * 86_400));
        assert_eq!(defaults.broker, defaults.dedup);
        assert_eq!(defaults.purge_interval, Duration::from_secs(300));
        assert_eq!(defaults.purge_batch, 10_000);
        defaults.validate().expect("the defaults are valid");

        let cli = Cli::try_parse_from([
            "x",
            "--outbox-retention",
            "1h",
            "--dedup-retention",
            "14d",
            "--broker-retention",
            "3d",
            "--purge-interval",
            "30s",
            "--purge-batch",
            "500",
        ])
        .expect("flags parse");
        assert_eq!(cli.retention.outbox, Duration::from_secs(3600));
        assert_eq!(cli.retention.dedup, Duration::from_secs(14 * 86_400));
        assert_eq!(cli.retention.broker, Duration::from_secs(3 * 86_400));
        assert_eq!(cli.retention.purge_interval, Duration::from_secs(30));
        assert_eq!(cli.retention.purge_batch, 500);
        cli.retention.validate().expect("valid");
        assert!(Cli::try_parse_from(["x", "--outbox-retention", "1 week"]).is_err());
    }

    #[test]
    fn a_dedup_retention_shorter_than_the_broker_s_is_refused() {
        let settings = RetentionArgs {
            dedup: Duration::from_secs(86_400),
            broker: Duration::from_secs(7 * 86_400),
            ..RetentionArgs::default()
        };
        let err = settings.validate().unwrap_err();
        assert!(matches!(err, RetentionError::DedupShorterThanBroker { .. }));
        assert_eq!(
            err.to_string(),
            "--dedup-retention (1d) is shorter than --broker-retention (7d): an event the broker \
             still holds could be delivered again after its dedup record was purged, and be \
             applied twice"
        );

        let zero = RetentionArgs {
            purge_interval: Duration::ZERO,
            ..RetentionArgs::default()
        };
        assert_eq!(zero.validate(), Err(RetentionError::ZeroInterval));
        let empty = RetentionArgs {
            purge_batch: 0,
            ..RetentionArgs::default()
        };
        assert_eq!(empty.validate(), Err(RetentionError::EmptyBatch(0)));
    }
}
