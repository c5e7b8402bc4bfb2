//! The registry over real HTTP with a real PostgreSQL database per test: every endpoint, every
//! error code, concurrency, restarts, compatibility levels, and the v1/v2 evolution round trip
//! through `schema_registry_converter`.

use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use orderflow_testkit::TestDatabase;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PAYMENT_V1: &str = include_str!("../../../schemas/payments/PaymentProcessed/v1.avsc");
const PAYMENT_V2: &str = include_str!("../../../schemas/payments/PaymentProcessed/v2.avsc");

/// A registry serving on an ephemeral port until dropped or stopped.
struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    client: Client,
}

impl Server {
    async fn start(pool: PgPool) -> Server {
        Server::start_for(pool, None).await
    }

    /// A registry that requires one of `users` on every request but `/health`.
    async fn start_for(pool: PgPool, users: Option<orderflow_registry::Users>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(orderflow_registry::run(listener, pool, users, async move {
            let _ = stopped.await;
        }));
        Server {
            url,
            stop: Some(stop),
            task,
            client: Client::new(),
        }
    }

    async fn on(db: &TestDatabase) -> Server {
        Server::start(migrated(db).await).await
    }

    /// Stops the server and waits for it to finish.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = &mut self.task;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    /// Sends a request; returns status and JSON body (`Value::Null` when empty or not JSON).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema })),
        )
        .await
    }

    async fn register_ok(&self, subject: &str, schema: &str) -> i64 {
        let (status, body) = self.register(subject, schema).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_i64().unwrap()
    }

    async fn set_level(&self, subject: &str, level: &str) {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/config/{subject}"),
                Some(json!({ "compatibility": level })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({ "compatibility": level }));
    }
}

async fn migrated(db: &TestDatabase) -> PgPool {
    let settings = orderflow_db::DbSettings::new(db.url());
    orderflow_db::connect_and_migrate(&settings, &orderflow_registry::MIGRATOR)
        .await
        .unwrap()
}

fn assert_error(response: (StatusCode, Value), status: StatusCode, code: u64) -> String {
    let (got, body) = response;
    assert_eq!(
        (got, body["error_code"].as_u64()),
        (status, Some(code)),
        "{body}"
    );
    body["message"].as_str().unwrap().to_owned()
}

/// Record `T` with the given fields.
fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"T","namespace":"test","fields":[{fields}]}}"#)
}

