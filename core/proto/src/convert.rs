//! Conversions between the gRPC messages and the domain types: requests are validated into
//! domain types here, once, and domain values become messages here.

use orderflow_domain::{
    CustomerEntry, MissingItem, Money, NewOrder, OrderLine, OrderStatus, Standing, ValidationError,
};

use crate::v1 as pb;

impl TryFrom<&pb::PlaceOrderRequest> for NewOrder {
    type Error = ValidationError;

    /// Validates a request; the error names the first invalid field (`items[2].quantity`).
    fn try_from(req: &pb::PlaceOrderRequest) -> Result<Self, Self::Error> {
        let items = req.items.iter().enumerate().map(|(i, line)| {
            OrderLine::parse(
                &format!("items[{i}]"),
                &line.sku,
                i64::from(line.quantity),
                line.unit_price
                    .as_ref()
                    .map(|p| (p.amount_minor, p.currency.as_str())),
            )
        });
        NewOrder::parse(
            &req.customer_id,
            items,
            &req.payment_method,
            &req.idempotency_key,
        )
    }
}

impl TryFrom<&pb::SetCustomerStatusRequest> for CustomerEntry {
    type Error = ValidationError;

    /// Validates a SetCustomerStatus request into the directory entry it publishes.
    fn try_from(request: &pb::SetCustomerStatusRequest) -> Result<Self, Self::Error> {
        use orderflow_domain::customers::Status;
        let status = match pb::CustomerStatus::try_from(request.status) {
            Ok(pb::CustomerStatus::Active) => Status::Active,
            Ok(pb::CustomerStatus::Blocked) => Status::Blocked,
            _ => {
                return Err(ValidationError::new(
                    "status",
                    "must be CUSTOMER_STATUS_ACTIVE or CUSTOMER_STATUS_BLOCKED",
                ));
            }
        };
        CustomerEntry::new(&request.customer_id, status, Some(&request.reason))
    }
}

impl From<&CustomerEntry> for pb::CustomerStatusChange {
    fn from(entry: &CustomerEntry) -> Self {
        let (status, reason) = match &entry.standing {
            Standing::Active => (pb::CustomerStatus::Active, String::new()),
            Standing::Blocked { reason } => (pb::CustomerStatus::Blocked, reason.clone()),
        };
        pb::CustomerStatusChange {
            customer_id: entry.customer_id.to_string(),
            status: status.into(),
            reason,
        }
    }
}

impl From<Money> for pb::Money {
    fn from(m: Money) -> Self {
        pb::Money {
            amount_minor: m.amount_minor(),
            currency: m.currency().to_string(),
        }
    }
}

impl From<&OrderLine> for pb::OrderLine {
    fn from(line: &OrderLine) -> Self {
        pb::OrderLine {
            sku: line.sku.to_string(),
            // At most Quantity::MAX, far below i32::MAX.
            quantity: line.quantity.get() as i32,
            unit_price: Some(line.unit_price.into()),
        }
    }
}

impl From<&MissingItem> for pb::MissingItem {
    fn from(m: &MissingItem) -> Self {
        pb::MissingItem {
            sku: m.sku.to_string(),
            // Both fit: requests are bounded by i32::MAX units, stock by MAX_STOCK.
            requested: m.requested as i32,
            available: m.available as i32,
        }
    }
}

impl From<OrderStatus> for pb::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => pb::OrderStatus::Pending,
            OrderStatus::Paid => pb::OrderStatus::Paid,
            OrderStatus::Failed => pb::OrderStatus::Failed,
            OrderStatus::Completed => pb::OrderStatus::Completed,
            OrderStatus::OutOfStock => pb::OrderStatus::OutOfStock,
            OrderStatus::Refunded => pb::OrderStatus::Refunded,
        }
    }
}

impl TryFrom<pb::OrderStatus> for OrderStatus {
    type Error = ValidationError;

    fn try_from(status: pb::OrderStatus) -> Result<Self, Self::Error> {
        OrderStatus::ALL
            .into_iter()
            .find(|s| pb::OrderStatus::from(*s) == status)
            .ok_or_else(|| ValidationError::new("status", "is unspecified"))
    }
}

/// The domain status of a message's `status` field (an `i32` on the wire): `None` for
/// `ORDER_STATUS_UNSPECIFIED` and for numbers this build does not know.
pub fn order_status(raw: i32) -> Option<OrderStatus> {
    pb::OrderStatus::try_from(raw)
        .ok()
        .and_then(|status| OrderStatus::try_from(status).ok())
}

