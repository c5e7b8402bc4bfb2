//! Settings, layered: each component's flags' defaults, then an optional TOML file
//! (`--config FILE` or `ORDERFLOW_CONFIG`), then environment variables, then flags; the later
//! layer wins. [`load`] does it for any clap [`Args`] struct, and the structs every component
//! shares are here: Kafka, the event bus, retention, and what `orderflow serve` itself reads.
//!
//! The file is a flat TOML table whose keys are the long flag names, and a key the component
//! does not have is refused (a typo must not silently leave a default in place):
//!
//! ```toml
//! kafka-brokers = "kafka-1:9092,kafka-2:9092"
//! topic-partitions = 6
//! outbox-retention = "48h"
//! database-url = "postgres://orderflow@db:5432/orderflow_order"
//! ```

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command};
use orderflow_events::Topics;

pub use orderflow_db::Secret;

use crate::telemetry::TelemetryArgs;
use crate::vacuum::SelfVacuum;

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
    /// Longest time a fetch waits for data. Apache Kafka and the patched local broker answer
    /// as soon as data arrives (unpatched tansu 0.6.0 held every fetch this long), so a long
    /// wait costs no latency; an idle consumer fetches again after each wait, so a short one
    /// costs broker CPU while idle. 500 ms is Apache Kafka's default.
    #[arg(
        long = "fetch-wait-ms",
        env = "ORDERFLOW_FETCH_WAIT_MS",
        default_value_t = 500
    )]
    pub fetch_wait_ms: u32,
    /// Least data a fetch asks the broker to gather before it answers, unless the fetch wait
    /// runs out first (Kafka's `fetch.min.bytes`). 1 (the default, Apache Kafka's) answers
    /// with the first record; more lets records gather at low rates, so that a consumer's
    /// batches are larger and its transactions fewer, at the cost of up to the fetch wait of
    /// latency per hop (docs/performance.md, section 36).
    #[arg(
        long = "fetch-min-bytes",
        env = "ORDERFLOW_FETCH_MIN_BYTES",
        default_value_t = 1
    )]
    pub fetch_min_bytes: u32,
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
    /// restarted instance takes its partitions back without waiting for a rebalance. Empty
    /// (the default): derived from this host's name and the service's admin port, which is
    /// unique per host and the same after a restart. Two running instances must never share
    /// one: the broker fences the older (docs/tansu.md).
    #[arg(
        long = "instance-id",
        env = "ORDERFLOW_INSTANCE_ID",
        default_value = ""
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
    /// librdkafka debug contexts for the consumers (e.g. `cgrp` for group membership), to
    /// diagnose a broker's behaviour; librdkafka's lines go to the log. Empty: off.
    #[arg(
        long = "kafka-debug",
        env = "ORDERFLOW_KAFKA_DEBUG",
        value_name = "CONTEXTS"
    )]
    pub debug: Option<String>,
    #[command(flatten)]
    pub security: KafkaSecurityArgs,
}

