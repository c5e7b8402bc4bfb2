//! Each component's `/metrics` tells what happened: events consumed per topic and outcome,
//! events produced, retries, dead letters, transitions, the outbox drained, no lag when idle,
//! and the gateway's watchers and bearer tokens.

use std::time::Duration;

use orderflow_e2e::{Component, System, order_request, status_name, watch_to_end};
use orderflow_proto::v1 as pb;
use sqlx::PgPool;

/// One expected sample: metric name, labels (in any order), value.
type Expected<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// The value of the sample `name` whose labels are exactly `labels`, if `text` has it.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, found) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let mut found: Vec<(&str, &str)> = found
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label pair");
                    (k, v.trim_matches('"'))
                })
                .collect();
            let mut wanted = labels.to_vec();
            found.sort_unstable();
            wanted.sort_unstable();
            (found == wanted).then(|| value.parse().expect("sample value"))
        })
}

/// Reads `component`'s `/metrics` until every expected sample has its value, or fails after
/// 60 s naming those that do not.
async fn wait_for_metrics(system: &System, component: Component, expected: &[Expected<'_>]) {
    let url = format!("{}/metrics", system.admin_url(component));
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = client.get(&url).send().await.expect("GET /metrics");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let text = response.text().await.expect("metrics body");
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(name, labels, value)| {
                let found = sample(&text, name, labels);
                (found != Some(*value))
                    .then(|| format!("{name}{labels:?}: want {value}, got {found:?}"))
            })
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{component:?} metrics after 60s:\n{}\n\n{text}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn place_and_finish(system: &System, request: pb::PlaceOrderRequest) -> &'static str {
    let mut orders = system.orders(&request.customer_id).await;
    let placed = orders
        .place_order(request)
        .await
        .expect("PlaceOrder")
        .into_inner()
        .order
        .expect("order");
    let seen = watch_to_end(&mut orders, &placed.order_id, placed.version).await;
    seen.last().map_or(status_name(placed.status), |(_, s)| s)
}

