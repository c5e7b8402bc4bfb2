//! Events on the wire: Avro binary in the Confluent framing (magic byte 0, 4-byte big-endian
//! schema id, datum). Writers register their schema under TopicRecordNameStrategy; readers
//! fetch the writer's schema by id and resolve it against their own (Avro schema resolution),
//! so producers and consumers built on different schema versions interoperate. Ids come from
//! a [`SchemaResolver`]: the registry in production, a fixed table in unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::{Event, EventKind, Topics};

/// Why an event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered with a server error: try again later.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The bytes do not start with the Confluent magic byte and a schema id.
    #[error("not Confluent-framed Avro: {0}")]
    NotFramed(String),
    /// The registry does not know the schema id in the message.
    #[error("unknown schema id {id}: {message}")]
    UnknownSchema { id: u32, message: String },
    /// The writer's record is not one this service reads.
    #[error("unexpected record {0}")]
    UnexpectedRecord(String),
    /// The datum does not decode with the writer's schema, or does not resolve to ours.
    #[error("undecodable {record}: {message}")]
    Undecodable { record: String, message: String },
    /// The registry refused the schema (e.g. incompatible with the subject's history).
    #[error("schema rejected by the registry: {0}")]
    Rejected(String),
    /// The registry client's own settings cannot work (say, an unreadable CA file).
    #[error("registry client settings: {0}")]
    Settings(String),
    /// Our own value does not fit our own schema: a bug.
    #[error("cannot encode {record}: {message}")]
    Encode {
        record: &'static str,
        message: String,
    },
}

impl CodecError {
    /// True when retrying the same message later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }

    /// A short, stable name for metrics and dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            CodecError::RegistryUnavailable(_) => "registry_unavailable",
            CodecError::NotFramed(_) => "not_framed",
            CodecError::UnknownSchema { .. } => "unknown_schema",
            CodecError::UnexpectedRecord(_) => "unexpected_record",
            CodecError::Undecodable { .. } => "undecodable",
            CodecError::Rejected(_) => "schema_rejected",
            CodecError::Encode { .. } => "encode",
            CodecError::Settings(_) => "settings",
        }
    }
}

/// Whether the registry client's error is worth retrying: the registry was unreachable, or
/// answered with a server error (5xx). The client library retries only 502 and 503, but a
/// registry whose own store fails answers 500 (Confluent's error code 50001, as this project's
/// registry does while its database is down), which passes once the store is back; a 4xx
/// (incompatible schema, unknown id, refused credentials) is an answer.
fn is_transient(e: &SRCError) -> bool {
    e.retriable || e.error.contains("failed with status 5")
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

/// A resolver's answer, later: boxed so [`SchemaResolver`] can be a trait object.
pub type Resolving<'a, T> = Pin<Box<dyn Future<Output = Result<T, CodecError>> + Send + 'a>>;

/// The schema a message was written with, as a [`SchemaResolver`] found it. Cheap to clone.
#[derive(Clone)]
pub struct WriterSchema(WriterSchemaInner);

#[derive(Clone)]
enum WriterSchemaInner {
    Registry(Arc<AvroSchema>),
    Fixed(Arc<Schema>),
}

impl WriterSchema {
    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        match &self.0 {
            WriterSchemaInner::Registry(registered) => &registered.parsed,
            WriterSchemaInner::Fixed(schema) => schema,
        }
    }
}

impl From<Arc<Schema>> for WriterSchema {
    fn from(schema: Arc<Schema>) -> Self {
        WriterSchema(WriterSchemaInner::Fixed(schema))
    }
}

/// Where schema ids come from: a Confluent-compatible registry in production
/// ([`RegistryResolver`]), a fixed in-memory table in unit tests ([`FixedResolver`]).
pub trait SchemaResolver: Send + Sync {
    /// The id of this build's schema for `kind` on `topic` (subject `<topic>-<record full
    /// name>`), registering it first when the registry does not have it yet.
    /// [`CodecError::RegistryUnavailable`] is worth retrying; [`CodecError::Rejected`] is not.
    fn register<'a>(&'a self, topic: &'a str, kind: EventKind) -> Resolving<'a, u32>;

