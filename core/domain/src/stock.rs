//! Stock rules: what a paid order asks of the stock, and the all-or-none decision to deduct it.
//!
//! Stock is deducted only for a PAID order, every line or none, and never below zero. The
//! decision is [`settle`], a pure function of the requested and the available units; the
//! inventory service reads the available units with their rows locked in SKU order and writes
//! the decision in the same transaction, and the database's `available >= 0` constraint backs
//! the rule up.

use std::collections::BTreeMap;

use crate::values::{OrderId, Quantity, Sku, ValidationError};

/// The most units a SKU may hold (fits the database's INT with room for arithmetic).
pub const MAX_STOCK: u32 = 1_000_000_000;

/// The units an order asks for, per SKU, in SKU order: lines naming the same SKU add up.
/// Never empty, and no SKU asks for more than `i32::MAX` units (what the wire formats hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedUnits(BTreeMap<Sku, u32>);

impl RequestedUnits {
    /// Adds up the lines per SKU. `field` names the lines (`items`) in errors: there must be at
    /// least one.
    pub fn from_lines(
        field: &str,
        lines: impl IntoIterator<Item = (Sku, Quantity)>,
    ) -> Result<Self, ValidationError> {
        let limit = i32::MAX as u32;
        let mut units: BTreeMap<Sku, u32> = BTreeMap::new();
        for (sku, quantity) in lines {
            let sum = units.entry(sku).or_insert(0);
            *sum = sum
                .checked_add(quantity.get())
                .filter(|total| *total <= limit)
                .ok_or_else(|| {
                    ValidationError::new(field, format!("more than {limit} units of one SKU"))
                })?;
        }
        if units.is_empty() {
            return Err(ValidationError::new(field, "paid order has no items"));
        }
        Ok(RequestedUnits(units))
    }

    /// Each SKU with its requested units, in SKU order.
    pub fn iter(&self) -> impl Iterator<Item = (&Sku, u32)> + '_ {
        self.0.iter().map(|(sku, units)| (sku, *units))
    }

    /// The SKUs, in SKU order.
    pub fn skus(&self) -> impl Iterator<Item = &Sku> + '_ {
        self.0.keys()
    }

    /// How many different SKUs are requested.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a request names at least one SKU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a PAID order asks of the stock (read from PaymentProcessed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRequest {
    pub order_id: OrderId,
    pub units: RequestedUnits,
}

/// A SKU that could not be filled: the units asked for and the units there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingItem {
    pub sku: Sku,
    pub requested: u32,
    pub available: u32,
}

/// The stock decision for a paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockDecision {
    /// Every SKU had enough: all of them are deducted.
    Confirmed,
    /// At least one SKU fell short: nothing is deducted. [`settle`] always names the short
    /// SKUs; an event read from elsewhere may not.
    OutOfStock { missing: Vec<MissingItem> },
}

impl StockDecision {
    /// The SKUs that fell short, in SKU order (none when confirmed).
    pub fn missing(&self) -> &[MissingItem] {
        match self {
            StockDecision::Confirmed => &[],
            StockDecision::OutOfStock { missing } => missing,
        }
    }
}

/// A stock decision for one order, as the inventory service reports it (InventoryUpdated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSettlement {
    pub order_id: OrderId,
    pub decision: StockDecision,
}

/// Decides a paid order's stock, all or none: [`StockDecision::Confirmed`] when every SKU has
/// at least the requested units available, so deducting them all leaves none below zero;
/// otherwise [`StockDecision::OutOfStock`] with each short SKU, in SKU order. A SKU missing
/// from `available` (never stocked) has none.
pub fn settle(requested: &RequestedUnits, available: &BTreeMap<Sku, u32>) -> StockDecision {
    let missing: Vec<MissingItem> = requested
        .iter()
        .filter_map(|(sku, requested)| {
            let available = available.get(sku).copied().unwrap_or(0);
            (available < requested).then(|| MissingItem {
                sku: sku.clone(),
                requested,
                available,
            })
        })
        .collect();
    if missing.is_empty() {
        StockDecision::Confirmed
    } else {
        StockDecision::OutOfStock { missing }
    }
}

/// "out of stock: sku-1: requested 8, available 7; sku-2: …", the reason shown to customers
/// (just "out of stock" when no SKU is named).
pub fn describe_missing(missing: &[MissingItem]) -> String {
    if missing.is_empty() {
        return "out of stock".to_owned();
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "{}: requested {}, available {}",
                m.sku, m.requested, m.available
            )
        })
        .collect();
    format!("out of stock: {}", lines.join("; "))
}

/// An absolute stock level to set: 0 to [`MAX_STOCK`] units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel(u32);

impl StockLevel {
    /// Validates `raw` as the level of field `field`.
    pub fn parse(field: &str, raw: i64) -> Result<Self, ValidationError> {
        u32::try_from(raw)
            .ok()
            .filter(|units| *units <= MAX_STOCK)
            .map(StockLevel)
            .ok_or_else(|| {
                ValidationError::new(
                    field,
                    format!("must be between 0 and {MAX_STOCK}, got {raw}"),
                )
            })
    }

    /// The units.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A change to a SKU's stock: units to add (or, negative, to remove), non-zero and at most
/// [`MAX_STOCK`] either way. Whether the result stays within 0 to [`MAX_STOCK`] depends on the
/// stock it is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i32);

impl StockDelta {
    /// Validates `raw` as the change of field `field`.
    pub fn parse(field: &str, raw: i64) -> Result<Self, ValidationError> {
        i32::try_from(raw)
            .ok()
            .filter(|delta| *delta != 0 && delta.unsigned_abs() <= MAX_STOCK)
            .map(StockDelta)
            .ok_or_else(|| {
                ValidationError::new(
                    field,
                    format!("must be non-zero and at most {MAX_STOCK} in size, got {raw}"),
                )
            })
    }

