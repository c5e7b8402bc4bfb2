//! Conversions between the Avro event types and the domain types. An event a service consumes
//! becomes the domain type it acts on here, once, with every field it relies on validated (an
//! error names the field: `items[0].quantity`); the events a service produces are built from
//! domain values with the `From` conversions here.

use orderflow_domain::{
    Money, OrderId, OrderInput, OrderLine, OrderOutcome, OrderStatus, PaymentOutcome,
    PaymentResult, PlacedOrder, Quantity, RequestedUnits, Sku, StockDecision, StockRequest,
    StockSettlement, ValidationError,
};

use crate::types as ev;

/// What a reader says about an enum symbol added by a newer schema (read as `UNKNOWN`).
fn unknown_symbol(what: &str) -> ValidationError {
    ValidationError::new(
        "status",
        format!("{what} status UNKNOWN (written by a newer schema?)"),
    )
}

impl From<Money> for ev::Money {
    fn from(m: Money) -> Self {
        ev::Money {
            amount_minor: m.amount_minor(),
            currency: m.currency().to_string(),
        }
    }
}

impl From<&OrderLine> for ev::OrderLine {
    fn from(line: &OrderLine) -> Self {
        ev::OrderLine {
            sku: line.sku.to_string(),
            // At most Quantity::MAX, far below i32::MAX.
            quantity: line.quantity.get() as i32,
            unit_price: line.unit_price.into(),
        }
    }
}

/// Validates event lines; `field` names the list, so errors read `items[2].quantity`.
pub fn order_lines(
    field: &str,
    lines: &[ev::OrderLine],
) -> Result<Vec<OrderLine>, ValidationError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            OrderLine::parse(
                &format!("{field}[{i}]"),
                &line.sku,
                i64::from(line.quantity),
                Some((line.unit_price.amount_minor, &line.unit_price.currency)),
            )
        })
        .collect()
}

impl From<&orderflow_domain::MissingItem> for ev::MissingItem {
    fn from(m: &orderflow_domain::MissingItem) -> Self {
        ev::MissingItem {
            sku: m.sku.to_string(),
            // Both fit: requests are bounded by i32::MAX units, stock by MAX_STOCK.
            requested: m.requested as i32,
            available: m.available as i32,
        }
    }
}

impl TryFrom<&ev::MissingItem> for orderflow_domain::MissingItem {
    type Error = ValidationError;

    /// A short SKU: at least one unit requested, fewer available.
    fn try_from(m: &ev::MissingItem) -> Result<Self, Self::Error> {
        let sku = Sku::parse("sku", &m.sku)?;
        let requested = u32::try_from(m.requested)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                ValidationError::new(
                    "requested",
                    format!("must be at least 1, got {}", m.requested),
                )
            })?;
        let available = u32::try_from(m.available)
            .ok()
            .filter(|n| *n < requested)
            .ok_or_else(|| {
                ValidationError::new(
                    "available",
                    format!(
                        "must be between 0 and requested - 1 ({}), got {}",
                        requested - 1,
                        m.available
                    ),
                )
            })?;
        Ok(orderflow_domain::MissingItem {
            sku,
            requested,
            available,
        })
    }
}

/// Validates the missing items of an event or a stored row; `field` names the list.
pub fn missing_items(
    field: &str,
    missing: &[ev::MissingItem],
) -> Result<Vec<orderflow_domain::MissingItem>, ValidationError> {
    missing
        .iter()
        .enumerate()
        .map(|(i, m)| {
            orderflow_domain::MissingItem::try_from(m)
                .map_err(|e| e.under(&format!("{field}[{i}]")))
        })
        .collect()
}

impl From<(&Sku, u32)> for ev::StockLine {
    fn from((sku, units): (&Sku, u32)) -> Self {
        ev::StockLine {
            sku: sku.to_string(),
            // RequestedUnits holds at most i32::MAX units per SKU.
            quantity: units as i32,
        }
    }
}

