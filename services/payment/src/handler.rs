//! The payment service's reaction to events: charge on OrderCreated, refund on
//! InventoryUpdated OUT_OF_STOCK. One charge row and at most one refund row per order, so
//! a redelivered or re-published event never charges or refunds twice.
//!
//! A provider call that fails (an error, a timeout) has an *unknown* outcome: the money may
//! have been taken. It is retried (every call is idempotent per order), and its failure is
//! counted durably against the provider's budget; database and commit errors never are. Once
//! the budget is spent the outcome is resolved at the provider: a capture it holds makes the
//! order PAID; otherwise the charge is voided, so nothing can capture later, and only then is
//! the order FAILED. No FAILED order keeps money at the provider, and no PAID order lacks it.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use orderflow_domain::{
    MissingItem, OrderId, PaymentResult, PlacedOrder, StockSettlement, describe_missing,
};
use orderflow_events::{self as ev, Event};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::PaymentError;
use crate::provider::{
    ChargeOutcome, ChargeRequest, ChargeState, PaymentProvider, ProviderUnavailable, VoidOutcome,
};
use crate::store::{self, NewCharge, NewRefund, Operation};

/// Charges placed orders and refunds out-of-stock ones through `provider`.
pub struct PaymentHandler {
    provider: Arc<dyn PaymentProvider>,
    /// The payment database, for what must outlive the consumer's transaction: the count of
    /// failed provider calls.
    pool: PgPool,
    /// Failed charge calls before the charge is resolved at the provider and, with nothing
    /// captured, recorded FAILED.
    charge_attempts: u32,
    /// Failed refund calls before a refund is dead-lettered for a redrive.
    refund_attempts: u32,
}

impl PaymentHandler {
    /// A handler charging through `provider`, counting failed provider calls in `pool`'s
    /// database against `charge_attempts` and `refund_attempts` (each at least 1).
    pub fn new(
        provider: Arc<dyn PaymentProvider>,
        pool: PgPool,
        charge_attempts: u32,
        refund_attempts: u32,
    ) -> Self {
        PaymentHandler {
            provider,
            pool,
            charge_attempts: charge_attempts.max(1),
            refund_attempts: refund_attempts.max(1),
        }
    }
}

/// A charge the provider has settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Captured, under this reference.
    Paid { reference: String },
    /// Nothing is captured, and nothing can be any more.
    Failed { reason: String },
}

/// Why a charge is not settled yet. Either way the same event is delivered again.
#[derive(Debug)]
pub(crate) enum Unsettled {
    /// The charge call failed: its outcome is unknown, and it counts against the budget.
    ChargeFailed(ProviderUnavailable),
    /// The budget is spent, and resolving the charge at the provider (lookup, void) failed:
    /// asked again until it answers, without counting.
    Unresolved(ProviderUnavailable),
}

/// One try at settling a charge, talking only to the provider. `failures` is how many charge
/// calls for the order failed before; below `budget` the charge is (idempotently) made, at
/// the budget it is resolved by [`resolve`].
pub(crate) async fn settle_charge(
    provider: &dyn PaymentProvider,
    request: &ChargeRequest,
    failures: u32,
    budget: u32,
) -> Result<Settled, Unsettled> {
    if failures >= budget {
        return resolve(provider, &request.idempotency_key, failures)
            .await
            .map_err(Unsettled::Unresolved);
    }
    match provider.charge(request).await {
        Ok(ChargeOutcome::Approved { reference }) => Ok(Settled::Paid { reference }),
        Ok(ChargeOutcome::Declined { reason }) => Ok(Settled::Failed { reason }),
        Err(e) => Err(Unsettled::ChargeFailed(e)),
    }
}

/// Settles a charge whose calls failed `failures` times: what the provider holds under the
/// key decides, and a charge it does not hold is voided first, so a request still in flight
/// can never capture after the order is FAILED.
async fn resolve(
    provider: &dyn PaymentProvider,
    key: &str,
    failures: u32,
) -> Result<Settled, ProviderUnavailable> {
    let gave_up = format!("payment provider unavailable after {failures} attempts");
    let voided = |reference: &str| Settled::Failed {
        reason: format!("{gave_up}; charge {reference} voided"),
    };
    match provider.lookup(key).await? {
        ChargeState::Captured { reference } => return Ok(Settled::Paid { reference }),
        ChargeState::Declined { reason } => return Ok(Settled::Failed { reason }),
        ChargeState::Reversed { reference } => return Ok(voided(&reference)),
        ChargeState::NotFound => {}
    }
    Ok(match provider.void(key).await? {
        VoidOutcome::NothingCaptured => Settled::Failed {
            reason: format!("{gave_up}; nothing captured"),
        },
        VoidOutcome::Voided { reference } => voided(&reference),
    })
}