/// The gateway's bearer tokens so far: (checked in full, answered from memory).
async fn token_checks(system: &System) -> (f64, f64) {
    let admin = system.admin_url(Component::Gateway);
    let read = async |name: &str| {
        orderflow_e2e::load::metric(&admin, name)
            .await
            .unwrap_or_else(|| panic!("{admin}/metrics: no {name}"))
    };
    (
        read("orderflow_gateway_tokens_checked_in_full_total").await,
        read("orderflow_gateway_tokens_remembered_total").await,
    )
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reflect_the_flow() {
    let system = System::start().await;
    let topics = system.kafka.topics();
    let (orders, order_status, payments, inventory, catalogue) = (
        topics.orders.as_str(),
        topics.order_status.as_str(),
        topics.payments.as_str(),
        topics.inventory.as_str(),
        topics.catalogue.as_str(),
    );
    orderflow_e2e::scenario::set_stock(&system, "widget", 5).await;
    let tokens_before = token_checks(&system).await;

    // One after the other, so every count below is exact.
    for (quantity, method, end) in [
        (2, "pm_card_visa", "COMPLETED"),
        (1, "pm_card_chargeDeclined", "FAILED"),
        (10, "pm_card_visa", "REFUNDED"),
        // Fails twice at the provider: two retries in the payment service.
        (1, "pm_card_flaky", "COMPLETED"),
    ] {
        let request = order_request("mia", "widget", quantity, method);
        assert_eq!(place_and_finish(&system, request).await, end, "{method}");
    }
    // Every call above carried mia's one token (the test issuer signs one per customer),
    // new to the gateway: checked in full with the first PlaceOrder, and answered from
    // memory for the three others and the four WatchOrders.
    let tokens_after = token_checks(&system).await;
    assert_eq!(
        tokens_after.0 - tokens_before.0,
        1.0,
        "tokens checked in full"
    );
    assert!(
        tokens_after.1 - tokens_before.1 >= 7.0,
        "tokens answered from memory: {tokens_before:?} then {tokens_after:?}"
    );

    let consumed = |consumer, topic, outcome, n| {
        (
            "orderflow_events_consumed_total",
            vec![
                ("consumer", consumer),
                ("topic", topic),
                ("outcome", outcome),
            ],
            n,
        )
    };
    let produced = |topic, n| ("orderflow_events_produced_total", vec![("topic", topic)], n);
    let transition = |from, to, n| {
        (
            "orderflow_order_transitions_total",
            vec![("from", from), ("to", to)],
            n,
        )
    };
    let retries = |consumer, n| {
        (
            "orderflow_consumer_retries_total",
            vec![("consumer", consumer)],
            n,
        )
    };
    let backlog_empty = ("orderflow_outbox_backlog", vec![], 0.0);

    wait_for_metrics(
        &system,
        Component::Order,
        &[
            // PaymentProcessed ×4 and PaymentRefunded; InventoryUpdated ×3; the widget's
            // catalogue entries: stocked, then two deductions.
            consumed("order", payments, "processed", 5.0),
            consumed("order", inventory, "processed", 3.0),
            consumed("order", catalogue, "processed", 3.0),
            consumed("order", payments, "duplicate", 0.0),
            transition("PENDING", "PAID", 3.0),
            transition("PAID", "COMPLETED", 2.0),
            transition("PENDING", "FAILED", 1.0),
            transition("PAID", "OUT_OF_STOCK", 1.0),
            transition("OUT_OF_STOCK", "REFUNDED", 1.0),
            (
                "orderflow_event_processing_seconds_count",
                vec![("consumer", "order")],
                11.0,
            ),
            // OrderCreated ×4; PENDING ×4 plus the 8 transitions.
            produced(orders, 4.0),
            produced(order_status, 12.0),
            retries("order", 0.0),
            backlog_empty.clone(),
        ],
    )
    .await;
    wait_for_metrics(
        &system,
        Component::Payment,
        &[
            consumed("payment", orders, "processed", 4.0),
            consumed("payment", inventory, "processed", 3.0),
            retries("payment", 2.0),
            // PaymentProcessed ×4 and PaymentRefunded.
            produced(payments, 5.0),
            backlog_empty.clone(),
        ],
    )
    .await;
    wait_for_metrics(
        &system,
        Component::Inventory,
        &[
            consumed("inventory", payments, "processed", 5.0),
            produced(inventory, 3.0),
            produced(catalogue, 3.0),
            backlog_empty.clone(),
        ],
    )
    .await;
    wait_for_metrics(
        &system,
        Component::Gateway,
        &[
            ("orderflow_gateway_watch_streams_opened_total", vec![], 4.0),
            ("orderflow_gateway_watchers", vec![], 0.0),
        ],
    )
    .await;

    // Duplicate delivery: the order service's outbox publishes an OrderCreated again (as
    // after a relay crash between the broker's ack and marking the row published).
    let order_db = system.order_db.pool().await;
    sqlx::query(
        "INSERT INTO outbox (topic, event_key, payload, traceparent)
         SELECT topic, event_key, payload, traceparent FROM outbox
         WHERE payload->>'type' = 'OrderCreated' ORDER BY id LIMIT 1",
    )
    .execute(&order_db)
    .await
    .expect("re-publish an OrderCreated");
    // Invalid content: a payment outcome for an order nobody placed, dead-lettered by the
    // order service (the inventory service ignores a FAILED payment).
    let payment_db = system.payment_db.pool().await;
    sqlx::query(
        "INSERT INTO outbox (topic, event_key, payload, traceparent)
         SELECT topic, $1,
                jsonb_set(jsonb_set(payload, '{event,order_id}', to_jsonb($1::text)),
                          '{event,event_id}', to_jsonb($2::text)),
                traceparent
         FROM outbox
         WHERE payload->>'type' = 'PaymentProcessed' AND payload->'event'->>'status' = 'FAILED'
         LIMIT 1",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(uuid::Uuid::new_v4().to_string())
    .execute(&payment_db)
    .await
    .expect("publish a payment for an unknown order");

    wait_for_metrics(
        &system,
        Component::Payment,
        &[
            consumed("payment", orders, "duplicate", 1.0),
            consumed("payment", orders, "processed", 4.0),
            produced(payments, 6.0),
            backlog_empty.clone(),
        ],
    )
    .await;
    assert_eq!(count(&payment_db, "SELECT count(*) FROM charges").await, 4);
    wait_for_metrics(
        &system,
        Component::Order,
        &[
            consumed("order", payments, "dead_lettered", 1.0),
            consumed("order", payments, "processed", 5.0),
            (
                "orderflow_dead_letters_total",
                vec![
                    ("consumer", "order"),
                    ("topic", payments),
                    ("class", "invalid_content"),
                ],
                1.0,
            ),
            // Dead letters are not timed as processed.
            (
                "orderflow_event_processing_seconds_count",
                vec![("consumer", "order")],
                11.0,
            ),
            produced(orders, 5.0),
            backlog_empty.clone(),
        ],
    )
    .await;

    // Idle now: every consumer has read up to the high watermark of every partition.
    let lag = |consumer, topic| {
        (
            "orderflow_consumer_lag",
            vec![("consumer", consumer), ("topic", topic), ("partition", "0")],
            0.0,
        )
    };
    wait_for_metrics(
        &system,
        Component::Order,
        &[
            consumed("order", payments, "processed", 5.0),
            lag("order", payments),
            lag("order", inventory),
        ],
    )
    .await;
    wait_for_metrics(
        &system,
        Component::Payment,
        &[lag("payment", orders), lag("payment", inventory)],
    )
    .await;
    wait_for_metrics(
        &system,
        Component::Inventory,
        &[
            consumed("inventory", payments, "processed", 6.0),
            lag("inventory", payments),
        ],
    )
    .await;
}