impl From<OrderStatus> for ev::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => ev::OrderStatus::Pending,
            OrderStatus::Paid => ev::OrderStatus::Paid,
            OrderStatus::Failed => ev::OrderStatus::Failed,
            OrderStatus::Completed => ev::OrderStatus::Completed,
            OrderStatus::OutOfStock => ev::OrderStatus::OutOfStock,
            OrderStatus::Refunded => ev::OrderStatus::Refunded,
        }
    }
}

impl TryFrom<ev::OrderStatus> for OrderStatus {
    type Error = ValidationError;

    fn try_from(status: ev::OrderStatus) -> Result<Self, Self::Error> {
        OrderStatus::ALL
            .into_iter()
            .find(|s| ev::OrderStatus::from(*s) == status)
            .ok_or_else(|| unknown_symbol("order"))
    }
}

impl From<&StockDecision> for ev::InventoryStatus {
    fn from(decision: &StockDecision) -> Self {
        match decision {
            StockDecision::Confirmed => ev::InventoryStatus::Confirmed,
            StockDecision::OutOfStock { .. } => ev::InventoryStatus::OutOfStock,
        }
    }
}

impl TryFrom<&ev::OrderCreated> for PlacedOrder {
    type Error = ValidationError;

    /// The order as the payment service charges it: valid id, total and lines (at least one).
    fn try_from(order: &ev::OrderCreated) -> Result<Self, Self::Error> {
        let order_id = OrderId::parse("order_id", &order.order_id)?;
        let total = Money::new("total", order.total.amount_minor, &order.total.currency)?;
        if order.items.is_empty() {
            return Err(ValidationError::new("items", "order has no items"));
        }
        let items = order_lines("items", &order.items)?;
        let customer_id = orderflow_domain::CustomerId::parse("customer_id", &order.customer_id)?;
        let payment_method =
            orderflow_domain::PaymentMethod::parse("payment_method", &order.payment_method)?;
        Ok(PlacedOrder {
            order_id,
            customer_id,
            items,
            total,
            payment_method,
        })
    }
}

impl TryFrom<&ev::CatalogueItemChanged> for orderflow_domain::CatalogueEntry {
    type Error = ValidationError;

    fn try_from(entry: &ev::CatalogueItemChanged) -> Result<Self, Self::Error> {
        orderflow_domain::CatalogueEntry::parse(
            &entry.sku,
            i64::from(entry.available),
            entry.revision,
        )
    }
}

impl TryFrom<&ev::CustomerStatusChanged> for orderflow_domain::CustomerEntry {
    type Error = ValidationError;

    fn try_from(entry: &ev::CustomerStatusChanged) -> Result<Self, Self::Error> {
        use orderflow_domain::customers::Status;
        let status = match entry.status {
            ev::CustomerStatus::Active => Status::Active,
            ev::CustomerStatus::Blocked => Status::Blocked,
            ev::CustomerStatus::Unknown => {
                return Err(ValidationError::new(
                    "status",
                    "must be ACTIVE or BLOCKED, got UNKNOWN",
                ));
            }
        };
        orderflow_domain::CustomerEntry::new(&entry.customer_id, status, entry.reason.as_deref())
    }
}

/// A directory entry as the event that publishes it, happening now.
impl From<&orderflow_domain::CustomerEntry> for ev::CustomerStatusChanged {
    fn from(entry: &orderflow_domain::CustomerEntry) -> Self {
        let (status, reason) = match &entry.standing {
            orderflow_domain::Standing::Active => (ev::CustomerStatus::Active, None),
            orderflow_domain::Standing::Blocked { reason } => {
                (ev::CustomerStatus::Blocked, Some(reason.clone()))
            }
        };
        ev::CustomerStatusChanged {
            event_id: ev::new_event_id(),
            occurred_at: ev::now_millis(),
            customer_id: entry.customer_id.to_string(),
            status,
            reason,
        }
    }
}

impl TryFrom<&ev::PaymentProcessed> for PaymentOutcome {
    type Error = ValidationError;