    /// The signed units.
    pub fn get(self) -> i32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(raw: &str) -> Sku {
        Sku::parse("sku", raw).unwrap()
    }

    fn units(lines: &[(&str, u32)]) -> RequestedUnits {
        RequestedUnits::from_lines(
            "items",
            lines
                .iter()
                .map(|(s, q)| (sku(s), Quantity::parse("quantity", i64::from(*q)).unwrap())),
        )
        .unwrap()
    }

    fn stock(levels: &[(&str, u32)]) -> BTreeMap<Sku, u32> {
        levels.iter().map(|(s, n)| (sku(s), *n)).collect()
    }

    #[test]
    fn lines_naming_one_sku_add_up_in_sku_order() {
        let requested = units(&[("b", 2), ("a", 1), ("b", 3)]);
        let got: Vec<(String, u32)> = requested.iter().map(|(s, n)| (s.to_string(), n)).collect();
        assert_eq!(got, [("a".to_owned(), 1), ("b".to_owned(), 5)]);
        assert_eq!(requested.len(), 2);
    }

    #[test]
    fn a_request_needs_lines_and_fits_the_wire() {
        let empty = RequestedUnits::from_lines("items", []).unwrap_err();
        assert_eq!(empty.to_string(), "items: paid order has no items");
        let max = Quantity::parse("quantity", i64::from(Quantity::MAX)).unwrap();
        let lines = (0..=(i32::MAX as u32 / Quantity::MAX)).map(|_| (sku("a"), max));
        let err = RequestedUnits::from_lines("items", lines).unwrap_err();
        assert_eq!(err.field, "items");
    }

    /// Every combination of 0 to 3 units requested (0: SKU not in the order) and 0 to 3
    /// available (None: never stocked) for two SKUs, against the rule stated directly.
    #[test]
    fn all_or_none_over_every_small_case() {
        let counts = [0u32, 1, 2, 3];
        let levels = [None, Some(0u32), Some(1), Some(2), Some(3)];
        for want_a in counts {
            for want_b in counts {
                if want_a == 0 && want_b == 0 {
                    continue;
                }
                for have_a in levels {
                    for have_b in levels {
                        let wanted: Vec<(&str, u32)> = [("a", want_a), ("b", want_b)]
                            .into_iter()
                            .filter(|(_, n)| *n > 0)
                            .collect();
                        let held: Vec<(&str, u32)> = [("a", have_a), ("b", have_b)]
                            .into_iter()
                            .filter_map(|(s, n)| n.map(|n| (s, n)))
                            .collect();
                        let decision = settle(&units(&wanted), &stock(&held));
                        let short: Vec<MissingItem> = wanted
                            .iter()
                            .filter_map(|(s, want)| {
                                let have = held.iter().find(|(h, _)| h == s).map_or(0, |(_, n)| *n);
                                (have < *want).then(|| MissingItem {
                                    sku: sku(s),
                                    requested: *want,
                                    available: have,
                                })
                            })
                            .collect();
                        let case = format!("want {wanted:?}, have {held:?}");
                        if short.is_empty() {
                            assert_eq!(decision, StockDecision::Confirmed, "{case}");
                            // Deducting everything leaves every SKU at zero or more.
                            for (s, want) in &wanted {
                                let have = held.iter().find(|(h, _)| h == s).unwrap().1;
                                assert!(have >= *want, "{case}");
                            }
                        } else {
                            assert_eq!(
                                decision,
                                StockDecision::OutOfStock { missing: short },
                                "{case}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn one_short_sku_stops_the_whole_order() {
        let decision = settle(
            &units(&[("a", 1), ("b", 8), ("c", 2)]),
            &stock(&[("a", 100), ("b", 7), ("c", 2)]),
        );
        assert_eq!(
            decision.missing(),
            [MissingItem {
                sku: sku("b"),
                requested: 8,
                available: 7
            }]
        );
        assert!(StockDecision::Confirmed.missing().is_empty());
    }

    #[test]
    fn the_reason_names_every_short_sku() {
        let decision = settle(&units(&[("a", 2), ("b", 8)]), &stock(&[("b", 7)]));
        assert_eq!(
            describe_missing(decision.missing()),
            "out of stock: a: requested 2, available 0; b: requested 8, available 7"
        );
        assert_eq!(describe_missing(&[]), "out of stock");
    }

    #[test]
    fn stock_levels_and_deltas_stay_in_range() {
        assert_eq!(StockLevel::parse("available", 0).unwrap().get(), 0);
        assert_eq!(
            StockLevel::parse("available", i64::from(MAX_STOCK))
                .unwrap()
                .get(),
            MAX_STOCK
        );
        assert_eq!(
            StockLevel::parse("available", -1).unwrap_err().to_string(),
            "available: must be between 0 and 1000000000, got -1"
        );
        assert!(StockLevel::parse("available", i64::from(MAX_STOCK) + 1).is_err());
        assert_eq!(StockDelta::parse("delta", -5).unwrap().get(), -5);
        assert_eq!(
            StockDelta::parse("delta", -i64::from(MAX_STOCK))
                .unwrap()
                .get(),
            -1_000_000_000
        );
        assert_eq!(
            StockDelta::parse("delta", 0).unwrap_err().to_string(),
            "delta: must be non-zero and at most 1000000000 in size, got 0"
        );
        assert!(StockDelta::parse("delta", i64::from(MAX_STOCK) + 1).is_err());
        assert!(StockDelta::parse("delta", i64::from(i32::MIN)).is_err());
    }
}
