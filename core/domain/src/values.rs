//! Validated value types. Each is built once, at the edge (gRPC request, Avro event), with
//! `TryFrom`/`parse`, and is valid from then on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A request or event field that is not acceptable, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Path of the offending field, e.g. `items[2].quantity`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, with its field path nested under `parent`: a line's `quantity`
    /// becomes `items[2].quantity`.
    pub fn under(self, parent: &str) -> Self {
        ValidationError {
            field: format!("{parent}.{}", self.field),
            message: self.message,
        }
    }
}

/// The id of an order: a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderId(uuid::Uuid);

impl OrderId {
    /// A new, time-ordered id (UUIDv7), so ids sort roughly by creation.
    pub fn generate() -> Self {
        OrderId(uuid::Uuid::now_v7())
    }

    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        uuid::Uuid::parse_str(raw)
            .map(OrderId)
            .map_err(|_| ValidationError::new(field, format!("{raw:?} is not a UUID")))
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl From<uuid::Uuid> for OrderId {
    fn from(id: uuid::Uuid) -> Self {
        OrderId(id)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

pub(crate) fn bounded_text(field: &str, raw: &str, max: usize) -> Result<String, ValidationError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if trimmed.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "contains control characters"));
    }
    Ok(trimmed.to_owned())
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
                bounded_text(field, raw, $max).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_newtype!(
    /// Who placed an order.
    CustomerId,
    128
);
text_newtype!(
    /// A client-chosen key that makes PlaceOrder safe to retry.
    IdempotencyKey,
    128
);
text_newtype!(
    /// An opaque payment-method token for the payment provider.
    PaymentMethod,
    128
);

/// A stock-keeping unit: 1 to 64 characters of ASCII letters, digits, `-`, `_` or `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                field,
                format!("is longer than {} characters", Self::MAX_LEN),
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(ValidationError::new(
                field,
                format!("contains {bad:?}; only letters, digits, '-', '_' and '.' are allowed"),
            ));
        }
        Ok(Sku(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A number of units: 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1_000_000;

    pub fn parse(field: &str, raw: i64) -> Result<Self, ValidationError> {
        if raw <= 0 {
            return Err(ValidationError::new(
                field,
                format!("must be at least 1, got {raw}"),
            ));
        }
        if raw > i64::from(Self::MAX) {
            return Err(ValidationError::new(
                field,
                format!("must be at most {}, got {raw}", Self::MAX),
            ));
        }
        Ok(Quantity(raw as u32))
    }

    pub fn get(&self) -> u32 {
        self.0
    }
}

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        let bytes = raw.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(ValidationError::new(
                field,
                format!("{raw:?} is not an ISO 4217 code (three upper-case letters, e.g. \"EUR\")"),
            ));
        }
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated ASCII")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-negative amount in minor units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    pub fn new(field: &str, amount_minor: i64, currency: &str) -> Result<Self, ValidationError> {
        let currency = Currency::parse(&format!("{field}.currency"), currency)?;
        if amount_minor < 0 {
            return Err(ValidationError::new(
                format!("{field}.amount_minor"),
                format!("must not be negative, got {amount_minor}"),
            ));
        }
        Ok(Money {
            amount_minor,
            currency,
        })
    }

    pub fn zero(currency: Currency) -> Self {
        Money {
            amount_minor: 0,
            currency,
        }
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// `self × quantity`, or `None` on overflow.
    pub fn times(&self, quantity: Quantity) -> Option<Money> {
        self.amount_minor
            .checked_mul(i64::from(quantity.get()))
            .map(|amount_minor| Money {
                amount_minor,
                currency: self.currency,
            })
    }

    /// `self + other` in the same currency, or `None` on overflow or a currency mismatch.
    pub fn plus(&self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(|amount_minor| Money {
                amount_minor,
                currency: self.currency,
            })
    }
}

/// One validated order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Money,
}

impl OrderLine {
    /// Validates one line; `field` is its path, e.g. `items[0]`.
    pub fn parse(
        field: &str,
        sku: &str,
        quantity: i64,
        unit_price: Option<(i64, &str)>,
    ) -> Result<Self, ValidationError> {
        let sku = Sku::parse(&format!("{field}.sku"), sku)?;
        let quantity = Quantity::parse(&format!("{field}.quantity"), quantity)?;
        let (amount, currency) = unit_price
            .ok_or_else(|| ValidationError::new(format!("{field}.unit_price"), "is required"))?;
        let unit_price = Money::new(&format!("{field}.unit_price"), amount, currency)?;
        Ok(OrderLine {
            sku,
            quantity,
            unit_price,
        })
    }
}

