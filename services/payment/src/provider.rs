//! The payment provider behind a trait, with the contract a real one has (charge under an
//! idempotency key, look the charge up by that key, void or refund it by that key), and a
//! deterministic simulated provider whose behaviour is chosen by the payment-method token, in
//! the style of card networks' test tokens.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The provider's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Captured: the money is taken.
    Approved { reference: String },
    /// Refused; nothing is captured.
    Declined { reason: String },
}

/// What the provider holds under an idempotency key, as [`PaymentProvider::lookup`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeState {
    /// No charge under this key: none reached the provider (or, once the key was voided,
    /// none ever will).
    NotFound,
    /// Captured, and still held.
    Captured { reference: String },
    /// Refused; nothing captured.
    Declined { reason: String },
    /// Captured and then voided or refunded: nothing held.
    Reversed { reference: String },
}

/// What [`PaymentProvider::void`] found under the key. Either way nothing is captured under it
/// afterwards, and no later charge under it can capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoidOutcome {
    /// No capture was there.
    NothingCaptured,
    /// A capture was there, and it is reversed now.
    Voided { reference: String },
}

/// The provider did not answer (an error, a timeout): the outcome of the call is *unknown*.
/// A charge may have been captured although this came back; asking again later may work.
#[derive(Debug, Clone, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

/// A payment provider. Every call is idempotent per idempotency key (the order id), so a
/// caller that did not get an answer may always ask again.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges the request. Asking again with the same key answers what the first request did
    /// and never charges twice.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnavailable>;

    /// What the provider holds under `idempotency_key`: how an unknown outcome is resolved.
    async fn lookup(&self, idempotency_key: &str) -> Result<ChargeState, ProviderUnavailable>;

    /// Makes sure nothing stays captured under `idempotency_key`: reverses a capture there and
    /// closes the key, so a charge request still in flight is refused when it arrives.
    async fn void(&self, idempotency_key: &str) -> Result<VoidOutcome, ProviderUnavailable>;

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
    /// The first two charge calls for an order (and the first two refund calls) fail before
    /// reaching the provider, then it answers: approved.
    pub const FLAKY: &str = "pm_card_flaky";
    /// Every charge call fails before reaching the provider, so nothing is ever captured;
    /// lookups, voids and refunds are answered.
    pub const UNAVAILABLE: &str = "pm_card_providerUnavailable";
    /// The first charge call captures, and its reply is lost (it fails as a timeout would);
    /// every later call is answered.
    pub const REPLY_LOST: &str = "pm_card_replyLost";
    /// Down for a long time: the first charge call captures and its reply is lost, and the
    /// provider answers nothing about the order for the next [`super::OUTAGE_CALLS`] calls
    /// (charges, lookups, voids, refunds): longer than the default charge budget. Then every
    /// call is answered.
    pub const PROVIDER_DOWN: &str = "pm_card_providerDown";
}

/// Calls about a [`tokens::PROVIDER_DOWN`] order that fail after the first one.
pub const OUTAGE_CALLS: u32 = 5;

/// What the simulated provider holds for one idempotency key.
#[derive(Debug, Clone, Default)]
enum Held {
    /// No charge reached the provider.
    #[default]
    Nothing,
    Captured {
        reference: String,
        amount_minor: i64,
    },
    Declined {
        reason: String,
    },
    Reversed {
        reference: String,
    },
}

/// One idempotency key at the simulated provider.
#[derive(Debug, Clone, Default)]
struct Account {
    /// The token of the first charge under the key: how the provider behaves for it.
    payment_method: String,
    /// Every call about the key.
    calls: u32,
    charge_calls: u32,
    refund_calls: u32,
    held: Held,
    /// Voided: no charge under this key can capture any more.
    closed: bool,
}

/// What the simulated provider did under one idempotency key, for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ledger {
    /// Minor units captured and not reversed.
    pub net_captured_minor: i64,
    /// Charge calls made (answered or not).
    pub charge_calls: u32,
    /// Refund calls made (answered or not).
    pub refund_calls: u32,
    /// Calls of any kind.
    pub calls: u32,
}

