//! Where an order's time goes between PlaceOrder and COMPLETED, hop by hop, from the history
//! service's record of every event: when its service wrote it (`occurred_at`, in the
//! transaction that caused it) and the message's timestamp (`logged_at`). The services' topics
//! keep Kafka's default `CreateTime`, so that timestamp is when the relay handed the message
//! to its producer. An outbox hop runs from the first to the second: the row waits in the
//! outbox until the relay's next round reads it. A consumer hop runs from one event's hand-over
//! to the writing of the event it caused: the producer's linger, the broker's append and its
//! acknowledgement, the fetch, and the consumer's transaction up to its handler.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orderflow_history::store::{self, Entry};
use serde::Serialize;
use uuid::Uuid;

use crate::load::Percentiles;

/// One hop of a COMPLETED order's path, over a run's orders.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub name: &'static str,
    pub latency: Percentiles,
}

/// When an event was written and when its message was handed over.
type Times = (DateTime<Utc>, DateTime<Utc>);

/// Where on an order's path a hop starts and ends.
type Span = fn(&Path) -> Times;

/// The hops of a COMPLETED order, in path order: each named by where the time is spent, with
/// where on the order's path it starts and ends. The last is the whole, from OrderCreated
/// written to COMPLETED handed over.
const HOPS: [(&str, Span); 8] = [
    ("order outbox (OrderCreated)", |p| p.created),
    ("to payment", |p| (p.created.1, p.paid.0)),
    ("payment outbox", |p| p.paid),
    ("to inventory", |p| (p.paid.1, p.taken.0)),
    ("inventory outbox", |p| p.taken),
    ("to order (COMPLETED)", |p| (p.taken.1, p.completed.0)),
    ("order outbox (COMPLETED)", |p| p.completed),
    ("OrderCreated written to COMPLETED sent", |p| {
        (p.created.0, p.completed.1)
    }),
];

/// Each hop's latency over the orders whose whole path is in `events`: OrderCreated,
/// PaymentProcessed, InventoryUpdated and three OrderStatusChanged (PENDING, PAID, COMPLETED,
/// in the order they were written), each with its message's timestamp. Other orders are left
/// out. A hop that the clocks' resolution (a message's timestamp is in milliseconds) makes
/// negative counts as zero.
pub fn hops(events: &[Entry]) -> Vec<Hop> {
    let mut by_order: HashMap<Uuid, Vec<&Entry>> = HashMap::new();
    for event in events {
        by_order.entry(event.order_id).or_default().push(event);
    }
    let paths: Vec<Path> = by_order.values().filter_map(|e| Path::of(e)).collect();
    HOPS.iter()
        .map(|(name, span)| Hop {
            name,
            latency: Percentiles::of(
                paths
                    .iter()
                    .map(|path| {
                        let (from, to) = span(path);
                        (to - from).to_std().unwrap_or_default()
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// The times of one COMPLETED order's events: (written, handed over) each.
struct Path {
    created: Times,
    paid: Times,
    taken: Times,
    completed: Times,
}

impl Path {
    fn of(events: &[&Entry]) -> Option<Path> {
        let times = |event: &Entry| Some((event.occurred_at, event.logged_at?));
        let only = |event_type: &str| -> Option<Times> {
            let mut of_type = events.iter().filter(|e| e.event_type == event_type);
            let event = of_type.next()?;
            of_type.next().is_none().then_some(())?;
            times(event)
        };
        let mut statuses: Vec<&&Entry> = events
            .iter()
            .filter(|e| e.event_type == "OrderStatusChanged")
            .collect();
        statuses.sort_by_key(|e| e.occurred_at);
        // PENDING, PAID, COMPLETED: nothing else for an order that completed.
        let [_, _, completed] = statuses.as_slice() else {
            return None;
        };
        Some(Path {
            created: only("OrderCreated")?,
            paid: only("PaymentProcessed")?,
            taken: only("InventoryUpdated")?,
            completed: times(completed)?,
        })
    }
}

/// How long after a run's last completion the history service may take to record its events.
const HISTORY_DRAIN: Duration = Duration::from_secs(120);

/// The history service's database, read for each run's hops.
pub struct History {
    pool: sqlx::PgPool,
}

impl History {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(History {
            pool: super::runs::reader(url, "history").await?,
        })
    }

    /// The hops of `orders` (each COMPLETED), once the history service has recorded every
    /// COMPLETED of them or [`HISTORY_DRAIN`] after `since`, whichever is first.
    pub async fn hops(&self, orders: &[Uuid], since: Instant) -> anyhow::Result<Vec<Hop>> {
        super::runs::count_until(
            &self.pool,
            "SELECT count(*) FROM order_timeline
             WHERE order_id = ANY($1) AND event_type = 'OrderStatusChanged'",
            orders,
            orders.len() as i64 * super::runs::STATUSES_TO_COMPLETED,
            since + HISTORY_DRAIN,
        )
        .await?;
        Ok(hops(&store::timelines(&self.pool, orders).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn event(order: Uuid, event_type: &str, written: i64, logged: i64) -> Entry {
        Entry {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            order_id: order,
            event_type: event_type.to_owned(),
            event_id: None,
            producer: "p".into(),
            summary: String::new(),
            occurred_at: at(written),
            logged_at: Some(at(logged)),
            trace_id: None,
            redriven_from: None,
        }
    }

    /// One order's whole path, every hop a different length.
    fn completed(order: Uuid, scale: i64) -> Vec<Entry> {
        vec![
            event(order, "OrderCreated", 0, scale),
            event(order, "OrderStatusChanged", 0, scale),
            event(order, "PaymentProcessed", 3 * scale, 4 * scale),
            event(order, "OrderStatusChanged", 6 * scale, 8 * scale),
            event(order, "InventoryUpdated", 7 * scale, 9 * scale),
            // The clocks' resolution: written within the millisecond its cause was sent in.
            event(order, "OrderStatusChanged", 9 * scale - 1, 13 * scale),
        ]
    }

    fn p50s(hops: &[Hop]) -> Vec<(&str, f64)> {
        hops.iter().map(|h| (h.name, h.latency.p50_ms)).collect()
    }

    #[test]
    fn each_hop_runs_from_its_cause_in_the_log_to_what_it_wrote() {
        let order = Uuid::new_v4();
        assert_eq!(
            p50s(&hops(&completed(order, 10))),
            [
                ("order outbox (OrderCreated)", 10.0),
                ("to payment", 20.0),
                ("payment outbox", 10.0),
                ("to inventory", 30.0),
                ("inventory outbox", 20.0),
                ("to order (COMPLETED)", 0.0),
                ("order outbox (COMPLETED)", 41.0),
                ("OrderCreated written to COMPLETED sent", 130.0),
            ]
        );
    }

    #[test]
    fn orders_without_their_whole_path_are_left_out() {
        let whole = Uuid::new_v4();
        let mut events = completed(whole, 10);
        // Still under way: no COMPLETED yet.
        let under_way = Uuid::new_v4();
        events.extend(completed(under_way, 1000).into_iter().take(5));
        // A payment recorded twice (a redriven copy): which one caused the next hop is not known.
        let twice = Uuid::new_v4();
        events.extend(completed(twice, 1000));
        events.push(event(twice, "PaymentProcessed", 3000, 4000));
        // A message without a timestamp.
        let unlogged = Uuid::new_v4();
        let mut some = completed(unlogged, 1000);
        some[2].logged_at = None;
        events.extend(some);
        let hops = hops(&events);
        assert!(hops.iter().all(|h| h.latency.count == 1), "{hops:?}");
        assert_eq!(hops[7].latency.max_ms, 130.0);
    }
}
