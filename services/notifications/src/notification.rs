//! What a customer is told when their order changes status: pure, no I/O.

use chrono::{DateTime, Utc};
use orderflow_domain::OrderStatus;
use orderflow_events::OrderStatusChanged;
use serde::Serialize;
use uuid::Uuid;

/// One notification: an order reached a status. Its id is the status change's event id, so
/// every delivery of it carries the same id and a receiver can drop a repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub notification_id: Uuid,
    pub customer_id: String,
    pub order_id: Uuid,
    /// The domain's name: `PENDING`, `PAID`, ...
    pub status: &'static str,
    /// 1 for PENDING, then one more per transition: the order of one order's notifications.
    pub version: i64,
    pub reason: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// The sentence a customer reads.
    pub message: String,
}

/// Why a status change makes no notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotNotified {
    /// The Avro enum's default symbol: a status added by a newer writer than this reader.
    #[error("status UNKNOWN (a newer writer's status): nothing to tell the customer")]
    UnknownStatus,
    #[error("{0}")]
    Invalid(String),
}

impl Notification {
    /// The notification of `change`.
    pub fn of(change: &OrderStatusChanged) -> Result<Notification, NotNotified> {
        let status =
            OrderStatus::try_from(change.status).map_err(|_| NotNotified::UnknownStatus)?;
        let notification_id = change.event_id.parse().map_err(|_| {
            NotNotified::Invalid(format!("event_id {:?} is not a UUID", change.event_id))
        })?;
        let order_id = change.order_id.parse().map_err(|_| {
            NotNotified::Invalid(format!("order_id {:?} is not a UUID", change.order_id))
        })?;
        let occurred_at = DateTime::from_timestamp_millis(change.occurred_at).ok_or_else(|| {
            NotNotified::Invalid(format!(
                "occurred_at {} is out of range",
                change.occurred_at
            ))
        })?;
        if change.customer_id.is_empty() {
            return Err(NotNotified::Invalid("customer_id is empty".into()));
        }
        Ok(Notification {
            notification_id,
            customer_id: change.customer_id.clone(),
            order_id,
            status: status.as_str(),
            version: change.version,
            reason: change.reason.clone(),
            occurred_at,
            message: message(status, order_id, change.reason.as_deref()),
        })
    }

    /// The JSON a sink delivers.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a notification is plain data")
    }
}

/// The sentence for `status`, with the reason where the customer needs it.
fn message(status: OrderStatus, order: Uuid, reason: Option<&str>) -> String {
    let because = |fallback: &str| {
        reason
            .filter(|r| !r.is_empty())
            .unwrap_or(fallback)
            .to_owned()
    };
    match status {
        OrderStatus::Pending => format!("We have your order {order} and are taking payment."),
        OrderStatus::Paid => {
            format!("Payment for order {order} went through; we are reserving your items.")
        }
        OrderStatus::Failed => format!(
            "Payment for order {order} did not go through ({}); nothing was charged.",
            because("declined")
        ),
        OrderStatus::Completed => {
            format!("Order {order} is complete: your items are reserved for you.")
        }
        OrderStatus::OutOfStock => format!(
            "Order {order} could not be filled ({}); your payment will be refunded.",
            because("out of stock")
        ),
        OrderStatus::Refunded => format!("Your payment for order {order} was refunded."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_events::OrderStatus as Wire;

    fn change(status: Wire, reason: Option<&str>) -> OrderStatusChanged {
        OrderStatusChanged {
            event_id: "0193a5c4-0000-7000-8000-000000000001".into(),
            order_id: "0193a5c4-0000-7000-8000-0000000000aa".into(),
            occurred_at: 1_764_590_400_000,
            customer_id: "alice".into(),
            version: 2,
            status,
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn a_status_change_becomes_the_customer_s_notification_with_the_event_s_id() {
        let n = Notification::of(&change(Wire::Paid, None)).unwrap();
        assert_eq!(
            n.notification_id.to_string(),
            "0193a5c4-0000-7000-8000-000000000001"
        );
        assert_eq!(n.customer_id, "alice");
        assert_eq!(n.status, "PAID");
        assert_eq!(n.version, 2);
        assert_eq!(n.occurred_at.to_rfc3339(), "2025-12-01T12:00:00+00:00");
        assert_eq!(
            n.message,
            "Payment for order 0193a5c4-0000-7000-8000-0000000000aa went through; we are reserving your items."
        );
        let body = n.body();
        assert_eq!(body["status"], "PAID");
        assert_eq!(body["order_id"], "0193a5c4-0000-7000-8000-0000000000aa");
    }

    #[test]
    fn a_failure_says_why_and_an_unknown_status_notifies_nobody() {
        let n = Notification::of(&change(Wire::OutOfStock, Some("sku-1: 2 short"))).unwrap();
        assert!(n.message.contains("(sku-1: 2 short)"), "{}", n.message);
        let n = Notification::of(&change(Wire::Failed, None)).unwrap();
        assert!(n.message.contains("(declined)"), "{}", n.message);
        assert_eq!(
            Notification::of(&change(Wire::Unknown, None)),
            Err(NotNotified::UnknownStatus)
        );
    }

    #[test]
    fn a_change_with_a_bad_id_is_refused_naming_the_field() {
        let mut bad = change(Wire::Paid, None);
        bad.order_id = "not-a-uuid".into();
        let err = Notification::of(&bad).unwrap_err();
        assert!(err.to_string().contains("order_id \"not-a-uuid\""), "{err}");
    }
}
