//! The payment database, all of its SQL: one charge per order (its primary key is the order
//! id), at most one refund per order, and the failed provider calls per order. Every function
//! runs inside the consumer's transaction, except [`count_provider_failure`], which must
//! outlive it.

use std::collections::HashMap;

use orderflow_domain::{Money, OrderId, PaymentResult};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::error::PaymentError;

/// A charge to record.
#[derive(Debug, Clone)]
pub struct NewCharge {
    pub order_id: OrderId,
    pub payment_id: uuid::Uuid,
    pub amount: Money,
    pub result: PaymentResult,
    pub provider_reference: Option<String>,
    /// Charge calls it took at the provider (it may have failed to answer before).
    pub attempts: u32,
}

/// A recorded charge, as a refund needs it.
#[derive(Debug, Clone)]
pub struct Charge {
    pub payment_id: uuid::Uuid,
    pub amount_minor: i64,
    pub currency: String,
    /// `PAID` or `FAILED`.
    pub status: String,
}

impl Charge {
    /// Whether the charge went through, so there is money to refund.
    pub fn is_paid(&self) -> bool {
        self.status == "PAID"
    }
}

/// A refund to record.
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    pub order_id: OrderId,
    pub refund_id: uuid::Uuid,
    pub charge: &'a Charge,
    pub reason: &'a str,
}

/// The status (`PAID` or `FAILED`) of each of `orders` that was charged already.
#[tracing::instrument(skip_all, fields(orders = orders.len()))]
pub async fn charge_statuses(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[OrderId],
) -> Result<HashMap<OrderId, String>, PaymentError> {
    let ids: Vec<uuid::Uuid> = orders.iter().map(OrderId::as_uuid).collect();
    let rows: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT order_id, status FROM charges WHERE order_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, status)| (OrderId::from(id), status))
        .collect())
}

/// Records charges, each `PAID` or `FAILED` with the reason, in one statement.
#[tracing::instrument(skip_all, fields(charges = charges.len()))]
pub async fn insert_charges(
    tx: &mut Transaction<'_, Postgres>,
    charges: &[NewCharge],
) -> Result<(), PaymentError> {
    if charges.is_empty() {
        return Ok(());
    }
    let mut order_ids = Vec::with_capacity(charges.len());
    let mut payment_ids = Vec::with_capacity(charges.len());
    let mut amounts = Vec::with_capacity(charges.len());
    let mut currencies = Vec::with_capacity(charges.len());
    let mut statuses = Vec::with_capacity(charges.len());
    let mut reasons = Vec::with_capacity(charges.len());
    let mut references = Vec::with_capacity(charges.len());
    let mut attempts = Vec::with_capacity(charges.len());
    for charge in charges {
        let (status, failure_reason) = match &charge.result {
            PaymentResult::Paid => ("PAID", None),
            PaymentResult::Failed { reason } => ("FAILED", Some(reason.as_str())),
        };
        order_ids.push(charge.order_id.as_uuid());
        payment_ids.push(charge.payment_id);
        amounts.push(charge.amount.amount_minor());
        currencies.push(charge.amount.currency().to_string());
        statuses.push(status);
        reasons.push(failure_reason);
        references.push(charge.provider_reference.as_deref());
        attempts.push(i32::try_from(charge.attempts).unwrap_or(i32::MAX));
    }
    sqlx::query(
        "INSERT INTO charges (order_id, payment_id, amount_minor, currency, status, failure_reason, provider_reference, attempts)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int4[])",
    )
    .bind(&order_ids)
    .bind(&payment_ids)
    .bind(&amounts)
    .bind(&currencies)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&references)
    .bind(&attempts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The order's charge, locked until the transaction ends so a concurrent refund waits.
#[tracing::instrument(skip_all, fields(%order_id))]
pub async fn lock_charge(
    tx: &mut Transaction<'_, Postgres>,
    order_id: OrderId,
) -> Result<Option<Charge>, PaymentError> {
    let row = sqlx::query(
        "SELECT payment_id, amount_minor, currency, status FROM charges WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id.as_uuid())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(Charge {
        payment_id: row.try_get("payment_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        status: row.try_get("status")?,
    }))
}

/// Whether the order was refunded already.
#[tracing::instrument(skip_all, fields(%order_id))]
pub async fn is_refunded(
    tx: &mut Transaction<'_, Postgres>,
    order_id: OrderId,
) -> Result<bool, PaymentError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refunds WHERE order_id = $1)")
            .bind(order_id.as_uuid())
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Records a refund of the whole charge.
#[tracing::instrument(skip_all, fields(order_id = %refund.order_id))]
pub async fn insert_refund(
    tx: &mut Transaction<'_, Postgres>,
    refund: &NewRefund<'_>,
) -> Result<(), PaymentError> {
    sqlx::query("INSERT INTO refunds (order_id, refund_id, amount_minor, currency, reason) VALUES ($1, $2, $3, $4, $5)")
        .bind(refund.order_id.as_uuid())
        .bind(refund.refund_id)
        .bind(refund.charge.amount_minor)
        .bind(&refund.charge.currency)
        .bind(refund.reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A provider call whose failures count against a budget of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Charge,
    Refund,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Charge => "charge",
            Operation::Refund => "refund",
        }
    }
}

/// How many `operation` calls failed at the provider so far for each of `orders` that had
/// any.
#[tracing::instrument(skip_all, fields(orders = orders.len(), ?operation))]
pub async fn provider_failures(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[OrderId],
    operation: Operation,
) -> Result<HashMap<OrderId, u32>, PaymentError> {
    let ids: Vec<uuid::Uuid> = orders.iter().map(OrderId::as_uuid).collect();
    let rows: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
        "SELECT order_id, failures FROM provider_failures WHERE order_id = ANY($1) AND operation = $2",
    )
    .bind(&ids)
    .bind(operation.as_str())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, failures)| (OrderId::from(id), failures.unsigned_abs()))
        .collect())
}

/// Counts one failed `operation` call for the order and returns the failures so far. It is
/// committed on its own (on `pool`, not in the consumer's transaction): the call was made
/// whatever becomes of that transaction, and a restart must not forget it.
#[tracing::instrument(skip_all, fields(%order_id, ?operation))]
pub async fn count_provider_failure(
    pool: &PgPool,
    order_id: OrderId,
    operation: Operation,
    error: &str,
) -> Result<u32, PaymentError> {
    let failures: i32 = sqlx::query_scalar(
        "INSERT INTO provider_failures (order_id, operation, failures, last_error) VALUES ($1, $2, 1, $3)
         ON CONFLICT (order_id, operation) DO UPDATE
         SET failures = provider_failures.failures + 1, last_error = EXCLUDED.last_error, updated_at = now()
         RETURNING failures",
    )
    .bind(order_id.as_uuid())
    .bind(operation.as_str())
    .bind(error)
    .fetch_one(pool)
    .await?;
    Ok(failures.unsigned_abs())
}
