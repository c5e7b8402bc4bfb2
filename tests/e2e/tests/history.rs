//! The history service: every order's whole story from the log, through the gateway's
//! GetOrderTimeline, with dead letters and redrives where they happened. The history service
//! is started beside a running system; no other component knows it is there.

use std::time::Duration;

use orderflow_e2e::scenario::{place, seed_orders, set_stock};
use orderflow_e2e::{Component, System, order_request, wait_for, watch_to_end};
use orderflow_events::{self as ev, Event, EventKind};
use orderflow_platform::dlq::{self, Selection};
use orderflow_proto::internal::v1::history_store_client::HistoryStoreClient;
use orderflow_proto::v1 as pb;
use rdkafka::producer::FutureRecord;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

/// Each entry as `EventType by producer: summary`.
fn lines(timeline: &pb::OrderTimeline) -> Vec<String> {
    timeline
        .entries
        .iter()
        .map(|e| format!("{} by {}: {}", e.event_type, e.producer, e.summary))
        .collect()
}

/// Waits until the order's timeline, as its customer reads it through the gateway, holds
/// `count` entries; returns it.
async fn timeline_of(
    system: &System,
    customer: &str,
    order_id: &str,
    count: usize,
) -> pb::OrderTimeline {
    let mut orders = system.orders(customer).await;
    wait_for(
        &format!("{count} entries in {order_id}'s timeline"),
        WAIT,
        || {
            let mut orders = orders.clone();
            async move {
                let timeline = orders
                    .get_order_timeline(pb::GetOrderTimelineRequest {
                        order_id: order_id.into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                (timeline.entries.len() >= count).then_some(timeline)
            }
        },
    )
    .await;
    orders
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: order_id.into(),
        })
        .await
        .expect("GetOrderTimeline")
        .into_inner()
}

/// Asserts that `wanted` appear in `lines` in this order (others may come between).
fn in_order(lines: &[String], wanted: &[&str]) {
    let mut at = 0;
    for want in wanted {
        match lines[at..].iter().position(|l| l.starts_with(want)) {
            Some(i) => at += i + 1,
            None => panic!("{want:?} is not after the entries before it in {lines:#?}"),
        }
    }
}

/// The seed scenario's three orders, each told whole: who did what, in causal order, and
/// nothing twice; every entry says where it is in the log and how long after the previous
/// it came. Another customer cannot read the story, and bad ids are refused by name.
#[tokio::test]
async fn each_order_s_story_is_told_whole_in_the_order_it_happened() {
    let mut system = System::start().await;
    system.start_component(Component::History).await;
    let placed = seed_orders(&system, "alice", "story-sku").await;
    let mut orders = system.orders("alice").await;

    let completed = timeline_of(&system, "alice", &placed[0], 6).await;
    let lines_completed = lines(&completed);
    assert_eq!(lines_completed.len(), 6, "{lines_completed:#?}");
    in_order(
        &lines_completed,
        &[
            "OrderCreated by order: customer alice, 1 line, 3 units, total 7.50 EUR",
            "PaymentProcessed by payment: PAID 7.50 EUR",
            "OrderStatusChanged by order: status PAID (v2)",
            "InventoryUpdated by inventory: CONFIRMED, 3 units deducted",
            "OrderStatusChanged by order: status COMPLETED (v3)",
        ],
    );
    assert!(
        lines_completed.contains(&"OrderStatusChanged by order: status PENDING (v1)".to_owned())
    );
    let topics = system.kafka.topics();
    for entry in &completed.entries {
        assert!(
            topics.order_flow().contains(&entry.topic.as_str()),
            "{entry:?}"
        );
        assert!(
            !entry.event_id.is_empty() && entry.trace_id.len() == 32,
            "{entry:?}"
        );
        assert!(entry.redriven_from.is_empty());
    }
    // One trace from PlaceOrder to COMPLETED.
    let traces: std::collections::HashSet<&str> = completed
        .entries
        .iter()
        .map(|e| e.trace_id.as_str())
        .collect();
    assert_eq!(traces.len(), 1, "{completed:#?}");
    let millis = |e: &pb::TimelineEntry| {
        let t = e.occurred_at.expect("occurred_at");
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    };
    for pair in completed.entries.windows(2) {
        assert_eq!(
            pair[1].since_previous_ms,
            millis(&pair[1]) - millis(&pair[0])
        );
        assert!(pair[1].since_previous_ms >= 0);
    }

    let failed = lines(&timeline_of(&system, "alice", &placed[1], 4).await);
    assert_eq!(failed.len(), 4, "{failed:#?}");
    in_order(
        &failed,
        &[
            "OrderCreated by order",
            "PaymentProcessed by payment: FAILED: ",
            "OrderStatusChanged by order: status FAILED (v2)",
        ],
    );

    let refunded = lines(&timeline_of(&system, "alice", &placed[2], 8).await);
    assert_eq!(refunded.len(), 8, "{refunded:#?}");
    in_order(
        &refunded,
        &[
            "OrderCreated by order",
            "PaymentProcessed by payment: PAID 20.00 EUR",
            "InventoryUpdated by inventory: OUT_OF_STOCK: story-sku (7 of 8)",
            "PaymentRefunded by payment: REFUNDED 20.00 EUR",
            "OrderStatusChanged by order: status REFUNDED (v4)",
        ],
    );

    // Only the order's customer reads it, as with GetOrder.
    let someone_else = system
        .orders("mallory")
        .await
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: placed[0].clone(),
        })
        .await
        .expect_err("another customer's order");
    assert_eq!(someone_else.code(), Code::NotFound);
    let unknown_id = uuid::Uuid::now_v7().to_string();
    let unknown = orders
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: unknown_id.clone(),
        })
        .await
        .expect_err("an unknown order");
    assert_eq!(unknown.code(), Code::NotFound);
    // Nothing tells another customer's order from one that does not exist.
    assert_eq!(
        someone_else.message().replace(&placed[0], "ID"),
        unknown.message().replace(&unknown_id, "ID")
    );
    let bad = orders
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: "not-an-id".into(),
        })
        .await
        .expect_err("a malformed id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("order_id"), "{}", bad.message());
}

