//! The history service's batches against real PostgreSQL, applied as the consumer loop
//! applies them (`apply_batch` in one transaction): a batch's timeline rows are written
//! together, a batch delivered again writes nothing, and a message that makes no row fails
//! its batch, after which each message applied alone is recorded or refused by itself.

use orderflow_events::{self as ev, Event, Topics};
use orderflow_history::{HistoryHandler, MIGRATOR};
use orderflow_platform::consumer::{Applied, BatchFailure, apply_committed};
use orderflow_platform::{HandleError, MessageContext, OutboxSignal};
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;

fn created(order_id: &str) -> Event {
    Event::OrderCreated(ev::OrderCreated {
        event_id: ev::new_event_id(),
        order_id: order_id.into(),
        customer_id: "alice".into(),
        occurred_at: ev::now_millis(),
        items: vec![ev::OrderLine {
            sku: "sku-a".into(),
            quantity: 1,
            unit_price: ev::Money {
                amount_minor: 100,
                currency: "EUR".into(),
            },
        }],
        total: ev::Money {
            amount_minor: 100,
            currency: "EUR".into(),
        },
        payment_method: "card".into(),
    })
}

/// The messages of `events` at offsets `first`, `first + 1`, … of partition 0 of `orders`.
fn at_offsets(first: i64, events: Vec<Event>) -> Vec<(Event, MessageContext)> {
    events
        .into_iter()
        .zip(first..)
        .map(|(event, offset)| {
            let mut ctx = MessageContext::replayed("orders", 1);
            ctx.offset = offset;
            (event, ctx)
        })
        .collect()
}

/// Applies `batch` as the consumer loop's fast path does, in a transaction of its own.
async fn apply(
    pool: &PgPool,
    batch: &[(Event, MessageContext)],
) -> Result<Vec<Applied>, BatchFailure> {
    let signal = OutboxSignal::default();
    apply_committed(
        pool,
        "history",
        &Topics::default(),
        &HistoryHandler,
        batch,
        &signal,
    )
    .await
}

/// The recorded offsets and their orders, in offset order.
async fn recorded(pool: &PgPool) -> Vec<(i64, Uuid)> {
    sqlx::query_as(r#"SELECT "offset", order_id FROM order_timeline ORDER BY "offset""#)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_is_recorded_together_and_once() {
    let (_db, pool) = TestDatabase::migrated("history", &MIGRATOR).await;
    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let batch = at_offsets(10, orders.iter().map(|o| created(&o.to_string())).collect());

    let applied = apply(&pool, &batch).await.expect("the batch applies");
    assert_eq!(applied.len(), 5);
    assert!(
        applied
            .iter()
            .all(|a| matches!(a, Applied::Processed(caused) if caused.is_empty()))
    );
    let expected: Vec<(i64, Uuid)> = (10..).zip(orders.iter().copied()).collect();
    assert_eq!(recorded(&pool).await, expected);
    let (summary, event_type): (String, String) =
        sqlx::query_as(r#"SELECT summary, event_type FROM order_timeline WHERE "offset" = 12"#)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(event_type, "OrderCreated");
    assert!(!summary.is_empty());

    // Delivered again (a rebalance), overlapping one new message: only that one is new.
    let mut again = batch.clone();
    let sixth = Uuid::now_v7();
    again.extend(at_offsets(15, vec![created(&sixth.to_string())]));
    apply(&pool, &again).await.expect("the batch applies again");
    let mut expected = expected;
    expected.push((15, sixth));
    assert_eq!(recorded(&pool).await, expected);
}

#[tokio::test]
async fn a_message_of_no_order_fails_its_batch_and_alone_only_itself() {
    let (_db, pool) = TestDatabase::migrated("history", &MIGRATOR).await;
    let good = Uuid::now_v7();
    let batch = at_offsets(
        0,
        vec![
            created(&good.to_string()),
            created("not-a-uuid"),
            created(&Uuid::now_v7().to_string()),
        ],
    );

    let failure = apply(&pool, &batch).await.expect_err("the batch fails");
    assert!(failure.to_string().contains("\"not-a-uuid\""), "{failure}");
    // Not charged to any one message: the loop applies each alone next.
    assert_eq!(failure.at, None);
    assert!(!failure.in_handler);
    assert!(
        recorded(&pool).await.is_empty(),
        "nothing of a failed batch stays"
    );

    let mut refused = 0;
    for message in batch.chunks(1) {
        match apply(&pool, message).await {
            Ok(_) => {}
            Err(BatchFailure {
                error: HandleError::Permanent { message, .. },
                at: Some(0),
                in_handler: true,
            }) => {
                assert!(message.contains("\"not-a-uuid\""), "{message}");
                refused += 1;
            }
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
    assert_eq!(refused, 1);
    let offsets: Vec<i64> = recorded(&pool).await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, vec![0, 2]);
}
