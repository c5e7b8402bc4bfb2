//! A load tool for the registry: registrations and get-by-id lookups at a fixed number of
//! concurrent keep-alive connections, reported as requests per second and latency percentiles.
//!
//! ```sh
//! cargo run -p orderflow-registry --example load                 # an in-process registry on a fresh database
//! cargo run -p orderflow-registry --example load -- --url http://127.0.0.1:8081 --subjects 1000
//! ```
//!
//! Phases, each bounded in requests and time: `register` (every subject gets `--versions` new,
//! compatible versions: a new id and version each), `register-existing` (the same schemas again,
//! as every serializer does at start), and `get-by-id` (`GET /schemas/ids/{id}` over every id,
//! `--lookups` requests). Only loopback addresses are meant as targets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

struct Options {
    url: Option<String>,
    connections: usize,
    subjects: usize,
    versions: usize,
    lookups: usize,
}

fn options() -> Options {
    let mut options = Options {
        url: None,
        connections: 64,
        subjects: 1000,
        versions: 3,
        lookups: 60_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--url" => options.url = Some(value()),
            "--connections" => options.connections = value().parse().expect("--connections"),
            "--subjects" => options.subjects = value().parse().expect("--subjects"),
            "--versions" => options.versions = value().parse().expect("--versions"),
            "--lookups" => options.lookups = value().parse().expect("--lookups"),
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// Version `version` (1-based) of subject `index`'s schema: each version adds an optional field.
fn schema(index: usize, version: usize) -> String {
    let mut fields = vec![
        json!({"name": "id", "type": "string"}),
        json!({"name": "amount", "type": "long"}),
    ];
    for v in 2..=version {
        fields.push(
            json!({"name": format!("extra{v}"), "type": ["null", "string"], "default": null}),
        );
    }
    json!({"type": "record", "name": format!("Bench{index}"), "namespace": "orderflow.bench", "fields": fields})
        .to_string()
}

/// One keep-alive connection: a client that keeps at most one idle connection.
fn connection() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Report {
    name: &'static str,
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Report {
    fn print(&mut self, connections: usize) {
        self.latencies.sort();
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
            self.name,
            connections,
            self.requests,
            self.requests as f64 / self.elapsed.as_secs_f64(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}

/// Runs `work(i)` for i in 0..total over `connections` connections; panics on any failure.
async fn phase<F, Fut>(name: &'static str, connections: usize, total: usize, work: F) -> Report
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(600);
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (work, next) = (work.clone(), next.clone());
            tokio::spawn(async move {
                let client = connection();
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        break;
                    }
                    let t = Instant::now();
                    work(client.clone(), i).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Report {
        name,
        requests: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    }
}

async fn register(client: &reqwest::Client, url: &str, subject: usize, version: usize) -> i64 {
    let response = client
        .post(format!("{url}/subjects/bench-{subject}-value/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(json!({ "schema": schema(subject, version) }).to_string())
        .send()
        .await
        .expect("register");
    assert!(
        response.status().is_success(),
        "register: {}",
        response.status()
    );
    response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let options = options();
    // Without --url: a registry in this process on its own fresh database (dropped at the end).
    let mut _database = None;
    let url = match &options.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let db = orderflow_testkit::TestDatabase::create("registry_load").await;
            let mut settings = orderflow_db::DbSettings::new(db.url());
            settings.max_connections = 16;
            let pool = orderflow_db::connect_and_migrate(&settings, &orderflow_registry::MIGRATOR)
                .await
                .expect("registry database");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(orderflow_registry::run(
                listener,
                pool,
                None,
                std::future::pending(),
            ));
            _database = Some(db);
            url
        }
    };
    let (connections, subjects, versions) =
        (options.connections, options.subjects, options.versions);
    println!(
        "registry {url}: {subjects} subjects x {versions} versions, {connections} connections"
    );
    println!("| phase | connections | requests | requests/s | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");

    // Each subject's versions in order: request i is subject i % subjects, version i / subjects + 1,
    // so version v of every subject is requested before version v + 1 of any (connections race
    // only across subjects, never within one).
    let base = url.clone();
    let mut report = phase(
        "register",
        connections,
        subjects * versions,
        move |client, i| {
            let url = base.clone();
            async move {
                register(&client, &url, i % subjects, i / subjects + 1).await;
            }
        },
    )
    .await;
    report.print(connections);

    let base = url.clone();
    let mut report = phase(
        "register-existing",
        connections,
        subjects,
        move |client, i| {
            let url = base.clone();
            async move {
                register(&client, &url, i, versions).await;
            }
        },
    )
    .await;
    report.print(connections);

    let max_id = connection()
        .get(format!("{url}/schemas/ids/1?fetchMaxId=true"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["maxId"]
        .as_i64()
        .unwrap();
    let base = url.clone();
    let mut report = phase(
        "get-by-id",
        connections,
        options.lookups,
        move |client, i| {
            let url = base.clone();
            async move {
                // Spread over every id, as consumers of many topics would.
                let id = (i as i64 * 7919) % max_id + 1;
                let response = client
                    .get(format!("{url}/schemas/ids/{id}"))
                    .send()
                    .await
                    .expect("get by id");
                assert!(
                    response.status().is_success(),
                    "get {id}: {}",
                    response.status()
                );
                response.bytes().await.unwrap();
            }
        },
    )
    .await;
    report.print(connections);
}
