//! One plain librdkafka consumer-group member, run as its own process by the broker's group
//! tests so that it can be SIGKILLed: it joins `GROUP` on `TOPIC` (with `INSTANCE_ID`, if
//! given, as its static `group.instance.id`) and prints its whole assignment after every
//! rebalance, one line `assigned 0,1,2` (`assigned ` when it has none). It exits 3 with a
//! line `fatal <error>` when the broker fences it.
//!
//! Usage: `group_member BROKERS TOPIC GROUP [INSTANCE_ID]`

use std::io::Write as _;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};

struct Printer;

/// Exits 3 on a fatal error (a fenced static member is one), after saying so.
fn exit_if_fatal(error: &KafkaError) {
    if matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::FencedInstanceId)
    ) || matches!(error, KafkaError::MessageConsumptionFatal(_))
    {
        println!("fatal {error}");
        let _ = std::io::stdout().flush();
        std::process::exit(3);
    }
}

impl ClientContext for Printer {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("error {error}: {reason}");
        exit_if_fatal(&error);
    }
}

impl ConsumerContext for Printer {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            let mut ids: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            ids.sort();
            ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
        };
        let line = match rebalance {
            Rebalance::Assign(list) => format!("assigned {}", partitions(list)),
            Rebalance::Revoke(_) => "assigned ".to_owned(),
            Rebalance::Error(e) => format!("rebalance-error {e}"),
        };
        println!("{line}");
        let _ = std::io::stdout().flush();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, group, rest @ ..] = args.as_slice() else {
        eprintln!("usage: group_member BROKERS TOPIC GROUP [INSTANCE_ID]");
        std::process::exit(2);
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    if let Some(instance_id) = rest.first() {
        config.set("group.instance.id", instance_id);
    }
    let consumer: BaseConsumer<Printer> = config.create_with_context(Printer).expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    loop {
        if let Some(Err(error)) = consumer.poll(Duration::from_millis(200)) {
            exit_if_fatal(&error);
        }
    }
}
