//! `orderflow replay <consumer>`: rebuild a projection from the log, or, when asked
//! explicitly, move a service's consumer group back so that it reads its input again.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use orderflow_platform::replay::{self, Start};
use orderflow_platform::{EventBusArgs, Secret};

/// The consumers `replay` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consumer {
    /// The history service's timelines: a projection, rebuilt from the log.
    History,
    /// The analytics service's figures: a projection, rebuilt from the beginning only.
    Analytics,
    /// The order service (not a projection).
    Order,
    /// The payment service (not a projection).
    Payment,
    /// The inventory service (not a projection).
    Inventory,
    /// The notifications service (not a projection).
    Notifications,
}

impl Consumer {
    fn name(self) -> &'static str {
        match self {
            Consumer::History => "history",
            Consumer::Analytics => "analytics",
            Consumer::Order => "order",
            Consumer::Payment => "payment",
            Consumer::Inventory => "inventory",
            Consumer::Notifications => "notifications",
        }
    }

    /// What a service does that replaying its input would do again; None for a projection.
    fn effects(self) -> Option<&'static str> {
        match self {
            Consumer::History | Consumer::Analytics => None,
            Consumer::Order => {
                Some("it moves orders through their statuses and publishes each change")
            }
            Consumer::Payment => Some("it charges and refunds at the payment provider"),
            Consumer::Inventory => Some("it deducts stock"),
            Consumer::Notifications => Some(
                "it tells customers of their orders' statuses; a status it has recorded is not \
                 told again, but one past its records is",
            ),
        }
    }

    fn input_topics(self, topics: &orderflow_events::Topics) -> Vec<String> {
        match self {
            Consumer::History => orderflow_history::input_topics(topics),
            Consumer::Analytics => orderflow_analytics::input_topics(topics),
            Consumer::Order => orderflow_order::input_topics(topics),
            Consumer::Payment => orderflow_payment::input_topics(topics),
            Consumer::Inventory => orderflow_inventory::input_topics(topics),
            Consumer::Notifications => orderflow_notifications::input_topics(topics),
        }
    }
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The consumer to replay.
    #[arg(value_enum)]
    consumer: Consumer,
    /// From everything the topics still hold.
    #[arg(long, required_unless_present = "from", conflicts_with = "from")]
    from_beginning: bool,
    /// From the first message of each partition logged at or after this time (RFC 3339, e.g.
    /// 2026-12-01T12:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<DateTime<Utc>>,
    /// Replay a service that is not a projection (order, payment, inventory,
    /// notifications): its group is moved back and the service, once started, reads its
    /// input again. Its effects are not in its database alone, so nothing is rebuilt: events
    /// still in its dedup records (`--dedup-retention`, 7 days by default) are skipped, and
    /// older ones take effect again.
    #[arg(long)]
    reprocess_effects: bool,
    /// The broker, and the registry the events are decoded through.
    #[command(flatten)]
    bus: EventBusArgs,
    /// PostgreSQL URL of the projection's database; by default the one its service uses
    /// (`ORDERFLOW_<SERVICE>_DATABASE_URL`, else `orderflow_<service>` on the local server).
    #[arg(long = "database-url", hide_env_values = true)]
    database_url: Option<Secret>,
}

impl ReplayArgs {
    /// The database of the projection replayed.
    fn database_url(&self) -> Secret {
        let name = self.consumer.name();
        self.database_url.clone().unwrap_or_else(|| {
            std::env::var(format!("ORDERFLOW_{}_DATABASE_URL", name.to_uppercase()))
                .unwrap_or_else(|_| format!("postgres://postgres@127.0.0.1:5432/orderflow_{name}"))
                .into()
        })
    }
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.to_utc())
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time such as 2026-12-01T12:00:00Z: {e}"))
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let start = match args.from {
        Some(t) => Start::Time(t),
        None => Start::Beginning,
    };
    match args.consumer.effects() {
        None if args.consumer == Consumer::History => rebuild_history(&args, start).await,
        None => rebuild_analytics(&args, start).await,
        Some(effects) if !args.reprocess_effects => anyhow::bail!(refusal(args.consumer, effects)),
        Some(_) => move_back(&args, start).await,
    }
}

/// Why replaying a service with effects needs `--reprocess-effects`.
fn refusal(consumer: Consumer, effects: &str) -> String {
    format!(
        "{name} is not a projection: {effects}, outside its own database, so it cannot be \
         rebuilt. Replaying it moves its group back to read its input again: events still in \
         its dedup records (--dedup-retention, 7 days by default) are skipped, older ones take \
         effect again. Stop every {name} instance and pass --reprocess-effects if that is what \
         you want.",
        name = consumer.name()
    )
}

