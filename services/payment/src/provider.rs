//! The payment provider behind a trait, and a deterministic simulated provider whose outcome
//! is chosen by the payment-method token, in the style of card networks' test tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

/// A charge to make. The provider treats `idempotency_key` (the order id) as its own
/// idempotency key: asking twice charges once.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_method: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved { reference: String },
    Declined { reason: String },
}

/// The provider could not answer; asking again later may work.
#[derive(Debug, Clone, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnavailable>;
    /// Refunds the charge made under `idempotency_key` in full; returns the refund reference.
    async fn refund(
        &self,
        idempotency_key: &str,
        amount_minor: i64,
    ) -> Result<String, ProviderUnavailable>;
}

/// Test tokens understood by [`SimulatedProvider`].
pub mod tokens {
    /// Approved.
    pub const VISA: &str = "pm_card_visa";
    /// Approved.
    pub const MASTERCARD: &str = "pm_card_mastercard";
    /// Declined: card declined.
    pub const DECLINED: &str = "pm_card_chargeDeclined";
    /// Declined: insufficient funds.
    pub const INSUFFICIENT_FUNDS: &str = "pm_card_chargeDeclinedInsufficientFunds";
    /// Provider unavailable on the first two attempts for an order, then approved.
    pub const FLAKY: &str = "pm_card_flaky";
    /// Provider unavailable on every attempt.
    pub const UNAVAILABLE: &str = "pm_card_providerUnavailable";
}

/// A deterministic provider for local runs and tests.
#[derive(Default)]
pub struct SimulatedProvider {
    attempts: Mutex<HashMap<String, u32>>,
}

impl SimulatedProvider {
    pub fn new() -> Self {
        SimulatedProvider::default()
    }

    fn attempt(&self, key: &str) -> u32 {
        let mut attempts = self.attempts.lock().expect("attempts lock");
        let n = attempts.entry(key.to_owned()).or_default();
        *n += 1;
        *n
    }
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnavailable> {
        let approved = || ChargeOutcome::Approved {
            reference: format!("sim_ch_{}", request.idempotency_key),
        };
        match request.payment_method.as_str() {
            tokens::VISA | tokens::MASTERCARD => Ok(approved()),
            tokens::DECLINED => Ok(ChargeOutcome::Declined {
                reason: "card declined".into(),
            }),
            tokens::INSUFFICIENT_FUNDS => Ok(ChargeOutcome::Declined {
                reason: "insufficient funds".into(),
            }),
            tokens::FLAKY => {
                if self.attempt(&request.idempotency_key) <= 2 {
                    Err(ProviderUnavailable("simulated timeout".into()))
                } else {
                    Ok(approved())
                }
            }
            tokens::UNAVAILABLE => Err(ProviderUnavailable("simulated outage".into())),
            other => Ok(ChargeOutcome::Declined {
                reason: format!("unknown payment method {other:?}"),
            }),
        }
    }

    async fn refund(
        &self,
        idempotency_key: &str,
        _amount_minor: i64,
    ) -> Result<String, ProviderUnavailable> {
        Ok(format!("sim_re_{idempotency_key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: "o1".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            payment_method: token.into(),
        }
    }

    #[tokio::test]
    async fn tokens_drive_every_outcome() {
        let p = SimulatedProvider::new();
        assert!(matches!(
            p.charge(&request(tokens::VISA)).await,
            Ok(ChargeOutcome::Approved { .. })
        ));
        assert_eq!(
            p.charge(&request(tokens::DECLINED)).await.unwrap(),
            ChargeOutcome::Declined {
                reason: "card declined".into()
            }
        );
        assert_eq!(
            p.charge(&request(tokens::INSUFFICIENT_FUNDS))
                .await
                .unwrap(),
            ChargeOutcome::Declined {
                reason: "insufficient funds".into()
            }
        );
        assert!(p.charge(&request(tokens::UNAVAILABLE)).await.is_err());
        assert!(matches!(
            p.charge(&request("pm_bogus")).await,
            Ok(ChargeOutcome::Declined { .. })
        ));
    }

    #[tokio::test]
    async fn flaky_recovers_on_the_third_attempt() {
        let p = SimulatedProvider::new();
        assert!(p.charge(&request(tokens::FLAKY)).await.is_err());
        assert!(p.charge(&request(tokens::FLAKY)).await.is_err());
        assert!(matches!(
            p.charge(&request(tokens::FLAKY)).await,
            Ok(ChargeOutcome::Approved { .. })
        ));
    }
}