/// How a client proves itself to the broker and protects what it sends: Kafka's
/// `security.protocol` with TLS (`ssl`, `sasl_ssl`) and SASL SCRAM (`sasl_plaintext`,
/// `sasl_ssl`). The same settings serve Apache Kafka and the local broker.
#[derive(Debug, Clone, Default, Args)]
pub struct KafkaSecurityArgs {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` (Kafka's `security.protocol`).
    #[arg(
        long = "kafka-security-protocol",
        env = "ORDERFLOW_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value_t = SecurityProtocol::Plaintext
    )]
    pub protocol: SecurityProtocol,
    /// PEM file of the CA that signed the broker's certificate (TLS protocols); without it,
    /// the system's trusted CAs.
    #[arg(long = "kafka-ca-file", env = "ORDERFLOW_KAFKA_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// SASL mechanism (SASL protocols).
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "ORDERFLOW_KAFKA_SASL_MECHANISM",
        value_enum,
        default_value_t = ScramMechanism::ScramSha512
    )]
    pub mechanism: ScramMechanism,
    /// SASL user name: this service's principal (SASL protocols).
    #[arg(long = "kafka-sasl-username", env = "ORDERFLOW_KAFKA_SASL_USERNAME")]
    pub username: Option<String>,
    /// SASL password (SASL protocols); best given as ORDERFLOW_KAFKA_SASL_PASSWORD_FILE.
    #[arg(
        long = "kafka-sasl-password",
        env = "ORDERFLOW_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<Secret>,
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    #[default]
    #[value(name = "plaintext", alias = "PLAINTEXT")]
    Plaintext,
    #[value(name = "ssl", alias = "SSL")]
    Ssl,
    #[value(name = "sasl_plaintext", alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[value(name = "sasl_ssl", alias = "SASL_SSL")]
    SaslSsl,
}

/// The name clap gives a value: the one Kafka and librdkafka use.
fn value_name(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .expect("every value has a name")
        .get_name()
        .to_owned()
}

impl SecurityProtocol {
    fn name(self) -> String {
        value_name(self)
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// The SASL mechanisms the services speak: SCRAM only (PLAIN would send the password itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScramMechanism {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[default]
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl ScramMechanism {
    pub fn name(self) -> String {
        value_name(self)
    }
}

impl KafkaSecurityArgs {
    /// Refuses settings that cannot work: SASL without a user or password, or a CA file
    /// that does not exist, named before any connection is tried.
    pub fn validate(&self) -> Result<(), String> {
        let protocol = self.protocol.name();
        if self.protocol.uses_sasl() {
            if self.username.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "--kafka-security-protocol {protocol} needs --kafka-sasl-username"
                ));
            }
            if self.password.as_ref().is_none_or(|p| p.expose().is_empty()) {
                return Err(format!(
                    "--kafka-security-protocol {protocol} needs --kafka-sasl-password \
                     (or ORDERFLOW_KAFKA_SASL_PASSWORD_FILE)"
                ));
            }
        }
        if let Some(ca) = &self.ca_file {
            if !self.protocol.uses_tls() {
                return Err(format!(
                    "--kafka-ca-file is set but --kafka-security-protocol {protocol} does not use TLS"
                ));
            }
            if !ca.is_file() {
                return Err(format!("--kafka-ca-file {}: no such file", ca.display()));
            }
        }
        Ok(())
    }

    /// The SASL user, when the protocol authenticates with one.
    pub fn principal(&self) -> Option<&str> {
        self.protocol
            .uses_sasl()
            .then_some(self.username.as_deref())
            .flatten()
    }

    /// Adds these settings to a librdkafka configuration.
    pub fn apply(&self, config: &mut rdkafka::ClientConfig) {
        config.set("security.protocol", self.protocol.name());
        if self.protocol.uses_tls() {
            if let Some(ca) = &self.ca_file {
                config.set("ssl.ca.location", ca.display().to_string());
            }
            // Check the broker's name against its certificate, as Apache Kafka clients do.
            config.set("ssl.endpoint.identification.algorithm", "https");
        }
        if self.protocol.uses_sasl() {
            config.set("sasl.mechanism", self.mechanism.name());
            if let Some(username) = &self.username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &self.password {
                config.set("sasl.password", password.expose());
            }
        }
    }
}

/// The consumer batch size. Only what has arrived is batched, so it matters only when
/// messages wait: at saturation 256 let the order service's consumer keep up where 64 left
/// it seconds behind (docs/performance.md, sections 4 and 44).
pub const DEFAULT_CONSUMER_BATCH: usize = 256;

impl KafkaArgs {
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    /// This instance's id: the configured one, else `<host>-<admin port>`.
    pub fn instance_id_or_derived(&self, admin: std::net::SocketAddr) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}-{}", admin.port())
    }

    /// A librdkafka configuration that reaches the brokers with these security settings;
    /// every client the project makes starts from it.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.security.apply(&mut config);
        config
    }

    pub fn group(&self, service: &str) -> String {
        format!("{}{service}{}", self.topic_prefix, self.group_suffix)
    }

    pub fn fetch_wait(&self) -> Duration {
        Duration::from_millis(u64::from(self.fetch_wait_ms))
    }

    /// The librdkafka debug contexts to turn on, if any.
    pub fn debug_contexts(&self) -> Option<&str> {
        self.debug
            .as_deref()
            .filter(|contexts| !contexts.is_empty())
    }
}

/// How a component reaches the events: the broker, and the schema registry that gives their
/// schemas ids.
#[derive(Debug, Clone, Args)]
pub struct EventBusArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Schema registry URL (Confluent REST API).
    #[arg(
        long = "registry-url",
        env = "ORDERFLOW_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry_url: String,
    /// Credentials for the registry, `user:password` (Confluent's `basic.auth.user.info`);
    /// a user with the write role, as the services register their schemas.
    #[arg(
        long = "registry-user-info",
        env = "ORDERFLOW_REGISTRY_USER_INFO",
        hide_env_values = true
    )]
    pub registry_user_info: Option<Secret>,
    /// PEM file of the CA that signed an `https://` registry's certificate, when the system
    /// does not trust it.
    #[arg(long = "registry-ca-file", env = "ORDERFLOW_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<PathBuf>,
}

impl EventBusArgs {
    /// How to reach the registry: its URL, these credentials and CA.
    pub fn registry(&self) -> orderflow_events::RegistryAccess<'_> {
        orderflow_events::RegistryAccess {
            url: &self.registry_url,
            user_info: self.registry_user_info.as_ref().map(Secret::expose),
            ca_file: self.registry_ca_file.as_deref(),
        }
    }

    /// The codec of events through this registry.
    pub fn codec(&self) -> Result<orderflow_events::EventCodec, orderflow_events::CodecError> {
        orderflow_events::EventCodec::new(&self.registry())
    }
}

