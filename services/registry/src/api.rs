//! The Confluent Schema Registry REST API: thin handlers over [`Registry`].

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use orderflow_avro_compat::CompatibilityLevel;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower_http::trace::TraceLayer;

use crate::error::RegistryError;
use crate::registry::{Registry, SchemaRequest, StoredSchema, VersionSelector};

/// The content type Confluent's clients ask for and get by default.
const SCHEMA_REGISTRY_JSON: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/", get(|| async { Json(json!({})) }))
        .route("/health", get(health))
        .route("/schemas/types", get(|| async { Json(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_schema))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/mode",
            get(|| async { Json(json!({ "mode": "READWRITE" })) }),
        )
        .fallback(|| async { RegistryError::RouteNotFound })
        .with_state(registry)
        // Answers in the content type the client prefers: Confluent's own unless it asks for
        // plain JSON only.
        .layer(middleware::from_fn(negotiate_content_type))
        // One span per request, with method, path and status.
        .layer(TraceLayer::new_for_http())
}

async fn negotiate_content_type(request: Request, next: Next) -> Response {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let plain_json_only = accept.contains("application/json") && !accept.contains("schemaregistry");
    if is_json && !plain_json_only {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(SCHEMA_REGISTRY_JSON),
        );
    }
    response
}

/// Reads a JSON body whatever its declared content type (Confluent accepts its own type,
/// `application/json` and `application/octet-stream`).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::UnprocessableEntity(format!("invalid request body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Flags {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    verbose: bool,
    #[serde(default)]
    default_to_global: bool,
}

fn parse_id(raw: &str) -> Result<i32, RegistryError> {
    raw.parse::<i32>()
        .map_err(|_| RegistryError::SchemaNotFound)
}

fn schema_json(stored: StoredSchema) -> Value {
    let mut body = json!({ "schema": stored.text });
    if !stored.references.is_empty() {
        body["references"] = json!(stored.references);
    }
    body
}

/// A schema's text as the response body, unescaped.
fn raw_schema(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn health(State(registry): State<Registry>) -> Response {
    if registry.healthy().await {
        Json(json!({ "status": "UP" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "DOWN" })),
        )
            .into_response()
    }
}

async fn schema_by_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    let stored = registry.schema_by_id(parse_id(&id)?, flags.deleted).await?;
    Ok(Json(schema_json(stored)))
}

async fn raw_schema_by_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response, RegistryError> {
    let stored = registry.schema_by_id(parse_id(&id)?, flags.deleted).await?;
    Ok(raw_schema(stored.text))
}

async fn versions_of_schema(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    let pairs = registry
        .versions_of_schema(parse_id(&id)?, flags.deleted)
        .await?;
    let list: Vec<Value> = pairs
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn subjects(
    State(registry): State<Registry>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    Ok(Json(json!(registry.subjects(flags.deleted).await?)))
}

async fn register(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, RegistryError> {
    let request: SchemaRequest = body(&bytes)?;
    let id = registry.register(&subject, request).await?;
    Ok(Json(json!({ "id": id })))
}

async fn lookup(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Json<Value>, RegistryError> {
    let request: SchemaRequest = body(&bytes)?;
    let found = registry.lookup(&subject, request, flags.deleted).await?;
    Ok(Json(json!(found)))
}

async fn delete_subject(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    Ok(Json(json!(
        registry.delete_subject(&subject, flags.permanent).await?
    )))
}

async fn versions(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    Ok(Json(json!(
        registry.versions(&subject, flags.deleted).await?
    )))
}

async fn version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    Ok(Json(json!(
        registry.version(&subject, selector, flags.deleted).await?
    )))
}

async fn raw_version_schema(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Response, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    Ok(raw_schema(
        registry
            .version(&subject, selector, flags.deleted)
            .await?
            .schema,
    ))
}

async fn referenced_by(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Json<Value>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    Ok(Json(json!(
        registry.referenced_by(&subject, selector).await?
    )))
}

async fn delete_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    Ok(Json(json!(
        registry
            .delete_version(&subject, selector, flags.permanent)
            .await?
    )))
}

fn compatibility_body(messages: Vec<String>, verbose: bool) -> Json<Value> {
    let mut body = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        body["messages"] = json!(messages);
    }
    Json(body)
}

async fn compatibility(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Json<Value>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    let request: SchemaRequest = body(&bytes)?;
    let messages = registry
        .check_compatibility(&subject, Some(selector), request)
        .await?;
    Ok(compatibility_body(messages, flags.verbose))
}

async fn compatibility_all(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Json<Value>, RegistryError> {
    let request: SchemaRequest = body(&bytes)?;
    let messages = registry
        .check_compatibility(&subject, None, request)
        .await?;
    Ok(compatibility_body(messages, flags.verbose))
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

fn parse_level(bytes: &Bytes) -> Result<CompatibilityLevel, RegistryError> {
    let config: ConfigBody = body(bytes)?;
    let raw = config
        .compatibility
        .or(config.compatibility_level)
        .ok_or_else(|| {
            RegistryError::InvalidCompatibilityLevel(
                "Invalid compatibility level: none given".to_owned(),
            )
        })?;
    raw.parse()
        .map_err(|e: orderflow_avro_compat::InvalidLevel| {
            RegistryError::InvalidCompatibilityLevel(e.to_string())
        })
}

async fn global_config(State(registry): State<Registry>) -> Result<Json<Value>, RegistryError> {
    let level = registry.global_level().await?;
    Ok(Json(json!({ "compatibilityLevel": level.as_str() })))
}

async fn set_global_config(
    State(registry): State<Registry>,
    bytes: Bytes,
) -> Result<Json<Value>, RegistryError> {
    let level = parse_level(&bytes)?;
    registry.set_level(None, level).await?;
    Ok(Json(json!({ "compatibility": level.as_str() })))
}

async fn subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Json<Value>, RegistryError> {
    let level = match registry.subject_level(&subject).await? {
        Some(level) => level,
        None if flags.default_to_global => registry.global_level().await?,
        None => return Err(RegistryError::SubjectConfigNotFound(subject)),
    };
    Ok(Json(json!({ "compatibilityLevel": level.as_str() })))
}

async fn set_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, RegistryError> {
    let level = parse_level(&bytes)?;
    registry.set_level(Some(&subject), level).await?;
    Ok(Json(json!({ "compatibility": level.as_str() })))
}

async fn delete_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Result<Json<Value>, RegistryError> {
    let level = registry.delete_subject_level(&subject).await?;
    Ok(Json(json!({ "compatibilityLevel": level.as_str() })))
}