/// The name of a message's `status` field as the domain spells it (`COMPLETED`), or `?` for
/// a status this build does not know.
pub fn status_name(raw: i32) -> &'static str {
    order_status(raw).map_or("?", OrderStatus::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i32, amount: i64, currency: &str) -> pb::OrderLine {
        pb::OrderLine {
            sku: sku.into(),
            quantity,
            unit_price: Some(pb::Money {
                amount_minor: amount,
                currency: currency.into(),
            }),
        }
    }

    fn request(items: Vec<pb::OrderLine>) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            customer_id: "alice".into(),
            items,
            payment_method: "pm_card_visa".into(),
            idempotency_key: "k1".into(),
            validate_only: false,
        }
    }

    fn field_of(req: pb::PlaceOrderRequest) -> String {
        NewOrder::try_from(&req).unwrap_err().field
    }

    #[test]
    fn a_valid_order_sums_its_lines() {
        let order = NewOrder::try_from(&request(vec![
            line("sku-1", 3, 250, "EUR"),
            line("sku-2", 1, 100, "EUR"),
        ]))
        .unwrap();
        assert_eq!(order.total.amount_minor(), 850);
        assert_eq!(order.total.currency().as_str(), "EUR");
    }

    #[test]
    fn every_invalid_field_is_named() {
        assert_eq!(field_of(request(vec![])), "items");
        assert_eq!(
            field_of(request(vec![line("sku-1", 0, 1, "EUR")])),
            "items[0].quantity"
        );
        assert_eq!(
            field_of(request(vec![
                line("sku-1", 1, 1, "EUR"),
                line("s", -2, 1, "EUR")
            ])),
            "items[1].quantity"
        );
        assert_eq!(
            field_of(request(vec![line("", 1, 1, "EUR")])),
            "items[0].sku"
        );
        assert_eq!(
            field_of(request(vec![line(&"x".repeat(65), 1, 1, "EUR")])),
            "items[0].sku"
        );
        assert_eq!(
            field_of(request(vec![line("a b", 1, 1, "EUR")])),
            "items[0].sku"
        );
        assert_eq!(
            field_of(request(vec![line("sku-1", 1, 1, "eur")])),
            "items[0].unit_price.currency"
        );
        assert_eq!(
            field_of(request(vec![line("sku-1", 1, -5, "EUR")])),
            "items[0].unit_price.amount_minor"
        );
        assert_eq!(
            field_of(request(vec![
                line("a", 1, 1, "EUR"),
                line("b", 1, 1, "USD")
            ])),
            "items[1].unit_price.currency"
        );
        let mut no_price = request(vec![line("sku-1", 1, 1, "EUR")]);
        no_price.items[0].unit_price = None;
        assert_eq!(field_of(no_price), "items[0].unit_price");
        let mut no_customer = request(vec![line("sku-1", 1, 1, "EUR")]);
        no_customer.customer_id = "  ".into();
        assert_eq!(field_of(no_customer), "customer_id");
        let mut no_key = request(vec![line("sku-1", 1, 1, "EUR")]);
        no_key.idempotency_key.clear();
        assert_eq!(field_of(no_key), "idempotency_key");
        let mut no_method = request(vec![line("sku-1", 1, 1, "EUR")]);
        no_method.payment_method.clear();
        assert_eq!(field_of(no_method), "payment_method");
        assert_eq!(
            field_of(request(vec![line("sku-1", 1, 1, "EUR"); 101])),
            "items"
        );
    }

    #[test]
    fn overflowing_totals_are_rejected() {
        let err = NewOrder::try_from(&request(vec![line("a", 1_000_000, i64::MAX / 2, "EUR")]))
            .unwrap_err();
        assert_eq!(err.field, "items[0]");
    }

    #[test]
    fn statuses_map_one_to_one_and_unspecified_is_none() {
        for status in OrderStatus::ALL {
            let wire = pb::OrderStatus::from(status);
            assert_eq!(
                wire.as_str_name(),
                format!("ORDER_STATUS_{}", status.as_str())
            );
            assert_eq!(OrderStatus::try_from(wire), Ok(status));
            assert_eq!(order_status(wire as i32), Some(status));
        }
        assert_eq!(order_status(pb::OrderStatus::Unspecified as i32), None);
        assert_eq!(order_status(99), None);
    }

    #[test]
    fn domain_values_become_messages_unchanged() {
        let order = NewOrder::try_from(&request(vec![line("sku-1", 3, 250, "EUR")])).unwrap();
        assert_eq!(
            pb::OrderLine::from(&order.items[0]),
            line("sku-1", 3, 250, "EUR")
        );
        assert_eq!(
            pb::Money::from(order.total),
            pb::Money {
                amount_minor: 750,
                currency: "EUR".into()
            }
        );
    }
}
