//! `orderflow dlq`: list dead-letter topics, show their messages (decoded through the
//! registry where they decode), and redrive them to their origin topic once the cause is fixed.

use clap::{Args, Subcommand};
use orderflow_events::EventCodec;
use orderflow_platform::dlq::{self, MessageRef, Selection, StoredMessage};
use orderflow_platform::{EventBusArgs, KafkaArgs};

/// How many payload bytes a message that does not decode is previewed with.
const PREVIEW_BYTES: usize = 64;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Every dead-letter topic (`*.dlq`, starting with --topic-prefix) and how many messages
    /// it holds.
    List(ListArgs),
    /// The messages of a dead-letter topic: where each is, its headers, key and payload
    /// (decoded through the registry where it decodes).
    Show(ShowArgs),
    /// Publish dead letters again to their origin topic (`dlq.origin.topic`) once the cause
    /// is fixed. Safe because consumers are idempotent; the dead-letter topic keeps them
    /// (Kafka cannot delete single messages).
    Redrive(RedriveArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The dead-letter topic, as `list` prints it.
    topic: String,
    /// Show at most this many messages.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Start at this offset in each partition.
    #[arg(long, default_value_t = 0)]
    offset: i64,
    /// The broker, and the registry that decodes the payloads (a user with the read role
    /// suffices).
    #[command(flatten)]
    bus: EventBusArgs,
}

#[derive(Args)]
pub struct RedriveArgs {
    /// The dead-letter topic, as `list` prints it.
    topic: String,
    /// A message to redrive, as OFFSET (single-partition topic) or PARTITION/OFFSET; repeat
    /// or separate with commas for several. They are published in the order given.
    #[arg(
        long = "offset",
        value_name = "[PARTITION/]OFFSET",
        value_delimiter = ',',
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    offsets: Vec<MessageRef>,
    /// Redrive every message the topic holds now.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
}

pub async fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(args) => list(args).await,
        DlqCommand::Show(args) => show(args).await,
        DlqCommand::Redrive(args) => redrive(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let kafka = &args.kafka;
    let topics = dlq::list_dead_letter_topics(kafka, &kafka.topic_prefix).await?;
    if topics.is_empty() {
        println!("no dead-letter topics{}", prefix_note(&kafka.topic_prefix));
        return Ok(());
    }
    let width = topics.iter().map(|t| t.name.len()).max().unwrap_or(0);
    println!("{:<width$}  messages", "topic");
    for topic in &topics {
        println!("{:<width$}  {}", topic.name, topic.messages);
    }
    Ok(())
}

fn prefix_note(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!(" starting with {prefix:?}")
    }
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let messages =
        dlq::read_dead_letters(&args.bus.kafka, &args.topic, args.offset, args.limit).await?;
    if messages.is_empty() {
        println!("{}: no messages from offset {}", args.topic, args.offset);
        return Ok(());
    }
    let codec = args.bus.codec()?;
    for message in &messages {
        print_message(&codec, message).await;
    }
    println!(
        "{} message(s) shown; redrive with: orderflow dlq redrive {} --offset PARTITION/OFFSET",
        messages.len(),
        args.topic
    );
    Ok(())
}

async fn print_message(codec: &EventCodec, message: &StoredMessage) {
    println!("── {}", message.location());
    println!("partition: {}", message.partition);
    println!("offset:    {}", message.offset);
    if let Some(at) = message.timestamp {
        println!("timestamp: {}", at.to_rfc3339());
    }
    println!("key:       {}", lossy_or_none(message.key.as_deref()));
    println!("headers:");
    for (key, value) in &message.headers {
        println!("  {key}: {}", lossy_or_none(value.as_deref()));
    }
    match codec.decode(message.payload.as_deref()).await {
        Ok(event) => {
            let json = serde_json::to_string_pretty(&event)
                .unwrap_or_else(|e| format!("(cannot print as JSON: {e})"));
            println!("payload ({}):", event.kind().full_name());
            for line in json.lines() {
                println!("  {line}");
            }
        }
        Err(e) => {
            println!("payload not decoded ({}): {e}", e.class());
            match message.payload.as_deref() {
                None => println!("  (no payload)"),
                Some(bytes) => {
                    let shown = &bytes[..bytes.len().min(PREVIEW_BYTES)];
                    let more = if bytes.len() > shown.len() {
                        " …"
                    } else {
                        ""
                    };
                    println!("  {} bytes", bytes.len());
                    println!("  hex:  {}{more}", hex_preview(shown));
                    println!("  text: {:?}{more}", String::from_utf8_lossy(shown));
                }
            }
        }
    }
    println!();
}

fn lossy_or_none(bytes: Option<&[u8]>) -> String {
    match bytes {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "(none)".to_owned(),
    }
}

fn hex_preview(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn redrive(args: RedriveArgs) -> anyhow::Result<()> {
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Messages(args.offsets)
    };
    let redriven = dlq::redrive(&args.kafka, &args.topic, &selection).await?;
    if redriven.is_empty() {
        println!("{}: nothing to redrive (the topic is empty)", args.topic);
        return Ok(());
    }
    for r in &redriven {
        println!(
            "redriven {} -> {}/{}/{}",
            r.from, r.origin_topic, r.partition, r.offset
        );
    }
    println!(
        "{} message(s) published again to their origin topic and acknowledged by the broker; \
         consumers that already applied one skip it (they are idempotent).",
        redriven.len()
    );
    println!(
        "they are still in {}: Kafka cannot delete single messages, so the dead-letter topic \
         keeps them until its retention removes them.",
        args.topic
    );
    Ok(())
}