/// The history service's own API, as the gateway calls it (mutual TLS).
async fn history(system: &System) -> HistoryStoreClient<Channel> {
    let (cert, key) = system.credentials.tls.identity("gateway");
    let tls = orderflow_tls::ClientTls {
        ca: system.credentials.tls.ca(),
        identity: Some((cert, key)),
    }
    .config()
    .expect("client TLS");
    let channel = Channel::from_shared(system.history_url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connect to the history service");
    HistoryStoreClient::new(channel)
}

/// An event written with a schema the registry has lost is dead-lettered by each consumer of
/// its topic (the history service among them); once the schema is back, payment's dead letter
/// is redriven. The story shows both dead letters when they happened, then the event where
/// the redrive put it back (with the dead letter it came from), then what it caused.
#[tokio::test]
async fn dead_letters_and_redrives_appear_where_they_happened() {
    let mut system = System::start().await;
    system.start_component(Component::History).await;
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(system.credentials.tls.ca()).unwrap())
                .unwrap(),
        )
        .build()
        .unwrap();
    let registry = system.registry_url.clone();
    let admin = |request| system.credentials.as_registry_admin(request);

    // A writer schema the registry does not know (registered to learn its id, then deleted
    // for good), as in the poison suite's redrive test.
    let mut schema: serde_json::Value =
        serde_json::from_str(EventKind::OrderCreated.schema_text()).unwrap();
    schema["aliases"] = serde_json::json!([format!(
        "orderflow.events.Story{}",
        uuid::Uuid::new_v4().simple()
    )]);
    let subject = format!("{}story-probe", system.kafka.topic_prefix);
    let register = || async {
        let response = admin(http.post(format!("{registry}/subjects/{subject}/versions")))
            .json(&serde_json::json!({ "schema": schema.to_string() }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "register: {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await.unwrap();
        u32::try_from(body["id"].as_i64().unwrap()).unwrap()
    };
    let id = register().await;
    for permanent in [false, true] {
        let response = admin(http.delete(format!(
            "{registry}/subjects/{subject}/versions/1?permanent={permanent}"
        )))
        .send()
        .await
        .unwrap();
        assert!(
            response.status().is_success(),
            "delete: {}",
            response.status()
        );
    }

    let order_id = uuid::Uuid::now_v7().to_string();
    let event = Event::OrderCreated(ev::OrderCreated {
        event_id: ev::new_event_id(),
        order_id: order_id.clone(),
        occurred_at: ev::now_millis(),
        customer_id: "late-schema".into(),
        items: vec![ev::OrderLine {
            sku: "story-sku".into(),
            quantity: 1,
            unit_price: ev::Money {
                amount_minor: 500,
                currency: "EUR".into(),
            },
        }],
        total: ev::Money {
            amount_minor: 500,
            currency: "EUR".into(),
        },
        payment_method: "pm_card_visa".into(),
    });
    let topics = system.kafka.topics();
    let producer = orderflow_platform::kafka::producer(&system.kafka).expect("producer");
    let payload = ev::encode_plain(id, &event).unwrap();
    producer
        .send(
            FutureRecord::to(&topics.orders)
                .key(&order_id)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .expect("produce");

    let mut history = history(&system).await;
    let read = |history: &mut HistoryStoreClient<Channel>| {
        let mut history = history.clone();
        let order_id = order_id.clone();
        async move {
            history
                .get_timeline(pb::GetOrderTimelineRequest { order_id })
                .await
                .expect("GetTimeline")
                .into_inner()
        }
    };
    let dead = wait_for("both dead letters in the story", WAIT, || {
        let read = read(&mut history);
        async move {
            let t = read.await;
            (t.entries.len() >= 2).then_some(t)
        }
    })
    .await;
    let dead_lines = lines(&dead);
    assert_eq!(dead_lines.len(), 2, "{dead_lines:#?}");
    for group in ["payment", "history"] {
        let prefix = format!(
            "DeadLettered by {group}: {group} gave up on {}/",
            topics.orders
        );
        assert!(
            dead_lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains("unknown_schema")),
            "no dead letter by {group} in {dead_lines:#?}"
        );
    }

    // The fix, then the redrive of payment's dead letter.
    assert_eq!(register().await, id);
    let dlq_topic = format!("{}.payment.dlq", topics.orders);
    let redriven = dlq::redrive(&system.kafka, &dlq_topic, &Selection::All)
        .await
        .expect("redrive");
    assert_eq!(redriven.len(), 1);

    let told = wait_for(
        "the redriven event and the charge in the story",
        WAIT,
        || {
            let read = read(&mut history);
            async move {
                let t = read.await;
                lines(&t)
                    .iter()
                    .any(|l| l.starts_with("PaymentProcessed by payment: PAID"))
                    .then_some(t)
            }
        },
    )
    .await;
    let told_lines = lines(&told);
    in_order(
        &told_lines,
        &[
            "DeadLettered by",
            "DeadLettered by",
            "OrderCreated by order: customer late-schema",
            "PaymentProcessed by payment: PAID 5.00 EUR",
        ],
    );
    let put_back = told
        .entries
        .iter()
        .find(|e| e.event_type == "OrderCreated")
        .expect("the redriven event");
    assert_eq!(put_back.redriven_from, redriven[0].from);
    assert_eq!(put_back.event_id, event.event_id());
    assert_eq!(put_back.offset, redriven[0].offset);
}

/// Every timeline row, in log order.
async fn rows(pool: &sqlx::PgPool) -> Vec<orderflow_history::store::Entry> {
    sqlx::query_as(
        r#"SELECT topic, "partition", "offset", order_id, event_type, event_id, producer,
                  summary, occurred_at, logged_at, trace_id, redriven_from
           FROM order_timeline ORDER BY topic, "partition", "offset""#,
    )
    .fetch_all(pool)
    .await
    .expect("the timeline rows")
}

/// Group `group`'s committed offset on every partition of `topics`, and each partition's
/// high watermark.
async fn committed_and_ends(
    kafka: &orderflow_platform::KafkaArgs,
    group: &str,
    topics: &[String],
) -> Vec<(String, i32, i64, i64)> {
    let (kafka, name, topics) = (kafka.clone(), group.to_owned(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        orderflow_platform::progress::read(&kafka, &name, &topics, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .expect("the group's offsets")
    .into_iter()
    .map(|p| {
        let committed = p
            .committed
            .unwrap_or_else(|| panic!("{group} has no offset on {}/{}", p.topic, p.partition));
        (p.topic, p.partition, committed, p.high)
    })
    .collect()
}

/// The timelines rebuilt from the log, from the beginning and then from a time, equal the
/// live ones row for row (dead letters included, and a message that is no event in none);
/// a rebuild is refused while the service runs; afterwards the service's groups continue
/// where the rebuild stopped.
#[tokio::test]
async fn timelines_rebuilt_from_the_log_equal_the_live_ones_row_for_row() {
    use orderflow_platform::replay::Start;
    let mut system = System::start().await;
    system.start_component(Component::History).await;
    set_stock(&system, "replay-sku", 10).await;
    let mut orders = system.orders("alice").await;
    let mut placed = Vec::new();
    for (quantity, method) in [
        (3, "pm_card_visa"),
        (2, "pm_card_chargeDeclined"),
        (8, "pm_card_visa"),
    ] {
        let order = place(
            &system,
            order_request("alice", "replay-sku", quantity, method),
        )
        .await;
        watch_to_end(&mut orders, &order.order_id, order.version).await;
        placed.push(order);
    }
    // Bytes that are no event, about the first order: payment and history dead-letter them.
    let topics = system.kafka.topics();
    let producer = orderflow_platform::kafka::producer(&system.kafka).expect("producer");
    producer
        .send(
            FutureRecord::to(&topics.orders)
                .key(&placed[0].order_id)
                .payload(b"not avro at all".as_slice()),
            Duration::from_secs(30),
        )
        .await
        .expect("produce");

    let pool = sqlx::PgPool::connect(system.history_db.url())
        .await
        .unwrap();
    // 6 + 4 + 8 events and 2 dead letters.
    wait_for("every live row", WAIT, || async {
        (rows(&pool).await.len() == 20).then_some(())
    })
    .await;
    let live = rows(&pool).await;
    let codec = system.credentials.codec(&system.registry_url);
    let kafka = system.kafka.clone();

    let refused =
        orderflow_history::replay::rebuild(&kafka, &codec, &pool, Start::Beginning, |_, _| {})
            .await
            .expect_err("a rebuild while the service runs");
    let refused = format!("{refused:#}");
    assert!(
        refused
            .to_string()
            .contains("stop every history instance first"),
        "{refused}"
    );
    assert_eq!(rows(&pool).await, live, "a refused rebuild changes nothing");

    system.stop_component(Component::History).await;
    let group = kafka.group("history");
    let dead_group = kafka.group(orderflow_history::dead_letters::GROUP);
    // A stopped static member counts until its session (10 s) times out.
    for group in [&group, &dead_group] {
        wait_for(&format!("{group} to be empty"), WAIT, || async {
            (orderflow_platform::replay::group_members(&kafka, group)
                .await
                .ok()?
                == 0)
                .then_some(())
        })
        .await;
    }
    let mut progress = Vec::new();
    let all = orderflow_history::replay::rebuild(
        &kafka,
        &codec,
        &pool,
        Start::Beginning,
        |done, total| progress.push((done, total)),
    )
    .await
    .expect("rebuild from the beginning");
    assert_eq!(rows(&pool).await, live, "rebuilt from the beginning");
    assert_eq!(
        (all.events, all.dead_letters, all.skipped, all.rows),
        (18, 2, 1, 20),
        "{all:?}"
    );
    assert_eq!(progress.first(), Some(&(0, all.messages)));
    assert_eq!(progress.last(), Some(&(all.messages, all.messages)));

    let created = placed[2].created_at.expect("created_at");
    let since = chrono::DateTime::from_timestamp(created.seconds, created.nanos as u32).unwrap();
    let part =
        orderflow_history::replay::rebuild(&kafka, &codec, &pool, Start::Time(since), |_, _| {})
            .await
            .expect("rebuild from a time");
    assert_eq!(rows(&pool).await, live, "rebuilt from {since}");
    assert!(
        part.messages > 0 && part.messages < all.messages,
        "from {since}: {part:?}, from the beginning: {all:?}"
    );

    // Both groups continue after what was rebuilt.
    let inputs = orderflow_history::input_topics(&topics);
    for (topic, partition, committed, end) in committed_and_ends(&kafka, &group, &inputs).await {
        assert_eq!(committed, end, "group history on {topic}/{partition}");
    }
    let dead = vec![
        format!("{}.payment.dlq", topics.orders),
        format!("{}.history.dlq", topics.orders),
    ];
    for (topic, partition, committed, end) in committed_and_ends(&kafka, &dead_group, &dead).await {
        assert_eq!(committed, end, "group {dead_group} on {topic}/{partition}");
    }
    system.start_component(Component::History).await;
    let next = place(
        &system,
        order_request("alice", "replay-sku", 1, "pm_card_visa"),
    )
    .await;
    watch_to_end(&mut orders, &next.order_id, next.version).await;
    timeline_of(&system, "alice", &next.order_id, 6).await;
    assert_eq!(
        rows(&pool).await.len(),
        26,
        "nothing read twice, nothing missed"
    );
}