    /// The schema registered under `id`: [`CodecError::UnknownSchema`] when there is none,
    /// [`CodecError::RegistryUnavailable`] when the registry cannot say.
    fn writer_schema(&self, id: u32) -> Resolving<'_, WriterSchema>;

    /// Forgets cached lookup failures, so a schema registered since is found. Resolvers that
    /// cache no failures have nothing to do.
    fn forget_failures(&self) {}
}

/// How to reach a schema registry: its URL (`http://` or `https://`), HTTP basic
/// credentials (`user:password`, Confluent's `basic.auth.user.info`) and, for an `https://`
/// registry whose certificate the system does not trust, the PEM file of its CA.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryAccess<'a> {
    pub url: &'a str,
    pub user_info: Option<&'a str>,
    pub ca_file: Option<&'a std::path::Path>,
}

impl RegistryAccess<'_> {
    /// An HTTP client builder that trusts the registry's CA, when one is named.
    pub fn http_client(&self) -> Result<reqwest::ClientBuilder, CodecError> {
        let client = reqwest::Client::builder();
        let Some(path) = self.ca_file else {
            return Ok(client);
        };
        let pem = std::fs::read(path).map_err(|e| {
            CodecError::Settings(format!(
                "cannot read the registry CA {}: {e}",
                path.display()
            ))
        })?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            CodecError::Settings(format!(
                "no PEM certificate in the registry CA {}: {e}",
                path.display()
            ))
        })?;
        Ok(client.add_root_certificate(ca))
    }
}

/// The production resolver: a Confluent-compatible schema registry over HTTP, through
/// `schema_registry_converter`, which caches schemas and ids after first use, so the registry
/// is on the path only once per schema.
pub struct RegistryResolver {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl RegistryResolver {
    /// A resolver for the registry `access` names (5 s timeout per request).
    pub fn new(access: &RegistryAccess<'_>) -> Result<Self, CodecError> {
        let settings = || {
            let mut builder = SrSettings::new_builder(access.url.to_owned());
            builder.set_timeout(Duration::from_secs(5));
            if let Some(user_info) = access.user_info {
                let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
                builder.set_basic_authorization(user, Some(password));
            }
            builder
                .build_with(access.http_client()?)
                .map_err(|e| CodecError::RegistryUnavailable(describe(&e)))
        };
        Ok(RegistryResolver {
            encoder: AvroEncoder::new(settings()?),
            decoder: AvroDecoder::new(settings()?),
        })
    }
}

impl SchemaResolver for RegistryResolver {
    fn register<'a>(&'a self, topic: &'a str, kind: EventKind) -> Resolving<'a, u32> {
        Box::pin(async move {
            let strategy = SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
                topic.to_owned(),
                SuppliedSchema::new(
                    Some(kind.full_name().to_owned()),
                    SchemaType::Avro,
                    kind.schema_text().to_owned(),
                ),
            );
            let subject = format!("{topic}-{}", kind.full_name());
            let registered = self
                .encoder
                .get_schema_and_id(&subject, strategy)
                .await
                .map_err(|e| {
                    if is_transient(&e) {
                        // The encoder caches the failure; forget it, so the retry asks again.
                        self.encoder.remove_errors_from_cache();
                        CodecError::RegistryUnavailable(describe(&e))
                    } else {
                        CodecError::Rejected(describe(&e))
                    }
                })?;
            Ok(registered.id)
        })
    }

    fn writer_schema(&self, id: u32) -> Resolving<'_, WriterSchema> {
        Box::pin(async move {
            let writer = self.decoder.get_schema(id).await.map_err(|e| {
                if is_transient(&e) {
                    self.decoder.remove_errors_from_cache();
                    CodecError::RegistryUnavailable(describe(&e))
                } else {
                    // The decoder caches this failure; forget it, so that once the schema is
                    // registered a re-driven message decodes without restarting the service.
                    self.decoder.remove_errors_from_cache();
                    CodecError::UnknownSchema {
                        id,
                        message: describe(&e),
                    }
                }
            })?;
            Ok(WriterSchema(WriterSchemaInner::Registry(writer)))
        })
    }

    fn forget_failures(&self) {
        self.decoder.remove_errors_from_cache();
        self.encoder.remove_errors_from_cache();
    }
}

