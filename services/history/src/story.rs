//! What an event says, in a few words, and which service wrote it: the pure part of the
//! timeline, from the event alone.

use orderflow_events::{
    CustomerStatus, Event, EventKind, InventoryStatus, Money, OrderStatus, PaymentStatus,
};

/// The service that writes events of `kind`.
pub fn producer(kind: EventKind) -> &'static str {
    match kind {
        EventKind::OrderCreated | EventKind::OrderStatusChanged => "order",
        EventKind::PaymentProcessed | EventKind::PaymentRefunded => "payment",
        EventKind::InventoryUpdated | EventKind::CatalogueItemChanged => "inventory",
        EventKind::CustomerStatusChanged => "gateway",
    }
}

/// The event type's name as the timeline shows it: `OrderCreated`, ...
pub fn event_type(kind: EventKind) -> &'static str {
    let full = kind.full_name();
    full.rsplit('.').next().unwrap_or(full)
}

/// What `event` says about its order, in one short line.
pub fn summary(event: &Event) -> String {
    match event {
        Event::OrderCreated(e) => {
            let units: i64 = e.items.iter().map(|l| i64::from(l.quantity)).sum();
            let lines = e.items.len();
            format!(
                "customer {}, {lines} line{}, {units} unit{}, total {}",
                e.customer_id,
                plural(lines as i64),
                plural(units),
                money(&e.total)
            )
        }
        Event::OrderStatusChanged(e) => {
            let mut text = format!("status {} (v{})", status(e.status), e.version);
            if let Some(reason) = e.reason.as_deref().filter(|r| !r.is_empty()) {
                text.push_str(": ");
                text.push_str(reason);
            }
            text
        }
        Event::PaymentProcessed(e) => match e.status {
            PaymentStatus::Paid => format!("PAID {}", money(&e.amount)),
            PaymentStatus::Failed => format!(
                "FAILED: {}",
                e.failure_reason.as_deref().unwrap_or("no reason given")
            ),
            PaymentStatus::Unknown => "payment status UNKNOWN".to_owned(),
        },
        Event::PaymentRefunded(e) => format!("REFUNDED {}: {}", money(&e.amount), e.reason),
        Event::InventoryUpdated(e) => match e.status {
            InventoryStatus::Confirmed => {
                let units: i64 = e.items.iter().map(|l| i64::from(l.quantity)).sum();
                format!("CONFIRMED, {units} unit{} deducted", plural(units))
            }
            InventoryStatus::OutOfStock => {
                let missing: Vec<String> = e
                    .missing
                    .iter()
                    .map(|m| format!("{} ({} of {})", m.sku, m.available, m.requested))
                    .collect();
                format!("OUT_OF_STOCK: {}", missing.join(", "))
            }
            InventoryStatus::Unknown => "inventory status UNKNOWN".to_owned(),
        },
        Event::CatalogueItemChanged(e) => format!(
            "{}: {} in stock (revision {})",
            e.sku, e.available, e.revision
        ),
        Event::CustomerStatusChanged(e) => match e.status {
            CustomerStatus::Blocked => format!(
                "customer {} BLOCKED: {}",
                e.customer_id,
                e.reason.as_deref().unwrap_or(orderflow_domain::NO_REASON)
            ),
            CustomerStatus::Active => format!("customer {} ACTIVE", e.customer_id),
            CustomerStatus::Unknown => format!("customer {} status UNKNOWN", e.customer_id),
        },
    }
}

/// A dead letter's line: which message a consumer gave up on, after how many attempts, why.
pub fn dead_letter_summary(
    origin: &str,
    consumer: &str,
    attempts: Option<&str>,
    class: &str,
    message: &str,
) -> String {
    let attempts = match attempts {
        Some(n) => format!(" after {n} attempt{}", plural(n.parse().unwrap_or(0))),
        None => String::new(),
    };
    format!("{consumer} gave up on {origin}{attempts}: {class}: {message}")
}

/// The status's name as the domain writes it (`PENDING`, ...); `UNKNOWN` for the Avro enum's
/// default symbol, which no order is ever in.
fn status(status: OrderStatus) -> &'static str {
    orderflow_domain::OrderStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str())
}

/// `25.00 EUR` for 2500 minor units (two decimals, as the wire does not carry the exponent).
fn money(m: &Money) -> String {
    let sign = if m.amount_minor < 0 { "-" } else { "" };
    let abs = m.amount_minor.unsigned_abs();
    format!("{sign}{}.{:02} {}", abs / 100, abs % 100, m.currency)
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_events::{
        InventoryUpdated, MissingItem, OrderCreated, OrderLine, OrderStatusChanged,
    };

    fn eur(amount_minor: i64) -> Money {
        Money {
            amount_minor,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn an_order_says_who_placed_it_and_for_how_much() {
        let event = Event::OrderCreated(OrderCreated {
            event_id: "e".into(),
            order_id: "o".into(),
            occurred_at: 0,
            customer_id: "alice".into(),
            items: vec![OrderLine {
                sku: "sku-1".into(),
                quantity: 3,
                unit_price: eur(1250),
            }],
            total: eur(3750),
            payment_method: "pm_card_visa".into(),
        });
        assert_eq!(
            summary(&event),
            "customer alice, 1 line, 3 units, total 37.50 EUR"
        );
        assert_eq!(producer(event.kind()), "order");
        assert_eq!(event_type(event.kind()), "OrderCreated");
    }

    #[test]
    fn a_status_change_names_the_status_version_and_reason() {
        let change = |reason: Option<&str>| {
            Event::OrderStatusChanged(OrderStatusChanged {
                event_id: "e".into(),
                order_id: "o".into(),
                occurred_at: 0,
                customer_id: "alice".into(),
                version: 3,
                status: OrderStatus::OutOfStock,
                reason: reason.map(Into::into),
            })
        };
        assert_eq!(summary(&change(None)), "status OUT_OF_STOCK (v3)");
        assert_eq!(
            summary(&change(Some("sku-1 short"))),
            "status OUT_OF_STOCK (v3): sku-1 short"
        );
    }

    #[test]
    fn a_stock_out_names_each_missing_line() {
        let event = Event::InventoryUpdated(InventoryUpdated {
            event_id: "e".into(),
            order_id: "o".into(),
            occurred_at: 0,
            status: InventoryStatus::OutOfStock,
            items: vec![],
            missing: vec![MissingItem {
                sku: "sku-1".into(),
                requested: 11,
                available: 10,
            }],
        });
        assert_eq!(summary(&event), "OUT_OF_STOCK: sku-1 (10 of 11)");
        assert_eq!(producer(event.kind()), "inventory");
    }

    #[test]
    fn money_keeps_two_decimals_and_the_sign() {
        assert_eq!(money(&eur(5)), "0.05 EUR");
        assert_eq!(money(&eur(-1999)), "-19.99 EUR");
    }

    #[test]
    fn a_dead_letter_says_who_gave_up_on_what_and_why() {
        assert_eq!(
            dead_letter_summary(
                "orders/0/7",
                "payment",
                Some("1"),
                "undecodable",
                "not Avro"
            ),
            "payment gave up on orders/0/7 after 1 attempt: undecodable: not Avro"
        );
    }
}