#[tokio::test]
async fn registers_looks_up_and_serves_schemas() {
    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;

    assert_eq!(server.get("/").await, (StatusCode::OK, json!({})));
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    assert_eq!(
        server.get("/schemas/types").await,
        (StatusCode::OK, json!(["AVRO"]))
    );
    assert_eq!(server.get("/subjects").await, (StatusCode::OK, json!([])));

    let id = server.register_ok("payments-value", PAYMENT_V1).await;
    // The same schema with other whitespace, attribute order and docs is the same schema.
    let reformatted: Value = serde_json::from_str(PAYMENT_V1).unwrap();
    let mut reformatted = reformatted;
    reformatted["doc"] = json!("another description");
    assert_eq!(
        server
            .register_ok("payments-value", &reformatted.to_string())
            .await,
        id
    );
    assert_eq!(
        server.get("/subjects/payments-value/versions").await,
        (StatusCode::OK, json!([1]))
    );
    // Under another subject it keeps its id and gets that subject's version 1.
    assert_eq!(server.register_ok("other-value", PAYMENT_V1).await, id);
    let v2 = server.register_ok("payments-value", PAYMENT_V2).await;
    assert_ne!(v2, id);

    assert_eq!(
        server.get("/subjects").await,
        (StatusCode::OK, json!(["other-value", "payments-value"]))
    );
    assert_eq!(
        server.get("/subjects/payments-value/versions").await,
        (StatusCode::OK, json!([1, 2]))
    );
    let (status, body) = server.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["schema"], PAYMENT_V1);
    let (status, raw) = server.get(&format!("/schemas/ids/{id}/schema")).await;
    assert_eq!(
        (status, raw),
        (
            StatusCode::OK,
            serde_json::from_str::<Value>(PAYMENT_V1).unwrap()
        )
    );
    assert_eq!(
        server.get(&format!("/schemas/ids/{id}/versions")).await,
        (
            StatusCode::OK,
            json!([{"subject": "other-value", "version": 1}, {"subject": "payments-value", "version": 1}])
        )
    );
    let (status, latest) = server.get("/subjects/payments-value/versions/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            &latest["subject"],
            &latest["id"],
            &latest["version"],
            &latest["schema"]
        ),
        (
            &json!("payments-value"),
            &json!(v2),
            &json!(2),
            &json!(PAYMENT_V2)
        )
    );
    let (_, first) = server.get("/subjects/payments-value/versions/1").await;
    assert_eq!(first["id"], json!(id));
    let (status, raw) = server
        .get("/subjects/payments-value/versions/-1/schema")
        .await;
    assert_eq!(
        (status, raw),
        (
            StatusCode::OK,
            serde_json::from_str::<Value>(PAYMENT_V2).unwrap()
        )
    );

    let (status, found) = server
        .call(
            Method::POST,
            "/subjects/payments-value",
            Some(json!({ "schema": PAYMENT_V1 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&found["id"], &found["version"]), (&json!(id), &json!(1)));
    assert_eq!(server.get("/mode").await.1, json!({"mode": "READWRITE"}));
}

#[tokio::test]
async fn speaks_both_content_types() {
    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;
    let url = &server.url;
    // Plain JSON in, plain JSON out when that is all the client accepts.
    let response = server
        .client
        .post(format!("{url}/subjects/s/versions"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(json!({ "schema": "\"string\"" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"id": 1}));
    // Confluent's content type by default.
    let response = server
        .client
        .get(format!("{url}/subjects/s/versions"))
        .header("Accept", "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.schemaregistry.v1+json"
    );
    let error = server
        .client
        .get(format!("{url}/subjects/nope/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error.headers()["content-type"],
        "application/vnd.schemaregistry.v1+json"
    );
}

#[tokio::test]
async fn answers_every_error_with_its_code() {
    let db = TestDatabase::create("registry").await;
    let pool = migrated(&db).await;
    let server = Server::start(pool.clone()).await;
    server
        .register_ok("s", &record(r#"{"name":"a","type":"int"}"#))
        .await;

    assert_error(
        server.get("/subjects/missing/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        server.get("/subjects/missing/versions/1").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        server.get("/subjects/s/versions/9").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        server.get("/schemas/ids/999").await,
        StatusCode::NOT_FOUND,
        40403,
    );
    let unknown = json!({ "schema": record(r#"{"name":"z","type":"int"}"#) });
    assert_error(
        server
            .call(Method::POST, "/subjects/s", Some(unknown))
            .await,
        StatusCode::NOT_FOUND,
        40403,
    );
    assert_error(server.get("/config/s").await, StatusCode::NOT_FOUND, 40408);
    assert_error(
        server.get("/no/such/route").await,
        StatusCode::NOT_FOUND,
        404,
    );

    let message = assert_error(
        server.register("s", "{\"type\":\"recrd\"}").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    assert!(message.contains("recrd"), "{message}");
    let message = assert_error(
        server
            .call(
                Method::POST,
                "/subjects/p/versions",
                Some(json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" })),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    assert!(
        message.contains("PROTOBUF") && message.contains("AVRO"),
        "{message}"
    );
    let with_reference = json!({
        "schema": record(r#"{"name":"m","type":"test.Money"}"#),
        "references": [{"name": "test.Money", "subject": "money", "version": 1}]
    });
    let message = assert_error(
        server
            .call(
                Method::POST,
                "/subjects/r/versions",
                Some(with_reference.clone()),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    assert!(
        message.contains("reference 'test.Money' cannot be resolved"),
        "{message}"
    );
    // Once the referenced subject exists, the reference resolves.
    server
        .register_ok("money", r#"{"type":"record","name":"Money","namespace":"test","fields":[{"name":"minor","type":"long"}]}"#)
        .await;
    let (status, body) = server
        .call(Method::POST, "/subjects/r/versions", Some(with_reference))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, by_id) = server.get(&format!("/schemas/ids/{}", body["id"])).await;
    assert_eq!(by_id["references"][0]["subject"], "money");
    assert_eq!(
        server
            .get("/subjects/money/versions/1/referencedby")
            .await
            .1,
        json!([body["id"]])
    );

    assert_error(
        server.get("/subjects/s/versions/abc").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    assert_error(
        server.get("/subjects/s/versions/0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    assert_error(
        server
            .call(
                Method::PUT,
                "/config",
                Some(json!({ "compatibility": "SIDEWAYS" })),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42203,
    );
    let message = assert_error(
        server
            .register(
                "s",
                &record(r#"{"name":"a","type":"int"},{"name":"added","type":"string"}"#),
            )
            .await,
        StatusCode::CONFLICT,
        409,
    );
    assert!(
        message.contains("T.added") && message.contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
        "{message}"
    );

    // With its database gone the registry answers 50001, without the SQL error's text.
    pool.close().await;
    let message = assert_error(
        server.get("/subjects").await,
        StatusCode::INTERNAL_SERVER_ERROR,
        50001,
    );
    assert_eq!(message, "Error in the backend data store");
    assert_eq!(
        server.get("/health").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn soft_and_permanent_deletes() {
    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;
    server.set_level("s", "NONE").await;
    let id1 = server.register_ok("s", "\"string\"").await;
    server.register_ok("s", "\"int\"").await;

    assert_eq!(
        server
            .call(Method::DELETE, "/subjects/s/versions/1", None)
            .await,
        (StatusCode::OK, json!(1))
    );
    assert_error(
        server.get("/subjects/s/versions/1").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_eq!(
        server.get("/subjects/s/versions/1?deleted=true").await.1["id"],
        json!(id1)
    );
    assert_eq!(server.get("/subjects/s/versions").await.1, json!([2]));
    assert_eq!(
        server.get("/subjects/s/versions?deleted=true").await.1,
        json!([1, 2])
    );
    assert_error(
        server
            .call(Method::DELETE, "/subjects/s/versions/1", None)
            .await,
        StatusCode::NOT_FOUND,
        40406,
    );
    assert_error(
        server
            .call(
                Method::DELETE,
                "/subjects/s/versions/2?permanent=true",
                None,
            )
            .await,
        StatusCode::NOT_FOUND,
        40407,
    );
    // The id stays readable for consumers of old data (the client asks with deleted=true).
    assert_eq!(
        server
            .get(&format!("/schemas/ids/{id1}?deleted=true"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .call(
                Method::DELETE,
                "/subjects/s/versions/1?permanent=true",
                None
            )
            .await,
        (StatusCode::OK, json!(1))
    );
    assert_error(
        server
            .get(&format!("/schemas/ids/{id1}?deleted=true"))
            .await,
        StatusCode::NOT_FOUND,
        40403,
    );

    assert_error(
        server
            .call(Method::DELETE, "/subjects/s?permanent=true", None)
            .await,
        StatusCode::NOT_FOUND,
        40405,
    );
    assert_eq!(
        server.call(Method::DELETE, "/subjects/s", None).await,
        (StatusCode::OK, json!([2]))
    );
    assert_error(
        server.call(Method::DELETE, "/subjects/s", None).await,
        StatusCode::NOT_FOUND,
        40404,
    );
    assert_eq!(server.get("/subjects").await.1, json!([]));
    assert_eq!(server.get("/subjects?deleted=true").await.1, json!(["s"]));
    assert_error(
        server.get("/subjects/s/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    // Registering after a soft delete continues the numbering.
    server.register_ok("s", "\"long\"").await;
    assert_eq!(server.get("/subjects/s/versions").await.1, json!([3]));
    server.call(Method::DELETE, "/subjects/s", None).await;
    assert_eq!(
        server
            .call(Method::DELETE, "/subjects/s?permanent=true", None)
            .await,
        (StatusCode::OK, json!([2, 3]))
    );
    assert_error(
        server.call(Method::DELETE, "/subjects/s", None).await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_eq!(server.get("/subjects?deleted=true").await.1, json!([]));
}

#[tokio::test]
async fn concurrent_registrations_of_one_schema_get_one_id_and_one_version() {
    let db = TestDatabase::create("registry").await;
    let server = std::sync::Arc::new(Server::on(&db).await);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                // Half of them under a second subject: the id is global.
                let subject = if i % 2 == 0 { "a" } else { "b" };
                server.register_ok(subject, PAYMENT_V1).await
            })
        })
        .collect();
    let ids: Vec<i64> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
    assert_eq!(server.get("/subjects/a/versions").await.1, json!([1]));
    assert_eq!(server.get("/subjects/b/versions").await.1, json!([1]));
}

#[tokio::test]
async fn ids_survive_a_restart() {
    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;
    server.set_level("payments", "FULL_TRANSITIVE").await;
    let v1 = server.register_ok("payments", PAYMENT_V1).await;
    let v2 = server.register_ok("payments", PAYMENT_V2).await;
    let other = server.register_ok("other", "\"string\"").await;
    server.stop().await;

    let server = Server::on(&db).await;
    assert_eq!(server.register_ok("payments", PAYMENT_V1).await, v1);
    assert_eq!(server.register_ok("payments", PAYMENT_V2).await, v2);
    assert_eq!(server.register_ok("other", "\"string\"").await, other);
    assert_eq!(
        server.get(&format!("/schemas/ids/{v2}")).await.1["schema"],
        PAYMENT_V2
    );
    assert_eq!(
        server.get("/config/payments").await.1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    let next = server.register_ok("third", "\"long\"").await;
    assert_eq!(next, [v1, v2, other].into_iter().max().unwrap() + 1);
}

#[tokio::test]
async fn config_endpoints() {
    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;
    assert_eq!(
        server.get("/config").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        server
            .call(
                Method::PUT,
                "/config",
                Some(json!({"compatibility": "FULL"}))
            )
            .await,
        (StatusCode::OK, json!({"compatibility": "FULL"}))
    );
    assert_eq!(
        server.get("/config").await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(
        server.get("/config/s?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    server.set_level("s", "FORWARD_TRANSITIVE").await;
    assert_eq!(
        server.get("/config/s").await.1,
        json!({"compatibilityLevel": "FORWARD_TRANSITIVE"})
    );
    assert_eq!(
        server.call(Method::DELETE, "/config/s", None).await,
        (
            StatusCode::OK,
            json!({"compatibilityLevel": "FORWARD_TRANSITIVE"})
        )
    );
    assert_error(server.get("/config/s").await, StatusCode::NOT_FOUND, 40408);
}

/// For one level: the history to register first (under NONE), a candidate the level refuses
/// naming `field`, and one it accepts.
struct LevelCase {
    level: &'static str,
    history: Vec<String>,
    refused: Option<(String, &'static str)>,
    accepted: String,
}

fn level_cases() -> Vec<LevelCase> {
    let a_int = record(r#"{"name":"a","type":"int"}"#);
    let empty = record("");
    let add_b = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#);
    let add_b_default =
        record(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#);
    let a_string_default = record(r#"{"name":"a","type":"string","default":""}"#);
    vec![
        LevelCase {
            level: "NONE",
            history: vec![a_int.clone()],
            refused: None,
            accepted: record(r#"{"name":"a","type":"string"}"#),
        },
        LevelCase {
            level: "BACKWARD",
            history: vec![a_int.clone()],
            refused: Some((add_b.clone(), "T.b")),
            accepted: add_b_default.clone(),
        },
        LevelCase {
            level: "FORWARD",
            history: vec![a_int.clone()],
            refused: Some((empty.clone(), "T.a")),
            accepted: add_b.clone(),
        },
        LevelCase {
            level: "FULL",
            history: vec![a_int.clone()],
            refused: Some((add_b.clone(), "T.b")),
            accepted: add_b_default.clone(),
        },
        // v1 {a:int}, v2 {}: a string `a` with a default passes against v2 alone but not v1.
        LevelCase {
            level: "BACKWARD_TRANSITIVE",
            history: vec![a_int.clone(), empty.clone()],
            refused: Some((a_string_default.clone(), "T.a")),
            accepted: record(r#"{"name":"a","type":"long","default":0}"#),
        },
        LevelCase {
            level: "FORWARD_TRANSITIVE",
            history: vec![a_int.clone(), empty.clone()],
            refused: Some((a_string_default.clone(), "T.a")),
            accepted: add_b.clone(),
        },
        LevelCase {
            level: "FULL_TRANSITIVE",
            history: vec![a_int.clone(), empty.clone()],
            refused: Some((a_string_default.clone(), "T.a")),
            accepted: record(r#"{"name":"a","type":"int","default":0}"#),
        },
    ]
}

#[tokio::test]
async fn every_level_accepts_and_refuses_over_http() {
    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;
    for case in level_cases() {
        let subject = format!("level-{}", case.level);
        server.set_level(&subject, "NONE").await;
        for schema in &case.history {
            server.register_ok(&subject, schema).await;
        }
        server.set_level(&subject, case.level).await;
        if let Some((refused, field)) = &case.refused {
            let message = assert_error(
                server.register(&subject, refused).await,
                StatusCode::CONFLICT,
                409,
            );
            assert!(message.contains(field), "{}: {message}", case.level);
            // The non-transitive form of a transitive level accepts it: only older history breaks.
            if let Some(plain) = case.level.strip_suffix("_TRANSITIVE") {
                let path = format!("/compatibility/subjects/{subject}/versions/latest");
                server.set_level(&subject, plain).await;
                let (_, body) = server
                    .call(Method::POST, &path, Some(json!({ "schema": refused })))
                    .await;
                assert_eq!(body, json!({"is_compatible": true}), "{}", case.level);
                server.set_level(&subject, case.level).await;
            }
        }
        let versions_before = server.get(&format!("/subjects/{subject}/versions")).await.1;
        assert_eq!(
            versions_before.as_array().unwrap().len(),
            case.history.len()
        );
        server.register_ok(&subject, &case.accepted).await;
    }
}

#[tokio::test]
async fn compatibility_endpoint_explains_with_verbose() {
    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;
    server.set_level("s", "FULL").await;
    server
        .register_ok("s", &record(r#"{"name":"a","type":"int"}"#))
        .await;
    let breaking =
        json!({ "schema": record(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#) });
    let fine = json!({ "schema": record(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":1}"#) });

    let (status, body) = server
        .call(
            Method::POST,
            "/compatibility/subjects/s/versions/latest?verbose=true",
            Some(breaking.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["is_compatible"], json!(false));
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{body}");
    let message = messages[0].as_str().unwrap();
    assert!(
        message.contains("T.b") && message.contains("version 1"),
        "{message}"
    );
    assert_eq!(
        server
            .call(
                Method::POST,
                "/compatibility/subjects/s/versions/1",
                Some(breaking.clone())
            )
            .await,
        (StatusCode::OK, json!({"is_compatible": false}))
    );
    assert_eq!(
        server
            .call(
                Method::POST,
                "/compatibility/subjects/s/versions",
                Some(breaking)
            )
            .await,
        (StatusCode::OK, json!({"is_compatible": false}))
    );
    assert_eq!(
        server
            .call(
                Method::POST,
                "/compatibility/subjects/s/versions/latest?verbose=true",
                Some(fine)
            )
            .await,
        (
            StatusCode::OK,
            json!({"is_compatible": true, "messages": []})
        )
    );
    let probe = json!({ "schema": "\"int\"" });
    // As in Confluent since 6.1: a subject without versions is compatible with anything when
    // asked about `latest` (a client checks a first schema before registering it), and a
    // numbered version that does not exist is a 40402.
    assert_eq!(
        server
            .call(
                Method::POST,
                "/compatibility/subjects/none/versions/latest",
                Some(probe.clone()),
            )
            .await,
        (StatusCode::OK, json!({"is_compatible": true}))
    );
    assert_error(
        server
            .call(
                Method::POST,
                "/compatibility/subjects/none/versions/1",
                Some(probe.clone()),
            )
            .await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        server
            .call(
                Method::POST,
                "/compatibility/subjects/s/versions/7",
                Some(probe),
            )
            .await,
        StatusCode::NOT_FOUND,
        40402,
    );
}

/// A PaymentProcessed record; `provider_reference` only when writing v2.
fn payment_fields(v2: bool) -> Vec<(&'static str, Avro)> {
    let uuid = |s: &str| Avro::Uuid(apache_avro::Uuid::parse_str(s).unwrap());
    let money = Avro::Record(vec![
        ("amount_minor".to_owned(), Avro::Long(1999)),
        ("currency".to_owned(), Avro::String("EUR".to_owned())),
    ]);
    let mut fields = vec![
        ("event_id", uuid("6f1c1b8e-3c1e-4b8e-9a51-0d5f3c2b1a10")),
        ("order_id", uuid("0b4f8e2a-9d7c-4a51-8e3f-2c1d0e9f8a7b")),
        ("occurred_at", Avro::TimestampMillis(1_700_000_000_000)),
        ("payment_id", uuid("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")),
        ("status", Avro::Enum(1, "PAID".to_owned())),
        ("amount", money.clone()),
        (
            "items",
            Avro::Array(vec![Avro::Record(vec![
                ("sku".to_owned(), Avro::String("SKU-1".to_owned())),
                ("quantity".to_owned(), Avro::Int(1)),
                ("unit_price".to_owned(), money),
            ])]),
        ),
        ("failure_reason", Avro::Union(0, Box::new(Avro::Null))),
    ];
    if v2 {
        fields.push((
            "provider_reference",
            Avro::Union(1, Box::new(Avro::String("psp-42".to_owned()))),
        ));
    }
    fields
}

fn field<'a>(value: &'a Avro, name: &str) -> Option<&'a Avro> {
    match value {
        Avro::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => panic!("not a record: {value:?}"),
    }
}

/// Reads Confluent-framed bytes the way a consumer built on `reader` does: the writer's schema
/// comes from the registry by the id in the frame and is resolved against the reader's.
async fn read_as(server: &Server, bytes: &[u8], reader: &str) -> Avro {
    assert_eq!(bytes[0], 0, "magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    let (status, body) = server.get(&format!("/schemas/ids/{id}?deleted=true")).await;
    assert_eq!(status, StatusCode::OK);
    let writer = apache_avro::Schema::parse_str(body["schema"].as_str().unwrap()).unwrap();
    let reader = apache_avro::Schema::parse_str(reader).unwrap();
    GenericDatumReader::builder(&writer)
        .reader_schema(&reader)
        .build()
        .unwrap()
        .read_value(&mut &bytes[5..])
        .unwrap()
}

#[tokio::test]
async fn v1_and_v2_consumers_read_each_others_events_through_the_registry() {
    use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
    use schema_registry_converter::async_impl::schema_registry::SrSettings;
    use schema_registry_converter::schema_registry_common::{
        SchemaType, SubjectNameStrategy, SuppliedSchema,
    };

    let db = TestDatabase::create("registry").await;
    let server = Server::on(&db).await;
    let subject = "payments-orderflow.events.PaymentProcessed";
    server.set_level(subject, "FULL_TRANSITIVE").await;
    let settings = SrSettings::new(server.url.clone());
    // Two producers, one on each version (the encoder caches one schema per subject).
    let v1_producer = AvroEncoder::new(settings.clone());
    let v2_producer = AvroEncoder::new(settings.clone());
    let strategy = |schema: &str| {
        SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
            "payments".to_owned(),
            SuppliedSchema::new(
                Some("orderflow.events.PaymentProcessed".to_owned()),
                SchemaType::Avro,
                schema.to_owned(),
            ),
        )
    };

    let v1_bytes = v1_producer
        .encode(payment_fields(false), strategy(PAYMENT_V1))
        .await
        .unwrap();
    let v2_bytes = v2_producer
        .encode(payment_fields(true), strategy(PAYMENT_V2))
        .await
        .unwrap();
    assert_eq!(
        server.get(&format!("/subjects/{subject}/versions")).await.1,
        json!([1, 2])
    );
    assert_ne!(
        v1_bytes[1..5],
        v2_bytes[1..5],
        "each version has its own id"
    );

    // A v1 consumer reads a v2 event: the new field is skipped.
    let read = read_as(&server, &v2_bytes, PAYMENT_V1).await;
    assert_eq!(field(&read, "provider_reference"), None);
    assert_eq!(
        field(&read, "status"),
        Some(&Avro::Enum(1, "PAID".to_owned()))
    );
    // A v2 consumer reads a v1 event: the new field takes its default.
    let read = read_as(&server, &v1_bytes, PAYMENT_V2).await;
    assert_eq!(
        field(&read, "provider_reference"),
        Some(&Avro::Union(0, Box::new(Avro::Null)))
    );
    // The client's own decoder finds the writer's schema by id too.
    let decoded = AvroDecoder::new(settings)
        .decode(Some(&v2_bytes))
        .await
        .unwrap();
    assert_eq!(
        field(&decoded.value, "provider_reference"),
        Some(&Avro::Union(1, Box::new(Avro::String("psp-42".to_owned()))))
    );
}

/// Sends `head`, waits until the server has surely answered from the head alone, sends `body`,
/// then asks `GET /health` on the same connection; returns everything the server wrote.
async fn late_body_then_health(address: &str, head: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    connection.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Either write may meet a connection the server has already closed: what it answered is
    // the evidence, so errors here only end the exchange.
    let _ = connection.write_all(body.as_bytes()).await;
    let _ = connection
        .write_all(b"GET /health HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n")
        .await;
    let mut answered = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        connection.read_to_end(&mut answered),
    )
    .await;
    String::from_utf8_lossy(&answered).into_owned()
}

/// A request answered before its body arrived (refused for want of credentials or a role, or
/// sent to no route) still has its body read, so the connection stays usable. Closing it with
/// the body unread made the kernel answer the late bytes with a reset, which could take the
/// answer with it: the Python client, sending headers and body separately, then saw "Server
/// disconnected without sending a response" instead of the 401.
#[tokio::test]
async fn a_request_answered_before_its_body_arrives_leaves_the_connection_usable() {
    let db = TestDatabase::create("registry").await;
    let users =
        orderflow_registry::Users::parse("reader:r:read\nadmin:a:admin\n").expect("test users");
    let server = Server::start_for(migrated(&db).await, Some(users)).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let body = json!({ "schema": record(r#"{"name":"a","type":"int"}"#) }).to_string();
    let basic = |user_info: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(user_info)
    };
    for (method_and_path, authorization, status) in [
        ("POST /subjects/s/versions", None, "401"),
        ("POST /subjects/s/versions", Some(basic("reader:r")), "403"),
        ("POST /no/such/route", Some(basic("admin:a")), "404"),
    ] {
        let authorization = authorization
            .map(|credentials| format!("Authorization: Basic {credentials}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method_and_path} HTTP/1.1\r\nHost: registry\r\n{authorization}\
             Content-Type: application/vnd.schemaregistry.v1+json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let answered = late_body_then_health(&address, &head, &body).await;
        // Each answer's status line (a body does not end in a line break).
        let statuses: Vec<&str> = answered
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|rest| &rest[..3])
            .collect();
        assert_eq!(
            statuses,
            [status, "200"],
            "{method_and_path}: the answer, then /health on the same connection:\n{answered}"
        );
    }

    // A body over the limit is refused by name, and its refusal arrives.
    let too_big = json!({ "schema": "x".repeat(2 * 1024 * 1024) }).to_string();
    let response = server
        .client
        .post(format!("{}/subjects/s/versions", server.url))
        .basic_auth("admin", Some("a"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(too_big)
        .send()
        .await
        .expect("the refusal of a body over the limit arrives");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refusal: Value = response.json().await.unwrap();
    assert_eq!(refusal["error_code"], 42209, "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("2097152 bytes"),
        "{refusal}"
    );
    server.stop().await;
}
