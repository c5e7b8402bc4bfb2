//! What every event-driven service starts with: a registry codec, a producer, its topics
//! created, health, metrics, an outbox relay, consumer loops, the retention purge and, where
//! the server's autovacuum is off, the vacuum of its own tables, all stopped by one shutdown
//! token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use orderflow_events::{EventCodec, Topics};
use rdkafka::consumer::Consumer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::CommonArgs;
use crate::consumer::{ConsumerLoop, Handler, dead_letter_topic};
use crate::health::Health;
use crate::kafka;
use crate::metrics::{Metrics, PipelineMetrics};
use crate::outbox::{OutboxSignal, Published, Relay};
use crate::{progress, purge, vacuum};

/// How long the API server may drain its connections after shutdown before they are closed.
const API_DRAIN: Duration = Duration::from_secs(5);

/// How long the relay may publish what is left after shutdown, within the process's grace.
const RELAY_DRAIN: Duration = Duration::from_secs(6);

/// How long the consumer loop (and the purge) may finish after shutdown.
const CONSUMER_DRAIN: Duration = Duration::from_secs(4);

/// The shared machinery of one service instance.
#[derive(Clone)]
pub struct ServiceKit {
    pub name: &'static str,
    pub pool: PgPool,
    pub codec: Arc<EventCodec>,
    pub producer: kafka::Producer,
    pub topics: Topics,
    pub health: Health,
    /// This process's registry, served at `/metrics`; a service adds its own metrics to it.
    pub metrics: Metrics,
    pub pipeline: PipelineMetrics,
    /// Wakes the relay after a commit that wrote to the outbox; give it to every writer.
    pub outbox_signal: OutboxSignal,
    /// The settings, with this instance's id resolved.
    pub common: CommonArgs,
}

impl ServiceKit {
    /// Checks the settings, connects to the registry and broker and makes sure the event
    /// topics exist. `admin` is the address of the instance's admin endpoint: an instance
    /// without a configured id is named after its host and that port.
    pub async fn start(
        name: &'static str,
        common: &CommonArgs,
        pool: PgPool,
        admin: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        common.retention.validate()?;
        let mut common = common.clone();
        common.bus.kafka.instance_id = common.bus.kafka.instance_id_or_derived(admin);
        tracing::info!(service = name, instance = %common.bus.kafka.instance_id, "instance id");
        let common = &common;
        let topics = common.bus.kafka.topics();
        let codec = Arc::new(common.bus.codec()?);
        kafka::check_credentials(&common.bus.kafka).await?;
        let producer = kafka::Producer::new(&common.bus.kafka)?;
        let names: Vec<String> = topics.all().iter().map(|t| t.to_string()).collect();
        kafka::ensure_topics(&common.bus.kafka, &names).await?;
        let metrics = Metrics::new();
        let pipeline = PipelineMetrics::register(&metrics);
        Ok(ServiceKit {
            name,
            pool,
            codec,
            producer,
            topics,
            health: Health::new(),
            metrics,
            pipeline,
            outbox_signal: OutboxSignal::default(),
            common: common.clone(),
        })
    }

