//! What the order service knows of the catalogue without asking the inventory service: the
//! SKUs it has seen on the `catalogue` topic. PlaceOrder is judged against that read model
//! alone (seed 004: no synchronous validation call), so it keeps working while inventory is
//! down, against the last catalogue it saw.

use std::collections::HashSet;

use crate::stock::StockLevel;
use crate::values::{NewOrder, Sku, ValidationError};

/// One SKU's catalogue entry: its stock level after its `revision`-th change. Entries of a
/// SKU may be read more than once or out of order (redelivery, replay); the one with the
/// highest revision is current, and a reader keeps only that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueEntry {
    pub sku: Sku,
    pub available: u32,
    pub revision: i64,
}

impl CatalogueEntry {
    /// Validates an entry as published: a valid SKU, a level within 0 to
    /// [`MAX_STOCK`](crate::MAX_STOCK) and a revision from 1.
    pub fn parse(sku: &str, available: i64, revision: i64) -> Result<Self, ValidationError> {
        let sku = Sku::parse("sku", sku)?;
        let available = StockLevel::parse("available", available)?.get();
        if revision < 1 {
            return Err(ValidationError::new(
                "revision",
                format!("must be at least 1, got {revision}"),
            ));
        }
        Ok(CatalogueEntry {
            sku,
            available,
            revision,
        })
    }
}

/// Refuses an order with a line whose SKU is not in the catalogue, naming the first such
/// line (`items[i].sku`). `known` holds the order's SKUs the catalogue lists. Stock levels
/// play no part: a known SKU with too little stock is accepted, and the order ends
/// OUT_OF_STOCK (and is refunded) if stock is still short when it is paid.
pub fn check_known(order: &NewOrder, known: &HashSet<Sku>) -> Result<(), ValidationError> {
    match order
        .items
        .iter()
        .position(|line| !known.contains(&line.sku))
    {
        None => Ok(()),
        Some(i) => Err(ValidationError::new(
            format!("items[{i}].sku"),
            format!(
                "unknown SKU {:?}: it is not in the catalogue",
                order.items[i].sku.as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stock::MAX_STOCK;
    use crate::values::{CustomerId, IdempotencyKey, Money, OrderLine, PaymentMethod, Quantity};

    fn order(skus: &[&str]) -> NewOrder {
        let items: Vec<OrderLine> = skus
            .iter()
            .map(|sku| OrderLine {
                sku: Sku::parse("sku", sku).unwrap(),
                quantity: Quantity::parse("quantity", 1).unwrap(),
                unit_price: Money::new("unit_price", 100, "EUR").unwrap(),
            })
            .collect();
        NewOrder {
            customer_id: CustomerId::parse("customer_id", "alice").unwrap(),
            total: Money::new("total", 100 * items.len() as i64, "EUR").unwrap(),
            items,
            payment_method: PaymentMethod::parse("payment_method", "pm_card_visa").unwrap(),
            idempotency_key: IdempotencyKey::parse("idempotency_key", "k").unwrap(),
        }
    }

    fn known(skus: &[&str]) -> HashSet<Sku> {
        skus.iter().map(|s| Sku::parse("sku", s).unwrap()).collect()
    }

    #[test]
    fn an_order_of_known_skus_passes() {
        assert_eq!(
            check_known(&order(&["a", "b"]), &known(&["a", "b", "c"])),
            Ok(())
        );
    }

    #[test]
    fn the_first_unknown_line_is_named() {
        let err = check_known(&order(&["a", "x", "y"]), &known(&["a"])).unwrap_err();
        assert_eq!(err.field, "items[1].sku");
        assert!(err.message.contains("\"x\""), "{err}");
        assert!(err.to_string().contains("not in the catalogue"), "{err}");
    }

    #[test]
    fn an_empty_catalogue_knows_nothing() {
        assert_eq!(
            check_known(&order(&["a"]), &HashSet::new())
                .unwrap_err()
                .field,
            "items[0].sku"
        );
    }

    #[test]
    fn entries_are_validated_field_by_field() {
        assert!(CatalogueEntry::parse("sku-1", 10, 1).is_ok());
        assert_eq!(CatalogueEntry::parse("", 10, 1).unwrap_err().field, "sku");
        assert_eq!(
            CatalogueEntry::parse("a", -1, 1).unwrap_err().field,
            "available"
        );
        assert_eq!(
            CatalogueEntry::parse("a", i64::from(MAX_STOCK) + 1, 1)
                .unwrap_err()
                .field,
            "available"
        );
        assert_eq!(
            CatalogueEntry::parse("a", 1, 0).unwrap_err().field,
            "revision"
        );
    }
}