    /// The payment's result for its order. The lines are not looked at: the order service
    /// does not need them (the inventory service reads them as a [`StockRequest`]).
    fn try_from(payment: &ev::PaymentProcessed) -> Result<Self, Self::Error> {
        let result = match payment.status {
            ev::PaymentStatus::Paid => PaymentResult::Paid,
            ev::PaymentStatus::Failed => PaymentResult::Failed {
                reason: payment
                    .failure_reason
                    .clone()
                    .unwrap_or_else(|| "payment failed".into()),
            },
            ev::PaymentStatus::Unknown => return Err(unknown_symbol("payment")),
        };
        let order_id = OrderId::parse("order_id", &payment.order_id)?;
        Ok(PaymentOutcome { order_id, result })
    }
}

impl TryFrom<&ev::PaymentProcessed> for StockRequest {
    type Error = ValidationError;

    /// What a PAID payment's order asks of the stock: the units per SKU over its lines (only
    /// SKU and quantity matter here). Any other payment asks for nothing and is an error.
    fn try_from(payment: &ev::PaymentProcessed) -> Result<Self, Self::Error> {
        match payment.status {
            ev::PaymentStatus::Paid => {}
            ev::PaymentStatus::Failed => {
                return Err(ValidationError::new(
                    "status",
                    "a FAILED payment requests no stock",
                ));
            }
            ev::PaymentStatus::Unknown => return Err(unknown_symbol("payment")),
        }
        let order_id = OrderId::parse("order_id", &payment.order_id)?;
        let lines = payment
            .items
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let sku = Sku::parse(&format!("items[{i}].sku"), &line.sku)?;
                let quantity =
                    Quantity::parse(&format!("items[{i}].quantity"), i64::from(line.quantity))?;
                Ok((sku, quantity))
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        let units = RequestedUnits::from_lines("items", lines)?;
        Ok(StockRequest { order_id, units })
    }
}

impl TryFrom<&ev::InventoryUpdated> for StockSettlement {
    type Error = ValidationError;

    /// The inventory's decision for an order, with the SKUs that fell short. (The event's
    /// `items` only repeat the request; no consumer needs them.)
    fn try_from(update: &ev::InventoryUpdated) -> Result<Self, Self::Error> {
        let confirmed = match update.status {
            ev::InventoryStatus::Confirmed => true,
            ev::InventoryStatus::OutOfStock => false,
            ev::InventoryStatus::Unknown => return Err(unknown_symbol("inventory")),
        };
        let order_id = OrderId::parse("order_id", &update.order_id)?;
        let decision = if confirmed {
            StockDecision::Confirmed
        } else {
            StockDecision::OutOfStock {
                missing: missing_items("missing", &update.missing)?,
            }
        };
        Ok(StockSettlement { order_id, decision })
    }
}

impl TryFrom<&ev::PaymentRefunded> for OrderOutcome {
    type Error = ValidationError;