/// How long [`SimulatedProvider`] remembers an idempotency key by default: a day, as real
/// providers keep theirs (Stripe removes a key once it is at least 24 hours old).
pub const DEFAULT_KEY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A deterministic provider for local runs and tests. Its state stands for the provider's
/// side: a test that restarts the payment service keeps the same provider.
///
/// Like a real provider it forgets an idempotency key once the key is older than its
/// retention: a call under a forgotten key starts afresh, as on a key never seen. So its
/// memory is bounded by the keys of one retention period (a few hundred bytes a key), not by
/// every order ever paid. The payment service asks about a key while its order is in flight,
/// and when a refund is redriven from the dead-letter topic: keep the retention longer than
/// both can take.
pub struct SimulatedProvider {
    keys: Mutex<Keys>,
    retention: Duration,
}

impl Default for SimulatedProvider {
    fn default() -> Self {
        SimulatedProvider::with_retention(DEFAULT_KEY_RETENTION)
    }
}

/// The accounts, and their keys in the order they were first seen, oldest first (each key
/// stored once, shared by both).
#[derive(Default)]
struct Keys {
    accounts: HashMap<Arc<str>, Account>,
    first_seen: VecDeque<(Instant, Arc<str>)>,
}

impl Keys {
    /// The account of `key` at `now`, opened if it is new, after forgetting every key first
    /// seen `retention` or longer before `now`.
    fn open(&mut self, key: &str, now: Instant, retention: Duration) -> &mut Account {
        while let Some((seen, _)) = self.first_seen.front() {
            if now.saturating_duration_since(*seen) < retention {
                break;
            }
            let (_, old) = self.first_seen.pop_front().expect("a front entry");
            self.accounts.remove(&old);
        }
        if !self.accounts.contains_key(key) {
            let key: Arc<str> = key.into();
            self.first_seen.push_back((now, key.clone()));
            self.accounts.insert(key, Account::default());
        }
        self.accounts.get_mut(key).expect("opened above")
    }
}

fn unavailable(what: &str) -> ProviderUnavailable {
    ProviderUnavailable(format!("simulated {what}"))
}

impl SimulatedProvider {
    pub fn new() -> Self {
        SimulatedProvider::default()
    }

    /// A provider that forgets a key once it is older than `retention`.
    pub fn with_retention(retention: Duration) -> Self {
        SimulatedProvider {
            keys: Mutex::default(),
            retention,
        }
    }

    /// What the provider did under `idempotency_key`.
    pub fn ledger(&self, idempotency_key: &str) -> Ledger {
        let keys = self.keys.lock().expect("keys lock");
        let Some(account) = keys.accounts.get(idempotency_key) else {
            return Ledger::default();
        };
        Ledger {
            net_captured_minor: match account.held {
                Held::Captured { amount_minor, .. } => amount_minor,
                _ => 0,
            },
            charge_calls: account.charge_calls,
            refund_calls: account.refund_calls,
            calls: account.calls,
        }
    }

    /// Runs `call` on the key's account, counting the call. A [`tokens::PROVIDER_DOWN`]
    /// account answers nothing during its outage.
    fn with_account<T>(
        &self,
        key: &str,
        call: impl FnOnce(&mut Account) -> Result<T, ProviderUnavailable>,
    ) -> Result<T, ProviderUnavailable> {
        let mut keys = self.keys.lock().expect("keys lock");
        let account = keys.open(key, Instant::now(), self.retention);
        account.calls += 1;
        if account.payment_method == tokens::PROVIDER_DOWN
            && (2..=1 + OUTAGE_CALLS).contains(&account.calls)
        {
            return Err(unavailable("outage"));
        }
        call(account)
    }
}

