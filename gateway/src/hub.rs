//! In-memory fan-out of order status changes to WatchOrder streams: one broadcast channel
//! per watched order, created by the first watcher and removed with the last, so the
//! `order-status` feed reaches any number of watchers without touching a database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orderflow_proto::v1::OrderUpdate;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;

/// Changes buffered per order before a slow watcher lags (it then resynchronises).
const PER_ORDER_BUFFER: usize = 32;

/// What a watcher receives from the hub.
#[derive(Debug, Clone)]
pub enum Change {
    /// A status change read from `order-status`, shared by the order's watchers.
    Update(Arc<OrderUpdate>),
    /// The feed skipped an event of this order, or was repositioned: a change may have been
    /// missed, so the watcher reads the order's history again.
    Resync,
}

/// One watched order: its channel and how many subscriptions hold it.
struct Entry {
    sender: broadcast::Sender<Change>,
    /// Counted here, under the hub's lock, rather than read from the channel's receiver
    /// count: a dropping subscription's receiver is still alive while its `Drop` runs, so
    /// two watchers dropped together could each see the other and neither remove the entry.
    watchers: usize,
}

pub struct Hub {
    orders: Mutex<HashMap<String, Entry>>,
    /// Live subscriptions: one per open WatchOrder stream.
    watchers: Gauge,
}

/// A watcher's subscription to one order; unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    order_id: String,
    pub receiver: broadcast::Receiver<Change>,
}

impl Hub {
    /// A hub that keeps `watchers` at the number of live subscriptions.
    pub fn new(watchers: Gauge) -> Arc<Hub> {
        Arc::new(Hub {
            orders: Mutex::default(),
            watchers,
        })
    }

    pub fn subscribe(self: &Arc<Self>, order_id: &str) -> Subscription {
        let mut orders = self.orders.lock().expect("hub lock");
        let entry = orders.entry(order_id.to_owned()).or_insert_with(|| Entry {
            sender: broadcast::channel(PER_ORDER_BUFFER).0,
            watchers: 0,
        });
        entry.watchers += 1;
        self.watchers.inc();
        Subscription {
            hub: self.clone(),
            order_id: order_id.to_owned(),
            receiver: entry.sender.subscribe(),
        }
    }

    /// Delivers an update to the order's watchers, if it has any.
    pub fn publish(&self, update: OrderUpdate) {
        let orders = self.orders.lock().expect("hub lock");
        if let Some(entry) = orders.get(&update.order_id) {
            let _ = entry.sender.send(Change::Update(Arc::new(update)));
        }
    }

    /// Tells the order's watchers, if it has any, to read its history again.
    pub fn resync(&self, order_id: &str) {
        let orders = self.orders.lock().expect("hub lock");
        if let Some(entry) = orders.get(order_id) {
            let _ = entry.sender.send(Change::Resync);
        }
    }

    /// Tells every watcher to read its order's history again; returns how many orders.
    pub fn resync_all(&self) -> usize {
        let orders = self.orders.lock().expect("hub lock");
        for entry in orders.values() {
            let _ = entry.sender.send(Change::Resync);
        }
        orders.len()
    }

    /// Orders with at least one watcher.
    #[cfg(test)]
    pub fn watched_orders(&self) -> usize {
        self.orders.lock().expect("hub lock").len()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.watchers.dec();
        let mut orders = self.hub.orders.lock().expect("hub lock");
        if let Some(entry) = orders.get_mut(&self.order_id) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                orders.remove(&self.order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(order_id: &str, version: i64) -> OrderUpdate {
        OrderUpdate {
            order_id: order_id.into(),
            version,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn updates_reach_every_watcher_of_that_order_only() {
        let hub = Hub::new(Gauge::default());
        let mut a1 = hub.subscribe("a");
        let mut a2 = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        hub.publish(update("a", 2));
        for a in [&mut a1, &mut a2] {
            assert!(matches!(a.receiver.recv().await, Ok(Change::Update(u)) if u.version == 2));
        }
        assert!(b.receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_resync_reaches_the_order_s_watchers_or_everyone() {
        let hub = Hub::new(Gauge::default());
        let mut a = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        hub.resync("a");
        assert!(matches!(a.receiver.recv().await, Ok(Change::Resync)));
        assert!(b.receiver.try_recv().is_err());
        assert_eq!(hub.resync_all(), 2);
        assert!(matches!(a.receiver.recv().await, Ok(Change::Resync)));
        assert!(matches!(b.receiver.recv().await, Ok(Change::Resync)));
    }

    #[test]
    fn the_last_watcher_removes_the_channel() {
        let hub = Hub::new(Gauge::default());
        let first = hub.subscribe("a");
        let second = hub.subscribe("a");
        drop(first);
        assert_eq!(hub.watched_orders(), 1);
        drop(second);
        assert_eq!(hub.watched_orders(), 0);
        hub.publish(update("a", 1));
    }

    #[test]
    fn the_watchers_gauge_counts_live_subscriptions() {
        let watchers = Gauge::default();
        let hub = Hub::new(watchers.clone());
        let a1 = hub.subscribe("a");
        let a2 = hub.subscribe("a");
        let b = hub.subscribe("b");
        assert_eq!(watchers.get(), 3);
        drop(a1);
        assert_eq!(watchers.get(), 2);
        drop(b);
        drop(a2);
        assert_eq!(watchers.get(), 0);
    }

    /// Two watchers of one order that go at the same moment (two streams of one client
    /// closed together) still leave no channel behind.
    #[test]
    fn watchers_dropped_together_leave_no_channel() {
        const ROUNDS: usize = 20_000;
        let hub = Hub::new(Gauge::default());
        let barrier = std::sync::Barrier::new(2);
        // Two threads that live through every round, so each drop starts at the same moment.
        let (to_first, first) = std::sync::mpsc::channel::<Subscription>();
        let (to_second, second) = std::sync::mpsc::channel::<Subscription>();
        std::thread::scope(|scope| {
            for subscriptions in [first, second] {
                let barrier = &barrier;
                scope.spawn(move || {
                    for subscription in subscriptions {
                        barrier.wait();
                        drop(subscription);
                    }
                });
            }
            for round in 0..ROUNDS {
                let order_id = format!("order-{round}");
                to_first.send(hub.subscribe(&order_id)).unwrap();
                to_second.send(hub.subscribe(&order_id)).unwrap();
            }
            drop((to_first, to_second));
        });
        assert_eq!(hub.watched_orders(), 0, "channels of orders nobody watches");
    }
}
