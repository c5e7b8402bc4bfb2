//! The Confluent Schema Registry REST API: thin handlers over [`Registry`].

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use orderflow_avro_compat::CompatibilityLevel;
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::trace::TraceLayer;

use std::sync::Arc;

use crate::access::{Users, authorize};
use crate::error::{RegistryError, error_body};
use crate::extract::{JsonBody, Params, PathParams, registrable, subject, subject_prefix};
use crate::registry::{
    Config, Deleted, Mode, Registry, SchemaRequest, StoredSchema, SubjectVersion, VersionSelector,
};

/// The content type Confluent's clients ask for and get by default.
const SCHEMA_REGISTRY_JSON: &str = "application/vnd.schemaregistry.v1+json";

/// Confluent's default and maximum page for schema searches (`schema.search.*.limit`); other
/// listings are unlimited by default, as there.
const SCHEMA_SEARCH_LIMIT: usize = 1000;

/// The most a request body may hold (axum's default limit for its extractors, which then see
/// only bodies within it).
const REQUEST_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How much of a body over the limit is still read (and dropped) so that its refusal arrives.
const DISCARD_LIMIT: usize = 4 * REQUEST_BODY_LIMIT;

type ApiResult = Result<Response, RegistryError>;

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

/// The registry's routes; with `users`, every request but `/health` must authenticate as one
/// of them, with the role it needs.
pub fn router(registry: Registry, users: Option<Arc<Users>>) -> Router {
    let routes = Router::new()
        .route("/", get(|| async { Json(json!({})) }))
        .route("/health", get(health))
        .route("/schemas", get(schemas))
        .route("/schemas/types", get(|| async { Json(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_schema))
        .route("/schemas/ids/{id}/versions", get(versions_of_schema))
        .route("/schemas/guids/{guid}", get(schema_by_guid))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/metadata", get(latest_with_metadata))
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
        .route(
            "/config",
            get(global_config)
                .put(set_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/mode",
            get(global_mode)
                .put(set_global_mode)
                .delete(delete_global_mode),
        )
        .route(
            "/mode/{subject}",
            get(subject_mode)
                .put(set_subject_mode)
                .delete(delete_subject_mode),
        )
        .route("/contexts", get(contexts))
        .fallback(|| async { RegistryError::Http(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async {
            RegistryError::Http(StatusCode::METHOD_NOT_ALLOWED)
        })
        .with_state(registry);
    let routes = match users {
        Some(users) => routes.layer(middleware::from_fn_with_state(users, authorize)),
        None => routes,
    };
    routes
        // Every body is read whole before anything answers (see `read_whole_body`).
        .layer(middleware::from_fn(read_whole_body))
        // Whatever answers an error without Confluent's JSON body (a rejection nobody mapped)
        // gets one, so a client always finds `error_code` and `message`.
        .layer(middleware::from_fn(confluent_error_bodies))
        // Answers in the content type the client prefers: Confluent's own unless it asks for
        // plain JSON only.
        .layer(middleware::from_fn(negotiate_content_type))
        // One span per request, with method, path and status.
        .layer(TraceLayer::new_for_http())
}

/// Reads a request's whole body before anything answers it. An answer given from the head
/// alone (a refusal for want of credentials, an unknown route) would leave body bytes unread;
/// hyper then closes the connection, and the kernel answers bytes still arriving with a reset
/// that can destroy the answer before the client reads it. A body over the limit is read on and
/// discarded up to `DISCARD_LIMIT`, so that its refusal (Confluent's 42209, naming the limit)
/// arrives too; past that the connection is cut.
async fn read_whole_body(request: Request, next: Next) -> Response {
    let (parts, mut body) = request.into_parts();
    let mut kept = Vec::new();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => frame.into_data().unwrap_or_default(),
            Err(error) => {
                return RegistryError::BadRequest(format!(
                    "the request body could not be read: {error}"
                ))
                .into_response();
            }
        };
        length += data.len();
        if length <= REQUEST_BODY_LIMIT {
            kept.extend_from_slice(&data);
        } else if length > DISCARD_LIMIT {
            break;
        }
    }
    if length > REQUEST_BODY_LIMIT {
        return RegistryError::SchemaTooLarge {
            limit: REQUEST_BODY_LIMIT,
        }
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(kept))).await
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

async fn confluent_error_bodies(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let message = RegistryError::Http(status).to_string();
        return error_body(status, u32::from(status.as_u16()), &message);
    }
    response
}

/// A subject from the path, in the default context.
fn subject_path(raw: &str) -> Result<String, RegistryError> {
    subject(raw)
}

/// A subject for config and mode: the default context itself (`:.:`) is the global level.
fn scope(raw: &str) -> Result<Option<String>, RegistryError> {
    let name = subject(raw)?;
    Ok((!name.is_empty()).then_some(name))
}

/// An id from the path: JAX-RS answers 404 for one that is not an `Integer`.
fn schema_id(raw: &str) -> Result<i32, RegistryError> {
    raw.parse::<i32>()
        .map_err(|_| RegistryError::Http(StatusCode::NOT_FOUND))
}

/// The optional `subject` query parameter of the by-id endpoints.
fn subject_param(params: &Params) -> Result<Option<String>, RegistryError> {
    params
        .get("subject")
        .filter(|s| !s.is_empty())
        .map(subject)
        .transpose()
}

fn schema_json(stored: StoredSchema) -> Value {
    let mut body = json!({ "schema": stored.text });
    if !stored.references.is_empty() {
        body["references"] = json!(stored.references);
    }
    if let Some(metadata) = stored.metadata {
        body["metadata"] = metadata;
    }
    if let Some(rule_set) = stored.rule_set {
        body["ruleSet"] = rule_set;
    }
    body["guid"] = json!(stored.guid);
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

async fn schemas(State(registry): State<Registry>, params: Params) -> ApiResult {
    let Some(prefix) = subject_prefix(params.get("subjectPrefix")) else {
        return ok(json!([]));
    };
    let mut found = registry
        .schemas(&prefix, params.flag("deleted"), params.flag("latestOnly"))
        .await?;
    if let Some(rule_type) = params.get("ruleType").filter(|t| !t.is_empty()) {
        found.retain(|v| has_rule_of_type(v, rule_type));
    }
    ok(params.page(found, SCHEMA_SEARCH_LIMIT, SCHEMA_SEARCH_LIMIT)?)
}

fn has_rule_of_type(version: &SubjectVersion, rule_type: &str) -> bool {
    let Some(rule_set) = &version.rule_set else {
        return false;
    };
    ["migrationRules", "domainRules", "encodingRules"]
        .iter()
        .filter_map(|kind| rule_set.get(kind).and_then(Value::as_array))
        .flatten()
        .any(|rule| rule.get("type").and_then(Value::as_str) == Some(rule_type))
}

async fn schema_by_id(
    State(registry): State<Registry>,
    PathParams(id): PathParams<String>,
    params: Params,
) -> ApiResult {
    let id = schema_id(&id)?;
    subject_param(&params)?;
    let mut body = schema_json(registry.schema_by_id(id).await?);
    if params.flag("fetchMaxId") {
        body["maxId"] = json!(registry.max_id().await?);
    }
    ok(body)
}

async fn raw_schema_by_id(
    State(registry): State<Registry>,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    Ok(raw_schema(
        registry.schema_by_id(schema_id(&id)?).await?.text,
    ))
}

async fn schema_by_guid(
    State(registry): State<Registry>,
    PathParams(guid): PathParams<String>,
) -> ApiResult {
    let stored = registry.schema_by_guid(&guid).await?;
    let mut body = schema_json(stored.clone());
    body["id"] = json!(stored.id);
    ok(body)
}

async fn subjects_of_schema(
    State(registry): State<Registry>,
    PathParams(id): PathParams<String>,
    params: Params,
) -> ApiResult {
    let subject = subject_param(&params)?;
    let subjects = registry
        .subjects_of_schema(schema_id(&id)?, subject.as_deref(), params.flag("deleted"))
        .await?;
    ok(params.page(subjects, usize::MAX, usize::MAX)?)
}

async fn versions_of_schema(
    State(registry): State<Registry>,
    PathParams(id): PathParams<String>,
    params: Params,
) -> ApiResult {
    let subject = subject_param(&params)?;
    let pairs = registry
        .versions_of_schema(schema_id(&id)?, subject.as_deref(), params.flag("deleted"))
        .await?;
    let list: Vec<Value> = pairs
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    ok(params.page(list, usize::MAX, usize::MAX)?)
}

async fn subjects(State(registry): State<Registry>, params: Params) -> ApiResult {
    let Some(prefix) = subject_prefix(params.get("subjectPrefix")) else {
        return ok(json!([]));
    };
    // Confluent reads `deletedOnly` (the Python client's `deleted_only` is not a parameter
    // Confluent knows, so it is ignored here as it is there).
    let filter = if params.flag("deletedOnly") {
        Deleted::Only
    } else if params.flag("deleted") {
        Deleted::Include
    } else {
        Deleted::Exclude
    };
    let subjects = registry.subjects(&prefix, filter).await?;
    ok(params.page(subjects, usize::MAX, usize::MAX)?)
}

fn normalize_flag(params: &Params) -> bool {
    params.flag("normalize")
}

async fn register(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    registrable(&subject)?;
    let id = registry
        .register(
            &subject,
            request,
            normalize_flag(&params),
            params.flag("force"),
        )
        .await?;
    ok(json!({ "id": id }))
}

async fn lookup(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let found = registry
        .lookup(
            &subject,
            request,
            normalize_flag(&params),
            params.flag("deleted"),
        )
        .await?;
    ok(found)
}

async fn latest_with_metadata(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let pairs: Vec<(String, String)> = params
        .all("key")
        .into_iter()
        .zip(params.all("value"))
        .collect();
    ok(registry
        .latest_with_metadata(&subject, &pairs, params.flag("deleted"))
        .await?)
}

async fn delete_subject(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    ok(registry
        .delete_subject(&subject, params.flag("permanent"))
        .await?)
}

async fn versions(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let filter = if params.flag("deletedAsNegative") {
        Deleted::AsNegative
    } else if params.flag("deletedOnly") {
        Deleted::Only
    } else if params.flag("deleted") {
        Deleted::Include
    } else {
        Deleted::Exclude
    };
    let versions = registry.versions(&subject, filter).await?;
    ok(params.page(versions, usize::MAX, usize::MAX)?)
}

async fn version(
    State(registry): State<Registry>,
    PathParams((raw, version)): PathParams<(String, String)>,
    params: Params,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let selector = VersionSelector::parse(&version)?;
    ok(registry
        .version(&subject, selector, params.flag("deleted"))
        .await?)
}

async fn raw_version_schema(
    State(registry): State<Registry>,
    PathParams((raw, version)): PathParams<(String, String)>,
    params: Params,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let selector = VersionSelector::parse(&version)?;
    Ok(raw_schema(
        registry
            .version(&subject, selector, params.flag("deleted"))
            .await?
            .schema,
    ))
}

async fn referenced_by(
    State(registry): State<Registry>,
    PathParams((raw, version)): PathParams<(String, String)>,
    params: Params,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let selector = VersionSelector::parse(&version)?;
    let ids = registry
        .referenced_by(&subject, selector, params.flag("deleted"))
        .await?;
    ok(params.page(ids, SCHEMA_SEARCH_LIMIT, SCHEMA_SEARCH_LIMIT)?)
}

async fn delete_version(
    State(registry): State<Registry>,
    PathParams((raw, version)): PathParams<(String, String)>,
    params: Params,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let selector = VersionSelector::parse(&version)?;
    ok(registry
        .delete_version(&subject, selector, params.flag("permanent"))
        .await?)
}

/// Confluent's answer: `is_compatible`, and the reasons only with `verbose`. An invalid
/// candidate is a 42201, or with `verbose` an incompatible answer naming what is wrong.
fn compatibility_answer(result: Result<Vec<String>, RegistryError>, verbose: bool) -> ApiResult {
    let messages = match result {
        Ok(messages) => messages,
        Err(e @ RegistryError::InvalidSchema(_)) if verbose => vec![e.to_string()],
        Err(e) => return Err(e),
    };
    let mut body = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        body["messages"] = json!(messages);
    }
    ok(body)
}

async fn compatibility(
    State(registry): State<Registry>,
    PathParams((raw, version)): PathParams<(String, String)>,
    params: Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let selector = VersionSelector::parse(&version)?;
    let result = registry
        .check_compatibility(&subject, Some(selector), request, normalize_flag(&params))
        .await;
    compatibility_answer(result, params.flag("verbose"))
}

async fn compatibility_all(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> ApiResult {
    let subject = subject_path(&raw)?;
    let result = registry
        .check_compatibility(&subject, None, request, normalize_flag(&params))
        .await;
    compatibility_answer(result, params.flag("verbose"))
}

/// Confluent's `ConfigUpdateRequest`: every field optional, the set ones merged in.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigBody {
    compatibility: Option<String>,
    compatibility_level: Option<String>,
    normalize: Option<bool>,
    alias: Option<Value>,
    compatibility_group: Option<Value>,
    default_metadata: Option<Value>,
    override_metadata: Option<Value>,
    default_rule_set: Option<Value>,
    override_rule_set: Option<Value>,
    validate_fields: Option<Value>,
    validate_rules: Option<Value>,
}

fn parse_config(body: ConfigBody) -> Result<Config, RegistryError> {
    let unsupported = [
        ("alias", &body.alias),
        ("compatibilityGroup", &body.compatibility_group),
        ("defaultMetadata", &body.default_metadata),
        ("overrideMetadata", &body.override_metadata),
        ("defaultRuleSet", &body.default_rule_set),
        ("overrideRuleSet", &body.override_rule_set),
        ("validateFields", &body.validate_fields),
        ("validateRules", &body.validate_rules),
    ];
    if let Some((name, _)) = unsupported
        .iter()
        .find(|(_, v)| v.as_ref().is_some_and(|v| !v.is_null()))
    {
        return Err(RegistryError::UnprocessableEntity(format!(
            "the config setting '{name}' is not supported by this registry; it takes compatibility and normalize"
        )));
    }
    let level = body
        .compatibility
        .or(body.compatibility_level)
        .map(|raw| {
            raw.parse::<CompatibilityLevel>()
                .map_err(|e| RegistryError::InvalidCompatibilityLevel(e.to_string()))
        })
        .transpose()?;
    Ok(Config {
        level,
        normalize: body.normalize,
    })
}

/// `GET /config` answers `compatibilityLevel`; `PUT` echoes the update as `compatibility`.
fn config_json(config: Config, level_key: &str) -> Value {
    let mut body = json!({});
    if let Some(level) = config.level {
        body[level_key] = json!(level.as_str());
    }
    if let Some(normalize) = config.normalize {
        body["normalize"] = json!(normalize);
    }
    body
}

async fn global_config(State(registry): State<Registry>) -> ApiResult {
    let config = registry.config(None).await?.unwrap_or_default();
    ok(config_json(config, "compatibilityLevel"))
}

async fn set_global_config(
    State(registry): State<Registry>,
    JsonBody(body): JsonBody<ConfigBody>,
) -> ApiResult {
    let update = parse_config(body)?;
    let config = registry.set_config(None, update).await?;
    ok(config_json(config, "compatibility"))
}

async fn delete_global_config(State(registry): State<Registry>) -> ApiResult {
    let old = registry.delete_config(None).await?;
    ok(config_json(old, "compatibilityLevel"))
}

async fn subject_config(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
) -> ApiResult {
    let Some(subject) = scope(&raw)? else {
        return global_config(State(registry)).await;
    };
    let config = if params.flag("defaultToGlobal") {
        registry.config_in_scope(&subject).await?
    } else {
        registry
            .config(Some(&subject))
            .await?
            .ok_or(RegistryError::SubjectConfigNotFound(subject))?
    };
    ok(config_json(config, "compatibilityLevel"))
}

async fn set_subject_config(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    JsonBody(body): JsonBody<ConfigBody>,
) -> ApiResult {
    let subject = scope(&raw)?;
    let update = parse_config(body)?;
    let config = registry.set_config(subject.as_deref(), update).await?;
    ok(config_json(config, "compatibility"))
}

async fn delete_subject_config(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
) -> ApiResult {
    let subject = scope(&raw)?;
    let old = registry.delete_config(subject.as_deref()).await?;
    ok(config_json(old, "compatibilityLevel"))
}

#[derive(Deserialize)]
struct ModeBody {
    mode: Option<String>,
}

async fn global_mode(State(registry): State<Registry>) -> ApiResult {
    let mode = registry.mode(None).await?.unwrap_or(Mode::ReadWrite);
    ok(json!({ "mode": mode.as_str() }))
}

async fn set_mode(
    registry: &Registry,
    subject: Option<&str>,
    params: &Params,
    body: ModeBody,
) -> ApiResult {
    let mode: Mode = body.mode.as_deref().unwrap_or("").parse()?;
    registry
        .set_mode(subject, mode, params.flag("force"))
        .await?;
    ok(json!({ "mode": mode.as_str() }))
}

async fn set_global_mode(
    State(registry): State<Registry>,
    params: Params,
    JsonBody(body): JsonBody<ModeBody>,
) -> ApiResult {
    set_mode(&registry, None, &params, body).await
}

async fn delete_global_mode(State(registry): State<Registry>) -> ApiResult {
    let old = registry.delete_mode(None).await?;
    ok(json!({ "mode": old.as_str() }))
}

async fn subject_mode(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
) -> ApiResult {
    let Some(subject) = scope(&raw)? else {
        return global_mode(State(registry)).await;
    };
    let mode = if params.flag("defaultToGlobal") {
        registry.mode_in_scope(&subject).await?
    } else {
        registry
            .mode(Some(&subject))
            .await?
            .ok_or(RegistryError::SubjectModeNotFound(subject))?
    };
    ok(json!({ "mode": mode.as_str() }))
}

async fn set_subject_mode(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
    params: Params,
    JsonBody(body): JsonBody<ModeBody>,
) -> ApiResult {
    let subject = scope(&raw)?;
    set_mode(&registry, subject.as_deref(), &params, body).await
}

async fn delete_subject_mode(
    State(registry): State<Registry>,
    PathParams(raw): PathParams<String>,
) -> ApiResult {
    let subject = scope(&raw)?;
    let old = registry.delete_mode(subject.as_deref()).await?;
    ok(json!({ "mode": old.as_str() }))
}

/// Only the default context exists here.
async fn contexts(params: Params) -> ApiResult {
    let mut contexts = vec![".".to_owned()];
    if let Some(prefix) = params.get("contextPrefix").filter(|p| !p.is_empty()) {
        contexts.retain(|c| c.starts_with(prefix));
    }
    ok(params.page(contexts, usize::MAX, usize::MAX)?)
}