#[async_trait]
impl Handler for PaymentHandler {
    /// What each message causes, in order: the placed orders are charged together (three
    /// statements for all of them, not three per order, and the provider asked about them
    /// concurrently), an order out of stock is refunded, and the rest cause nothing.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError> {
        let mut caused: Vec<Vec<Event>> = messages.iter().map(|_| Vec::new()).collect();
        let mut placed = Vec::new();
        let mut placed_at = Vec::new();
        for (i, (event, _)) in messages.iter().enumerate() {
            match event {
                Event::OrderCreated(order) => {
                    placed.push(PlacedOrder::try_from(order).map_err(PaymentError::from)?);
                    placed_at.push(i);
                }
                // Only an order that ran out of stock concerns payment; other stock outcomes
                // (confirmed, or a status from a newer schema) are not read any further.
                Event::InventoryUpdated(update)
                    if update.status == ev::InventoryStatus::OutOfStock =>
                {
                    let settled = StockSettlement::try_from(update).map_err(PaymentError::from)?;
                    caused[i] = self
                        .refund(tx, settled.order_id, settled.decision.missing())
                        .await?;
                }
                _ => {}
            }
        }
        for (i, events) in placed_at
            .into_iter()
            .zip(self.charge_all(tx, &placed).await?)
        {
            caused[i] = events;
        }
        Ok(caused)
    }
}

/// Provider calls one batch has in flight at once, at most.
const CONCURRENT_CALLS: usize = 16;

