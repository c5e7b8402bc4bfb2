//! In-memory fan-out of order status changes to WatchOrder streams: one broadcast channel
//! per watched order, created by the first watcher and removed with the last, so the
//! `order-status` feed reaches any number of watchers without touching a database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orderflow_proto::v1::OrderUpdate;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;

/// Updates buffered per order before a slow watcher lags (it then resynchronises).
const PER_ORDER_BUFFER: usize = 32;

pub struct Hub {
    orders: Mutex<HashMap<String, broadcast::Sender<OrderUpdate>>>,
    /// Live subscriptions: one per open WatchOrder stream.
    watchers: Gauge,
}

/// A watcher's subscription to one order; unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    order_id: String,
    pub receiver: broadcast::Receiver<OrderUpdate>,
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
        let sender = orders
            .entry(order_id.to_owned())
            .or_insert_with(|| broadcast::channel(PER_ORDER_BUFFER).0);
        self.watchers.inc();
        Subscription {
            hub: self.clone(),
            order_id: order_id.to_owned(),
            receiver: sender.subscribe(),
        }
    }

    /// Delivers an update to the order's watchers, if it has any.
    pub fn publish(&self, update: OrderUpdate) {
        let orders = self.orders.lock().expect("hub lock");
        if let Some(sender) = orders.get(&update.order_id) {
            let _ = sender.send(update);
        }
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
        // Our receiver is still alive here: a count of one means we are the last watcher.
        if orders
            .get(&self.order_id)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            orders.remove(&self.order_id);
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
        assert_eq!(a1.receiver.recv().await.unwrap().version, 2);
        assert_eq!(a2.receiver.recv().await.unwrap().version, 2);
        assert!(b.receiver.try_recv().is_err());
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
}