    /// A refund, as the order service applies it.
    fn try_from(refund: &ev::PaymentRefunded) -> Result<Self, Self::Error> {
        Ok(OrderOutcome {
            order_id: OrderId::parse("order_id", &refund.order_id)?,
            input: OrderInput::Refunded {
                reason: refund.reason.clone(),
            },
            missing: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use orderflow_domain::MissingItem;

    use super::*;

    fn money(amount_minor: i64) -> ev::Money {
        ev::Money {
            amount_minor,
            currency: "EUR".into(),
        }
    }

    fn line(sku: &str, quantity: i32) -> ev::OrderLine {
        ev::OrderLine {
            sku: sku.into(),
            quantity,
            unit_price: money(250),
        }
    }

    fn created() -> ev::OrderCreated {
        ev::OrderCreated {
            event_id: crate::new_event_id(),
            order_id: OrderId::generate().to_string(),
            occurred_at: 1,
            customer_id: "alice".into(),
            items: vec![line("sku-1", 2), line("sku-2", 1)],
            total: money(750),
            payment_method: "pm_card_visa".into(),
        }
    }

    fn payment(status: ev::PaymentStatus, items: Vec<ev::OrderLine>) -> ev::PaymentProcessed {
        ev::PaymentProcessed {
            event_id: crate::new_event_id(),
            order_id: OrderId::generate().to_string(),
            occurred_at: 1,
            payment_id: OrderId::generate().to_string(),
            status,
            amount: money(750),
            items,
            failure_reason: None,
            provider_reference: None,
        }
    }

    fn stock_update(
        status: ev::InventoryStatus,
        missing: Vec<ev::MissingItem>,
    ) -> ev::InventoryUpdated {
        ev::InventoryUpdated {
            event_id: crate::new_event_id(),
            order_id: OrderId::generate().to_string(),
            occurred_at: 1,
            status,
            items: vec![ev::StockLine {
                sku: "sku-1".into(),
                quantity: 8,
            }],
            missing,
        }
    }

    fn short(sku: &str, requested: i32, available: i32) -> ev::MissingItem {
        ev::MissingItem {
            sku: sku.into(),
            requested,
            available,
        }
    }

    #[test]
    fn an_order_created_reads_back_exactly_as_written() {
        let event = created();
        let order = PlacedOrder::try_from(&event).unwrap();
        assert_eq!(order.order_id.to_string(), event.order_id);
        let lines: Vec<ev::OrderLine> = order.items.iter().map(Into::into).collect();
        assert_eq!(lines, event.items);
        assert_eq!(ev::Money::from(order.total), event.total);
        assert_eq!(order.payment_method.as_str(), "pm_card_visa");
    }

    #[test]
    fn an_invalid_order_created_names_the_field() {
        let message = |f: fn(&mut ev::OrderCreated)| {
            let mut event = created();
            f(&mut event);
            PlacedOrder::try_from(&event).unwrap_err().to_string()
        };
        assert!(message(|e| e.order_id = "nope".into()).starts_with("order_id: "));
        assert!(message(|e| e.total.currency = "eur".into()).starts_with("total.currency: "));
        assert_eq!(message(|e| e.items.clear()), "items: order has no items");
        assert_eq!(
            message(|e| e.items[1].quantity = -1),
            "items[1].quantity: must be at least 1, got -1"
        );
        assert!(message(|e| e.items[0].sku = "a b".into()).starts_with("items[0].sku: "));
        assert!(message(|e| e.payment_method.clear()).starts_with("payment_method: "));
    }

    #[test]
    fn a_payment_becomes_its_result_without_reading_the_lines() {
        let mut failed = payment(ev::PaymentStatus::Failed, vec![line("sku-1", -1)]);
        let outcome = PaymentOutcome::try_from(&failed).unwrap();
        assert_eq!(
            outcome.result,
            PaymentResult::Failed {
                reason: "payment failed".into()
            }
        );
        failed.failure_reason = Some("card declined".into());
        assert_eq!(
            PaymentOutcome::try_from(&failed).unwrap().result,
            PaymentResult::Failed {
                reason: "card declined".into()
            }
        );
        let paid = payment(ev::PaymentStatus::Paid, vec![line("sku-1", -1)]);
        assert_eq!(
            PaymentOutcome::try_from(&paid).unwrap().result,
            PaymentResult::Paid
        );
        let unknown = payment(ev::PaymentStatus::Unknown, vec![]);
        assert_eq!(
            PaymentOutcome::try_from(&unknown).unwrap_err().to_string(),
            "status: payment status UNKNOWN (written by a newer schema?)"
        );
    }

    #[test]
    fn a_paid_payment_requests_its_units_per_sku() {
        let paid = payment(
            ev::PaymentStatus::Paid,
            vec![line("sku-2", 1), line("sku-1", 2), line("sku-2", 4)],
        );
        let request = StockRequest::try_from(&paid).unwrap();
        assert_eq!(request.order_id.to_string(), paid.order_id);
        let lines: Vec<ev::StockLine> = request.units.iter().map(Into::into).collect();
        assert_eq!(
            lines,
            [
                ev::StockLine {
                    sku: "sku-1".into(),
                    quantity: 2
                },
                ev::StockLine {
                    sku: "sku-2".into(),
                    quantity: 5
                }
            ]
        );
        let error = |items| {
            StockRequest::try_from(&payment(ev::PaymentStatus::Paid, items))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(error(vec![]), "items: paid order has no items");
        assert_eq!(
            error(vec![line("sku-1", 1), line("sku-1", -1)]),
            "items[1].quantity: must be at least 1, got -1"
        );
        assert!(error(vec![line("", 1)]).starts_with("items[0].sku: "));
        let failed = payment(ev::PaymentStatus::Failed, vec![line("sku-1", 1)]);
        assert_eq!(StockRequest::try_from(&failed).unwrap_err().field, "status");
    }

    #[test]
    fn a_stock_update_becomes_a_settlement() {
        let confirmed = stock_update(ev::InventoryStatus::Confirmed, vec![]);
        assert_eq!(
            StockSettlement::try_from(&confirmed).unwrap().decision,
            StockDecision::Confirmed
        );
        let out = stock_update(ev::InventoryStatus::OutOfStock, vec![short("sku-1", 8, 7)]);
        let settled = StockSettlement::try_from(&out).unwrap();
        let written: Vec<ev::MissingItem> =
            settled.decision.missing().iter().map(Into::into).collect();
        assert_eq!(written, out.missing);
        assert_eq!(ev::InventoryStatus::from(&settled.decision), out.status);
        let error = |missing| {
            StockSettlement::try_from(&stock_update(ev::InventoryStatus::OutOfStock, missing))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(vec![short("sku-1", 8, 7), short("sku-2", 0, 0)]),
            "missing[1].requested: must be at least 1, got 0"
        );
        assert!(error(vec![short("sku-1", 8, 8)]).starts_with("missing[0].available: "));
        assert!(error(vec![short("sku-1", 8, -1)]).starts_with("missing[0].available: "));
        assert!(error(vec![short("", 8, 1)]).starts_with("missing[0].sku: "));
        let unknown = stock_update(ev::InventoryStatus::Unknown, vec![]);
        assert_eq!(
            StockSettlement::try_from(&unknown).unwrap_err().to_string(),
            "status: inventory status UNKNOWN (written by a newer schema?)"
        );
    }

    #[test]
    fn a_refund_is_an_order_outcome() {
        let refund = ev::PaymentRefunded {
            event_id: crate::new_event_id(),
            order_id: OrderId::generate().to_string(),
            occurred_at: 1,
            payment_id: OrderId::generate().to_string(),
            refund_id: OrderId::generate().to_string(),
            amount: money(750),
            reason: "out of stock: sku-1: requested 8, available 7".into(),
        };
        let outcome = OrderOutcome::try_from(&refund).unwrap();
        assert_eq!(
            outcome.input,
            OrderInput::Refunded {
                reason: refund.reason.clone()
            }
        );
        let mut bad = refund;
        bad.order_id = "nope".into();
        assert_eq!(OrderOutcome::try_from(&bad).unwrap_err().field, "order_id");
    }

    #[test]
    fn order_statuses_map_one_to_one_and_unknown_is_invalid() {
        for status in OrderStatus::ALL {
            let wire = ev::OrderStatus::from(status);
            assert_eq!(OrderStatus::try_from(wire), Ok(status));
            // The Avro symbols are the stored names.
            let symbol = serde_json::to_value(wire).unwrap();
            assert_eq!(symbol, status.as_str());
        }
        assert_eq!(
            OrderStatus::try_from(ev::OrderStatus::Unknown)
                .unwrap_err()
                .field,
            "status"
        );
    }

    #[test]
    fn missing_items_round_trip() {
        let item = MissingItem {
            sku: Sku::parse("sku", "sku-1").unwrap(),
            requested: 8,
            available: 7,
        };
        let wire = ev::MissingItem::from(&item);
        assert_eq!(MissingItem::try_from(&wire), Ok(item));
    }
}
