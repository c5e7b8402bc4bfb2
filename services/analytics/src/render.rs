//! The figures as text, for people: `orderflow stats` and `orderflow demo`.

use chrono::{DateTime, Utc};
use orderflow_proto::v1 as pb;

/// A few lines: orders per status, payments and the decline rate, revenue per minute (the
/// newest first, times in UTC), stock-outs per SKU.
pub fn render(stats: &pb::Stats) -> String {
    let mut out = String::new();
    let statuses: Vec<String> = stats
        .orders
        .iter()
        .map(|c| {
            let name = pb::OrderStatus::try_from(c.status)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("ORDER_STATUS_")
                        .to_owned()
                })
                .unwrap_or_else(|_| c.status.to_string());
            format!("{name} {}", c.orders)
        })
        .collect();
    let total: i64 = stats.orders.iter().map(|c| c.orders).sum();
    out.push_str(&format!(
        "orders: {total} ({})\n",
        if statuses.is_empty() {
            "none yet".to_owned()
        } else {
            statuses.join(", ")
        }
    ));
    let payments = stats.payments.unwrap_or_default();
    out.push_str(&format!(
        "payments: {} paid, {} declined (decline rate {:.1} %)\n",
        payments.paid,
        payments.declined,
        payments.decline_rate * 100.0
    ));
    if stats.revenue.is_empty() {
        out.push_str("revenue: none yet\n");
    } else {
        out.push_str("revenue per minute (UTC), the newest first:\n");
        for r in &stats.revenue {
            let minute = r
                .minute
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0))
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "?".into());
            out.push_str(&format!(
                "  {minute}  {}  charged {}  refunded {}\n",
                r.currency,
                amount(r.captured_minor),
                amount(r.refunded_minor)
            ));
        }
    }
    if stats.stock_outs.is_empty() {
        out.push_str("stock-outs: none\n");
    } else {
        let outs: Vec<String> = stats
            .stock_outs
            .iter()
            .map(|s| {
                format!(
                    "{} ({} order{}, {} unit{} short)",
                    s.sku,
                    s.orders,
                    plural(s.orders),
                    s.units_short,
                    plural(s.units_short)
                )
            })
            .collect();
        out.push_str(&format!("stock-outs: {}\n", outs.join(", ")));
    }
    out
}

/// `59.97` for 5997 minor units.
fn amount(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_read_as_a_short_report() {
        let stats = pb::Stats {
            orders: vec![
                pb::StatusCount {
                    status: pb::OrderStatus::Completed as i32,
                    orders: 1,
                },
                pb::StatusCount {
                    status: pb::OrderStatus::Refunded as i32,
                    orders: 1,
                },
            ],
            revenue: vec![pb::MinuteRevenue {
                minute: Some(prost_types::Timestamp {
                    seconds: 1_796_131_200,
                    nanos: 0,
                }),
                currency: "EUR".into(),
                captured_minor: 21989,
                refunded_minor: 15992,
            }],
            payments: Some(pb::PaymentOutcomes {
                paid: 2,
                declined: 1,
                decline_rate: 1.0 / 3.0,
            }),
            stock_outs: vec![pb::StockOut {
                sku: "widget".into(),
                orders: 1,
                units_short: 1,
            }],
        };
        assert_eq!(
            render(&stats),
            "orders: 2 (COMPLETED 1, REFUNDED 1)\n\
             payments: 2 paid, 1 declined (decline rate 33.3 %)\n\
             revenue per minute (UTC), the newest first:\n\
             \x20 2026-12-01 13:20  EUR  charged 219.89  refunded 159.92\n\
             stock-outs: widget (1 order, 1 unit short)\n"
        );
    }

    #[test]
    fn nothing_yet_says_so() {
        let text = render(&pb::Stats::default());
        assert!(text.starts_with("orders: 0 (none yet)\npayments: 0 paid, 0 declined (decline rate 0.0 %)\nrevenue: none yet\nstock-outs: none\n"), "{text}");
    }
}