/// Settings every event-driven service has: the event bus, how long its outbox and dedup
/// records are kept, and when its group counts as stalled.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub bus: EventBusArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub progress: ProgressArgs,
    /// When the service vacuums its own tables: `auto` while the server's autovacuum is off,
    /// `always`, or `never` (see `orderflow_platform::vacuum`).
    #[arg(
        long = "self-vacuum",
        env = "ORDERFLOW_SELF_VACUUM",
        value_enum,
        default_value_t = SelfVacuum::Auto
    )]
    pub self_vacuum: SelfVacuum,
    /// Most connections the service's pool opens to its database. Every instance has its
    /// own pool: size them so that all instances fit the server's `max_connections`.
    #[arg(
        long = "database-max-connections",
        env = "ORDERFLOW_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,
}

/// How a service watches its consumer group's progress on every partition of its input
/// topics (`orderflow_platform::progress`).
#[derive(Debug, Clone, Args)]
pub struct ProgressArgs {
    /// A partition with lag whose committed offset has not moved for this many seconds is
    /// stalled: `/health` turns degraded and names it.
    #[arg(
        long = "stall-threshold-secs",
        env = "ORDERFLOW_STALL_THRESHOLD_SECS",
        default_value_t = 60
    )]
    pub stall_threshold_secs: u64,
    /// How often the group's committed offsets and the high watermarks are read.
    #[arg(
        long = "progress-interval-secs",
        env = "ORDERFLOW_PROGRESS_INTERVAL_SECS",
        default_value_t = 5
    )]
    pub progress_interval_secs: u64,
}

impl Default for ProgressArgs {
    fn default() -> Self {
        ProgressArgs {
            stall_threshold_secs: 60,
            progress_interval_secs: 5,
        }
    }
}

/// Everything `orderflow serve <component>` reads: how the process logs and stops, and the
/// component's own settings (`T`).
#[derive(Debug, Clone, Args)]
#[command(
    about = "Runs the component in the foreground until SIGTERM or Ctrl-C. Each setting comes \
             from its flag, else its environment variable, else the --config file (TOML, keyed \
             by long flag name), else its default.",
    long_about = None
)]
pub struct ServeArgs<T: Args> {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// After SIGTERM, how long the component may take to finish in-flight work before the
    /// process gives up and exits non-zero.
    #[arg(
        long = "shutdown-grace-secs",
        env = "ORDERFLOW_SHUTDOWN_GRACE_SECS",
        default_value_t = 20
    )]
    pub shutdown_grace_secs: u64,
    #[command(flatten)]
    pub component: T,
}

impl<T: Args> ServeArgs<T> {
    /// How long in-flight work may take after the shutdown request.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// `--outbox-retention`'s default: acknowledged rows are deleted at once.
const DEFAULT_OUTBOX_RETENTION: &str = "0s";
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
    /// How long published outbox rows are kept (e.g. `24h`, `30m`, `7d`); `0s`, the
    /// default, deletes each row as soon as the broker has acknowledged it. Unpublished rows
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

/// The environment variable that names the configuration file when `--config` does not.
pub const CONFIG_ENV: &str = "ORDERFLOW_CONFIG";

/// The id (and long name) of the `--config` flag [`load`] adds to every command.
const CONFIG_ID: &str = "config";

/// What a component's settings are read from besides its flags' defaults: its command line,
/// its environment, and the configuration file those name. Not `Debug`: the environment may
/// hold secrets.
#[derive(Clone)]
pub struct Sources {
    /// The command line after the command's name.
    args: Vec<OsString>,
    env: HashMap<OsString, OsString>,
    /// Configuration files by path; `None` reads the filesystem.
    files: Option<HashMap<PathBuf, String>>,
}

impl Sources {
    /// This process's environment and filesystem, with `args` as the command line (after the
    /// command's name).
    pub fn process<A: Into<OsString>>(args: impl IntoIterator<Item = A>) -> Sources {
        Sources {
            args: args.into_iter().map(Into::into).collect(),
            env: std::env::vars_os().collect(),
            files: None,
        }
    }

    /// Exactly `args` and `env`, and no file but those given with [`Sources::with_file`]: what
    /// tests parse from, so they never depend on (or change) the process's environment.
    pub fn fixed<A, K, V>(
        args: impl IntoIterator<Item = A>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Sources
    where
        A: Into<OsString>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        Sources {
            args: args.into_iter().map(Into::into).collect(),
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            files: Some(HashMap::new()),
        }
    }