/// A validated PlaceOrder request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub items: Vec<OrderLine>,
    pub payment_method: PaymentMethod,
    pub idempotency_key: IdempotencyKey,
    pub total: Money,
}

impl NewOrder {
    /// Most lines an order may have.
    pub const MAX_LINES: usize = 100;

    /// Validates a PlaceOrder request field by field, in request order, so the error names
    /// the first field that is wrong. `items` yields each line as [`OrderLine::parse`] judged
    /// it (with its path, `items[i]`); it is counted before any line is looked at, so a
    /// request with too many lines costs nothing to refuse. Every line must use the first
    /// line's currency, and the total must not overflow.
    pub fn parse<I>(
        customer_id: &str,
        items: I,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<Self, ValidationError>
    where
        I: ExactSizeIterator<Item = Result<OrderLine, ValidationError>>,
    {
        let customer_id = CustomerId::parse("customer_id", customer_id)?;
        let count = items.len();
        if count == 0 {
            return Err(ValidationError::new(
                "items",
                "an order needs at least one line",
            ));
        }
        if count > Self::MAX_LINES {
            return Err(ValidationError::new(
                "items",
                format!("at most {} lines, got {count}", Self::MAX_LINES),
            ));
        }
        let items = items.collect::<Result<Vec<_>, _>>()?;
        let currency = items[0].unit_price.currency();
        let mut total = Money::zero(currency);
        for (i, line) in items.iter().enumerate() {
            if line.unit_price.currency() != currency {
                return Err(ValidationError::new(
                    format!("items[{i}].unit_price.currency"),
                    format!(
                        "{} differs from the order's currency {currency}",
                        line.unit_price.currency()
                    ),
                ));
            }
            total = line
                .unit_price
                .times(line.quantity)
                .and_then(|subtotal| total.plus(subtotal))
                .ok_or_else(|| {
                    ValidationError::new(format!("items[{i}]"), "the order total overflows")
                })?;
        }
        let payment_method = PaymentMethod::parse("payment_method", payment_method)?;
        let idempotency_key = IdempotencyKey::parse("idempotency_key", idempotency_key)?;
        Ok(NewOrder {
            customer_id,
            items,
            payment_method,
            idempotency_key,
            total,
        })
    }
}

/// An order the order service accepted, as the payment service reads it from OrderCreated:
/// at least one line, each valid. (Its total and currencies were checked when it was placed;
/// they are not checked again.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOrder {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub items: Vec<OrderLine>,
    pub total: Money,
    pub payment_method: PaymentMethod,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(field: &str, quantity: i64) -> Result<OrderLine, ValidationError> {
        OrderLine::parse(field, "sku-1", quantity, Some((250, "EUR")))
    }

    fn order(lines: Vec<Result<OrderLine, ValidationError>>) -> Result<NewOrder, ValidationError> {
        NewOrder::parse("alice", lines.into_iter(), "pm_card_visa", "k1")
    }

    #[test]
    fn a_new_order_is_checked_in_field_order() {
        assert_eq!(
            order(vec![line("items[0]", 2)])
                .unwrap()
                .total
                .amount_minor(),
            500
        );
        assert_eq!(order(vec![]).unwrap_err().field, "items");
        assert_eq!(
            order(vec![line("items[0]", 1), line("items[1]", 0)])
                .unwrap_err()
                .field,
            "items[1].quantity"
        );
        let both_wrong = NewOrder::parse("", vec![line("items[0]", 0)].into_iter(), "", "");
        assert_eq!(both_wrong.unwrap_err().field, "customer_id");
    }

    #[test]
    fn nested_errors_keep_their_message() {
        let err = Quantity::parse("quantity", 0)
            .unwrap_err()
            .under("items[3]");
        assert_eq!(err.field, "items[3].quantity");
        assert_eq!(
            err.to_string(),
            "items[3].quantity: must be at least 1, got 0"
        );
    }

    #[test]
    fn order_ids_must_be_uuids() {
        assert_eq!(
            OrderId::parse("order_id", "").unwrap_err().message,
            "is required"
        );
        assert!(
            OrderId::parse("order_id", "nope")
                .unwrap_err()
                .message
                .contains("not a UUID")
        );
        let id = OrderId::generate();
        assert_eq!(OrderId::parse("order_id", &id.to_string()).unwrap(), id);
    }
}
