//! An order's timeline as text, for people: `orderflow timeline` and `orderflow demo`.

use chrono::{DateTime, Utc};
use orderflow_proto::v1 as pb;

/// The timeline as text: a heading, then one line per entry, the first bare and each later
/// one after an arrow with the time since the one before.
pub fn render(timeline: &pb::OrderTimeline, details: bool) -> String {
    let mut out = String::new();
    let entries = &timeline.entries;
    let span_ms = match (entries.first(), entries.last()) {
        (Some(first), Some(last)) => millis(last) - millis(first),
        _ => 0,
    };
    out.push_str(&format!(
        "order {}: {} event{} over {} ms (times in UTC)\n",
        timeline.order_id,
        entries.len(),
        if entries.len() == 1 { "" } else { "s" },
        span_ms
    ));
    if entries.is_empty() {
        out.push_str("  (nothing recorded yet: the history service has not seen this order)\n");
    }
    for (i, e) in entries.iter().enumerate() {
        let at = DateTime::<Utc>::from_timestamp_millis(millis(e))
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| "?".into());
        let lead = if i == 0 { "  " } else { "→ " };
        let after = if i == 0 {
            String::new()
        } else {
            format!(" (+{} ms)", e.since_previous_ms)
        };
        out.push_str(&format!(
            "{lead}{at} {} by {}: {}{after}\n",
            e.event_type, e.producer, e.summary
        ));
        if !e.redriven_from.is_empty() {
            out.push_str(&format!("      redriven from {}\n", e.redriven_from));
        }
        if details {
            out.push_str(&format!(
                "      at {}/{}/{}  event {}  trace {}\n",
                e.topic,
                e.partition,
                e.offset,
                if e.event_id.is_empty() {
                    "-"
                } else {
                    &e.event_id
                },
                if e.trace_id.is_empty() {
                    "-"
                } else {
                    &e.trace_id
                }
            ));
        }
    }
    out
}

fn millis(e: &pb::TimelineEntry) -> i64 {
    e.occurred_at
        .as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        ms: i64,
        event_type: &str,
        producer: &str,
        summary: &str,
        since: i64,
    ) -> pb::TimelineEntry {
        pb::TimelineEntry {
            occurred_at: Some(prost_types::Timestamp {
                seconds: ms / 1000,
                nanos: (ms % 1000) as i32 * 1_000_000,
            }),
            event_type: event_type.into(),
            summary: summary.into(),
            producer: producer.into(),
            topic: "orders".into(),
            partition: 0,
            offset: 7,
            event_id: "e1".into(),
            trace_id: "t1".into(),
            since_previous_ms: since,
            redriven_from: String::new(),
        }
    }

    #[test]
    fn each_event_reads_on_its_line_with_the_time_since_the_one_before() {
        let mut redriven = entry(
            43_209_500,
            "PaymentProcessed",
            "payment",
            "PAID 59.97 EUR",
            9_459,
        );
        redriven.redriven_from = "orders.payment.dlq/0/0".into();
        let timeline = pb::OrderTimeline {
            order_id: "o-1".into(),
            entries: vec![
                entry(43_200_010, "OrderCreated", "order", "customer alice", 0),
                entry(43_200_041, "DeadLettered", "payment", "payment gave up", 31),
                redriven,
            ],
        };
        assert_eq!(
            render(&timeline, false),
            "order o-1: 3 events over 9490 ms (times in UTC)\n\
             \x20 12:00:00.010 OrderCreated by order: customer alice\n\
             → 12:00:00.041 DeadLettered by payment: payment gave up (+31 ms)\n\
             → 12:00:09.500 PaymentProcessed by payment: PAID 59.97 EUR (+9459 ms)\n\
             \x20     redriven from orders.payment.dlq/0/0\n"
        );
        assert!(render(&timeline, true).contains("      at orders/0/7  event e1  trace t1\n"));
    }

    #[test]
    fn an_order_not_seen_yet_says_so() {
        let timeline = pb::OrderTimeline {
            order_id: "o-2".into(),
            entries: vec![],
        };
        assert!(render(&timeline, false).contains("has not seen this order"));
    }
}