    /// Serves `text` as the content of the file at `path` (and stops reading the filesystem).
    pub fn with_file(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> Sources {
        self.files
            .get_or_insert_with(HashMap::new)
            .insert(path.into(), text.into());
        self
    }

    fn var(&self, name: &std::ffi::OsStr) -> Option<&OsString> {
        self.env.get(name)
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        match &self.files {
            None => std::fs::read_to_string(path),
            Some(files) => files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
        }
    }
}

/// Why a component's settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line is wrong, or asks for help or the version: [`clap::Error::exit`]
    /// prints it the way clap does.
    #[error("{0}")]
    Command(clap::Error),
    #[error("cannot read the configuration file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {} is not valid TOML: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },
    /// Keys the command has no flag for (listed in order).
    #[error(
        "unknown {} {} in {}: not a setting of `{command}` (the keys are its long flag names; see --help)",
        if keys.len() == 1 { "key" } else { "keys" },
        keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        path.display()
    )]
    UnknownKeys {
        keys: Vec<String>,
        path: PathBuf,
        command: String,
    },
    /// A value from the environment or the file that the setting does not accept; `origin`
    /// names the variable, or the key and the file.
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Where a value that was not on the command line came from.
enum Origin {
    Env(String),
    /// A `<VARIABLE>_FILE` variable naming the file that holds the value (a mounted secret).
    EnvFile {
        name: String,
        path: PathBuf,
    },
    File {
        key: String,
        path: PathBuf,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::EnvFile { name, path } => {
                write!(f, "file {} (named by {name})", path.display())
            }
            Origin::File { key, path } => write!(f, "key `{key}` in {}", path.display()),
        }
    }
}

/// Reads `T` for the command `name` from `sources`, each setting from the first layer that has
/// it: the command line, the environment (each flag's `env` name), the configuration file
/// (`--config FILE`, else the file named by [`CONFIG_ENV`]), the flag's default.
///
/// Every value goes through the flag's own parser, so a file or an environment variable is
/// checked exactly as the flag would be, and an error names where the bad value came from.
/// `--help` lists every flag with its environment variable, plus `--config`.
pub fn load<T: Args>(name: &'static str, sources: &Sources) -> Result<T, ConfigError> {
    let full = T::augment_args(Command::new(name).bin_name(name)).arg(config_arg());
    // clap reads this process's environment into each argument that names a variable; the
    // values must come from `sources` alone.
    let command = full.clone().mut_args(|arg| arg.env(None));
    let argv: Vec<OsString> = std::iter::once(OsString::from(name))
        .chain(sources.args.iter().cloned())
        .collect();
    let given = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| match e.kind() {
            // Help lists each flag's environment variable: render it from the full command.
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            | ErrorKind::DisplayVersion => {
                ConfigError::Command(full.clone().try_get_matches_from(&argv).err().unwrap_or(e))
            }
            _ => ConfigError::Command(e),
        })?;
    let file = match config_path(&given, sources) {
        Some(path) => Some(ConfigFile::read(path, sources, &full)?),
        None => None,
    };

    // Every setting the command line left alone, from the environment or else the file.
    let mut layers: Vec<(Origin, Vec<OsString>)> = Vec::new();
    for arg in full.get_arguments() {
        let (id, Some(long)) = (arg.get_id().as_str(), arg.get_long()) else {
            continue;
        };
        if id == CONFIG_ID || given.value_source(id) == Some(ValueSource::CommandLine) {
            continue;
        }
        let from_env = arg.get_env().and_then(|var| Some((var, sources.var(var)?)));
        let from_env_file = arg.get_env().and_then(|var| {
            let mut name = var.to_owned();
            name.push("_FILE");
            let path = PathBuf::from(sources.var(&name)?);
            Some((name.to_string_lossy().into_owned(), path))
        });
        if let Some((var, value)) = from_env {
            let origin = Origin::Env(var.to_string_lossy().into_owned());
            layers.push((origin, flag(arg, long, vec![value.clone()])));
        } else if let Some((name, path)) = from_env_file {
            // A secret kept in a file (Docker and Kubernetes secrets): its text, less the
            // trailing newline editors add.
            let value = sources.read(&path);
            let origin = Origin::EnvFile { name, path };
            let value = value
                .map_err(|e| ConfigError::Invalid {
                    origin: origin.to_string(),
                    message: format!("cannot read it: {e}"),
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            layers.push((origin, flag(arg, long, vec![value.into()])));
        } else if let Some((file, value)) = file
            .as_ref()
            .and_then(|file| Some((file, file.table.get(long)?)))
        {
            let origin = Origin::File {
                key: long.to_owned(),
                path: file.path.clone(),
            };
            let values = toml_values(value).map_err(|message| ConfigError::Invalid {
                origin: origin.to_string(),
                message,
            })?;
            layers.push((origin, flag(arg, long, values)));
        }
    }

    let layered = argv
        .iter()
        .cloned()
        .chain(layers.iter().flat_map(|(_, args)| args.iter().cloned()));
    let matches = command
        .clone()
        .try_get_matches_from(layered)
        .map_err(|e| blame(&command, &argv, &layers, e))?;
    T::from_arg_matches(&matches).map_err(ConfigError::Command)
}

/// `--config FILE`, added to every command [`load`] reads.
fn config_arg() -> Arg {
    Arg::new(CONFIG_ID)
        .long(CONFIG_ID)
        .env(CONFIG_ENV)
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help(
            "TOML file of settings, keyed by long flag name (e.g. `kafka-brokers = \"host:9092\"`); \
             environment variables and flags override it",
        )
}

/// The configuration file to read: `--config`, else the variable [`CONFIG_ENV`].
fn config_path(given: &ArgMatches, sources: &Sources) -> Option<PathBuf> {
    given
        .get_one::<PathBuf>(CONFIG_ID)
        .cloned()
        .or_else(|| sources.var(CONFIG_ENV.as_ref()).map(PathBuf::from))
}

/// A configuration file, read and checked against the command's flags.
struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    fn read(
        path: PathBuf,
        sources: &Sources,
        command: &Command,
    ) -> Result<ConfigFile, ConfigError> {
        let text = match sources.read(&path) {
            Ok(text) => text,
            Err(source) => return Err(ConfigError::ReadFile { path, source }),
        };
        let table: toml::Table = match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(e) => {
                // The line and the message, without the quoted line itself: it may hold a
                // secret.
                let message = e.message().trim_end().replace('\n', "; ");
                let message = match e.span() {
                    Some(span) => {
                        let before = &text.as_bytes()[..span.start.min(text.len())];
                        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                        format!("line {line}: {message}")
                    }
                    None => message,
                };
                return Err(ConfigError::ParseFile { path, message });
            }
        };
        let known: BTreeSet<&str> = command
            .get_arguments()
            .filter(|arg| arg.get_id() != CONFIG_ID)
            .filter_map(Arg::get_long)
            .collect();
        let unknown: Vec<String> = table
            .keys()
            .filter(|key| !known.contains(key.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownKeys {
                keys: unknown,
                path,
                command: command.get_name().to_owned(),
            });
        }
        Ok(ConfigFile { path, table })
    }
}

