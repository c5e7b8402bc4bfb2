//! Outcomes one service reports about an order and another acts on: a payment's result, and
//! what each outcome means for the order's state machine.

use crate::state::OrderInput;
use crate::stock::{MissingItem, StockDecision, StockSettlement, describe_missing};
use crate::values::{OrderId, ValidationError};

/// How charging an order ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentResult {
    Paid,
    Failed { reason: String },
}

/// A payment's result for one order, as the payment service reports it (PaymentProcessed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentOutcome {
    pub order_id: OrderId,
    pub result: PaymentResult,
}

/// An outcome as the order service applies it: the state machine's input for one order and,
/// for OUT_OF_STOCK, the lines that could not be filled (recorded with the order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderOutcome {
    pub order_id: OrderId,
    pub input: OrderInput,
    pub missing: Vec<MissingItem>,
}

impl From<PaymentOutcome> for OrderOutcome {
    fn from(payment: PaymentOutcome) -> Self {
        let input = match payment.result {
            PaymentResult::Paid => OrderInput::PaymentSucceeded,
            PaymentResult::Failed { reason } => OrderInput::PaymentFailed { reason },
        };
        OrderOutcome {
            order_id: payment.order_id,
            input,
            missing: Vec::new(),
        }
    }
}

impl TryFrom<StockSettlement> for OrderOutcome {
    type Error = ValidationError;

    /// An OUT_OF_STOCK settlement must name what was short: it is the reason the customer
    /// sees.
    fn try_from(settlement: StockSettlement) -> Result<Self, Self::Error> {
        let (input, missing) = match settlement.decision {
            StockDecision::Confirmed => (OrderInput::StockConfirmed, Vec::new()),
            StockDecision::OutOfStock { missing } if missing.is_empty() => {
                return Err(ValidationError::new(
                    "missing",
                    "OUT_OF_STOCK without missing items",
                ));
            }
            StockDecision::OutOfStock { missing } => (
                OrderInput::StockShort {
                    reason: describe_missing(&missing),
                },
                missing,
            ),
        };
        Ok(OrderOutcome {
            order_id: settlement.order_id,
            input,
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Sku;

    #[test]
    fn payments_become_state_machine_inputs() {
        let order_id = OrderId::generate();
        let paid = OrderOutcome::from(PaymentOutcome {
            order_id,
            result: PaymentResult::Paid,
        });
        assert_eq!(paid.input, OrderInput::PaymentSucceeded);
        let failed = OrderOutcome::from(PaymentOutcome {
            order_id,
            result: PaymentResult::Failed {
                reason: "card declined".into(),
            },
        });
        assert_eq!(
            failed.input,
            OrderInput::PaymentFailed {
                reason: "card declined".into()
            }
        );
        assert_eq!(failed.order_id, order_id);
    }

    #[test]
    fn out_of_stock_carries_its_missing_lines_and_must_name_one() {
        let order_id = OrderId::generate();
        let missing = vec![MissingItem {
            sku: Sku::parse("sku", "sku-1").unwrap(),
            requested: 8,
            available: 7,
        }];
        let short = OrderOutcome::try_from(StockSettlement {
            order_id,
            decision: StockDecision::OutOfStock {
                missing: missing.clone(),
            },
        })
        .unwrap();
        assert_eq!(
            short.input,
            OrderInput::StockShort {
                reason: "out of stock: sku-1: requested 8, available 7".into()
            }
        );
        assert_eq!(short.missing, missing);
        let unnamed = OrderOutcome::try_from(StockSettlement {
            order_id,
            decision: StockDecision::OutOfStock {
                missing: Vec::new(),
            },
        })
        .unwrap_err();
        assert_eq!(
            unnamed.to_string(),
            "missing: OUT_OF_STOCK without missing items"
        );
        let confirmed = OrderOutcome::try_from(StockSettlement {
            order_id,
            decision: StockDecision::Confirmed,
        })
        .unwrap();
        assert_eq!(confirmed.input, OrderInput::StockConfirmed);
        assert!(confirmed.missing.is_empty());
    }
}
