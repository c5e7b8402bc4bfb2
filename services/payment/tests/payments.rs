//! The payment handler against real PostgreSQL and the simulated provider, driven the way the
//! consumer loop drives it: each delivery applies the event in one transaction with
//! `apply_batch` and commits it; a transient failure is delivered again with the loop's
//! attempt count one higher. Faults are injected between deliveries: the database down before
//! the handler runs (the loop's `begin` fails), a commit lost after it ran, a restart of the
//! service. What is checked is what the customer and the books care about: an order the
//! service reports FAILED holds no money at the provider, a PAID one holds its amount, and the
//! provider's retry budget is spent by provider failures only.

use std::sync::Arc;

use orderflow_events::{self as ev, Event, Topics};
use orderflow_payment::PaymentHandler;
use orderflow_payment::provider::{PaymentProvider, SimulatedProvider, tokens};
use orderflow_platform::consumer::{Applied, apply_batch, apply_committed};
use orderflow_platform::{HandleError, MessageContext, OutboxSignal};
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;

const AMOUNT: i64 = 1250;

/// The payment service's database and an external provider that outlives the service.
struct Bench {
    _db: TestDatabase,
    pool: PgPool,
    provider: Arc<SimulatedProvider>,
    topics: Topics,
}

/// How the consumer loop saw a message end.
#[derive(Debug)]
enum End {
    /// Applied and committed; these are the events it caused.
    Committed(Vec<Event>),
    /// Dead-lettered with this class and message.
    DeadLettered(&'static str, String),
}

impl End {
    /// The events a committed message caused; a dead letter fails the test with its reason.
    fn committed(self, what: &str) -> Vec<Event> {
        match self {
            End::Committed(caused) => caused,
            End::DeadLettered(class, message) => {
                panic!("{what}: dead-lettered ({class}): {message}")
            }
        }
    }
}

/// Which fault, if any, each delivery meets (by the loop's attempt number).
type FaultPlan = fn(u32) -> Fault;

/// A fault injected into one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The database is down: the transaction cannot begin, the handler never runs.
    DatabaseDown,
    /// The handler ran but the commit was lost.
    CommitLost,
}

impl Bench {
    async fn start() -> Bench {
        let db = TestDatabase::create("payment").await;
        let pool = orderflow_db::connect_and_migrate(
            &orderflow_db::DbSettings::new(db.url()),
            &orderflow_payment::MIGRATOR,
        )
        .await
        .expect("payment database");
        Bench {
            _db: db,
            pool,
            provider: Arc::new(SimulatedProvider::new()),
            topics: Topics::default(),
        }
    }

    /// A payment service (a new process, as after a restart) with these provider budgets.
    fn service(&self, charge_attempts: u32, refund_attempts: u32) -> PaymentHandler {
        let provider: Arc<dyn PaymentProvider> = self.provider.clone();
        PaymentHandler::new(
            provider,
            self.pool.clone(),
            charge_attempts,
            refund_attempts,
        )
    }

    /// Delivers `event` until the loop is done with it, as `ConsumerLoop::process` does: the
    /// loop's attempt counter goes up with every transient failure, whatever its cause.
    /// `fault(n)` is injected into delivery `n`. Returns how it ended and the deliveries.
    async fn deliver(
        &self,
        service: &PaymentHandler,
        event: &Event,
        fault: impl Fn(u32) -> Fault,
    ) -> (End, u32) {
        for attempt in 1..=60 {
            let ctx = MessageContext::replayed("t", attempt);
            let fault = fault(attempt);
            if fault == Fault::DatabaseDown {
                continue;
            }
            let mut tx = self.pool.begin().await.expect("begin");
            let batch = [(event.clone(), ctx)];
            match apply_batch(&mut tx, "payment", &self.topics, service, &batch).await {
                Ok(mut applied) if fault == Fault::None => {
                    tx.commit().await.expect("commit");
                    let caused = match applied.pop() {
                        Some(Applied::Processed(events)) => events,
                        other => panic!("expected the event processed, got {other:?}"),
                    };
                    return (End::Committed(caused), attempt);
                }
                Ok(_) => tx.rollback().await.expect("rollback"),
                Err(failure) => {
                    tx.rollback().await.expect("rollback");
                    match failure.error {
                        HandleError::Transient(_) => {}
                        HandleError::Permanent { class, message } => {
                            return (End::DeadLettered(class, message), attempt);
                        }
                    }
                }
            }
        }
        panic!("the message was still retried after 60 deliveries");
    }

