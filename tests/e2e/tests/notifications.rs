//! The notifications service against a real webhook receiver (an HTTP server in the test):
//! each order status is delivered once, signed, in each order's order, through failed
//! attempts and redelivered events; a notification past its budget, or refused, is
//! dead-lettered, health says so meanwhile, and a redrive delivers it once. It is started
//! beside a running system; no other component knows it is there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use orderflow_e2e::scenario::{deliver_again, place, seed_orders, set_stock};
use orderflow_e2e::{Component, System, order_request, wait_for, watch_to_end};
use orderflow_notifications::sink::{self, DELIVERY_HEADER, SIGNATURE_HEADER};
use orderflow_platform::dlq::{self, Selection};

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "a-webhook-secret-shared-with-the-receiver";

/// What the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    /// 503 to the next `n` requests, then accept.
    Unavailable(usize),
    /// 500 to every request.
    Broken,
    /// 422 to every request: a refusal.
    Refuse,
}

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    attempt: u32,
    signature_ok: bool,
    body: serde_json::Value,
    answered: StatusCode,
}

#[derive(Clone, Default)]
struct Receiver {
    answer: Arc<Mutex<Option<Answer>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Serves on a free port; returns it and its URL.
    async fn start(answer: Answer) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.set(answer);
        let app = axum::Router::new()
            .route("/hooks/orders", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/orders", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = Some(answer);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The deliveries it accepted.
    fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered.is_success())
            .collect()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let now = chrono::Utc::now().timestamp();
    let signature_ok = sink::verify(
        SECRET.as_bytes(),
        &header(SIGNATURE_HEADER),
        &body,
        now,
        300,
    )
    .is_ok();
    let answered = {
        let mut answer = receiver.answer.lock().unwrap();
        match answer.unwrap_or(Answer::Accept) {
            Answer::Accept => StatusCode::OK,
            Answer::Unavailable(0) => {
                *answer = Some(Answer::Accept);
                StatusCode::OK
            }
            Answer::Unavailable(n) => {
                *answer = Some(Answer::Unavailable(n - 1));
                StatusCode::SERVICE_UNAVAILABLE
            }
            Answer::Broken => StatusCode::INTERNAL_SERVER_ERROR,
            Answer::Refuse => StatusCode::UNPROCESSABLE_ENTITY,
        }
    };
    receiver.received.lock().unwrap().push(Received {
        delivery: header(DELIVERY_HEADER),
        attempt: header(sink::ATTEMPT_HEADER).parse().unwrap_or(0),
        signature_ok,
        body: serde_json::from_slice(&body).unwrap_or_default(),
        answered,
    });
    answered
}

/// Points the system's notifications service at `url` with a budget of `attempts`.
fn webhook(system: &mut System, url: &str, attempts: u32) {
    let sink = &mut system.notifications_sink;
    sink.kind = orderflow_notifications::SinkKind::Webhook;
    sink.webhook_url = Some(url.to_owned());
    sink.webhook_secret = Some(SECRET.into());
    sink.max_attempts = attempts;
    sink.retry_base_ms = 50;
    sink.retry_cap_ms = 400;
}