/// A fixed in-memory resolver for unit tests: this build's schema of every event kind under a
/// fixed id ([`FixedResolver::id_of`]), plus any other writer schema added with
/// [`FixedResolver::with_schema`] (an older version, say). It never registers anything new:
/// any other id is unknown.
pub struct FixedResolver {
    schemas: HashMap<u32, Arc<Schema>>,
}

impl FixedResolver {
    /// Every event kind's schema of this build, under ids 1 to 7 in [`EventKind::ALL`] order.
    pub fn new() -> Self {
        let schemas = EventKind::ALL
            .into_iter()
            .map(|kind| (Self::id_of(kind), Arc::new(kind.schema().clone())))
            .collect();
        FixedResolver { schemas }
    }

    /// The id this resolver gives this build's schema for `kind`.
    pub fn id_of(kind: EventKind) -> u32 {
        let position = EventKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        position as u32 + 1
    }

    /// Adds `schema` under `id` (replacing what was there).
    pub fn with_schema(mut self, id: u32, schema: Schema) -> Self {
        self.schemas.insert(id, Arc::new(schema));
        self
    }
}

impl Default for FixedResolver {
    fn default() -> Self {
        FixedResolver::new()
    }
}

impl SchemaResolver for FixedResolver {
    fn register<'a>(&'a self, _topic: &'a str, kind: EventKind) -> Resolving<'a, u32> {
        Box::pin(std::future::ready(Ok(Self::id_of(kind))))
    }

    fn writer_schema(&self, id: u32) -> Resolving<'_, WriterSchema> {
        let found = self
            .schemas
            .get(&id)
            .map(|schema| WriterSchema::from(schema.clone()))
            .ok_or_else(|| CodecError::UnknownSchema {
                id,
                message: "not in the fixed resolver".into(),
            });
        Box::pin(std::future::ready(found))
    }
}

/// Encodes and decodes events in the Confluent framing, with schema ids from a
/// [`SchemaResolver`]: the registry ([`EventCodec::new`]) everywhere but in unit tests.
pub struct EventCodec {
    resolver: Box<dyn SchemaResolver>,
}

impl EventCodec {
    /// A codec backed by the schema registry `access` names.
    pub fn new(access: &RegistryAccess<'_>) -> Result<Self, CodecError> {
        Ok(EventCodec::with_resolver(RegistryResolver::new(access)?))
    }

    /// A codec backed by `resolver` (a [`FixedResolver`] in unit tests).
    pub fn with_resolver(resolver: impl SchemaResolver + 'static) -> Self {
        EventCodec {
            resolver: Box::new(resolver),
        }
    }

    /// Registers (once) the event's schema under its subject and returns the framed bytes.
    pub async fn encode(&self, topics: &Topics, event: &Event) -> Result<Vec<u8>, CodecError> {
        let kind = event.kind();
        let id = self.resolver.register(topics.for_kind(kind), kind).await?;
        encode_plain(id, event)
    }

    /// Decodes framed bytes into the event they carry, resolving the writer's schema against
    /// this build's schema for the record.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Event, CodecError> {
        let bytes =
            bytes.ok_or_else(|| CodecError::NotFramed("empty payload (tombstone)".into()))?;
        let (id, datum) = split_frame(bytes)?;
        let writer = self.resolver.writer_schema(id).await?;
        decode_with_writer(writer.schema(), datum)
    }

    /// Forgets cached lookup failures (e.g. a schema id that has since been registered).
    pub fn forget_failures(&self) {
        self.resolver.forget_failures();
    }
}

fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match bytes {
        [0, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [] => Err(CodecError::NotFramed("empty payload".into())),
        [magic, ..] if *magic != 0 => Err(CodecError::NotFramed(format!(
            "first byte is {magic:#04x}, expected the magic byte 0x00 ({} bytes)",
            bytes.len()
        ))),
        _ => Err(CodecError::NotFramed(format!(
            "{} bytes, shorter than the 5-byte header",
            bytes.len()
        ))),
    }
}

/// Frames `event` with schema id `id`, encoding it with this build's schema.
pub fn encode_plain(id: u32, event: &Event) -> Result<Vec<u8>, CodecError> {
    let kind = event.kind();
    let record = kind.full_name();
    let err = |e: apache_avro::Error| CodecError::Encode {
        record,
        message: e.to_string(),
    };
    let value = match event {
        Event::OrderCreated(e) => apache_avro::to_value(e),
        Event::OrderStatusChanged(e) => apache_avro::to_value(e),
        Event::PaymentProcessed(e) => apache_avro::to_value(e),
        Event::PaymentRefunded(e) => apache_avro::to_value(e),
        Event::InventoryUpdated(e) => apache_avro::to_value(e),
        Event::CatalogueItemChanged(e) => apache_avro::to_value(e),
        Event::CustomerStatusChanged(e) => apache_avro::to_value(e),
    }
    .map_err(err)?;
    let schema = kind.schema();
    let value = value.resolve(schema).map_err(err)?;
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(err)?;
    let mut framed = Vec::with_capacity(5 + datum.len());
    framed.push(0);
    framed.extend_from_slice(&id.to_be_bytes());
    framed.extend_from_slice(&datum);
    Ok(framed)
}