    /// The relay that publishes this service's outbox.
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.pool.clone(),
            self.producer.clone(),
            self.codec.clone(),
            self.topics.clone(),
            self.health.clone(),
            self.pipeline.relay(&self.topics.all()),
            self.outbox_signal.clone(),
        )
        .acknowledged_rows(Published::for_retention(self.common.retention.outbox))
    }

    /// A consumer loop over `topics`, in this service's group, with its dead-letter topics
    /// created up front.
    pub async fn consumer<H: Handler>(
        &self,
        topics: &[String],
        handler: H,
    ) -> anyhow::Result<ConsumerLoop<H>> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let topics = topics.as_slice();
        let dlq: Vec<String> = topics
            .iter()
            .map(|t| dead_letter_topic(t, self.name))
            .collect();
        kafka::ensure_dead_letter_topics(&self.common.bus.kafka, &dlq).await?;
        let group = self.common.bus.kafka.group(self.name);
        let consumer = kafka::consumer(&self.common.bus.kafka, &group)?;
        consumer.subscribe(topics)?;
        Ok(ConsumerLoop {
            name: self.name.to_owned(),
            group,
            consumer: Arc::new(consumer),
            producer: self.producer.clone(),
            codec: self.codec.clone(),
            pool: self.pool.clone(),
            topics: self.topics.clone(),
            handler,
            health: self.health.clone(),
            metrics: self.pipeline.consumer(self.name, topics),
            outbox_signal: self.outbox_signal.clone(),
            max_batch: self.common.bus.kafka.consumer_batch.max(1),
            subscribed: topics.iter().map(|t| t.to_string()).collect(),
        })
    }

    /// Runs the service until `shutdown`: its consumer loop, its outbox relay, the retention
    /// purge, the self-vacuum, its admin endpoint (`/health`, `/metrics`) and, when it has
    /// one, its API server (`api`, which must stop on `shutdown`).
    /// Work stops in order: no new requests or messages, then the message in flight is
    /// finished and its offset committed, then the relay publishes what was written, then
    /// the pool closes.
    pub async fn run<H: Handler>(
        self,
        consumer: ConsumerLoop<H>,
        admin: TcpListener,
        api: Option<std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let stop_relay = CancellationToken::new();
        let relay = tokio::spawn(self.relay().run(stop_relay.clone()));
        let watch = progress::Watch {
            kafka: self.common.bus.kafka.clone(),
            group: consumer.group.clone(),
            topics: consumer.subscribed.clone(),
            threshold: Duration::from_secs(self.common.progress.stall_threshold_secs),
            interval: Duration::from_secs(self.common.progress.progress_interval_secs.max(1)),
        };
        let watching = tokio::spawn(progress::watch(
            watch,
            self.health.clone(),
            progress::ProgressMetrics::register(&self.metrics),
            shutdown.clone(),
        ));
        let consuming = tokio::spawn(consumer.run(shutdown.clone()));
        let purging = tokio::spawn(purge::run(
            self.pool.clone(),
            self.common.retention.clone(),
            self.pipeline.purge(),
            shutdown.clone(),
        ));
        let vacuuming = tokio::spawn(vacuum::run(
            self.pool.clone(),
            self.common.self_vacuum,
            vacuum::VacuumMetrics::register(&self.metrics),
            shutdown.clone(),
        ));
        let health = self.health.clone();
        let metrics = self.metrics.router();
        let admin_server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { health.serve(admin, metrics, shutdown).await }
        });
        tracing::info!(service = self.name, "ready");
        let api_result = match api {
            Some(api) => {
                // The API server drains gracefully on shutdown, but a connection that never
                // closes must not hold the process: hyper since 1.5.1 can wait forever on a
                // connection that sent nothing yet (hyper issue 4170), such as the gateway's
                // reachability probe; two SIGTERMed order instances overran their 20 s grace
                // that way in the scale tests. After API_DRAIN the remaining connections are
                // closed, and clients retry on another instance.
                let overdue = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(API_DRAIN).await;
                };
                tokio::select! {
                    result = api => result,
                    _ = overdue => {
                        tracing::warn!(drain = ?API_DRAIN, "API connections still open after the drain period: closing them");
                        Ok(())
                    }
                }
            }
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        };
        tracing::info!(service = self.name, "shutdown: api stopped");
        // The consumer finishes its batch and commits for a bounded time: an aborted batch is
        // uncommitted, so it is delivered again (to another instance) and applied once. Seen
        // in the scale tests: a SIGTERMed payment instance's consumer outlasted the grace.
        let mut consuming = consuming;
        if tokio::time::timeout(CONSUMER_DRAIN, &mut consuming)
            .await
            .is_err()
        {
            consuming.abort();
            tracing::warn!(service = self.name, drain = ?CONSUMER_DRAIN, "consumer still busy at shutdown: its uncommitted messages go to the next owner");
        }
        let mut purging = purging;
        if tokio::time::timeout(CONSUMER_DRAIN, &mut purging)
            .await
            .is_err()
        {
            purging.abort();
        }
        tracing::info!(service = self.name, "shutdown: consumer and purge stopped");
        // Watching progress and vacuuming are not work in flight: stop them rather than wait.
        // A VACUUM in flight runs on a connection outside the pool, so the pool's close does
        // not wait for it either.
        watching.abort();
        vacuuming.abort();
        stop_relay.cancel();
        // The relay publishes what is left, for a bounded time: a row it has not marked
        // published stays in the outbox, and another instance's relay (or this one's next
        // start) publishes it; consumers drop the copy if it was delivered already.
        let mut relay = relay;
        if tokio::time::timeout(RELAY_DRAIN, &mut relay).await.is_err() {
            relay.abort();
            tracing::warn!(service = self.name, drain = ?RELAY_DRAIN, "outbox relay still publishing at shutdown: leaving the rest to the next relay");
        }
        tracing::info!(service = self.name, "shutdown: relay stopped");
        // The admin endpoint drains like the API (and can hang the same way): bounded too.
        let mut admin_server = admin_server;
        if tokio::time::timeout(API_DRAIN, &mut admin_server)
            .await
            .is_err()
        {
            admin_server.abort();
        }
        self.pool.close().await;
        tracing::info!(service = self.name, "stopped");
        api_result
    }
}
