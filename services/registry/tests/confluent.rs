//! Confluent's request parsing and error bodies over real HTTP: booleans in any case, unknown
//! parameters ignored, and every malformed path, query or body answered with
//! `{"error_code", "message"}`; the listings (`/schemas`, prefixes, `deletedOnly`), contexts and
//! modes at the HTTP level.

use orderflow_testkit::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Server {
    url: String,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start(db: &TestDatabase) -> Server {
        let settings = orderflow_db::DbSettings::new(db.url());
        let pool = orderflow_db::connect_and_migrate(&settings, &orderflow_registry::MIGRATOR)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(orderflow_registry::run(listener, pool, None, async move {
            let _ = stopped.await;
        }));
        Server {
            url,
            client: reqwest::Client::new(),
            _stop: stop,
        }
    }

    /// Sends `body` as is (not necessarily JSON); returns status, content type and JSON body.
    async fn raw(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: not JSON ({content_type}): {text}"));
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.raw(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.raw(Method::POST, path, Some(&body.to_string())).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.raw(Method::PUT, path, Some(&body.to_string())).await
    }

    async fn register(&self, subject: &str, schema: &str) -> i64 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                json!({ "schema": schema }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_i64().unwrap()
    }
}

/// Asserts Confluent's error body with `status` and `code`; returns the message.
fn error(response: (StatusCode, Value), status: StatusCode, code: u64) -> String {
    let (got, body) = response;
    assert_eq!(
        (got, body["error_code"].as_u64()),
        (status, Some(code)),
        "{body}"
    );
    body["message"].as_str().unwrap().to_owned()
}

fn record(name: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","fields":[{fields}]}}"#)
}

#[tokio::test]
async fn booleans_are_read_in_any_case_and_unknown_parameters_are_ignored() {
    let db = TestDatabase::create("registry_confluent").await;
    let server = Server::start(&db).await;
    let a = record("A", r#"{"name":"x","type":"int"}"#);
    server.register("s", &a).await;
    server
        .raw(Method::DELETE, "/subjects/s/versions/1", None)
        .await;
    for truthy in ["true", "True", "TRUE", "tRuE"] {
        let (status, body) = server
            .post(
                &format!("/subjects/s?deleted={truthy}&normalize=False&whatever=1"),
                json!({ "schema": a }),
            )
            .await;
        assert_eq!(
            (status, &body["version"]),
            (StatusCode::OK, &json!(1)),
            "{truthy}: {body}"
        );
    }
    // Anything but "true" is false, as Java's Boolean.valueOf reads it: the subject has no
    // live version.
    for falsy in ["false", "yes", "1", ""] {
        error(
            server
                .post(
                    &format!("/subjects/s?deleted={falsy}"),
                    json!({ "schema": a }),
                )
                .await,
            StatusCode::NOT_FOUND,
            40401,
        );
    }
    let (status, body) = server
        .get("/subjects?deleted=TRUE&unknown=x&subjectPrefix=")
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!(["s"])));
    let (_, body) = server
        .post(
            "/compatibility/subjects/s/versions/1?verbose=True",
            json!({ "schema": a }),
        )
        .await;
    // Version 1 is soft-deleted: compatibility never checks against deleted versions.
    assert_eq!(body["error_code"], json!(40402));
}

