//! `apply_batch`, through `apply_committed` as the consumer loop calls it, against real
//! PostgreSQL, with a handler that refuses one order's events: what the handler is given
//! (the batch's new messages, or the only new one), where each message's result lands, which
//! message a failure is laid at, and when the relay is woken. The consumer loop charges an
//! attempt only to a message its handler failed alone.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orderflow_events::{Event, OrderStatus, OrderStatusChanged, Topics};
use orderflow_platform::consumer::{Applied, BatchFailure, apply_committed};
use orderflow_platform::migrations::with_platform;
use orderflow_platform::{HandleError, Handler, MessageContext, OutboxSignal};
use orderflow_testkit::TestDatabase;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres, Transaction};

static MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| with_platform(sqlx::migrate!("../../migrations/order")));

const REFUSED: &str = "00000000-0000-7000-8000-00000000dead";

/// Causes, for each event, one status change of the same order; refuses the events of
/// [`REFUSED`] with a transient error. Keeps the order ids of every call it was given.
#[derive(Default)]
struct Echo {
    calls: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl Handler for Echo {
    async fn handle(
        &self,
        _tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError> {
        let orders: Vec<String> = messages
            .iter()
            .map(|(event, _)| event.order_id().unwrap_or_default().to_owned())
            .collect();
        self.calls.lock().unwrap().push(orders.clone());
        if orders.iter().any(|order| order == REFUSED) {
            return Err(HandleError::Transient(format!("order {REFUSED} refused")));
        }
        Ok(orders.iter().map(|order| vec![changed(order)]).collect())
    }
}

fn changed(order_id: &str) -> Event {
    Event::OrderStatusChanged(OrderStatusChanged {
        event_id: uuid::Uuid::new_v4().to_string(),
        order_id: order_id.to_owned(),
        occurred_at: 1,
        customer_id: "customer".into(),
        version: 2,
        status: OrderStatus::Paid,
        reason: None,
    })
}

fn messages(events: &[&Event]) -> Vec<(Event, MessageContext)> {
    events
        .iter()
        .map(|event| ((*event).clone(), MessageContext::replayed("orders", 1)))
        .collect()
}

/// Applies `events` as the consumer loop does, in a transaction of their own.
async fn apply(
    pool: &PgPool,
    handler: &Echo,
    events: &[&Event],
) -> Result<Vec<Applied>, BatchFailure> {
    apply_waking(pool, handler, events, &OutboxSignal::default()).await
}

async fn apply_waking(
    pool: &PgPool,
    handler: &Echo,
    events: &[&Event],
    signal: &OutboxSignal,
) -> Result<Vec<Applied>, BatchFailure> {
    let messages = messages(events);
    apply_committed(pool, "test", &Topics::default(), handler, &messages, signal).await
}

/// Whether `signal` was given since it was last waited on, without waiting.
async fn woken(signal: &OutboxSignal) -> bool {
    // `timeout` polls the wait once before it looks at the clock.
    tokio::time::timeout(Duration::ZERO, signal.wait())
        .await
        .is_ok()
}

async fn outbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_handler_is_given_the_new_messages_and_each_result_lands_at_its_message() {
    let (_db, pool) = TestDatabase::migrated("apply_batch", &MIGRATIONS).await;
    let handler = Echo::default();
    let (a, b) = (
        changed(&uuid::Uuid::now_v7().to_string()),
        changed(&uuid::Uuid::now_v7().to_string()),
    );
    apply(&pool, &handler, &[&a]).await.expect("a alone");

    let applied = apply(&pool, &handler, &[&a, &b, &b])
        .await
        .expect("a repeated, b twice");
    let calls = handler.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            vec![a.order_id().unwrap().to_owned()],
            vec![b.order_id().unwrap().to_owned()]
        ],
        "the handler sees each new event once, never a repeat"
    );
    match applied.as_slice() {
        [
            Applied::Duplicate,
            Applied::Processed(caused),
            Applied::Duplicate,
        ] => {
            assert_eq!(caused.len(), 1);
            assert_eq!(caused[0].order_id(), b.order_id());
        }
        other => panic!("unexpected results: {other:?}"),
    }
    assert_eq!(
        outbox_rows(&pool).await,
        2,
        "one caused event for a, one for b"
    );
}

#[tokio::test]
async fn a_failure_of_the_only_new_message_is_laid_at_it_and_one_of_several_at_none() {
    let (_db, pool) = TestDatabase::migrated("apply_batch", &MIGRATIONS).await;
    let handler = Echo::default();
    let good = changed(&uuid::Uuid::now_v7().to_string());
    let refused = changed(REFUSED);
    apply(&pool, &handler, &[&good]).await.expect("good alone");

    // The good event again, then the refused one: only the refused one is new.
    let failure = apply(&pool, &handler, &[&good, &refused])
        .await
        .expect_err("the refused order fails");
    assert_eq!(failure.at, Some(1), "{failure}");
    assert!(failure.in_handler, "an attempt at message 1: {failure}");
    assert!(
        failure.to_string().starts_with("message 1 of the batch: "),
        "{failure}"
    );

    // A new good event beside the refused one: the failure is the batch's.
    let other = changed(&uuid::Uuid::now_v7().to_string());
    let failure = apply(&pool, &handler, &[&other, &refused])
        .await
        .expect_err("the batch fails");
    assert_eq!(failure.at, None, "{failure}");
    assert!(!failure.in_handler, "no message is charged: {failure}");
    assert!(
        matches!(failure.error, HandleError::Transient(_)),
        "{failure}"
    );

    // Nothing of a failed batch stays: the other event is new again, alone it is applied.
    let applied = apply(&pool, &handler, &[&other])
        .await
        .expect("other alone");
    assert!(matches!(applied.as_slice(), [Applied::Processed(_)]));
    assert_eq!(outbox_rows(&pool).await, 2, "good's and other's, once each");
}

#[tokio::test]
async fn only_a_committed_batch_that_caused_events_wakes_the_relay() {
    let (_db, pool) = TestDatabase::migrated("apply_batch", &MIGRATIONS).await;
    let handler = Echo::default();
    let signal = OutboxSignal::default();
    let event = changed(&uuid::Uuid::now_v7().to_string());

    apply_waking(&pool, &handler, &[&event], &signal)
        .await
        .expect("the event alone");
    assert!(woken(&signal).await, "its status change is in the outbox");

    apply_waking(&pool, &handler, &[&event], &signal)
        .await
        .expect("the event again");
    assert!(!woken(&signal).await, "a duplicate causes nothing");

    let refused = changed(REFUSED);
    apply_waking(&pool, &handler, &[&refused], &signal)
        .await
        .expect_err("the refused order fails");
    assert!(!woken(&signal).await, "a failed batch commits nothing");
    assert_eq!(outbox_rows(&pool).await, 1);
}
