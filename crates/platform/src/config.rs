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
}

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
}