/// A file value as the text a flag would be given: a string as it is, a number or a boolean
/// as written, an array as one value per item.
fn toml_values(value: &toml::Value) -> Result<Vec<OsString>, String> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, a number, a boolean or an array of them, found {}",
            other.type_str()
        )),
    };
    match value {
        toml::Value::Array(items) => items
            .iter()
            .map(|item| scalar(item).map(OsString::from))
            .collect(),
        other => Ok(vec![scalar(other)?.into()]),
    }
}

/// The command-line words that give `arg` these `values`: `--long=value` for each (one word
/// joined by the flag's delimiter, when it has one), or `--long` alone for a flag that takes
/// no value and a true one (`false`, `0`, `no`, `off` or empty leave it unset, as with clap's
/// own environment handling).
fn flag(arg: &Arg, long: &str, values: Vec<OsString>) -> Vec<OsString> {
    if !arg.get_action().takes_values() {
        let falsey = |v: &OsString| {
            let v = v.to_string_lossy().to_ascii_lowercase();
            matches!(v.as_str(), "" | "0" | "n" | "no" | "f" | "false" | "off")
        };
        return if values.iter().any(|v| !falsey(v)) {
            vec![format!("--{long}").into()]
        } else {
            Vec::new()
        };
    }
    let word = |value: &OsString| {
        let mut word = OsString::from(format!("--{long}="));
        word.push(value);
        word
    };
    match arg.get_value_delimiter() {
        Some(delimiter) if values.len() > 1 => {
            let mut joined = OsString::new();
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    joined.push(delimiter.to_string());
                }
                joined.push(value);
            }
            vec![word(&joined)]
        }
        _ => values.iter().map(word).collect(),
    }
}

/// Names the layer whose value `command` refused: the first that fails on its own on top of
/// the command line.
fn blame(
    command: &Command,
    argv: &[OsString],
    layers: &[(Origin, Vec<OsString>)],
    error: clap::Error,
) -> ConfigError {
    for (origin, args) in layers {
        let alone = argv.iter().chain(args).cloned();
        if let Err(e) = command.clone().try_get_matches_from(alone) {
            return ConfigError::Invalid {
                origin: origin.to_string(),
                message: summary(&e),
            };
        }
    }
    ConfigError::Command(error)
}

