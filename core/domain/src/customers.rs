//! What the order service knows of customers without asking anyone: their standing in the
//! customer directory, followed from the `customers` topic (seed 004). A customer the
//! directory never listed is in good standing; a blocked one places no order.

use crate::values::{CustomerId, ValidationError, bounded_text};

/// A customer's standing, as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Active,
    Blocked { reason: String },
}

/// A directory entry: a customer and its standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerEntry {
    pub customer_id: CustomerId,
    pub standing: Standing,
}

/// The standings an entry may set, before its reason is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Blocked,
}

/// The reason a blocked customer is given when the directory names none.
pub const NO_REASON: &str = "no reason given";

/// The longest reason, in characters: it is shown to the customer in one line.
pub const MAX_REASON: usize = 200;

impl CustomerEntry {
    /// Validates an entry as published or requested: a valid customer id and, for a blocked
    /// customer, a reason of at most [`MAX_REASON`] characters without control characters
    /// (trimmed; none, or only blanks, becomes [`NO_REASON`]). An active entry's reason is
    /// ignored.
    pub fn new(
        customer_id: &str,
        status: Status,
        reason: Option<&str>,
    ) -> Result<Self, ValidationError> {
        let customer_id = CustomerId::parse("customer_id", customer_id)?;
        let standing = match status {
            Status::Active => Standing::Active,
            Status::Blocked => Standing::Blocked {
                reason: match reason.map(str::trim).filter(|r| !r.is_empty()) {
                    None => NO_REASON.to_owned(),
                    Some(reason) => bounded_text("reason", reason, MAX_REASON)?,
                },
            },
        };
        Ok(CustomerEntry {
            customer_id,
            standing,
        })
    }
}

/// Why a customer may not place orders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("customer {customer_id} is blocked: {reason}")]
pub struct Blocked {
    pub customer_id: String,
    pub reason: String,
}

/// Refuses a blocked customer; `standing` is the directory's entry, if it lists the customer.
pub fn check_standing(
    customer_id: &CustomerId,
    standing: Option<&Standing>,
) -> Result<(), Blocked> {
    match standing {
        Some(Standing::Blocked { reason }) => Err(Blocked {
            customer_id: customer_id.to_string(),
            reason: reason.clone(),
        }),
        Some(Standing::Active) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> CustomerId {
        CustomerId::parse("customer_id", "alice").unwrap()
    }

    #[test]
    fn only_a_blocked_customer_is_refused_with_the_reason() {
        assert_eq!(check_standing(&alice(), None), Ok(()));
        assert_eq!(check_standing(&alice(), Some(&Standing::Active)), Ok(()));
        let blocked = Standing::Blocked {
            reason: "chargebacks".into(),
        };
        let refused = check_standing(&alice(), Some(&blocked)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "customer alice is blocked: chargebacks"
        );
    }

    #[test]
    fn entries_are_validated_and_a_missing_reason_is_said() {
        let entry = CustomerEntry::new("alice", Status::Blocked, Some("  ")).unwrap();
        assert_eq!(
            entry.standing,
            Standing::Blocked {
                reason: NO_REASON.into()
            }
        );
        let entry = CustomerEntry::new("alice", Status::Blocked, Some(" chargebacks ")).unwrap();
        assert_eq!(
            entry.standing,
            Standing::Blocked {
                reason: "chargebacks".into()
            }
        );
        let long = "x".repeat(MAX_REASON + 1);
        assert_eq!(
            CustomerEntry::new("alice", Status::Active, Some(&long))
                .unwrap()
                .standing,
            Standing::Active,
            "an active entry's reason is ignored"
        );
        for bad in [long.as_str(), "two\nlines"] {
            assert_eq!(
                CustomerEntry::new("alice", Status::Blocked, Some(bad))
                    .unwrap_err()
                    .field,
                "reason"
            );
        }
        assert_eq!(
            CustomerEntry::new("", Status::Active, None)
                .unwrap_err()
                .field,
            "customer_id"
        );
    }
}