    /// The recorded charge of `order_id`: (status, attempts).
    async fn charge(&self, order_id: &str) -> (String, i32) {
        sqlx::query_as("SELECT status, attempts FROM charges WHERE order_id = $1::uuid")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .expect("a charge row")
    }

    async fn refunded(&self, order_id: &str) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refunds WHERE order_id = $1::uuid)")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .expect("read refunds")
    }
}

fn order_created(payment_method: &str) -> Event {
    Event::OrderCreated(ev::OrderCreated {
        event_id: ev::new_event_id(),
        order_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: ev::now_millis(),
        customer_id: "ana".into(),
        items: vec![ev::OrderLine {
            sku: "sku-1".into(),
            quantity: 1,
            unit_price: ev::Money {
                amount_minor: AMOUNT,
                currency: "EUR".into(),
            },
        }],
        total: ev::Money {
            amount_minor: AMOUNT,
            currency: "EUR".into(),
        },
        payment_method: payment_method.into(),
    })
}

fn out_of_stock(order_id: &str) -> Event {
    Event::InventoryUpdated(ev::InventoryUpdated {
        event_id: ev::new_event_id(),
        order_id: order_id.into(),
        occurred_at: ev::now_millis(),
        status: ev::InventoryStatus::OutOfStock,
        items: vec![ev::StockLine {
            sku: "sku-1".into(),
            quantity: 1,
        }],
        missing: vec![ev::MissingItem {
            sku: "sku-1".into(),
            requested: 1,
            available: 0,
        }],
    })
}

fn order_id(event: &Event) -> String {
    event.order_id().expect("an order's event").to_owned()
}

/// The status the service published for the order.
fn published_status(caused: &[Event]) -> ev::PaymentStatus {
    match caused {
        [Event::PaymentProcessed(p)] => p.status,
        other => panic!("expected one PaymentProcessed, got {other:?}"),
    }
}

const EVERY_TOKEN: [&str; 8] = [
    tokens::VISA,
    tokens::MASTERCARD,
    tokens::DECLINED,
    tokens::INSUFFICIENT_FUNDS,
    tokens::FLAKY,
    tokens::UNAVAILABLE,
    tokens::REPLY_LOST,
    tokens::PROVIDER_DOWN,
];