fn state_of(held: &Held) -> ChargeState {
    match held {
        Held::Nothing => ChargeState::NotFound,
        Held::Captured { reference, .. } => ChargeState::Captured {
            reference: reference.clone(),
        },
        Held::Declined { reason } => ChargeState::Declined {
            reason: reason.clone(),
        },
        Held::Reversed { reference } => ChargeState::Reversed {
            reference: reference.clone(),
        },
    }
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnavailable> {
        self.with_account(&request.idempotency_key, |account| {
            account.charge_calls += 1;
            if account.payment_method.is_empty() {
                account.payment_method = request.payment_method.clone();
            }
            let method = account.payment_method.as_str();
            match method {
                tokens::FLAKY if account.charge_calls <= 2 => return Err(unavailable("timeout")),
                tokens::UNAVAILABLE => return Err(unavailable("outage")),
                _ => {}
            }
            // The provider's own idempotency: a key it has seen answers as it did then.
            match &account.held {
                Held::Captured { reference, .. } => {
                    return Ok(ChargeOutcome::Approved {
                        reference: reference.clone(),
                    });
                }
                Held::Declined { reason } => {
                    return Ok(ChargeOutcome::Declined {
                        reason: reason.clone(),
                    });
                }
                Held::Reversed { .. } => {
                    return Ok(ChargeOutcome::Declined {
                        reason: "charge voided".into(),
                    });
                }
                Held::Nothing if account.closed => {
                    return Ok(ChargeOutcome::Declined {
                        reason: "charge voided".into(),
                    });
                }
                Held::Nothing => {}
            }
            let declined = |reason: &str| Held::Declined {
                reason: reason.into(),
            };
            account.held = match method {
                tokens::VISA
                | tokens::MASTERCARD
                | tokens::FLAKY
                | tokens::REPLY_LOST
                | tokens::PROVIDER_DOWN => Held::Captured {
                    reference: format!("sim_ch_{}", request.idempotency_key),
                    amount_minor: request.amount_minor,
                },
                tokens::DECLINED => declined("card declined"),
                tokens::INSUFFICIENT_FUNDS => declined("insufficient funds"),
                other => declined(&format!("unknown payment method {other:?}")),
            };
            // Captured, and then the reply is lost on the way back.
            if matches!(method, tokens::REPLY_LOST | tokens::PROVIDER_DOWN)
                && account.charge_calls == 1
            {
                return Err(unavailable("timeout after capture"));
            }
            Ok(match &account.held {
                Held::Captured { reference, .. } => ChargeOutcome::Approved {
                    reference: reference.clone(),
                },
                Held::Declined { reason } => ChargeOutcome::Declined {
                    reason: reason.clone(),
                },
                Held::Nothing | Held::Reversed { .. } => unreachable!("just charged"),
            })
        })
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<ChargeState, ProviderUnavailable> {
        self.with_account(idempotency_key, |account| Ok(state_of(&account.held)))
    }

    async fn void(&self, idempotency_key: &str) -> Result<VoidOutcome, ProviderUnavailable> {
        self.with_account(idempotency_key, |account| {
            account.closed = true;
            Ok(match &account.held {
                Held::Captured { reference, .. } => {
                    let reference = reference.clone();
                    account.held = Held::Reversed {
                        reference: reference.clone(),
                    };
                    VoidOutcome::Voided { reference }
                }
                Held::Reversed { reference } => VoidOutcome::Voided {
                    reference: reference.clone(),
                },
                Held::Nothing | Held::Declined { .. } => VoidOutcome::NothingCaptured,
            })
        })
    }

    async fn refund(
        &self,
        idempotency_key: &str,
        _amount_minor: i64,
    ) -> Result<String, ProviderUnavailable> {
        self.with_account(idempotency_key, |account| {
            account.refund_calls += 1;
            if account.payment_method == tokens::FLAKY && account.refund_calls <= 2 {
                return Err(unavailable("timeout"));
            }
            if let Held::Captured { .. } = account.held {
                account.held = Held::Reversed {
                    reference: format!("sim_re_{idempotency_key}"),
                };
            }
            Ok(format!("sim_re_{idempotency_key}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: format!("o-{token}"),
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
        assert_eq!(
            p.ledger("o-pm_card_providerUnavailable").net_captured_minor,
            0
        );
        assert!(matches!(
            p.charge(&request("pm_bogus")).await,
            Ok(ChargeOutcome::Declined { .. })
        ));
        assert_eq!(p.ledger("o-pm_card_visa").net_captured_minor, 100);
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
        let key = "o-pm_card_flaky";
        assert!(p.refund(key, 100).await.is_err());
        assert!(p.refund(key, 100).await.is_err());
        assert_eq!(p.refund(key, 100).await.unwrap(), format!("sim_re_{key}"));
        assert_eq!(p.ledger(key).net_captured_minor, 0);
    }

    /// The reply is lost but the money is taken: a lookup finds the capture, and a void
    /// reverses it.
    #[tokio::test]
    async fn a_lost_reply_leaves_a_capture_that_lookup_finds_and_void_reverses() {
        let p = SimulatedProvider::new();
        let key = "o-pm_card_replyLost";
        assert!(p.charge(&request(tokens::REPLY_LOST)).await.is_err());
        assert_eq!(p.ledger(key).net_captured_minor, 100);
        assert_eq!(
            p.lookup(key).await.unwrap(),
            ChargeState::Captured {
                reference: format!("sim_ch_{key}")
            }
        );
        assert_eq!(
            p.void(key).await.unwrap(),
            VoidOutcome::Voided {
                reference: format!("sim_ch_{key}")
            }
        );
        assert_eq!(p.ledger(key).net_captured_minor, 0);
        // Voided for good: a charge arriving late cannot capture again.
        assert!(matches!(
            p.charge(&request(tokens::REPLY_LOST)).await,
            Ok(ChargeOutcome::Declined { .. })
        ));
        assert_eq!(p.ledger(key).net_captured_minor, 0);
    }

    /// A void on a key with no capture closes it: the charge that was still in flight is
    /// refused when it arrives.
    #[tokio::test]
    async fn a_void_closes_the_key_against_charges_still_in_flight() {
        let p = SimulatedProvider::new();
        let key = "o-pm_card_visa";
        assert_eq!(p.lookup(key).await.unwrap(), ChargeState::NotFound);
        assert_eq!(p.void(key).await.unwrap(), VoidOutcome::NothingCaptured);
        assert!(matches!(
            p.charge(&request(tokens::VISA)).await,
            Ok(ChargeOutcome::Declined { .. })
        ));
        assert_eq!(p.ledger(key).net_captured_minor, 0);
    }

    /// Keys are forgotten in the order they were first seen, once older than the retention,
    /// so what is remembered is bounded by the keys of one retention period.
    #[test]
    fn keys_older_than_the_retention_are_forgotten_oldest_first() {
        let retention = Duration::from_secs(60);
        let start = Instant::now();
        let mut keys = Keys::default();
        for i in 0..1_000u64 {
            // One new key a second for 1,000 seconds; `a` is asked about every second too.
            let now = start + Duration::from_secs(i);
            keys.open(&format!("o-{i}"), now, retention).calls += 1;
            keys.open("a", now, retention).calls += 1;
            assert!(
                keys.accounts.len() <= 61,
                "{} keys at {i} s",
                keys.accounts.len()
            );
        }
        // At 999 s the keys first seen at 940..=999 s are remembered, and only they (and `a`).
        assert_eq!(keys.accounts.len(), 61);
        assert_eq!(keys.first_seen.len(), 61);
        // Asking about a key does not keep it: `a`, first seen at 0 s, was forgotten at 60 s
        // and every 60 s after, so its account now counts the calls since 960 s.
        assert_eq!(keys.accounts["a"].calls, 40);
        assert!(keys.accounts.contains_key("o-940") && !keys.accounts.contains_key("o-939"));
        // A key asked about again keeps its account while it is remembered...
        let later = start + Duration::from_secs(999);
        assert_eq!(keys.open("o-999", later, retention).calls, 1);
        // ...and is new once forgotten.
        let much_later = start + Duration::from_secs(999 + 60);
        assert_eq!(keys.open("o-999", much_later, retention).calls, 0);
        assert_eq!(keys.accounts.len(), 1);
        assert_eq!(keys.first_seen.len(), 1);
    }

    /// Down for a long time: the capture is made, then nothing is answered for
    /// [`OUTAGE_CALLS`] calls, then everything is.
    #[tokio::test]
    async fn a_long_outage_hides_a_capture_until_it_ends() {
        let p = SimulatedProvider::new();
        let key = "o-pm_card_providerDown";
        assert!(p.charge(&request(tokens::PROVIDER_DOWN)).await.is_err());
        for _ in 0..OUTAGE_CALLS {
            assert!(p.lookup(key).await.is_err());
        }
        assert!(matches!(
            p.lookup(key).await.unwrap(),
            ChargeState::Captured { .. }
        ));
        assert_eq!(p.ledger(key).net_captured_minor, 100);
    }
}
