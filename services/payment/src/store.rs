//! The payment database, all of its SQL: one charge per order (its primary key is the order
//! id) and at most one refund per order. Every function runs inside the consumer's
//! transaction.

use orderflow_domain::{Money, OrderId, PaymentResult};
use sqlx::{Postgres, Row, Transaction};

use crate::error::PaymentError;

/// A charge to record.
#[derive(Debug, Clone)]
pub struct NewCharge<'a> {
    pub order_id: OrderId,
    pub payment_id: uuid::Uuid,
    pub amount: Money,
    pub result: &'a PaymentResult,
    pub provider_reference: Option<&'a str>,
    /// Delivery attempts it took (the provider may have been unavailable before).
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

/// The status of the order's charge, if it was charged already.
#[tracing::instrument(skip_all, fields(%order_id))]
pub async fn charge_status(
    tx: &mut Transaction<'_, Postgres>,
    order_id: OrderId,
) -> Result<Option<String>, PaymentError> {
    Ok(
        sqlx::query_scalar("SELECT status FROM charges WHERE order_id = $1")
            .bind(order_id.as_uuid())
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Records a charge: `PAID`, or `FAILED` with the reason.
#[tracing::instrument(skip_all, fields(order_id = %charge.order_id))]
pub async fn insert_charge(
    tx: &mut Transaction<'_, Postgres>,
    charge: &NewCharge<'_>,
) -> Result<(), PaymentError> {
    let (status, failure_reason) = match charge.result {
        PaymentResult::Paid => ("PAID", None),
        PaymentResult::Failed { reason } => ("FAILED", Some(reason.as_str())),
    };
    sqlx::query(
        "INSERT INTO charges (order_id, payment_id, amount_minor, currency, status, failure_reason, provider_reference, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(charge.order_id.as_uuid())
    .bind(charge.payment_id)
    .bind(charge.amount.amount_minor())
    .bind(charge.amount.currency().as_str())
    .bind(status)
    .bind(failure_reason)
    .bind(charge.provider_reference)
    .bind(charge.attempts as i32)
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
