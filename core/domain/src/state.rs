//! The order state machine: a pure function of (status, input) → the status changes to make.
//!
//! ```text
//! PENDING ──payment ok──► PAID ──stock deducted──► COMPLETED
//!    │                      │
//!    └─payment declined─► FAILED   └─stock short─► OUT_OF_STOCK ──refund──► REFUNDED
//! ```
//!
//! The order service reads payment and inventory outcomes from two topics, so it can see an
//! outcome before the one that caused it (an InventoryUpdated before the PaymentProcessed
//! that led to it). Each outcome implies its causes — stock is only touched for a PAID order,
//! a refund only follows OUT_OF_STOCK — so an early outcome moves the order through every
//! implied status, one edge of the diagram per change, and the late cause is then a no-op.
//! An outcome that contradicts the order's history (stock deducted for a FAILED order) is
//! impossible and rejected.

use std::fmt;
use std::str::FromStr;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Pending,
    Paid,
    Failed,
    Completed,
    OutOfStock,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Failed,
        OrderStatus::Completed,
        OrderStatus::OutOfStock,
        OrderStatus::Refunded,
    ];

    /// COMPLETED, FAILED and REFUNDED end an order's life: the statuses the diagram leaves
    /// no edge from.
    pub fn is_terminal(self) -> bool {
        self.edges().is_empty()
    }

    /// The name stored in the database and shown in logs and metrics; the proto and Avro
    /// enums use the same names.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::OutOfStock => "OUT_OF_STOCK",
            OrderStatus::Refunded => "REFUNDED",
        }
    }

    /// The status named `raw` (as [`OrderStatus::as_str`] writes it), if any.
    pub fn parse(raw: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The single-edge successors of the diagram.
    fn edges(self) -> &'static [OrderStatus] {
        match self {
            OrderStatus::Pending => &[OrderStatus::Paid, OrderStatus::Failed],
            OrderStatus::Paid => &[OrderStatus::Completed, OrderStatus::OutOfStock],
            OrderStatus::OutOfStock => &[OrderStatus::Refunded],
            OrderStatus::Failed | OrderStatus::Completed | OrderStatus::Refunded => &[],
        }
    }

    /// True when `later` is this status or reachable from it.
    fn reaches(self, later: OrderStatus) -> bool {
        self == later || self.edges().iter().any(|next| next.reaches(later))
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`OrderStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an order status")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        OrderStatus::parse(raw).ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

/// An outcome reported by another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderInput {
    PaymentSucceeded,
    PaymentFailed { reason: String },
    StockConfirmed,
    StockShort { reason: String },
    Refunded { reason: String },
}

impl OrderInput {
    /// The status this outcome puts an order in, and the reason attached to it.
    fn target(&self) -> (OrderStatus, Option<&str>) {
        match self {
            OrderInput::PaymentSucceeded => (OrderStatus::Paid, None),
            OrderInput::PaymentFailed { reason } => (OrderStatus::Failed, Some(reason)),
            OrderInput::StockConfirmed => (OrderStatus::Completed, None),
            OrderInput::StockShort { reason } => (OrderStatus::OutOfStock, Some(reason)),
            OrderInput::Refunded { reason } => (OrderStatus::Refunded, Some(reason)),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            OrderInput::PaymentSucceeded => "payment succeeded",
            OrderInput::PaymentFailed { .. } => "payment failed",
            OrderInput::StockConfirmed => "stock confirmed",
            OrderInput::StockShort { .. } => "stock short",
            OrderInput::Refunded { .. } => "refunded",
        }
    }
}

/// One status change to record and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub to: OrderStatus,
    pub reason: Option<String>,
}

/// An outcome that cannot happen to an order with this history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("impossible transition: order is {from}, event says {input}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub input: &'static str,
}

/// The status changes `input` causes for an order in `from`: empty when the order is already
/// at or past the outcome (a late or repeated event), several when the outcome implies steps
/// not seen yet. Each change is one edge of the diagram.
pub fn apply(from: OrderStatus, input: &OrderInput) -> Result<Vec<Transition>, TransitionError> {
    let (target, reason) = input.target();
    if from.reaches(target) {
        return Ok(path(from, target)
            .into_iter()
            .map(|to| Transition {
                to,
                // Implied intermediate steps share the outcome's reason where they need one.
                reason: match to {
                    OrderStatus::Failed | OrderStatus::OutOfStock | OrderStatus::Refunded => {
                        reason.map(str::to_owned)
                    }
                    _ => None,
                },
            })
            .collect());
    }
    if target.reaches(from) {
        return Ok(Vec::new());
    }
    Err(TransitionError {
        from,
        input: input.name(),
    })
}

/// The statuses after `from` on the way to `to` (excluding `from`); `to` is reachable.
fn path(from: OrderStatus, to: OrderStatus) -> Vec<OrderStatus> {
    if from == to {
        return Vec::new();
    }
    let next = *from
        .edges()
        .iter()
        .find(|next| next.reaches(to))
        .expect("target is reachable");
    let mut rest = path(next, to);
    rest.insert(0, next);
    rest
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    fn inputs() -> Vec<OrderInput> {
        vec![
            OrderInput::PaymentSucceeded,
            OrderInput::PaymentFailed {
                reason: "card declined".into(),
            },
            OrderInput::StockConfirmed,
            OrderInput::StockShort {
                reason: "sku-1: requested 8, available 7".into(),
            },
            OrderInput::Refunded {
                reason: "out of stock".into(),
            },
        ]
    }

    fn statuses(
        from: OrderStatus,
        input: &OrderInput,
    ) -> Result<Vec<OrderStatus>, TransitionError> {
        apply(from, input).map(|ts| ts.into_iter().map(|t| t.to).collect())
    }

    /// Every (status, input) pair, against a table written out by hand.
    #[test]
    fn exhaustive_table() {
        let expected: [(OrderStatus, [Option<&[OrderStatus]>; 5]); 6] = [
            // input order: paid, failed, stock ok, stock short, refunded
            (
                Pending,
                [
                    Some(&[Paid]),
                    Some(&[Failed]),
                    Some(&[Paid, Completed]),
                    Some(&[Paid, OutOfStock]),
                    Some(&[Paid, OutOfStock, Refunded]),
                ],
            ),
            (
                Paid,
                [
                    Some(&[]),
                    None,
                    Some(&[Completed]),
                    Some(&[OutOfStock]),
                    Some(&[OutOfStock, Refunded]),
                ],
            ),
            (Failed, [None, Some(&[]), None, None, None]),
            (Completed, [Some(&[]), None, Some(&[]), None, None]),
            (
                OutOfStock,
                [Some(&[]), None, None, Some(&[]), Some(&[Refunded])],
            ),
            (Refunded, [Some(&[]), None, None, Some(&[]), Some(&[])]),
        ];
        for (from, row) in expected {
            for (input, want) in inputs().iter().zip(row) {
                let got = statuses(from, input);
                match want {
                    Some(want) => assert_eq!(got.as_deref(), Ok(want), "{from} + {input:?}"),
                    None => assert!(
                        got.is_err(),
                        "{from} + {input:?} should be impossible, got {got:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn every_change_is_one_edge_and_terminal_states_stay() {
        for from in OrderStatus::ALL {
            for input in inputs() {
                let Ok(changes) = statuses(from, &input) else {
                    continue;
                };
                let mut at = from;
                for to in changes {
                    assert!(at.edges().contains(&to), "{at} -> {to} is not an edge");
                    at = to;
                }
                if from.is_terminal() {
                    assert_eq!(at, from, "terminal {from} moved on {input:?}");
                }
            }
        }
    }

    #[test]
    fn reasons_travel_with_the_outcome() {
        let changes = apply(
            Paid,
            &OrderInput::StockShort {
                reason: "sku-1 short".into(),
            },
        )
        .unwrap();
        assert_eq!(
            changes,
            vec![Transition {
                to: OutOfStock,
                reason: Some("sku-1 short".into())
            }]
        );
        let changes = apply(Pending, &OrderInput::StockConfirmed).unwrap();
        assert!(changes.iter().all(|t| t.reason.is_none()));
    }

    #[test]
    fn impossible_outcomes_name_both_sides() {
        let err = apply(Failed, &OrderInput::StockConfirmed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "impossible transition: order is FAILED, event says stock confirmed"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("UNKNOWN"), None);
    }

    #[test]
    fn exactly_the_ends_of_the_diagram_are_terminal() {
        let terminal: Vec<OrderStatus> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, [Failed, Completed, Refunded]);
        assert_eq!("OUT_OF_STOCK".parse::<OrderStatus>(), Ok(OutOfStock));
        assert_eq!(
            "paid".parse::<OrderStatus>().unwrap_err().to_string(),
            "\"paid\" is not an order status"
        );
    }
}