/// (order, status) of each delivery, in the order they were accepted.
fn statuses(received: &[Received]) -> Vec<(String, String)> {
    received
        .iter()
        .map(|r| {
            (
                r.body["order_id"].as_str().unwrap_or_default().to_owned(),
                r.body["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the notifications group has committed everything on the status topic.
async fn caught_up(system: &System) {
    let kafka = &system.kafka;
    let topics = orderflow_notifications::input_topics(&kafka.topics());
    let group = kafka.group(orderflow_notifications::SERVICE);
    orderflow_e2e::wait_caught_up(kafka, &group, &topics, WAIT).await;
}

async fn health(system: &System) -> (u16, String) {
    let response = reqwest::get(format!(
        "{}/health",
        system.admin_url(Component::Notifications)
    ))
    .await
    .expect("the notifications service's /health");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn each_status_is_delivered_once_signed_and_in_order_through_failures_and_redeliveries() {
    let mut system = System::start().await;
    // The receiver is down for the first three requests.
    let (receiver, url) = Receiver::start(Answer::Unavailable(3)).await;
    webhook(&mut system, &url, 10);
    system.start_component(Component::Notifications).await;

    let placed = seed_orders(&system, "alice", "notify-sku").await;
    // Every status change delivered a second time, byte for byte, as a redelivery would.
    let changes = deliver_again(&system, &system.kafka.topics().order_status).await;
    assert_eq!(changes, 9, "3 + 2 + 4 status changes");

    wait_for("nine notifications accepted", WAIT, || {
        let n = receiver.accepted().len();
        async move { (n >= 9).then_some(()) }
    })
    .await;
    caught_up(&system).await;
    // A moment more for anything a redelivery might have caused.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let received = receiver.received();
    let accepted = receiver.accepted();
    let expected = [
        vec!["PENDING", "PAID", "COMPLETED"],
        vec!["PENDING", "FAILED"],
        vec!["PENDING", "PAID", "OUT_OF_STOCK", "REFUNDED"],
    ];
    assert_eq!(
        accepted.len(),
        9,
        "one delivery per order status: {:#?}",
        statuses(&accepted)
    );
    for (order, expected) in placed.iter().zip(expected) {
        let told: Vec<String> = statuses(&accepted)
            .into_iter()
            .filter(|(o, _)| o == order)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            told, expected,
            "order {order}: its statuses, once each, in order"
        );
    }
    // Every request signed with the shared secret, each delivery id the same on every attempt.
    assert!(received.iter().all(|r| r.signature_ok), "{received:#?}");
    let ids: std::collections::BTreeSet<&str> =
        accepted.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(ids.len(), 9);
    for r in &received {
        assert_eq!(r.delivery, r.body["notification_id"].as_str().unwrap());
    }
    // The three 503s were retried: 12 requests in all, later attempts numbered.
    assert_eq!(received.len(), 12, "{:#?}", statuses(&received));
    assert_eq!(
        received
            .iter()
            .filter(|r| r.answered == StatusCode::SERVICE_UNAVAILABLE)
            .count(),
        3
    );
    assert!(accepted.iter().any(|r| r.attempt > 1), "{accepted:#?}");
    for r in &accepted {
        assert_eq!(r.body["customer_id"], "alice");
        let order = r.body["order_id"].as_str().unwrap();
        assert!(
            r.body["message"].as_str().unwrap().contains(order),
            "{:?}",
            r.body
        );
    }

    let admin = system.admin_url(Component::Notifications);
    let metric = |name: &'static str| orderflow_e2e::load::metric(&admin, name);
    // The backlog's figures are read apart from the deliveries, every second: health and the
    // pending gauge tell the truth on their next read.
    wait_for("health back and nothing pending", WAIT, || async {
        let pending = metric("orderflow_notifications_pending").await;
        (health(&system).await.0 == 200 && pending == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(
        metric("orderflow_notifications_delivered_total").await,
        Some(9.0)
    );
    assert_eq!(
        metric("orderflow_notifications_failed_attempts_total").await,
        Some(3.0)
    );
}

#[tokio::test]
async fn a_notification_past_its_budget_or_refused_is_dead_lettered_and_delivered_once_redriven() {
    let mut system = System::start().await;
    let (receiver, url) = Receiver::start(Answer::Broken).await;
    webhook(&mut system, &url, 3);
    system.start_component(Component::Notifications).await;
    let dlq_topic = orderflow_platform::consumer::dead_letter_topic(
        &system.kafka.topics().order_status,
        orderflow_notifications::SERVICE,
    );

    // A declined order: PENDING and FAILED, each tried three times against a broken receiver.
    set_stock(&system, "notify-sku", 10).await;
    let mut orders = system.orders("bob").await;
    let declined = place(
        &system,
        order_request("bob", "notify-sku", 1, "pm_card_chargeDeclined"),
    )
    .await;
    watch_to_end(&mut orders, &declined.order_id, declined.version).await;
    // While it is failing, health says so and names the sink.
    let (_, reason) = wait_for("health degraded by the broken receiver", WAIT, || async {
        let (status, body) = health(&system).await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert!(
        reason.contains("waiting to be retried by webhook"),
        "{reason}"
    );
    assert!(reason.contains("500"), "{reason}");

    let dead = wait_for("two dead letters", WAIT, || async {
        let dead = dlq::read_dead_letters(&system.kafka, &dlq_topic, 0, 10)
            .await
            .ok()?;
        (dead.len() >= 2).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 2);
    for letter in &dead {
        assert_eq!(
            letter.header(dlq::ERROR_CLASS).as_deref(),
            Some("delivery_budget_exhausted")
        );
        assert_eq!(letter.header(dlq::ATTEMPTS).as_deref(), Some("3"));
        assert_eq!(
            letter.header(dlq::CONSUMER_GROUP),
            Some(system.kafka.group("notifications"))
        );
        let message = letter.header(dlq::ERROR_MESSAGE).unwrap();
        assert!(
            message.contains(&url) && message.contains("500"),
            "{message}"
        );
        assert_eq!(
            letter.origin_topic(),
            Some(system.kafka.topics().order_status)
        );
        assert!(letter.header("traceparent").is_some());
    }
    assert_eq!(receiver.received().len(), 6, "three attempts each");
    // Nothing is retried any more: health is back.
    wait_for("health back once nothing is retrying", WAIT, || async {
        (health(&system).await.0 == 200).then_some(())
    })
    .await;

    // A refusal is dead-lettered at once: a paid order's three statuses, 422 each.
    receiver.set(Answer::Refuse);
    let paid = place(
        &system,
        order_request("bob", "notify-sku", 1, "pm_card_visa"),
    )
    .await;
    watch_to_end(&mut orders, &paid.order_id, paid.version).await;
    let dead = wait_for("five dead letters", WAIT, || async {
        let dead = dlq::read_dead_letters(&system.kafka, &dlq_topic, 0, 10)
            .await
            .ok()?;
        (dead.len() >= 5).then_some(dead)
    })
    .await;
    assert!(
        dead[2..].iter().all(
            |l| l.header(dlq::ERROR_CLASS).as_deref() == Some("delivery_refused")
                && l.header(dlq::ATTEMPTS).as_deref() == Some("1")
        )
    );
    assert_eq!(receiver.received().len(), 9, "one attempt each");
    // Counted with every consumer's dead letters, and not as a second consumption.
    let admin = system.admin_url(Component::Notifications);
    let status_topic = system.kafka.topics().order_status;
    let series = |labels: String| format!("orderflow_{labels}");
    for (class, n) in [
        ("delivery_budget_exhausted", 2.0),
        ("delivery_refused", 3.0),
    ] {
        let name = series(format!(
            "dead_letters_total{{consumer=\"notifications\",topic=\"{status_topic}\",class=\"{class}\"}}"
        ));
        assert_eq!(
            orderflow_e2e::load::metric(&admin, &name).await,
            Some(n),
            "{name}"
        );
    }
    let consumed_dead = series(format!(
        "events_consumed_total{{consumer=\"notifications\",topic=\"{status_topic}\",outcome=\"dead_lettered\"}}"
    ));
    assert_eq!(
        orderflow_e2e::load::metric(&admin, &consumed_dead)
            .await
            .unwrap_or(0.0),
        0.0
    );

    // The receiver is fixed; the dead letters are redriven: each status delivered once.
    receiver.set(Answer::Accept);
    let redriven = dlq::redrive(&system.kafka, &dlq_topic, &Selection::All)
        .await
        .expect("redrive");
    assert_eq!(redriven.len(), 5);
    wait_for("the five redriven notifications accepted", WAIT, || {
        let n = receiver.accepted().len();
        async move { (n >= 5).then_some(()) }
    })
    .await;
    caught_up(&system).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = receiver.accepted();
    let mut told = statuses(&accepted);
    told.sort();
    let mut expected = vec![
        (declined.order_id.clone(), "PENDING".to_owned()),
        (declined.order_id.clone(), "FAILED".to_owned()),
        (paid.order_id.clone(), "PENDING".to_owned()),
        (paid.order_id.clone(), "PAID".to_owned()),
        (paid.order_id.clone(), "COMPLETED".to_owned()),
    ];
    expected.sort();
    assert_eq!(told, expected, "each status once after the redrive");
    assert!(accepted.iter().all(|r| r.attempt == 1 && r.signature_ok));
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM notifications ORDER BY state")
        .fetch_all(&system.notifications_db.pool().await)
        .await
        .unwrap();
    assert_eq!(states, vec!["delivered"; 5]);
}
