//! The customer directory's door for operators (`orderflow.v1.CustomerService`): a
//! customer's standing, published on the compacted `customers` topic, keyed by customer id.
//! The topic is the directory: there is no other copy to keep in step with it, so the entry
//! is produced directly (acks from every in-sync replica) and the call answers once the
//! broker has it. The order service follows the topic and refuses a blocked customer's
//! orders; any other system with write access to the topic (a CRM) may publish entries too.

use std::sync::Arc;
use std::time::Duration;

use orderflow_domain::CustomerEntry;
use orderflow_events::{self as ev, Event, EventCodec, Topics};
use orderflow_platform::KafkaArgs;
use orderflow_platform::kafka::{self, Producer};
use orderflow_platform::trace::{self, TraceParent};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::customer_service_server::CustomerService;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status};

use crate::access::Access;
use crate::error::GatewayError;

/// How long a call waits for the broker to acknowledge its entry. The entry may still be
/// delivered after the call gave up; a retry is safe, as the order service keeps the newest
/// entry of each customer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes directory entries.
pub struct CustomerApi {
    producer: Producer,
    codec: Arc<EventCodec>,
    kafka: KafkaArgs,
    topics: Topics,
    /// Set once the directory topic is known to exist (created, compacted, if it was not).
    topic_ready: OnceCell<()>,
}

impl CustomerApi {
    pub fn new(kafka: &KafkaArgs, codec: Arc<EventCodec>) -> anyhow::Result<Self> {
        Ok(CustomerApi {
            producer: Producer::new(kafka)?,
            codec,
            kafka: kafka.clone(),
            topics: kafka.topics(),
            topic_ready: OnceCell::new(),
        })
    }

    /// Produces `entry` to the directory topic and waits for the broker's acknowledgement.
    async fn publish(&self, entry: &CustomerEntry) -> Result<(), GatewayError> {
        self.topic_ready
            .get_or_try_init(|| async {
                kafka::ensure_topics(&self.kafka, std::slice::from_ref(&self.topics.customers))
                    .await
            })
            .await
            .map_err(|e| GatewayError::DirectoryUnavailable(format!("{e:#}")))?;
        let event = Event::CustomerStatusChanged(ev::CustomerStatusChanged::from(entry));
        let payload =
            self.codec
                .encode(&self.topics, &event)
                .await
                .map_err(|e| match e.is_transient() {
                    true => GatewayError::DirectoryUnavailable(e.to_string()),
                    false => GatewayError::DirectoryRefused(e.to_string()),
                })?;
        // The caller's trace goes on to the order service's handling of the entry.
        let traceparent = TraceParent::current_or_new().header();
        let record = FutureRecord::to(&self.topics.customers)
            .key(event.key())
            .payload(&payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: trace::HEADER,
                value: Some(traceparent.as_str()),
            }));
        let producer = self.producer.get();
        match tokio::time::timeout(DELIVERY_TIMEOUT, producer.send(record, DELIVERY_TIMEOUT)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err((KafkaError::MessageProduction(code), _))) if is_refusal(code) => {
                return Err(GatewayError::DirectoryRefused(code.to_string()));
            }
            Ok(Err((error, _))) => {
                self.producer.renew();
                return Err(GatewayError::DirectoryUnavailable(error.to_string()));
            }
            Err(_) => {
                return Err(GatewayError::DirectoryUnavailable(format!(
                    "no acknowledgement within {DELIVERY_TIMEOUT:?}"
                )));
            }
        }
        tracing::info!(customer_id = %entry.customer_id, standing = ?entry.standing, "customer standing published");
        Ok(())
    }
}

/// Whether the broker refused the entry for good (asking again cannot help).
fn is_refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidRecord
    )
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    async fn set_customer_status(
        &self,
        request: Request<pb::SetCustomerStatusRequest>,
    ) -> Result<Response<pb::CustomerStatusChange>, Status> {
        Access::of(&request)?.require_operator("SetCustomerStatus")?;
        let entry = CustomerEntry::try_from(request.get_ref()).map_err(GatewayError::from)?;
        self.publish(&entry).await?;
        Ok(Response::new((&entry).into()))
    }
}
