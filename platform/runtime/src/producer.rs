//! The producer every service publishes with: librdkafka's producer with one thread that
//! serves its delivery reports, each report completing the future its send returned.
//!
//! It stands in for rust-rdkafka's `FutureProducer`, whose thread (`ThreadedProducer`) polls
//! in calls of 100 ms. rust-rdkafka's `BaseProducer::poll` hands librdkafka the time left
//! rounded down to whole milliseconds and then polls with 0 ms until its deadline passes, so
//! every call ends in a busy loop of up to a millisecond: an idle service spent 0.009 cores
//! in it (perf: `clock_gettime` under `Deadline::elapsed`), seven services 0.063 cores, half
//! of the idle system's cost. Here a call lasts a second and a few microseconds more, so its
//! single wait rounds down to the whole second and ends past the deadline (the kernel's
//! timer slack alone is 50 µs): no busy loop when idle, and at most one of up to a
//! millisecond a second under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::future_producer::{Delivery, OwnedDeliveryResult};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureRecord, Producer, ProducerContext,
};
use rdkafka::util::Timeout;

/// How long one call of the polling thread serves delivery reports (see the module's notes).
const POLL: Duration = Duration::from_micros(1_000_020);

/// How long a send waits before retrying while librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(100);

/// Completes each message's future with its delivery report.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<OwnedDeliveryResult>>;

    fn delivery(&self, result: &DeliveryResult<'_>, sender: Self::DeliveryOpaque) {
        let owned = match result {
            Ok(message) => Ok(Delivery {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp(),
            }),
            Err((error, message)) => Err((error.clone(), message.detach())),
        };
        // The sender may have stopped waiting (a timed-out send): nothing to tell.
        let _ = sender.send(owned);
    }
}

/// What a send's future yields: the delivery report, or `Canceled` if the producer was
/// destroyed before it came.
pub type DeliveryFuture = oneshot::Receiver<OwnedDeliveryResult>;

/// A producer whose sends return futures; cheap to clone. Its polling thread ends within a
/// second of the last clone being dropped, and the librdkafka producer is destroyed then.
#[derive(Clone)]
pub struct KafkaProducer {
    handle: Arc<Handle>,
}

struct Handle {
    producer: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl KafkaProducer {
    /// A producer configured by `config`, with its polling thread started.
    pub fn create(config: &ClientConfig) -> KafkaResult<KafkaProducer> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            // Linux keeps 15 bytes of a thread name.
            .name("producer-poll".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("the polling thread: {e}")))?;
        Ok(KafkaProducer {
            handle: Arc::new(Handle { producer, stop }),
        })
    }

    /// Queues `record`; the future completes with its delivery report. A refused record
    /// comes back with the error, to be sent again (as from rust-rdkafka's `FutureProducer`).
    #[allow(
        clippy::result_large_err,
        reason = "the refused record is handed back whole, to retry without copying it"
    )]
    pub fn send_result<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
    ) -> Result<DeliveryFuture, (KafkaError, FutureRecord<'a, K, P>)>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let (sender, receiver) = oneshot::channel();
        let base = BaseRecord {
            topic: record.topic,
            partition: record.partition,
            payload: record.payload,
            key: record.key,
            timestamp: record.timestamp,
            headers: record.headers,
            delivery_opaque: Box::new(sender),
        };
        match self.handle.producer.send(base) {
            Ok(()) => Ok(receiver),
            Err((error, base)) => Err((
                error,
                FutureRecord {
                    topic: base.topic,
                    partition: base.partition,
                    payload: base.payload,
                    key: base.key,
                    timestamp: base.timestamp,
                    headers: base.headers,
                },
            )),
        }
    }

    /// Sends `record` and waits for its delivery report, retrying while librdkafka's queue
    /// is full for at most `queue_timeout`.
    pub async fn send<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: impl Into<Timeout>,
    ) -> OwnedDeliveryResult
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let started = Instant::now();
        let queue_timeout = queue_timeout.into();
        loop {
            match self.send_result(record) {
                Ok(delivery) => {
                    // This send holds the producer, so librdkafka reports on the message
                    // (delivered, failed or purged) before the producer can go.
                    return delivery.await.expect("a producer reports on every message");
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if match queue_timeout {
                        Timeout::Never => true,
                        Timeout::After(limit) => started.elapsed() < limit,
                    } =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, back)) => {
                    return Err((error, owned(&back)));
                }
            }
        }
    }

    /// librdkafka's fatal error, if it hit one (an idempotent producer then sends no more).
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.handle.producer.client().fatal_error()
    }
}

/// The message a refused record would have been, for the caller's error.
fn owned<K, P>(record: &FutureRecord<'_, K, P>) -> rdkafka::message::OwnedMessage
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    rdkafka::message::OwnedMessage::new(
        record.payload.map(|p| p.to_bytes().to_vec()),
        record.key.map(|k| k.to_bytes().to_vec()),
        record.topic.to_owned(),
        record.timestamp.map_or(
            rdkafka::Timestamp::NotAvailable,
            rdkafka::Timestamp::CreateTime,
        ),
        record.partition.unwrap_or(-1),
        -1,
        record.headers.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process with the polling thread's name.
    fn polling_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("this process's threads")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "producer-poll")
            .count()
    }

    /// Waits up to `within` for `count` polling threads; returns how many there are.
    fn polling_threads_become(count: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while polling_threads() != count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        polling_threads()
    }

    #[test]
    fn the_polling_thread_ends_after_the_last_clone_is_dropped() {
        let before = polling_threads();
        // librdkafka connects lazily: no broker is needed to create or drop a producer.
        let producer =
            KafkaProducer::create(ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9"))
                .expect("a producer");
        let clone = producer.clone();
        // A thread takes its name once it runs.
        let started = polling_threads_become(before + 1, Duration::from_secs(2));
        assert_eq!(started, before + 1);
        drop(producer);
        std::thread::sleep(POLL + Duration::from_millis(200));
        assert_eq!(polling_threads(), before + 1, "a clone still holds it");
        drop(clone);
        let left = polling_threads_become(before, 2 * POLL + Duration::from_secs(1));
        assert_eq!(left, before, "the polling thread outlived its producer");
    }
}
