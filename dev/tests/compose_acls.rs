//! The Kafka ACLs compose grants (`compose/kafka/init.sh`) against what the code does: each
//! service may read exactly the topics it subscribes to (`<service>::input_topics`), in the
//! group it joins, write exactly the topics of the events it publishes and the dead-letter
//! topics of its own inputs; the history service also reads every consumer's dead-letter
//! topics of orders' events in a group of its own; the gateway reads the status topic and
//! publishes the customer directory. A
//! service that starts
//! consuming a new topic fails here until its ACL is added, not in a deployment.

use std::collections::BTreeSet;

use orderflow_events::{EventKind, Topics};
use orderflow_platform::consumer::dead_letter_topic;

/// The text of `compose/kafka/init.sh`.
fn script() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/kafka/init.sh"),
    )
    .expect("compose/kafka/init.sh")
}

/// The grants of `compose/kafka/init.sh`: (verb, principal, resource) for every `produces`,
/// `consumes` and `allow … --group|--topic` line.
fn grants() -> BTreeSet<(String, String, String)> {
    let script = script();
    let mut grants = BTreeSet::new();
    // Top-level lines only: the indented ones are the helpers' bodies ("$1", "$2").
    for line in script
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["produces", principal, topic] | ["consumes", principal, topic] => {
                grants.insert((words[0].into(), (*principal).into(), (*topic).into()));
            }
            ["allow", principal, "\"Read", "Describe\"", kind, resource] => {
                let verb = match *kind {
                    "--group" => "group",
                    "--topic" => "reads",
                    other => panic!("unexpected resource flag {other} in: {line}"),
                };
                grants.insert((verb.into(), (*principal).into(), (*resource).into()));
            }
            _ => {}
        }
    }
    grants
}

/// The events each service publishes (its outbox's kinds), as the seeds define the flow.
fn published(service: &str) -> &'static [EventKind] {
    match service {
        "order" => &[EventKind::OrderCreated, EventKind::OrderStatusChanged],
        "payment" => &[EventKind::PaymentProcessed, EventKind::PaymentRefunded],
        "inventory" => &[EventKind::InventoryUpdated, EventKind::CatalogueItemChanged],
        "history" | "analytics" | "notifications" => &[],
        other => panic!("no such service {other}"),
    }
}

#[test]
fn every_service_is_granted_exactly_what_it_consumes_and_publishes() {
    let topics = Topics::with_prefix("");
    let inputs = [
        ("order", orderflow_order::input_topics(&topics)),
        ("payment", orderflow_payment::input_topics(&topics)),
        ("inventory", orderflow_inventory::input_topics(&topics)),
        ("history", orderflow_history::input_topics(&topics)),
        ("analytics", orderflow_analytics::input_topics(&topics)),
        (
            "notifications",
            orderflow_notifications::input_topics(&topics),
        ),
    ];
    let mut expected = BTreeSet::new();
    for (service, inputs) in &inputs {
        for topic in inputs {
            expected.insert(("consumes".to_owned(), service.to_string(), topic.clone()));
        }
        for kind in published(service) {
            let topic = topics.for_kind(*kind).to_owned();
            expected.insert(("produces".to_owned(), service.to_string(), topic));
        }
        // The group a service joins is its name, without a prefix or suffix.
        let kafka = default_kafka();
        expected.insert((
            "group".to_owned(),
            service.to_string(),
            kafka.group(service),
        ));
    }
    // The history service follows every consumer's dead letters of orders' events, its own
    // among them.
    let kafka = default_kafka();
    for (service, inputs) in &inputs {
        for topic in inputs
            .iter()
            .filter(|t| topics.order_flow().contains(&t.as_str()))
        {
            let dlq = dead_letter_topic(topic, service);
            expected.insert(("reads".to_owned(), "history".to_owned(), dlq));
        }
    }
    expected.insert((
        "group".to_owned(),
        "history".to_owned(),
        kafka.group(orderflow_history::dead_letters::GROUP),
    ));
    expected.insert((
        "reads".to_owned(),
        "gateway".to_owned(),
        topics.order_status.clone(),
    ));
    // Operators' SetCustomerStatus: the gateway publishes the customer directory.
    expected.insert((
        "produces".to_owned(),
        "gateway".to_owned(),
        topics.for_kind(EventKind::CustomerStatusChanged).to_owned(),
    ));
    assert_eq!(grants(), expected);
}

#[test]
fn the_script_names_dead_letter_topics_as_the_consumer_loop_does() {
    let script = script();
    // `consumes SERVICE TOPIC` grants and creates "$2.$1.dlq": TOPIC.SERVICE.dlq.
    assert!(script.contains("\"$2.$1.dlq\""), "{script}");
    assert_eq!(dead_letter_topic("TOPIC", "SERVICE"), "TOPIC.SERVICE.dlq");
}

/// Kafka settings at their defaults (no topic prefix, no group suffix), as compose runs.
fn default_kafka() -> orderflow_platform::KafkaArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: orderflow_platform::KafkaArgs,
    }
    Cli::parse_from(["compose"]).kafka
}
