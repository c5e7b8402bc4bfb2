//! How much each consumer transaction and each outbox relay round carried during a run, read
//! from the services' own metrics before and after it (`orderflow_consumer_batch_messages`
//! and `orderflow_outbox_relay_round_rows`), so the report shows the batches that the CPU per
//! order follows: one message per transaction at low rates, hundreds at saturation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::scrape::series_sum;

/// The `/metrics` endpoints of the system's processes, by component name.
pub struct Scraper {
    endpoints: Vec<(String, String)>,
    client: reqwest::Client,
}

/// Batches and what they carried, so far, per component: `(sum, count)` of each histogram.
#[derive(Debug, Default)]
pub struct Snapshot {
    consumer: BTreeMap<String, (f64, f64)>,
    relay: BTreeMap<String, (f64, f64)>,
}

/// One component's batches in a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Batches {
    pub component: String,
    /// Consumer transactions (or relay rounds) in the window.
    pub batches: u64,
    /// Messages (or rows) each carried, on average.
    pub mean: f64,
}

/// The batches of a run, largest component first by count.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Batching {
    /// Batches each component's consumer took from its client, and the messages in them.
    pub consumer: Vec<Batches>,
    /// Rounds each component's outbox relay made that read rows, and the rows they read.
    pub relay: Vec<Batches>,
}

const CONSUMER: &str = "orderflow_consumer_batch_messages";
const RELAY: &str = "orderflow_outbox_relay_round_rows";

impl Scraper {
    /// Reads from `endpoints`: `(component, URL of its /metrics)`.
    pub fn new(endpoints: Vec<(String, String)>) -> Self {
        Scraper {
            endpoints,
            client: reqwest::Client::new(),
        }
    }

    /// Every component's figures now. A component that does not answer is left out of this
    /// snapshot (and so of the window), not an error: the run's own checks say what failed.
    pub async fn take(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (component, url) in &self.endpoints {
            let text = match self
                .client
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(e) => {
                    tracing::debug!(%component, error = %e, "metrics not read");
                    continue;
                }
            };
            snapshot.add(component, &text);
        }
        snapshot
    }
}

impl Snapshot {
    /// Adds one component's metrics text, summed over its series (one consumer per process).
    fn add(&mut self, component: &str, text: &str) {
        for (metric, into) in [(CONSUMER, &mut self.consumer), (RELAY, &mut self.relay)] {
            let entry = into.entry(component.to_owned()).or_default();
            entry.0 += series_sum(text, &format!("{metric}_sum"));
            entry.1 += series_sum(text, &format!("{metric}_count"));
        }
    }

    /// What happened between `self` and the later `after`. Left out: components with no
    /// batch in the window, and those missing from either snapshot (not answering, or
    /// restarted in between, which started their counts again).
    pub fn until(&self, after: &Snapshot) -> Batching {
        let window = |before: &BTreeMap<String, (f64, f64)>,
                      after: &BTreeMap<String, (f64, f64)>| {
            let mut batches: Vec<Batches> = after
                .iter()
                .filter_map(|(component, &(sum, count))| {
                    let &(sum0, count0) = before.get(component)?;
                    let n = count - count0;
                    (n >= 1.0).then(|| Batches {
                        component: component.clone(),
                        batches: n as u64,
                        mean: (sum - sum0) / n,
                    })
                })
                .collect();
            batches.sort_by_key(|b| std::cmp::Reverse(b.batches));
            batches
        };
        Batching {
            consumer: window(&self.consumer, &after.consumer),
            relay: window(&self.relay, &after.relay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(consumer: (f64, u64), relay: Option<(f64, u64)>) -> String {
        let mut text = format!(
            "# HELP orderflow_consumer_batch_messages Messages in each batch.\n\
             # TYPE orderflow_consumer_batch_messages histogram\n\
             orderflow_consumer_batch_messages_sum{{consumer=\"order\"}} {:.1}\n\
             orderflow_consumer_batch_messages_count{{consumer=\"order\"}} {}\n\
             orderflow_consumer_batch_messages_bucket{{le=\"1.0\",consumer=\"order\"}} 7\n\
             orderflow_events_consumed_total{{consumer=\"order\",topic=\"payments\",outcome=\"processed\"}} 99\n",
            consumer.0, consumer.1
        );
        if let Some((sum, count)) = relay {
            text += &format!(
                "orderflow_outbox_relay_round_rows_sum {sum:.1}\n\
                 orderflow_outbox_relay_round_rows_count {count}\n\
                 orderflow_outbox_relay_round_rows_bucket{{le=\"2048.0\"}} {count}\n"
            );
        }
        text
    }

    #[test]
    fn a_window_gives_each_components_batches_and_their_mean_size() {
        let mut before = Snapshot::default();
        before.add("order", &metrics((10.0, 10), Some((40.0, 20))));
        before.add("payment", &metrics((5.0, 5), None));
        before.add("history", &metrics((3.0, 3), None));
        let mut after = Snapshot::default();
        // 30 batches carried 90 messages; 5 rounds read 60 rows.
        after.add("order", &metrics((100.0, 40), Some((100.0, 25))));
        // 100 batches of one message each.
        after.add("payment", &metrics((105.0, 105), None));
        // Nothing consumed in the window: left out.
        after.add("history", &metrics((3.0, 3), None));
        // Not read before the window: its counts are not the window's.
        after.add("inventory", &metrics((8.0, 2), Some((4.0, 4))));

        let batching = before.until(&after);
        assert_eq!(
            batching.consumer,
            vec![
                Batches {
                    component: "payment".into(),
                    batches: 100,
                    mean: 1.0
                },
                Batches {
                    component: "order".into(),
                    batches: 30,
                    mean: 3.0
                },
            ]
        );
        assert_eq!(
            batching.relay,
            vec![Batches {
                component: "order".into(),
                batches: 5,
                mean: 12.0
            },]
        );
    }

    #[test]
    fn a_component_that_did_not_answer_after_the_run_is_left_out() {
        let mut before = Snapshot::default();
        before.add("order", &metrics((10.0, 10), None));
        let after = Snapshot::default();
        assert_eq!(
            before.until(&after),
            Batching {
                consumer: vec![],
                relay: vec![]
            }
        );
    }
}