#[tokio::test]
async fn every_malformed_request_gets_a_confluent_error_body() {
    let db = TestDatabase::create("registry_confluent").await;
    let server = Server::start(&db).await;
    server.register("s", "\"string\"").await;

    // Paths: an id that is not an integer is a 404 (JAX-RS), an unknown route a 404, a bad
    // version a 42202, a method the route does not take a 405.
    error(
        server.get("/schemas/ids/abc").await,
        StatusCode::NOT_FOUND,
        404,
    );
    error(
        server.get("/schemas/ids/99999999999").await,
        StatusCode::NOT_FOUND,
        404,
    );
    error(
        server.get("/schemas/ids/-5").await,
        StatusCode::NOT_FOUND,
        40403,
    );
    error(
        server.get("/nothing/here").await,
        StatusCode::NOT_FOUND,
        404,
    );
    error(
        server.get("/subjects/s/versions/0x1").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    let message = error(
        server.raw(Method::PATCH, "/subjects", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        405,
    );
    assert_eq!(message, "HTTP 405 Method Not Allowed");
    // A subject that does not percent-decode to UTF-8.
    error(
        server.get("/subjects/%FF%FE/versions").await,
        StatusCode::NOT_FOUND,
        404,
    );

    // Queries: an integer that does not convert is a 404, as JAX-RS answers it.
    error(
        server.get("/subjects?offset=x").await,
        StatusCode::NOT_FOUND,
        404,
    );
    error(
        server.get("/schemas?limit=1.5").await,
        StatusCode::NOT_FOUND,
        404,
    );

    // Bodies: not JSON or the wrong shape, 400/400; missing or null, 422/422.
    let path = "/subjects/s/versions";
    error(
        server.raw(Method::POST, path, Some("{\"schema\":")).await,
        StatusCode::BAD_REQUEST,
        400,
    );
    error(
        server.raw(Method::POST, path, Some("[1,2]")).await,
        StatusCode::BAD_REQUEST,
        400,
    );
    error(
        server.post(path, json!({ "schema": 5 })).await,
        StatusCode::BAD_REQUEST,
        400,
    );
    error(
        server.raw(Method::POST, path, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        422,
    );
    error(
        server.raw(Method::POST, path, Some("null")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        422,
    );
    error(
        server.post(path, json!({ "references": [] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    error(
        server.put("/config", json!({ "compatibility": 7 })).await,
        StatusCode::BAD_REQUEST,
        400,
    );
    error(
        server.put("/mode", json!({ "mode": "FORWARD" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42204,
    );
    // Over the body limit: Confluent's "schema too large".
    let huge = json!({ "schema": "x".repeat(3 << 20) }).to_string();
    error(
        server.raw(Method::POST, path, Some(&huge)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42209,
    );
    // Reserved and control-character subjects.
    error(
        server
            .post(
                "/subjects/__GLOBAL/versions",
                json!({ "schema": "\"int\"" }),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42208,
    );
    error(
        server
            .post("/subjects/a%01b/versions", json!({ "schema": "\"int\"" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42208,
    );
}

#[tokio::test]
async fn schemas_listing_filters_and_pages() {
    let db = TestDatabase::create("registry_confluent").await;
    let server = Server::start(&db).await;
    for subject in ["orders-value", "orders-key", "payments-value"] {
        server
            .put(
                &format!("/config/{subject}"),
                json!({ "compatibility": "NONE" }),
            )
            .await;
        server.register(subject, "\"string\"").await;
        server.register(subject, "\"long\"").await;
    }
    server
        .raw(Method::DELETE, "/subjects/orders-key/versions/2", None)
        .await;
    let pairs = |body: &Value| -> Vec<(String, i64)> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["subject"].as_str().unwrap().to_owned(),
                    s["version"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let owned = |list: &[(&str, i64)]| -> Vec<(String, i64)> {
        list.iter().map(|(s, v)| (s.to_string(), *v)).collect()
    };
    let (_, all) = server.get("/schemas?subjectPrefix=orders").await;
    assert_eq!(
        pairs(&all),
        owned(&[("orders-key", 1), ("orders-value", 1), ("orders-value", 2)])
    );
    assert!(all[0]["schema"].is_string() && all[0]["id"].is_i64());
    let (_, deleted) = server
        .get("/schemas?subjectPrefix=orders&deleted=true&latestOnly=true")
        .await;
    assert_eq!(
        pairs(&deleted),
        owned(&[("orders-key", 2), ("orders-value", 2)])
    );
    let (_, latest) = server
        .get("/schemas?latestOnly=TRUE&offset=1&limit=1")
        .await;
    assert_eq!(pairs(&latest), owned(&[("orders-value", 2)]));
    let (_, qualified) = server.get("/schemas?subjectPrefix=:.:pay").await;
    assert_eq!(pairs(&qualified).len(), 2);
    let (_, other_context) = server.get("/schemas?subjectPrefix=:.staging:").await;
    assert_eq!(other_context, json!([]));

    // Subjects: deletedOnly lists those whose every version is soft-deleted.
    server
        .raw(Method::DELETE, "/subjects/payments-value", None)
        .await;
    assert_eq!(
        server.get("/subjects?deletedOnly=true").await.1,
        json!(["payments-value"])
    );
    assert_eq!(
        server.get("/subjects?subjectPrefix=orders-v").await.1,
        json!(["orders-value"])
    );
    assert_eq!(
        server
            .get("/subjects/orders-key/versions?deletedAsNegative=true")
            .await
            .1,
        json!([1, -2])
    );
    assert_eq!(
        server
            .get("/subjects/orders-key/versions?deletedOnly=true")
            .await
            .1,
        json!([2])
    );
    let (_, id) = server.get("/schemas/ids/1?fetchMaxId=true").await;
    assert_eq!(id["maxId"], json!(2));
    assert_eq!(
        server.get("/schemas/ids/1/subjects?deleted=true").await.1,
        json!(["orders-key", "orders-value", "payments-value"])
    );
    assert_eq!(
        server.get("/schemas/ids/1/subjects").await.1,
        json!(["orders-key", "orders-value"])
    );
    assert_eq!(server.get("/contexts").await.1, json!(["."]));
}

#[tokio::test]
async fn modes_guard_writes_and_import_keeps_ids_and_versions() {
    let db = TestDatabase::create("registry_confluent").await;
    let server = Server::start(&db).await;
    assert_eq!(server.get("/mode").await.1, json!({"mode": "READWRITE"}));
    let a = record("A", r#"{"name":"x","type":"int"}"#);
    server.register("live", &a).await;

    // The default context spelled out is the global level.
    assert_eq!(
        server.put("/mode/:.:", json!({"mode": "readonly"})).await,
        (StatusCode::OK, json!({"mode": "READONLY"}))
    );
    error(
        server
            .post("/subjects/other/versions", json!({"schema": "\"int\""}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42205,
    );
    error(
        server
            .put("/config", json!({"compatibility": "NONE"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42205,
    );
    assert_eq!(
        server.raw(Method::DELETE, "/mode", None).await.1,
        json!({"mode": "READONLY"})
    );
    assert_eq!(server.get("/mode").await.1, json!({"mode": "READWRITE"}));

    // IMPORT on a non-empty registry needs force; a subject of its own does not.
    error(
        server.put("/mode", json!({"mode": "IMPORT"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42205,
    );
    assert_eq!(
        server
            .put("/mode/imported", json!({"mode": "IMPORT"}))
            .await
            .0,
        StatusCode::OK
    );
    let b = record("B", r#"{"name":"y","type":"string"}"#);
    let (status, body) = server
        .post(
            "/subjects/imported/versions",
            json!({"schema": b, "id": 500, "version": 4}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"id": 500})));
    // The same import again is answered the same.
    let (status, body) = server
        .post(
            "/subjects/imported/versions",
            json!({"schema": b, "id": 500, "version": 4}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"id": 500})));
    let (_, v4) = server.get("/subjects/imported/versions/4").await;
    assert_eq!((&v4["id"], &v4["version"]), (&json!(500), &json!(4)));
    server
        .put("/mode/imported", json!({"mode": "READWRITE"}))
        .await;
    // After an import, new ids continue above the imported ones; versions after the
    // imported version.
    let c = record(
        "B",
        r#"{"name":"y","type":"string"},{"name":"z","type":"int","default":0}"#,
    );
    assert_eq!(server.register("imported", &c).await, 501);
    assert_eq!(
        server.get("/subjects/imported/versions").await.1,
        json!([4, 5])
    );
    // A subject's mode overrides the global one; deleting it falls back.
    server
        .put("/mode/live", json!({"mode": "READONLY_OVERRIDE"}))
        .await;
    error(
        server.raw(Method::DELETE, "/subjects/live", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42205,
    );
    assert_eq!(
        server.get("/mode/imported?defaultToGlobal=true").await.1,
        json!({"mode": "READWRITE"})
    );
    error(
        server.get("/mode/nobody").await,
        StatusCode::NOT_FOUND,
        40409,
    );
}
