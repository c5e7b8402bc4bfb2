//! One benchmark run at one offered rate: the open-loop load of [`crate::load`], then what
//! the system achieved, how long customers waited, whether every order was right, and the
//! CPU each component used.

use std::time::{Duration, Instant};

use orderflow_proto::v1 as pb;
use serde::Serialize;

use crate::load::{Gateway, Mix, Percentiles, open_loop};

/// Units each bench SKU starts with: more than any run can take.
pub const INITIAL_STOCK: i32 = 1_000_000;

/// One run at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub offered_per_sec: f64,
    pub duration_secs: f64,
    pub orders: usize,
    /// Orders that reached COMPLETED, per second, from the first due time to the last completion.
    pub achieved_per_sec: f64,
    pub completed: usize,
    pub errors: usize,
    pub first_errors: Vec<String>,
    pub place_order: Percentiles,
    pub time_to_terminal: Percentiles,
    /// Every order COMPLETED and every SKU's stock exactly what the run found minus what its completed orders took.
    pub correct: bool,
    pub correctness: String,
    /// Cores each component used on average while the run offered load and drained.
    pub cpu: super::cpu::Usage,
    /// The whole machine's CPU time in that window per completed order, in milliseconds.
    pub machine_cpu_ms_per_order: Option<f64>,
}

/// The bench SKUs of one run: orders are spread round-robin so one hot stock row does not
/// serialise the inventory service.
pub fn skus(run_id: &str, count: usize) -> Vec<String> {
    (0..count).map(|k| format!("bench-{run_id}-{k}")).collect()
}

/// Offers `rate` orders per second for `duration`, then waits for every order to end.
pub async fn run(
    label: &str,
    gateway: &Gateway,
    skus: &[String],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    // Earlier runs took stock from the same SKUs; this run is checked against what it found.
    let stock_before = gateway.stock_of(skus).await?;
    let mix = Mix::Completing {
        skus: skus.to_vec(),
    };
    let start = Instant::now() + Duration::from_millis(50);
    let cpu_before = super::cpu::Snapshot::take();
    let results = open_loop(gateway, &mix, rate, count, start).await?;
    let cpu = cpu_before.usage_until(&super::cpu::Snapshot::take());
    let completed = results
        .iter()
        .filter(|r| r.status == Some(pb::OrderStatus::Completed))
        .count();
    // From the first order's due time to the last terminal status seen.
    let last_end = results
        .iter()
        .filter_map(|r| r.finished)
        .max()
        .map(|end| end.saturating_duration_since(start))
        .unwrap_or_default();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();

    // Stock must be exactly what the run found minus the orders that completed, SKU by SKU.
    let stock_after = gateway.stock_of(skus).await?;
    let mut mismatches = Vec::new();
    for (k, sku) in skus.iter().enumerate() {
        let taken = results
            .iter()
            .filter(|r| r.sku == k && r.status == Some(pb::OrderStatus::Completed))
            .count() as i32;
        let expected = stock_before[k] - taken;
        if stock_after[k] != expected {
            mismatches.push(format!(
                "{sku}: {} left, expected {expected}",
                stock_after[k]
            ));
        }
    }
    let stock_ok = mismatches.is_empty();
    let all_completed = completed == count;
    let correctness = match (all_completed, stock_ok) {
        (true, true) => format!(
            "all {count} orders COMPLETED; stock exact on {} SKUs",
            skus.len()
        ),
        _ => format!(
            "{completed}/{count} COMPLETED; stock: {}",
            if stock_ok {
                "exact".into()
            } else {
                mismatches.join(", ")
            }
        ),
    };
    Ok(RunResult {
        label: label.to_owned(),
        offered_per_sec: rate,
        duration_secs: duration.as_secs_f64(),
        orders: count,
        achieved_per_sec: if last_end.is_zero() {
            0.0
        } else {
            completed as f64 / last_end.as_secs_f64()
        },
        completed,
        errors: errors.len(),
        first_errors: errors.iter().take(3).map(|e| e.to_string()).collect(),
        place_order: Percentiles::of(results.iter().filter_map(|r| r.place).collect()),
        time_to_terminal: Percentiles::of(results.iter().filter_map(|r| r.terminal).collect()),
        correct: all_completed && stock_ok,
        correctness,
        machine_cpu_ms_per_order: (completed > 0)
            .then(|| cpu.machine_cpu_secs * 1000.0 / completed as f64),
        cpu,
    })
}