/// Finding 1 of issue 11: a provider error is an unknown outcome, not a decline. For every
/// token, several charge budgets and lost commits, the order's end agrees with the provider:
/// no FAILED order keeps a capture, no PAID order lacks one, and a refund leaves nothing held.
#[tokio::test]
async fn no_failed_order_keeps_a_capture_and_no_paid_order_lacks_one() {
    let bench = Bench::start().await;
    let faults: [(&str, FaultPlan); 3] = [
        ("no fault", |_| Fault::None),
        ("every other commit lost", |n| {
            if n % 2 == 1 {
                Fault::CommitLost
            } else {
                Fault::None
            }
        }),
        ("the first three commits lost", |n| {
            if n <= 3 {
                Fault::CommitLost
            } else {
                Fault::None
            }
        }),
    ];
    let mut disagreements = Vec::new();
    for budget in [1, 2, 5] {
        let service = bench.service(budget, 8);
        for token in EVERY_TOKEN {
            for (fault_name, fault) in faults {
                let created = order_created(token);
                let id = order_id(&created);
                let case = format!("{token}, charge budget {budget}, {fault_name}");
                let (end, _) = bench.deliver(&service, &created, fault).await;
                let caused = end.committed(&format!("{case}: charge"));
                let (status, _) = bench.charge(&id).await;
                assert_eq!(
                    published_status(&caused),
                    if status == "PAID" {
                        ev::PaymentStatus::Paid
                    } else {
                        ev::PaymentStatus::Failed
                    },
                    "{case}: the event says what the row says"
                );
                let held = bench.provider.ledger(&id).net_captured_minor;
                let want = if status == "PAID" { AMOUNT } else { 0 };
                if held != want {
                    disagreements.push(format!("{case}: {status} but {held} held"));
                    continue;
                }
                if status == "PAID" {
                    let (end, _) = bench.deliver(&service, &out_of_stock(&id), fault).await;
                    end.committed(&format!("{case}: refund"));
                    assert!(bench.refunded(&id).await, "{case}: refund recorded");
                    assert_eq!(
                        bench.provider.ledger(&id).net_captured_minor,
                        0,
                        "{case}: refunded, nothing held"
                    );
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "orders whose end disagrees with the provider:\n{}",
        disagreements.join("\n")
    );
}

/// The loop's view of a database down for the first `deliveries` deliveries.
fn database_down_for(deliveries: u32) -> impl Fn(u32) -> Fault {
    move |n| {
        if n <= deliveries {
            Fault::DatabaseDown
        } else {
            Fault::None
        }
    }
}

/// Finding 2 of issue 11: the payment database down for the first deliveries of a
/// `pm_card_flaky` order (the loop counts each as an attempt) must not spend the provider's
/// budget: the provider would approve on its third call, so the order is PAID.
#[tokio::test]
async fn database_outages_do_not_spend_the_charge_budget() {
    let bench = Bench::start().await;
    let service = bench.service(5, 8);
    let created = order_created(tokens::FLAKY);
    let id = order_id(&created);
    let (end, deliveries) = bench
        .deliver(&service, &created, database_down_for(4))
        .await;
    let caused = end.committed("charge");
    assert_eq!(
        published_status(&caused),
        ev::PaymentStatus::Paid,
        "a flaky card the provider approves on its third call, after {deliveries} deliveries"
    );
    assert_eq!(
        bench.charge(&id).await,
        ("PAID".into(), 3),
        "provider calls"
    );
    assert_eq!(bench.provider.ledger(&id).net_captured_minor, AMOUNT);
}

/// Finding 2 of issue 11, for refunds: the database down for the first deliveries of a refund
/// whose provider fails twice must not dead-letter it; it is refunded.
#[tokio::test]
async fn database_outages_do_not_dead_letter_a_refund() {
    let bench = Bench::start().await;
    let service = bench.service(5, 8);
    let created = order_created(tokens::FLAKY);
    let id = order_id(&created);
    let (end, _) = bench.deliver(&service, &created, |_| Fault::None).await;
    end.committed("charge");
    assert_eq!(bench.charge(&id).await.0, "PAID");

    let (end, _) = bench
        .deliver(&service, &out_of_stock(&id), database_down_for(7))
        .await;
    let caused = end.committed("the refund must go through");
    assert!(
        matches!(caused[..], [Event::PaymentRefunded(_)]),
        "{caused:?}"
    );
    assert!(bench.refunded(&id).await);
    assert_eq!(bench.provider.ledger(&id).net_captured_minor, 0);
    assert_eq!(bench.provider.ledger(&id).refund_calls, 3);
}

/// Finding 2 of issue 11: the provider budget is durable. A `pm_card_providerUnavailable`
/// order tried three times, then the service restarts (its loop counts from 1 again): the
/// provider sees exactly the budget of charge calls in all, and the order ends FAILED with
/// nothing captured.
#[tokio::test]
async fn the_provider_budget_survives_a_restart() {
    let bench = Bench::start().await;
    let created = order_created(tokens::UNAVAILABLE);
    let id = order_id(&created);
    let before_restart = bench.service(5, 8);
    // Three deliveries, then the process dies: every later delivery is the new process's.
    for attempt in 1..=3 {
        let ctx = MessageContext::replayed("t", attempt);
        let result = apply_committed(
            &bench.pool,
            "payment",
            &bench.topics,
            &before_restart,
            &[(created.clone(), ctx)],
            &OutboxSignal::default(),
        )
        .await;
        assert!(
            matches!(
                result,
                Err(ref f) if matches!(f.error, HandleError::Transient(_))
            ),
            "delivery {attempt} before the restart: {result:?}"
        );
    }
    assert_eq!(bench.provider.ledger(&id).charge_calls, 3);

    let after_restart = bench.service(5, 8);
    let (end, _) = bench
        .deliver(&after_restart, &created, |_| Fault::None)
        .await;
    let caused = end.committed("charge");
    assert_eq!(published_status(&caused), ev::PaymentStatus::Failed);
    assert_eq!(
        bench.provider.ledger(&id).charge_calls,
        5,
        "charge calls in all, across the restart"
    );
    assert_eq!(bench.charge(&id).await, ("FAILED".into(), 5));
    assert_eq!(bench.provider.ledger(&id).net_captured_minor, 0);
}

/// Applies `events` as one batch, the way the consumer loop applies a poll's messages, and
/// commits it; returns what each message caused, or the batch's failure (rolled back).
async fn apply_together(
    bench: &Bench,
    service: &PaymentHandler,
    events: &[Event],
) -> Result<Vec<Vec<Event>>, HandleError> {
    let batch: Vec<(Event, MessageContext)> = events
        .iter()
        .map(|event| (event.clone(), MessageContext::replayed("t", 1)))
        .collect();
    let signal = OutboxSignal::default();
    let applied = apply_committed(
        &bench.pool,
        "payment",
        &bench.topics,
        service,
        &batch,
        &signal,
    )
    .await
    .map_err(|failure| failure.error)?;
    Ok(applied
        .into_iter()
        .map(|applied| match applied {
            Applied::Processed(caused) => caused,
            other => panic!("expected every message processed, got {other:?}"),
        })
        .collect())
}

/// The same order's event published again under a new event id.
fn republished(event: &Event) -> Event {
    let mut copy = event.clone();
    if let Event::OrderCreated(order) = &mut copy {
        order.event_id = ev::new_event_id();
    }
    copy
}

/// The stock confirmation of an order: what `out_of_stock` reports, with nothing missing.
fn stock_confirmed(order_id: &str) -> Event {
    let Event::InventoryUpdated(mut update) = out_of_stock(order_id) else {
        unreachable!("out_of_stock makes an InventoryUpdated")
    };
    update.status = ev::InventoryStatus::Confirmed;
    update.missing.clear();
    Event::InventoryUpdated(update)
}

/// What the books say about an order: its charge row (status, attempts), whether it was
/// refunded, and what the provider holds and was asked.
async fn books(bench: &Bench, id: &str) -> (String, i32, bool, i64, u32) {
    let (status, attempts) = bench.charge(id).await;
    let ledger = bench.provider.ledger(id);
    (
        status,
        attempts,
        bench.refunded(id).await,
        ledger.net_captured_minor,
        ledger.charge_calls,
    )
}

/// A batch is charged as one message at a time is: the placed orders of a batch (approved and
/// declined, one of them published twice) charged together, beside a stock confirmation the
/// service ignores and a refund, leave the same charge rows, provider calls and events as
/// the same messages delivered one at a time, each in its place.
#[tokio::test]
async fn a_batch_is_charged_as_one_message_at_a_time_is() {
    let bench = Bench::start().await;
    let service = bench.service(5, 8);
    let tokens = [
        tokens::VISA,
        tokens::DECLINED,
        tokens::MASTERCARD,
        tokens::INSUFFICIENT_FUNDS,
    ];
    // Paid earlier, out of stock now: refunded in the batch.
    let earlier = order_created(tokens::VISA);
    let earlier_id = order_id(&earlier);
    bench
        .deliver(&service, &earlier, |_| Fault::None)
        .await
        .0
        .committed("the earlier order");

    let mut alone = Vec::new();
    for token in tokens {
        let created = order_created(token);
        let caused = bench
            .deliver(&service, &created, |_| Fault::None)
            .await
            .0
            .committed(token);
        alone.push((
            published_status(&caused),
            books(&bench, &order_id(&created)).await,
        ));
    }

    let placed: Vec<Event> = tokens.iter().map(|token| order_created(token)).collect();
    let mut batch = placed.clone();
    batch.insert(1, stock_confirmed(&order_id(&placed[0])));
    batch.insert(3, out_of_stock(&earlier_id));
    batch.push(republished(&placed[2]));
    let caused = apply_together(&bench, &service, &batch)
        .await
        .expect("the batch applies");
    assert_eq!(caused.len(), batch.len(), "one result per message");
    assert!(caused[1].is_empty(), "a confirmation causes nothing");
    assert!(
        matches!(caused[3][..], [Event::PaymentRefunded(_)]),
        "the refund in its place: {:?}",
        caused[3]
    );
    assert!(
        caused[6].is_empty(),
        "an order published again is charged once"
    );
    let charged = [&caused[0], &caused[2], &caused[4], &caused[5]];
    for ((token, created), (caused, alone)) in tokens
        .iter()
        .zip(&placed)
        .zip(charged.into_iter().zip(&alone))
    {
        let id = order_id(created);
        match &caused[..] {
            [Event::PaymentProcessed(p)] => assert_eq!(p.order_id, id, "{token}: in its place"),
            other => panic!("{token}: expected one PaymentProcessed, got {other:?}"),
        }
        assert_eq!(
            &(published_status(caused), books(&bench, &id).await),
            alone,
            "{token}: batched against alone"
        );
    }
    assert_eq!(
        books(&bench, &earlier_id).await,
        ("PAID".into(), 1, true, 0, 1),
        "the earlier order, refunded"
    );
}

/// A charge left unsettled fails its batch and loses nothing: the failed call is counted once,
/// nothing of the batch is recorded, and when the loop then applies the messages one at a
/// time every order is charged once, the flaky one after its budgeted retries.
#[tokio::test]
async fn an_unsettled_charge_fails_its_batch_and_charges_nothing_twice() {
    let bench = Bench::start().await;
    let service = bench.service(5, 8);
    let batch = [
        order_created(tokens::VISA),
        order_created(tokens::FLAKY),
        order_created(tokens::DECLINED),
    ];
    let failure = apply_together(&bench, &service, &batch)
        .await
        .expect_err("a flaky card fails its first call");
    assert!(
        matches!(failure, HandleError::Transient(_)),
        "retried, not dead-lettered: {failure:?}"
    );
    let flaky = order_id(&batch[1]);
    let failures: i32 = sqlx::query_scalar(
        "SELECT failures FROM provider_failures WHERE order_id = $1::uuid AND operation = 'charge'",
    )
    .bind(&flaky)
    .fetch_one(&bench.pool)
    .await
    .expect("the failed call is counted");
    assert_eq!(failures, 1);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM charges")
        .fetch_one(&bench.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "nothing of the failed batch is recorded");

    for event in &batch {
        bench
            .deliver(&service, event, |_| Fault::None)
            .await
            .0
            .committed("one at a time");
    }
    let visa = order_id(&batch[0]);
    let declined = order_id(&batch[2]);
    // Each card was asked twice (in the batch, then alone) and charged once.
    assert_eq!(
        books(&bench, &visa).await,
        ("PAID".into(), 1, false, AMOUNT, 2)
    );
    assert_eq!(
        books(&bench, &declined).await,
        ("FAILED".into(), 1, false, 0, 2)
    );
    assert_eq!(
        books(&bench, &flaky).await,
        ("PAID".into(), 3, false, AMOUNT, 3)
    );
}