async fn rebuild_history(args: &ReplayArgs, start: Start) -> anyhow::Result<()> {
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(args.database_url()),
        &orderflow_history::MIGRATOR,
    )
    .await?;
    let codec = args.bus.codec()?;
    eprintln!("rebuilding the history from {start}");
    let mut bar = Bar::new();
    let summary =
        orderflow_history::replay::rebuild(&args.bus.kafka, &codec, &pool, start, |done, total| {
            bar.show(done, total)
        })
        .await;
    bar.finish();
    let summary = summary?;
    println!(
        "rebuilt the history from {start} in {:.1} s: {} messages from {} topics ({} partitions): \
         {} events and {} dead letters recorded, {} in no timeline; {} timeline rows now. \
         The history service continues after them when it starts.",
        summary.seconds,
        summary.messages,
        summary.topics,
        summary.partitions,
        summary.events,
        summary.dead_letters,
        summary.skipped,
        summary.rows
    );
    Ok(())
}

async fn rebuild_analytics(args: &ReplayArgs, start: Start) -> anyhow::Result<()> {
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(args.database_url()),
        &orderflow_analytics::MIGRATOR,
    )
    .await?;
    let codec = args.bus.codec()?;
    eprintln!("rebuilding the analytics figures from {start}");
    let mut bar = Bar::new();
    let summary = orderflow_analytics::replay::rebuild(
        &args.bus.kafka,
        &codec,
        &pool,
        start,
        |done, total| bar.show(done, total),
    )
    .await;
    bar.finish();
    let summary = summary?;
    println!(
        "rebuilt the analytics figures from {start} in {:.1} s: {} messages from {} partitions, \
         {} events counted, {} not events. The analytics service continues after them when it \
         starts.",
        summary.seconds, summary.messages, summary.partitions, summary.events, summary.skipped
    );
    Ok(())
}

async fn move_back(args: &ReplayArgs, start: Start) -> anyhow::Result<()> {
    let kafka = &args.bus.kafka;
    let name = args.consumer.name();
    let group = kafka.group(name);
    let inputs = args.consumer.input_topics(&kafka.topics());
    let again = replay::rewind(kafka, &group, name, &inputs, start).await?;
    println!(
        "moved group {group} back to {start} on {}: the next {name} instance reads {again} \
         messages again (those in its dedup records are skipped)",
        inputs.join(", ")
    );
    Ok(())
}

/// A progress bar on standard error: redrawn in place on a terminal, a line per tenth
/// otherwise.
struct Bar {
    terminal: bool,
    shown_tenths: Option<u64>,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            terminal: std::io::stderr().is_terminal(),
            shown_tenths: None,
        }
    }

    fn show(&mut self, done: u64, total: u64) {
        let line = bar_line(done, total);
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = write!(err, "\r{line}");
            let _ = err.flush();
        } else {
            let tenths = (done * 10).checked_div(total).unwrap_or(10);
            if self.shown_tenths != Some(tenths) {
                self.shown_tenths = Some(tenths);
                let _ = writeln!(err, "{line}");
            }
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// `[##########----------]  50 %  9000 of 18000 messages`
fn bar_line(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100).min(100);
    format!(
        "[{}{}] {percent:>3} %  {done} of {total} messages",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_work_and_an_empty_replay_is_done() {
        assert_eq!(
            bar_line(5, 10),
            "[###############---------------]  50 %  5 of 10 messages"
        );
        assert_eq!(
            bar_line(0, 0),
            "[##############################] 100 %  0 of 0 messages"
        );
    }

    #[test]
    fn a_service_with_effects_is_refused_with_the_consequence_and_the_flag() {
        let message = refusal(Consumer::Payment, Consumer::Payment.effects().unwrap());
        assert!(message.starts_with("payment is not a projection: it charges and refunds"));
        assert!(message.contains("--reprocess-effects"));
        assert!(message.contains("older ones take effect again"));
        assert!(Consumer::History.effects().is_none());
    }

    #[test]
    fn a_time_is_rfc_3339_or_refused_with_an_example() {
        assert!(parse_time("2026-12-01T12:00:00Z").is_ok());
        let refused = parse_time("yesterday").unwrap_err();
        assert!(refused.contains("2026-12-01T12:00:00Z"), "{refused}");
    }
}