/// clap's message for `error` without its `error: ` prefix and usage lines.
fn summary(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
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

    #[derive(Parser)]
    struct KafkaCli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn kafka(flags: &[&str]) -> KafkaArgs {
        KafkaCli::try_parse_from(std::iter::once("test").chain(flags.iter().copied()))
            .expect("flags")
            .kafka
    }

    fn setting(config: &rdkafka::ClientConfig, key: &str) -> Option<String> {
        config.get(key).map(str::to_owned)
    }

    #[test]
    fn kafka_security_defaults_to_plaintext_and_adds_nothing_else() {
        let kafka = kafka(&[]);
        assert_eq!(kafka.security.validate(), Ok(()));
        assert_eq!(kafka.security.principal(), None);
        let config = kafka.client_config();
        assert_eq!(
            setting(&config, "security.protocol").as_deref(),
            Some("plaintext")
        );
        assert_eq!(setting(&config, "sasl.mechanism"), None);
        assert_eq!(setting(&config, "ssl.ca.location"), None);
    }

    #[test]
    fn sasl_ssl_sets_tls_and_scram_in_kafkas_own_spelling() {
        let ca = std::env::temp_dir().join(format!("kafka-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "pem").unwrap();
        let kafka = kafka(&[
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-ca-file",
            ca.to_str().unwrap(),
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-256",
            "--kafka-sasl-username",
            "order",
            "--kafka-sasl-password",
            "s3cret",
        ]);
        assert_eq!(kafka.security.validate(), Ok(()));
        assert_eq!(kafka.security.principal(), Some("order"));
        let config = kafka.client_config();
        assert_eq!(
            setting(&config, "security.protocol").as_deref(),
            Some("sasl_ssl")
        );
        assert_eq!(
            setting(&config, "sasl.mechanism").as_deref(),
            Some("SCRAM-SHA-256")
        );
        assert_eq!(setting(&config, "sasl.username").as_deref(), Some("order"));
        assert_eq!(setting(&config, "sasl.password").as_deref(), Some("s3cret"));
        assert_eq!(
            setting(&config, "ssl.ca.location"),
            Some(ca.display().to_string())
        );
        assert!(
            !format!("{kafka:?}").contains("s3cret"),
            "Debug shows the password"
        );
        std::fs::remove_file(ca).unwrap();
    }

    #[test]
    fn unusable_kafka_security_is_refused_with_the_setting_named() {
        let no_user = kafka(&["--kafka-security-protocol", "sasl_plaintext"]);
        assert_eq!(
            no_user.security.validate(),
            Err("--kafka-security-protocol sasl_plaintext needs --kafka-sasl-username".into())
        );
        let no_password = kafka(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-username",
            "order",
        ]);
        assert!(
            no_password
                .security
                .validate()
                .is_err_and(|e| e.contains("needs --kafka-sasl-password"))
        );
        let missing_ca = kafka(&[
            "--kafka-security-protocol",
            "ssl",
            "--kafka-ca-file",
            "/nonexistent/ca.pem",
        ]);
        assert_eq!(
            missing_ca.security.validate(),
            Err("--kafka-ca-file /nonexistent/ca.pem: no such file".into())
        );
        let ca_without_tls = kafka(&["--kafka-ca-file", "/nonexistent/ca.pem"]);
        assert!(
            ca_without_tls
                .security
                .validate()
                .is_err_and(|e| e.contains("does not use TLS"))
        );
        assert!(
            KafkaCli::try_parse_from(["test", "--kafka-sasl-mechanism", "PLAIN"]).is_err(),
            "PLAIN is not offered"
        );
    }

    #[test]
    fn a_secret_can_come_from_a_file_named_by_the_variable_with_file_appended() {
        let sources = Sources::fixed(
            Vec::<&str>::new(),
            [("ORDERFLOW_REGISTRY_URL_FILE", "/run/secrets/registry")],
        )
        .with_file(
            "/run/secrets/registry",
            "http://user:s3cret@registry:8081\n",
        );
        let args: EventBusArgs = load("test", &sources).expect("settings");
        assert_eq!(args.registry_url, "http://user:s3cret@registry:8081");

        // The variable itself wins over its _FILE, as a flag wins over both.
        let sources = Sources::fixed(
            Vec::<&str>::new(),
            [
                ("ORDERFLOW_REGISTRY_URL", "http://direct:8081"),
                ("ORDERFLOW_REGISTRY_URL_FILE", "/run/secrets/registry"),
            ],
        );
        let args: EventBusArgs = load("test", &sources).expect("settings");
        assert_eq!(args.registry_url, "http://direct:8081");

        let missing = Sources::fixed(
            Vec::<&str>::new(),
            [("ORDERFLOW_REGISTRY_URL_FILE", "/run/secrets/absent")],
        );
        let error = load::<EventBusArgs>("test", &missing).expect_err("unreadable");
        assert!(
            error.to_string().contains("/run/secrets/absent")
                && error.to_string().contains("ORDERFLOW_REGISTRY_URL_FILE"),
            "{error}"
        );
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
        assert_eq!(
            defaults.outbox,
            Duration::ZERO,
            "acknowledged rows are deleted at once"
        );
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

    /// What `orderflow serve` reads for an event-driven service, without its own flags.
    type Service = ServeArgs<CommonArgs>;

    fn service(sources: Sources) -> Result<Service, ConfigError> {
        load::<Service>("orderflow serve test", &sources)
    }

    #[test]
    fn nothing_given_means_every_flag_s_default() {
        let settings = service(Sources::fixed(NO_ARGS, NO_ENV)).expect("defaults");
        let kafka = &settings.component.bus.kafka;
        assert_eq!(kafka.brokers, "127.0.0.1:9092");
        assert_eq!(kafka.topic_prefix, "");
        assert_eq!(kafka.fetch_wait_ms, 500);
        assert_eq!(kafka.fetch_min_bytes, 1);
        assert_eq!(kafka.consumer_batch, DEFAULT_CONSUMER_BATCH);
        assert_eq!(kafka.debug_contexts(), None);
        assert_eq!(settings.component.bus.registry_url, "http://127.0.0.1:8081");
        assert_eq!(
            settings.component.retention.outbox,
            RetentionArgs::default().outbox
        );
        assert_eq!(
            settings.telemetry.log_format,
            crate::telemetry::LogFormat::Text
        );
        assert_eq!(settings.shutdown_grace(), Duration::from_secs(20));
    }

    const NO_ARGS: [&str; 0] = [];
    const NO_ENV: [(&str, &str); 0] = [];

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
        let file = r#"
            kafka-brokers = "file:9092"
            topic-prefix = "file-"
            fetch-wait-ms = 100
            outbox-retention = "1h"
        "#;
        let sources = Sources::fixed(
            ["--config", "order.toml", "--kafka-brokers", "flag:9092"],
            [
                ("ORDERFLOW_KAFKA_BROKERS", "env:9092"),
                ("ORDERFLOW_TOPIC_PREFIX", "env-"),
            ],
        )
        .with_file("order.toml", file);
        let settings = service(sources).expect("layered settings");
        let kafka = &settings.component.bus.kafka;
        assert_eq!(kafka.brokers, "flag:9092", "a flag beats all");
        assert_eq!(kafka.topic_prefix, "env-", "the environment beats the file");
        assert_eq!(kafka.fetch_wait_ms, 100, "the file beats the default");
        assert_eq!(
            settings.component.retention.outbox,
            Duration::from_secs(3600),
            "the file beats the default"
        );
        assert_eq!(
            kafka.linger_ms, 2,
            "the default where nothing says otherwise"
        );
    }

    #[test]
    fn the_config_flag_names_the_file_before_the_variable_does() {
        let sources = |args: &[&str]| {
            Sources::fixed(args.to_vec(), [(CONFIG_ENV, "from-env.toml")])
                .with_file("from-env.toml", "linger-ms = 7")
                .with_file("from-flag.toml", "linger-ms = 9")
        };
        let linger = |args: &[&str]| {
            service(sources(args))
                .unwrap()
                .component
                .bus
                .kafka
                .linger_ms
        };
        assert_eq!(linger(&[]), 7);
        assert_eq!(linger(&["--config", "from-flag.toml"]), 9);
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_key_and_the_file() {
        let sources = Sources::fixed(["--config", "/etc/orderflow/order.toml"], NO_ENV).with_file(
            "/etc/orderflow/order.toml",
            "kafka-broker = \"typo:9092\"\nlinger-ms = 5\n",
        );
        let err = service(sources).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKeys { keys, .. } if keys == &["kafka-broker"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unknown key `kafka-broker` in /etc/orderflow/order.toml: not a setting of \
             `orderflow serve test` (the keys are its long flag names; see --help)"
        );
        // `config` is a flag, not a setting a file can hold.
        let nested = Sources::fixed(NO_ARGS, [(CONFIG_ENV, "a.toml")])
            .with_file("a.toml", "config = \"b.toml\"");
        assert!(matches!(
            service(nested).unwrap_err(),
            ConfigError::UnknownKeys { .. }
        ));
    }

    #[test]
    fn a_bad_value_is_reported_with_where_it_came_from() {
        let origin = |sources: Sources| match service(sources).unwrap_err() {
            ConfigError::Invalid { origin, message } => (origin, message),
            other => panic!("expected an invalid value, got {other:?}"),
        };
        let (at, message) = origin(
            Sources::fixed(NO_ARGS, [(CONFIG_ENV, "order.toml")])
                .with_file("order.toml", "fetch-wait-ms = \"soon\""),
        );
        assert_eq!(at, "key `fetch-wait-ms` in order.toml");
        assert!(
            message.contains("invalid value 'soon' for '--fetch-wait-ms"),
            "{message}"
        );

        let (at, message) = origin(Sources::fixed(
            NO_ARGS,
            [("ORDERFLOW_OUTBOX_RETENTION", "1 week")],
        ));
        assert_eq!(at, "environment variable ORDERFLOW_OUTBOX_RETENTION");
        assert!(message.contains("unknown unit"), "{message}");

        let (at, message) = origin(
            Sources::fixed(NO_ARGS, [(CONFIG_ENV, "order.toml")])
                .with_file("order.toml", "kafka-brokers = { host = \"x\" }"),
        );
        assert_eq!(at, "key `kafka-brokers` in order.toml");
        assert!(message.contains("found table"), "{message}");

        // A flag's own bad value is clap's usage error, as without layering.
        let err = service(Sources::fixed(["--linger-ms", "x"], NO_ENV)).unwrap_err();
        assert!(matches!(err, ConfigError::Command(e) if e.kind() == ErrorKind::ValueValidation));
    }

    #[test]
    fn a_missing_or_malformed_file_is_an_error_naming_it() {
        let missing = Sources::fixed(["--config", "absent.toml"], NO_ENV);
        let err = service(missing).unwrap_err();
        assert!(
            matches!(&err, ConfigError::ReadFile { path, .. } if path == Path::new("absent.toml"))
        );
        assert!(err.to_string().contains("absent.toml"), "{err}");

        let malformed = Sources::fixed(["--config", "bad.toml"], NO_ENV).with_file(
            "bad.toml",
            "linger-ms = 3\ndatabase-url = postgres://orderflow:hunter2@db/orderflow\n",
        );
        let err = service(malformed).unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("bad.toml") && message.contains("line 2"),
            "{message}"
        );
        assert!(
            !message.contains("hunter2"),
            "the bad line may hold a secret: {message}"
        );
    }

    #[test]
    fn log_format_and_kafka_debug_are_flags_with_their_environment_names() {
        let settings = service(Sources::fixed(
            NO_ARGS,
            [
                ("ORDERFLOW_LOG_FORMAT", "json"),
                ("ORDERFLOW_KAFKA_DEBUG", "cgrp"),
            ],
        ))
        .unwrap();
        assert_eq!(
            settings.telemetry.log_format,
            crate::telemetry::LogFormat::Json
        );
        assert_eq!(settings.component.bus.kafka.debug_contexts(), Some("cgrp"));

        let settings = service(Sources::fixed(
            ["--log-format", "text"],
            [
                ("ORDERFLOW_LOG_FORMAT", "json"),
                ("ORDERFLOW_KAFKA_DEBUG", ""),
            ],
        ))
        .unwrap();
        assert_eq!(
            settings.telemetry.log_format,
            crate::telemetry::LogFormat::Text
        );
        assert_eq!(
            settings.component.bus.kafka.debug_contexts(),
            None,
            "empty is off"
        );
    }

    #[test]
    fn help_lists_every_flag_with_its_variable_and_the_config_file() {
        let err = service(Sources::fixed(["--help"], NO_ENV)).unwrap_err();
        let ConfigError::Command(help) = err else {
            panic!("expected help, got {err:?}")
        };
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        let text = help.to_string();
        for expected in [
            "--config <FILE>",
            "ORDERFLOW_CONFIG",
            "--kafka-brokers",
            "ORDERFLOW_KAFKA_BROKERS",
            "ORDERFLOW_LOG_FORMAT",
            "ORDERFLOW_KAFKA_DEBUG",
        ] {
            assert!(text.contains(expected), "help lacks {expected}:\n{text}");
        }
    }

    /// Settings of a shape the services do not have (yet): a secret, a switch, a list.
    #[derive(Debug, clap::Args)]
    struct Shapes {
        #[arg(
            long = "database-url",
            env = "SHAPES_DATABASE_URL",
            hide_env_values = true,
            default_value = "postgres://localhost/db"
        )]
        database_url: Secret,
        #[arg(long, env = "SHAPES_VERBOSE")]
        verbose: bool,
        #[arg(long, env = "SHAPES_RATES", value_delimiter = ',')]
        rates: Vec<u32>,
    }

    #[test]
    fn secrets_switches_and_lists_layer_like_any_setting() {
        let file = r#"
            database-url = "postgres://orderflow:hunter2@db/orderflow_order"
            verbose = true
            rates = [100, 200, 300]
        "#;
        let shapes: Shapes = load(
            "shapes",
            &Sources::fixed(["--config", "s.toml"], NO_ENV).with_file("s.toml", file),
        )
        .unwrap();
        assert_eq!(
            shapes.database_url.expose(),
            "postgres://orderflow:hunter2@db/orderflow_order"
        );
        assert!(!format!("{shapes:?}").contains("hunter2"), "{shapes:?}");
        assert!(shapes.verbose);
        assert_eq!(shapes.rates, [100, 200, 300]);

        let shapes: Shapes = load(
            "shapes",
            &Sources::fixed(
                ["--config", "s.toml"],
                [("SHAPES_VERBOSE", "false"), ("SHAPES_RATES", "5,6")],
            )
            .with_file("s.toml", file),
        )
        .unwrap();
        assert!(!shapes.verbose, "a false variable beats a true file value");
        assert_eq!(shapes.rates, [5, 6]);
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