/// Decodes an unframed datum written with `writer`, into this build's type for that record.
pub fn decode_with_writer(writer: &Schema, mut datum: &[u8]) -> Result<Event, CodecError> {
    let name = match writer {
        Schema::Record(record) => record.name.fullname(None),
        other => return Err(CodecError::UnexpectedRecord(format!("{other:?}"))),
    };
    let kind = EventKind::from_full_name(&name)
        .ok_or_else(|| CodecError::UnexpectedRecord(name.clone()))?;
    let undecodable = |message: String| CodecError::Undecodable {
        record: name.clone(),
        message,
    };
    let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .reader_schema(kind.schema())
        .build()
        .and_then(|r| r.read_value(&mut datum))
        .map_err(|e| undecodable(e.to_string()))?;
    let event = match kind {
        EventKind::OrderCreated => apache_avro::from_value(&value).map(Event::OrderCreated),
        EventKind::OrderStatusChanged => {
            apache_avro::from_value(&value).map(Event::OrderStatusChanged)
        }
        EventKind::PaymentProcessed => apache_avro::from_value(&value).map(Event::PaymentProcessed),
        EventKind::PaymentRefunded => apache_avro::from_value(&value).map(Event::PaymentRefunded),
        EventKind::InventoryUpdated => apache_avro::from_value(&value).map(Event::InventoryUpdated),
        EventKind::CatalogueItemChanged => {
            apache_avro::from_value(&value).map(Event::CatalogueItemChanged)
        }
        EventKind::CustomerStatusChanged => {
            apache_avro::from_value(&value).map(Event::CustomerStatusChanged)
        }
    }
    .map_err(|e| undecodable(e.to_string()))?;
    if !datum.is_empty() {
        return Err(undecodable(format!(
            "{} trailing bytes after the datum",
            datum.len()
        )));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use apache_avro::types::Value;

    fn money(amount: i64) -> Money {
        Money {
            amount_minor: amount,
            currency: "EUR".into(),
        }
    }

    fn line(sku: &str, quantity: i32) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
            unit_price: money(250),
        }
    }

    fn id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// One sample of every record, with every optional field set.
    fn samples() -> Vec<Event> {
        vec![
            Event::OrderCreated(OrderCreated {
                event_id: id(),
                order_id: id(),
                occurred_at: 1_700_000_000_123,
                customer_id: "alice".into(),
                items: vec![line("sku-1", 3), line("sku-2", 1)],
                total: money(1000),
                payment_method: "pm_card_visa".into(),
            }),
            Event::OrderStatusChanged(OrderStatusChanged {
                event_id: id(),
                order_id: id(),
                occurred_at: 1,
                customer_id: "alice".into(),
                version: 3,
                status: OrderStatus::OutOfStock,
                reason: Some("sku-1: requested 8, available 7".into()),
            }),
            Event::PaymentProcessed(PaymentProcessed {
                event_id: id(),
                order_id: id(),
                occurred_at: 2,
                payment_id: id(),
                status: PaymentStatus::Failed,
                amount: money(750),
                items: vec![line("sku-1", 3)],
                failure_reason: Some("card declined".into()),
                provider_reference: Some("ch_123".into()),
            }),
            Event::PaymentRefunded(PaymentRefunded {
                event_id: id(),
                order_id: id(),
                occurred_at: 3,
                payment_id: id(),
                refund_id: id(),
                amount: money(750),
                reason: "out of stock".into(),
            }),
            Event::InventoryUpdated(InventoryUpdated {
                event_id: id(),
                order_id: id(),
                occurred_at: 4,
                status: InventoryStatus::OutOfStock,
                items: vec![StockLine {
                    sku: "sku-1".into(),
                    quantity: 8,
                }],
                missing: vec![MissingItem {
                    sku: "sku-1".into(),
                    requested: 8,
                    available: 7,
                }],
            }),
            Event::CatalogueItemChanged(CatalogueItemChanged {
                event_id: id(),
                occurred_at: 5,
                sku: "sku-1".into(),
                available: 7,
                revision: 12,
            }),
            Event::CustomerStatusChanged(CustomerStatusChanged {
                event_id: id(),
                occurred_at: 6,
                customer_id: "mallory".into(),
                status: CustomerStatus::Blocked,
                reason: Some("chargebacks".into()),
            }),
        ]
    }

    /// The names of a record value's fields, recursively, as `a.b[].c` paths.
    fn value_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            Value::Record(fields) => {
                for (name, v) in fields {
                    let path = format!("{prefix}{name}");
                    out.push(path.clone());
                    value_paths(v, &format!("{path}."), out);
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    value_paths(first, &format!("{}[].", prefix.trim_end_matches('.')), out);
                }
            }
            Value::Union(_, inner) => value_paths(inner, prefix, out),
            _ => {}
        }
    }

    fn schema_paths(
        schema: &Schema,
        names: &apache_avro::schema::NamesRef,
        prefix: &str,
        out: &mut Vec<String>,
    ) {
        match schema {
            Schema::Record(record) => {
                for field in &record.fields {
                    let path = format!("{prefix}{}", field.name);
                    out.push(path.clone());
                    schema_paths(&field.schema, names, &format!("{path}."), out);
                }
            }
            Schema::Array(array) => schema_paths(
                &array.items,
                names,
                &format!("{}[].", prefix.trim_end_matches('.')),
                out,
            ),
            Schema::Union(union) => {
                for variant in union.variants() {
                    schema_paths(variant, names, prefix, out);
                }
            }
            Schema::Ref { name } => {
                let target = names.get(name).expect("named type defined");
                schema_paths(target, names, prefix, out);
            }
            _ => {}
        }
    }

    /// The Rust types follow the schema files: the same fields, in the same order, at every
    /// depth, and values that resolve against the file's schema.
    #[test]
    fn rust_types_follow_the_schema_files() {
        for event in samples() {
            let kind = event.kind();
            let schema = kind.schema();
            let value = match &event {
                Event::OrderCreated(e) => apache_avro::to_value(e),
                Event::OrderStatusChanged(e) => apache_avro::to_value(e),
                Event::PaymentProcessed(e) => apache_avro::to_value(e),
                Event::PaymentRefunded(e) => apache_avro::to_value(e),
                Event::InventoryUpdated(e) => apache_avro::to_value(e),
                Event::CatalogueItemChanged(e) => apache_avro::to_value(e),
                Event::CustomerStatusChanged(e) => apache_avro::to_value(e),
            }
            .unwrap();
            let mut from_type = Vec::new();
            value_paths(&value, "", &mut from_type);
            let resolved = apache_avro::schema::ResolvedSchema::try_from(schema).unwrap();
            let mut from_file = Vec::new();
            schema_paths(schema, resolved.get_names(), "", &mut from_file);
            assert_eq!(
                from_type,
                from_file,
                "{} does not follow schemas/{}",
                kind.full_name(),
                kind.schema_path()
            );
            value
                .resolve(schema)
                .unwrap_or_else(|e| panic!("{} does not fit its schema: {e}", kind.full_name()));
        }
    }

    #[test]
    fn every_record_round_trips() {
        for event in samples() {
            let bytes = encode_plain(42, &event).unwrap();
            assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
            let decoded = decode_with_writer(event.kind().schema(), &bytes[5..]).unwrap();
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn the_newest_schema_file_of_each_record_is_used() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        for kind in EventKind::ALL {
            let used = root.join(kind.schema_path());
            let dir = used.parent().unwrap();
            let newest = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| {
                    n.strip_prefix('v')?
                        .strip_suffix(".avsc")?
                        .parse::<u32>()
                        .ok()
                })
                .max()
                .unwrap();
            assert_eq!(
                used.file_name().unwrap().to_str().unwrap(),
                format!("v{newest}.avsc"),
                "{} should follow its newest schema version",
                kind.full_name()
            );
        }
    }

    #[test]
    fn v1_payment_events_decode_with_the_v2_reader() {
        let v1_text = include_str!("../../../schemas/payments/PaymentProcessed/v1.avsc");
        let v1 = Schema::parse_str(v1_text).unwrap();
        let Event::PaymentProcessed(mut event) = samples().remove(2) else {
            unreachable!()
        };
        event.provider_reference = None;
        let mut value = apache_avro::to_value(&event).unwrap();
        if let Value::Record(fields) = &mut value {
            fields.retain(|(name, _)| name != "provider_reference");
        }
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&v1)
            .build()
            .unwrap()
            .write_value_to_vec(value.resolve(&v1).unwrap())
            .unwrap();
        let decoded = decode_with_writer(&v1, &datum).unwrap();
        assert_eq!(decoded, Event::PaymentProcessed(event));
    }

    #[tokio::test]
    async fn the_codec_frames_and_reads_every_record_through_a_fixed_resolver() {
        let codec = EventCodec::with_resolver(FixedResolver::new());
        let topics = Topics::with_prefix("t-");
        for event in samples() {
            let bytes = codec.encode(&topics, &event).await.unwrap();
            let id = FixedResolver::id_of(event.kind());
            assert_eq!(bytes[0], 0, "magic byte");
            assert_eq!(&bytes[1..5], &id.to_be_bytes(), "schema id, big-endian");
            assert_eq!(codec.decode(Some(&bytes)).await.unwrap(), event);
        }
    }

    #[tokio::test]
    async fn an_older_writer_schema_resolves_against_this_build_s() {
        let v1 = Schema::parse_str(include_str!(
            "../../../schemas/payments/PaymentProcessed/v1.avsc"
        ))
        .unwrap();
        let Event::PaymentProcessed(mut event) = samples().remove(2) else {
            unreachable!()
        };
        event.provider_reference = None;
        let mut value = apache_avro::to_value(&event).unwrap();
        if let Value::Record(fields) = &mut value {
            fields.retain(|(name, _)| name != "provider_reference");
        }
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&v1)
            .build()
            .unwrap()
            .write_value_to_vec(value.resolve(&v1).unwrap())
            .unwrap();
        let mut framed = vec![0, 0, 0, 0, 77];
        framed.extend_from_slice(&datum);
        let codec = EventCodec::with_resolver(FixedResolver::new().with_schema(77, v1));
        assert_eq!(
            codec.decode(Some(&framed)).await.unwrap(),
            Event::PaymentProcessed(event)
        );
    }

    #[tokio::test]
    async fn an_unknown_schema_id_is_a_permanent_error_naming_the_id() {
        let codec = EventCodec::with_resolver(FixedResolver::new());
        let event = samples().remove(0);
        let mut bytes = encode_plain(4242, &event).unwrap();
        let err = codec.decode(Some(&bytes)).await.unwrap_err();
        assert!(
            matches!(err, CodecError::UnknownSchema { id: 4242, .. }),
            "{err:?}"
        );
        assert_eq!(err.class(), "unknown_schema");
        assert!(!err.is_transient());
        // The same bytes under the id the resolver knows decode.
        bytes[1..5].copy_from_slice(&FixedResolver::id_of(event.kind()).to_be_bytes());
        assert_eq!(codec.decode(Some(&bytes)).await.unwrap(), event);
        // Not framed at all, or no payload: permanent too, before any lookup.
        let garbage = codec.decode(Some(b"{\"json\":1}")).await.unwrap_err();
        assert_eq!(garbage.class(), "not_framed");
        assert_eq!(codec.decode(None).await.unwrap_err().class(), "not_framed");
    }

    /// A server error is worth retrying, whatever the library says; a refusal is an answer.
    #[test]
    fn registry_server_errors_are_transient_and_refusals_are_not() {
        let status = |code: &str, cause: &str, retriable| {
            SRCError::new(
                &format!("HTTP request to schema registry failed with status {code}"),
                Some(cause.to_owned()),
                retriable,
            )
        };
        let store_down = status(
            "500 Internal Server Error",
            "error_code: 50001, message: Error in the backend data store",
            false,
        );
        assert!(is_transient(&store_down));
        assert!(is_transient(&status("503 Service Unavailable", "", true)));
        assert!(is_transient(&status("504 Gateway Timeout", "", false)));
        assert!(is_transient(&SRCError::new(
            "connection refused",
            None,
            true
        )));
        for refusal in [
            "409 Conflict",
            "422 Unprocessable Entity",
            "401 Unauthorized",
            "404 Not Found",
        ] {
            assert!(!is_transient(&status(refusal, "", false)), "{refusal}");
        }
    }

    /// A registry that answers every request with `status` and a Confluent error body: once,
    /// on a port of its own; returns its URL.
    async fn registry_answering(status: &'static str, code: u32) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 8192];
                let _ = socket.read(&mut request).await;
                let body = format!(r#"{{"error_code":{code},"message":"from the test"}}"#);
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        url
    }

    /// Through the real client library: a registry whose store is down (500, 50001) makes
    /// encoding a transient failure, to retry, not a rejection; an incompatible schema (409)
    /// is a rejection.
    #[tokio::test]
    async fn a_registry_server_error_is_retried_and_a_conflict_is_not() {
        let event = samples().remove(0);
        for (status, code, transient) in [
            ("500 Internal Server Error", 50001, true),
            ("409 Conflict", 409, false),
        ] {
            let url = registry_answering(status, code).await;
            let codec = EventCodec::new(&RegistryAccess {
                url: &url,
                user_info: None,
                ca_file: None,
            })
            .unwrap();
            let err = codec.encode(&Topics::default(), &event).await.unwrap_err();
            assert_eq!(err.is_transient(), transient, "{status}: {err}");
        }
    }

    #[test]
    fn framing_errors_say_what_is_wrong() {
        assert!(matches!(split_frame(b""), Err(CodecError::NotFramed(m)) if m.contains("empty")));
        assert!(
            matches!(split_frame(b"{\"json\":1}"), Err(CodecError::NotFramed(m)) if m.contains("0x7b"))
        );
        assert!(
            matches!(split_frame(&[0, 0, 1]), Err(CodecError::NotFramed(m)) if m.contains("shorter"))
        );
        let garbage = [0u8, 0, 0, 0, 7, 0xff, 0xff, 0xff];
        let (id, datum) = split_frame(&garbage).unwrap();
        assert_eq!(id, 7);
        assert!(decode_with_writer(EventKind::OrderCreated.schema(), datum).is_err());
    }
}
