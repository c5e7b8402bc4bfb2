//! What every event-driven service starts with: a registry codec, a producer, its topics
//! created, health, an outbox relay and consumer loops, all stopped by one shutdown token.

use std::sync::Arc;

use orderflow_events::{EventCodec, Topics};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;

use crate::config::CommonArgs;
use crate::consumer::{ConsumerLoop, Handler, dead_letter_topic};
use crate::health::Health;
use crate::kafka;
use crate::outbox::Relay;

/// The shared machinery of one service instance.
#[derive(Clone)]
pub struct ServiceKit {
    pub name: &'static str,
    pub pool: PgPool,
    pub codec: Arc<EventCodec>,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub health: Health,
    pub common: CommonArgs,
}

impl ServiceKit {
    /// Connects to the registry and broker and makes sure the event topics exist.
    pub async fn start(
        name: &'static str,
        common: &CommonArgs,
        pool: PgPool,
    ) -> anyhow::Result<Self> {
        let topics = common.kafka.topics();
        let codec = Arc::new(EventCodec::new(&common.registry_url)?);
        let producer = kafka::producer(&common.kafka)?;
        let names: Vec<String> = topics.all().iter().map(|t| t.to_string()).collect();
        kafka::ensure_topics(&common.kafka, &names).await?;
        Ok(ServiceKit {
            name,
            pool,
            codec,
            producer,
            topics,
            health: Health::new(),
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
        )
    }

    /// A consumer loop over `topics`, in this service's group, with its dead-letter topics
    /// created up front.
    pub async fn consumer<H: Handler>(
        &self,
        topics: &[&str],
        handler: H,
    ) -> anyhow::Result<ConsumerLoop<H>> {
        let dlq: Vec<String> = topics
            .iter()
            .map(|t| dead_letter_topic(t, self.name))
            .collect();
        kafka::ensure_topics(&self.common.kafka, &dlq).await?;
        let group = self.common.kafka.group(self.name);
        let consumer = kafka::consumer(&self.common.kafka, &group)?;
        consumer.subscribe(topics)?;
        Ok(ConsumerLoop {
            name: self.name.to_owned(),
            group,
            consumer,
            producer: self.producer.clone(),
            codec: self.codec.clone(),
            pool: self.pool.clone(),
            topics: self.topics.clone(),
            handler,
            health: self.health.clone(),
        })
    }
}
