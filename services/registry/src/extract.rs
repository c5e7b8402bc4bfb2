//! Request parsing the way Confluent's JAX-RS resources parse: query parameters leniently,
//! and every malformed path, query or body answered with Confluent's JSON error, never with
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::RegistryError;

/// The query string's parameters, first value wins (as in JAX-RS). Unknown ones are ignored
/// simply by nobody asking for them.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // form_urlencoded decoding is lossy and never fails for pairs of strings; a failure
        // here would be a bug, answered as JAX-RS answers a parameter it cannot convert.
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|_| RegistryError::Http(StatusCode::NOT_FOUND))
    }
}

impl Params {
    #[cfg(test)]
    fn parse(query: &str) -> Params {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        Params(
            Query::<Vec<(String, String)>>::try_from_uri(&uri)
                .unwrap()
                .0,
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order (`?key=a&key=b`).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean as Java's `Boolean.valueOf` reads it: `true` in any case is true, anything
    /// else (absent, empty, `yes`, `1`) is false. Never an error.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// An integer; absent or empty gives `default`. One that does not convert is answered
    /// 404, as JAX-RS answers a `@QueryParam int` it cannot convert.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, RegistryError> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(default),
            Some(raw) => raw
                .parse::<i32>()
                .map(i64::from)
                .map_err(|_| RegistryError::Http(StatusCode::NOT_FOUND)),
        }
    }

    /// `offset` and `limit` applied to `items` the way Confluent pages: a negative offset is
    /// zero, a limit outside `1..=max` is `default`.
    pub fn page<T>(
        &self,
        items: Vec<T>,
        default: usize,
        max: usize,
    ) -> Result<Vec<T>, RegistryError> {
        let offset = usize::try_from(self.int("offset", 0)?).unwrap_or(0);
        let limit = self.int("limit", -1)?;
        let limit = match usize::try_from(limit) {
            Ok(l) if l >= 1 && l <= max => l,
            _ => default,
        };
        Ok(items.into_iter().skip(offset).take(limit).collect())
    }
}

/// Path parameters; one that does not decode (or convert, for a number) is a 404, as JAX-RS
/// answers a `@PathParam Integer` it cannot convert.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParams(value))
            .map_err(|_| RegistryError::Http(StatusCode::NOT_FOUND))
    }
}

/// A JSON request body, read whatever its declared content type (Confluent accepts its own
/// type, `application/json` and `application/octet-stream`). Errors as Confluent's
/// rest-utils answers them: not JSON or the wrong shape, 400 with code 400; missing or
/// `null`, 422 with code 422 (a `@NotNull` violation). The size limit is the router's
/// (`api::read_whole_body`, 42209): a body reaches this extractor whole and within it.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = RegistryError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| RegistryError::BadRequest(rejection.body_text()))?;
        parse_body(&bytes).map(JsonBody)
    }
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RegistryError> {
    let missing = || RegistryError::UnprocessableEntity("The request body must not be null".into());
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(missing());
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::BadRequest(format!("Invalid JSON in the request body: {e}")))?;
    if value.is_null() {
        return Err(missing());
    }
    serde_json::from_value(value)
        .map_err(|e| RegistryError::BadRequest(format!("Unexpected request body: {e}")))
}

/// The default context's prefix in qualified subject names.
const DEFAULT_CONTEXT: &str = ":.:";

/// A subject name from a path or query: `:.:name` is `name` in the default context (and
/// `:.:` alone is the default context itself, the empty name); a name in any other context
/// (`:.other:name`) is refused, as this registry has only the default one.
pub fn subject(raw: &str) -> Result<String, RegistryError> {
    if let Some(rest) = raw.strip_prefix(DEFAULT_CONTEXT) {
        return Ok(rest.to_owned());
    }
    if raw.starts_with(":.") && raw[2..].contains(':') {
        return Err(RegistryError::UnsupportedContext(raw.to_owned()));
    }
    Ok(raw.to_owned())
}

/// A subject a schema may be registered under: not empty, no control characters, not one of
/// Confluent's reserved names.
pub fn registrable(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty()
        || subject.chars().any(char::is_control)
        || subject == "__GLOBAL"
        || subject == "__EMPTY"
    {
        return Err(RegistryError::InvalidSubject(subject.to_owned()));
    }
    Ok(())
}

/// What a `subjectPrefix` selects: `None` when it names another context (nothing matches),
/// else the prefix within the default context (`:*:`, all contexts, is every subject).
pub fn subject_prefix(raw: Option<&str>) -> Option<String> {
    match raw {
        None | Some(":*:") => Some(String::new()),
        Some(raw) => subject(raw).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_read_like_javas_boolean_value_of() {
        let params = Params::parse("a=True&b=TRUE&c=true&d=yes&e=&f=1&g=false&dup=true&dup=false");
        assert!(params.flag("a") && params.flag("b") && params.flag("c"));
        assert!(!params.flag("d") && !params.flag("e") && !params.flag("f") && !params.flag("g"));
        assert!(!params.flag("absent"));
        assert!(params.flag("dup"), "the first value wins");
    }

    #[test]
    fn integers_default_when_absent_or_empty_and_are_404_when_malformed() {
        let params = Params::parse("offset=&limit=5&bad=x&big=99999999999");
        assert_eq!(params.int("offset", 0).unwrap(), 0);
        assert_eq!(params.int("limit", -1).unwrap(), 5);
        assert_eq!(params.int("absent", -1).unwrap(), -1);
        for name in ["bad", "big"] {
            assert!(matches!(
                params.int(name, 0),
                Err(RegistryError::Http(StatusCode::NOT_FOUND))
            ));
        }
    }

    #[test]
    fn paging_clamps_like_confluent() {
        let items: Vec<i32> = (1..=10).collect();
        let page = |q: &str| Params::parse(q).page(items.clone(), 1000, 1000).unwrap();
        assert_eq!(page("offset=2&limit=3"), vec![3, 4, 5]);
        assert_eq!(page("offset=-4&limit=-1"), items);
        assert_eq!(page("offset=0&limit=0"), items);
        assert_eq!(page("offset=20"), Vec::<i32>::new());
    }

    #[test]
    fn the_default_context_prefix_is_the_plain_name() {
        assert_eq!(subject(":.:orders-value").unwrap(), "orders-value");
        assert_eq!(subject(":.:").unwrap(), "");
        assert_eq!(subject("orders-value").unwrap(), "orders-value");
        assert!(matches!(
            subject(":.staging:orders-value"),
            Err(RegistryError::UnsupportedContext(_))
        ));
        assert_eq!(subject_prefix(Some(":*:")).as_deref(), Some(""));
        assert_eq!(subject_prefix(Some(":.:ord")).as_deref(), Some("ord"));
        assert_eq!(subject_prefix(Some(":.other:")), None);
        assert!(registrable("").is_err() && registrable("a\u{1}").is_err());
    }

    #[test]
    fn bodies_fail_with_confluents_codes() {
        let codes = |body: &str| match parse_body::<crate::registry::SchemaRequest>(body.as_bytes())
        {
            Ok(_) => 200,
            Err(e) => e.codes().1,
        };
        assert_eq!(codes(""), 422);
        assert_eq!(codes("null"), 422);
        assert_eq!(codes("{"), 400);
        assert_eq!(codes(r#"{"schema": {"not": "a string"}}"#), 400);
        assert_eq!(codes(r#"{"schema": "\"int\"", "unknown": 1}"#), 200);
    }
}