impl PaymentHandler {
    /// Charges each of `orders` that is not charged yet, once however often it is named, and
    /// returns the PaymentProcessed each caused (nothing for the others), in order. Which are
    /// charged already, and the failed calls of the rest, are read in one statement each; the
    /// charges are recorded in one. Any charge left unsettled fails the call: every failed
    /// provider call is counted already, and the consumer loop then charges the orders one at
    /// a time (the provider answers a repeated charge as it did the first).
    async fn charge_all(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        orders: &[PlacedOrder],
    ) -> Result<Vec<Vec<Event>>, PaymentError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<OrderId> = orders.iter().map(|order| order.order_id).collect();
        let charged = store::charge_statuses(tx, &ids).await?;
        let failures = store::provider_failures(tx, &ids, Operation::Charge).await?;
        // The orders to charge now, by their place in `orders`.
        let mut seen = HashSet::new();
        let mut to_charge = Vec::new();
        for (i, order) in orders.iter().enumerate() {
            let order_id = order.order_id;
            if let Some(status) = charged.get(&order_id) {
                tracing::info!(%order_id, %status, "order already charged, not charging again");
            } else if seen.insert(order_id) {
                to_charge.push(i);
            }
        }
        let calls: Vec<_> = to_charge
            .iter()
            .map(|&i| {
                let order = &orders[i];
                self.settle(order, failures.get(&order.order_id).copied().unwrap_or(0))
            })
            .collect();
        let settlements: Vec<Result<(Settled, u32), PaymentError>> = stream::iter(calls)
            .buffered(CONCURRENT_CALLS)
            .collect()
            .await;
        let settlements = settlements.into_iter().collect::<Result<Vec<_>, _>>()?;
        let charges: Vec<NewCharge> = to_charge
            .iter()
            .zip(settlements)
            .map(|(&i, (settled, attempts))| {
                let (result, provider_reference) = match settled {
                    Settled::Paid { reference } => (PaymentResult::Paid, Some(reference)),
                    Settled::Failed { reason } => (PaymentResult::Failed { reason }, None),
                };
                NewCharge {
                    order_id: orders[i].order_id,
                    payment_id: uuid::Uuid::now_v7(),
                    amount: orders[i].total,
                    result,
                    provider_reference,
                    attempts,
                }
            })
            .collect();
        store::insert_charges(tx, &charges).await?;
        let mut caused: Vec<Vec<Event>> = orders.iter().map(|_| Vec::new()).collect();
        for (&i, charge) in to_charge.iter().zip(charges) {
            let order_id = charge.order_id;
            let (status, failure_reason) = match charge.result {
                PaymentResult::Paid => (ev::PaymentStatus::Paid, None),
                PaymentResult::Failed { reason } => (ev::PaymentStatus::Failed, Some(reason)),
            };
            tracing::info!(%order_id, ?status, reason = failure_reason.as_deref().unwrap_or(""), "payment processed");
            caused[i] = vec![Event::PaymentProcessed(ev::PaymentProcessed {
                event_id: ev::new_event_id(),
                order_id: order_id.to_string(),
                occurred_at: ev::now_millis(),
                payment_id: charge.payment_id.to_string(),
                status,
                amount: charge.amount.into(),
                items: orders[i].items.iter().map(Into::into).collect(),
                failure_reason,
                provider_reference: charge.provider_reference,
            })];
        }
        Ok(caused)
    }

    /// Settles the charge of `order`, whose charge calls failed `failures` times before, at
    /// the provider, and returns the settlement and the charge calls it took. A failed charge
    /// call is counted durably at once; below the budget it leaves the charge unsettled (an
    /// error, so the event is delivered again), and the call that spends the budget has the
    /// charge resolved at the provider now.
    async fn settle(
        &self,
        order: &PlacedOrder,
        mut failures: u32,
    ) -> Result<(Settled, u32), PaymentError> {
        let order_id = order.order_id;
        let request = ChargeRequest {
            idempotency_key: order_id.to_string(),
            amount_minor: order.total.amount_minor(),
            currency: order.total.currency().to_string(),
            payment_method: order.payment_method.to_string(),
        };
        let provider = self.provider.as_ref();
        let settled = match settle_charge(provider, &request, failures, self.charge_attempts).await
        {
            Ok(settled) => settled,
            Err(Unsettled::ChargeFailed(e)) => {
                failures = store::count_provider_failure(
                    &self.pool,
                    order_id,
                    Operation::Charge,
                    &e.to_string(),
                )
                .await?;
                tracing::warn!(%order_id, failures, budget = self.charge_attempts, error = %e, "charge call failed, outcome unknown");
                if failures < self.charge_attempts {
                    return Err(e.into());
                }
                // The budget is spent with this call: resolve the charge now.
                match settle_charge(provider, &request, failures, self.charge_attempts).await {
                    Ok(settled) => settled,
                    Err(Unsettled::ChargeFailed(e) | Unsettled::Unresolved(e)) => {
                        return Err(e.into());
                    }
                }
            }
            Err(Unsettled::Unresolved(e)) => return Err(e.into()),
        };
        // The charge calls made: those that failed, and the one that answered if it was a
        // charge (past the budget, a lookup or a void answers instead).
        let attempts = if failures < self.charge_attempts {
            failures + 1
        } else {
            failures
        };
        Ok((settled, attempts))
    }

    async fn refund(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        order_id: OrderId,
        missing: &[MissingItem],
    ) -> Result<Vec<Event>, PaymentError> {
        let charge = store::lock_charge(tx, order_id)
            .await?
            .ok_or(PaymentError::NoCharge(order_id))?;
        if !charge.is_paid() {
            return Err(PaymentError::NotPaid {
                order_id,
                status: charge.status,
            });
        }
        if store::is_refunded(tx, order_id).await? {
            tracing::info!(%order_id, "already refunded");
            return Ok(Vec::new());
        }
        if let Err(e) = self
            .provider
            .refund(&order_id.to_string(), charge.amount_minor)
            .await
        {
            let failures = store::count_provider_failure(
                &self.pool,
                order_id,
                Operation::Refund,
                &e.to_string(),
            )
            .await?;
            tracing::warn!(%order_id, failures, budget = self.refund_attempts, error = %e, "refund call failed");
            return Err(if failures < self.refund_attempts {
                e.into()
            } else {
                PaymentError::RefundFailed {
                    attempts: failures,
                    source: e,
                }
            });
        }
        let refund_id = uuid::Uuid::now_v7();
        let reason = describe_missing(missing);
        store::insert_refund(
            tx,
            &NewRefund {
                order_id,
                refund_id,
                charge: &charge,
                reason: &reason,
            },
        )
        .await?;
        tracing::info!(%order_id, amount_minor = charge.amount_minor, "payment refunded");
        Ok(vec![Event::PaymentRefunded(ev::PaymentRefunded {
            event_id: ev::new_event_id(),
            order_id: order_id.to_string(),
            occurred_at: ev::now_millis(),
            payment_id: charge.payment_id.to_string(),
            refund_id: refund_id.to_string(),
            amount: ev::Money {
                amount_minor: charge.amount_minor,
                currency: charge.currency,
            },
            reason,
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{SimulatedProvider, tokens};

    const EVERY_TOKEN: [&str; 9] = [
        tokens::VISA,
        tokens::MASTERCARD,
        tokens::DECLINED,
        tokens::INSUFFICIENT_FUNDS,
        tokens::FLAKY,
        tokens::UNAVAILABLE,
        tokens::REPLY_LOST,
        tokens::PROVIDER_DOWN,
        "pm_unknown",
    ];

    /// Settles a charge the way the handler does across deliveries (a failed charge call
    /// counted, anything unsettled tried again), and returns the settlement with the failures
    /// counted.
    async fn settle(
        provider: &SimulatedProvider,
        request: &ChargeRequest,
        budget: u32,
    ) -> (Settled, u32) {
        let mut failures = 0;
        for _ in 0..100 {
            match settle_charge(provider, request, failures, budget).await {
                Ok(settled) => return (settled, failures),
                Err(Unsettled::ChargeFailed(_)) => failures += 1,
                Err(Unsettled::Unresolved(_)) => {}
            }
        }
        panic!("{} never settled", request.payment_method);
    }

    /// The handler's charge logic against the simulated provider, for every token and budget:
    /// a FAILED settlement leaves nothing captured, a PAID one holds the amount under the
    /// reference it records, and settling again (a commit lost after settling) gives the same
    /// answer and changes nothing at the provider.
    #[tokio::test]
    async fn settlements_agree_with_what_the_provider_holds() {
        for budget in 1..=7 {
            for token in EVERY_TOKEN {
                let provider = SimulatedProvider::new();
                let request = ChargeRequest {
                    idempotency_key: format!("order-{token}-{budget}"),
                    amount_minor: 700,
                    currency: "EUR".into(),
                    payment_method: token.into(),
                };
                let case = format!("{token} with a budget of {budget}");
                let (settled, failures) = settle(&provider, &request, budget).await;
                assert!(failures <= budget, "{case}: {failures} failures counted");
                let held = provider.ledger(&request.idempotency_key).net_captured_minor;
                match &settled {
                    Settled::Paid { reference } => {
                        assert_eq!(held, 700, "{case}: PAID holds the amount");
                        assert_eq!(reference, &format!("sim_ch_{}", request.idempotency_key));
                    }
                    Settled::Failed { reason } => {
                        assert_eq!(held, 0, "{case}: FAILED ({reason}) holds nothing")
                    }
                }
                let again = settle_charge(&provider, &request, failures, budget).await;
                assert_eq!(again.ok().as_ref(), Some(&settled), "{case}: settled again");
                assert_eq!(
                    provider.ledger(&request.idempotency_key).net_captured_minor,
                    held,
                    "{case}: settling again changed the books"
                );
            }
        }
    }

    /// The outcomes a user sees with the default budget of 5.
    #[tokio::test]
    async fn unknown_outcomes_resolve_at_the_provider() {
        let provider = SimulatedProvider::new();
        let request = |token: &str| ChargeRequest {
            idempotency_key: token.into(),
            amount_minor: 700,
            currency: "EUR".into(),
            payment_method: token.into(),
        };
        let paid = |(s, _): (Settled, u32)| matches!(s, Settled::Paid { .. });
        // Captured, reply lost: the retried (idempotent) charge finds the capture.
        assert!(paid(
            settle(&provider, &request(tokens::REPLY_LOST), 5).await
        ));
        // Captured, then down past the budget: the lookup finds it once the provider is back.
        assert!(paid(
            settle(&provider, &request(tokens::PROVIDER_DOWN), 5).await
        ));
        // Never captured: voided after 5 failed calls, then FAILED with the reason.
        let (settled, failures) = settle(&provider, &request(tokens::UNAVAILABLE), 5).await;
        assert_eq!(failures, 5);
        assert_eq!(
            settled,
            Settled::Failed {
                reason: "payment provider unavailable after 5 attempts; nothing captured".into()
            }
        );
        // Captured, reply lost, and a budget of one call: the capture is found, not voided.
        let provider = SimulatedProvider::new();
        assert!(paid(
            settle(&provider, &request(tokens::REPLY_LOST), 1).await
        ));
    }
}
