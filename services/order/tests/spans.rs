//! The spans of calls served together, against real PostgreSQL: a queue's worker, not the
//! caller, runs the shared statements, so each batch is served in a `batch` span that is the
//! child of its first call's span and follows from every other call's. A lone call's
//! statements are then in its own trace, every call served together is linked to the batch
//! that served it, and a call served again alone (after a failed shared statement) is served
//! in its own span. The spans are recorded by a subscriber layer of this test, as an
//! OpenTelemetry exporter would see them (parents and follows-from links).

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orderflow_events::Topics;
use orderflow_order::{BatchMetrics, HistoryReader, Placer, Store};
use orderflow_platform::OutboxSignal;
use orderflow_testkit::{TestDatabase, wait_for};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

mod orders;
use orders::{order, place};

/// A span as it was opened: its name, its fields, and its parent (an index into
/// [`Recorded::spans`]).
#[derive(Debug)]
struct Opened {
    name: &'static str,
    fields: HashMap<String, String>,
    parent: Option<usize>,
}

/// Every span opened, and every follows-from link, `(span, followed)`, by index.
#[derive(Debug, Default)]
struct Recorded {
    spans: Vec<Opened>,
    follows: Vec<(usize, usize)>,
}

impl Recorded {
    fn named(&self, name: &str) -> Vec<usize> {
        (0..self.spans.len())
            .filter(|&i| self.spans[i].name == name)
            .collect()
    }

    fn field(&self, span: usize, field: &str) -> &str {
        self.spans[span]
            .fields
            .get(field)
            .map_or("", String::as_str)
    }
}

/// A span's index in [`Recorded::spans`], kept in the span's extensions.
struct Index(usize);

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Recorded>>);

struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span is there");
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut fields = Fields(HashMap::new());
        attrs.record(&mut fields);
        let mut recorded = self.0.lock().expect("not poisoned");
        recorded.spans.push(Opened {
            name: attrs.metadata().name(),
            fields: fields.0,
            parent,
        });
        span.extensions_mut()
            .insert(Index(recorded.spans.len() - 1));
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let index = |id: &Id| {
            ctx.span(id)
                .and_then(|span| span.extensions().get::<Index>().map(|i| i.0))
        };
        if let (Some(span), Some(followed)) = (index(id), index(follows)) {
            let mut recorded = self.0.lock().expect("not poisoned");
            recorded.follows.push((span, followed));
        }
    }
}

/// Records this thread's spans until the guard is dropped (the tests' runtime has one thread,
/// so the queue's workers and the database pool's tasks run on it too).
fn record() -> (Recorder, tracing::subscriber::DefaultGuard) {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    (recorder, tracing::subscriber::set_default(subscriber))
}

/// Makes `calls`, each in a span `caller` numbered by its place, while `table` is locked, so
/// that they queue for the workers together; their answers, in order.
async fn while_locked<T, F>(db: &TestDatabase, table: &str, calls: Vec<F>) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let own = db.pool().await;
    let mut lock = own.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *lock)
        .await
        .unwrap();
    let calls: Vec<_> = calls
        .into_iter()
        .enumerate()
        .map(|(n, call)| tokio::spawn(call.instrument(tracing::info_span!("caller", n))))
        .collect();
    wait_for(
        "a statement waiting for the lock",
        Duration::from_secs(10),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&own)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.rollback().await.unwrap();
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn a_lone_calls_statements_are_in_its_own_trace() {
    let (_db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
    let store = Store::new(pool, OutboxSignal::default());
    let order_id = place(&store, "k").await.record.order_id;
    let (recorder, _guard) = record();
    let reader = HistoryReader::start(store, BatchMetrics::default());

    let (record, _) = reader
        .read(order_id, 0)
        .instrument(tracing::info_span!("caller"))
        .await
        .expect("read");
    assert_eq!(record.order_id, order_id);

    let recorded = recorder.0.lock().expect("not poisoned");
    let [caller] = recorded.named("caller")[..] else {
        panic!("one caller span: {recorded:#?}")
    };
    let [batch] = recorded.named("batch")[..] else {
        panic!("one batch span: {recorded:#?}")
    };
    assert_eq!(recorded.spans[batch].parent, Some(caller), "{recorded:#?}");
    assert_eq!(recorded.field(batch, "queue"), "history_reader");
    assert_eq!(recorded.field(batch, "calls"), "1");
    assert!(recorded.follows.is_empty(), "{recorded:#?}");
    // The store's statement is under the batch, so in the caller's trace.
    let [read] = recorded.named("with_history_all")[..] else {
        panic!("one read span: {recorded:#?}")
    };
    assert_eq!(recorded.spans[read].parent, Some(batch), "{recorded:#?}");
}

#[tokio::test]
async fn every_call_served_together_is_linked_to_the_batch_that_served_it() {
    let (db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
    let store = Store::new(pool, OutboxSignal::default());
    let mut placed = Vec::new();
    for n in 0..30 {
        placed.push(place(&store, &format!("k{n}")).await.record.order_id);
    }
    let (recorder, _guard) = record();
    let reader = HistoryReader::start(store, BatchMetrics::default());
    let reads = placed
        .iter()
        .map(|&order_id| {
            let reader = reader.clone();
            async move { reader.read(order_id, 0).await }
        })
        .collect();
    let answers = while_locked(&db, "order_status_history", reads).await;
    for (answer, order_id) in answers.into_iter().zip(&placed) {
        let (record, _) = answer.unwrap();
        assert_eq!(record.order_id, *order_id);
    }

    let recorded = recorder.0.lock().expect("not poisoned");
    let batches = recorded.named("batch");
    // Each caller is tied to one batch: the batch's parent, or followed from by it.
    let mut served_by: HashMap<usize, Vec<usize>> = HashMap::new();
    for &batch in &batches {
        let followed = recorded
            .follows
            .iter()
            .filter(|&&(span, _)| span == batch)
            .map(|&(_, caller)| caller);
        for caller in recorded.spans[batch].parent.into_iter().chain(followed) {
            assert_eq!(recorded.spans[caller].name, "caller", "{recorded:#?}");
            served_by.entry(caller).or_default().push(batch);
        }
        let tied = served_by.values().filter(|b| b.contains(&batch)).count();
        assert_eq!(
            recorded.field(batch, "calls"),
            tied.to_string(),
            "batch {batch}: {recorded:#?}"
        );
    }
    for caller in recorded.named("caller") {
        let n = recorded.field(caller, "n");
        assert_eq!(
            served_by.get(&caller).map(Vec::len),
            Some(1),
            "caller {n} is tied to one batch: {served_by:?}"
        );
    }
    assert!(
        batches.len() < 30,
        "{} batches for 30 reads: none were served together",
        batches.len()
    );
    // Every read statement ran under a batch.
    for read in recorded.named("with_history_all") {
        let parent = recorded.spans[read].parent.expect("a parent");
        assert_eq!(recorded.spans[parent].name, "batch", "{recorded:#?}");
    }
}

#[tokio::test]
async fn a_call_served_again_alone_is_served_in_its_own_span() {
    let (db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
    // The catalogue lists the SKU, and the database refuses every order of one customer, so
    // the shared statement of the batch that holds hers fails.
    sqlx::raw_sql(
        "INSERT INTO catalogue (sku, available, revision) VALUES ('sku-a', 10, 1);
         ALTER TABLE orders ADD CONSTRAINT no_mallory CHECK (customer_id <> 'mallory');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (recorder, _guard) = record();
    let placer = Placer::start(
        Store::new(pool, OutboxSignal::default()),
        Topics::default(),
        BatchMetrics::default(),
    );
    let calls = (0..20)
        .map(|n| {
            let (placer, customer) = (placer.clone(), if n == 10 { "mallory" } else { "ana" });
            let order = order(customer, &format!("k{n}"), 100);
            async move { placer.place(order).await }
        })
        .collect();
    let answers = while_locked(&db, "orders", calls).await;
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer.is_err(), n == 10, "order {n}: {answer:?}");
    }

    let recorded = recorder.0.lock().expect("not poisoned");
    let callers = recorded.named("caller");
    let mallory = callers
        .iter()
        .copied()
        .find(|&c| recorded.field(c, "n") == "10")
        .expect("mallory's call");
    // Mallory's order was placed again alone, in her call's own span.
    let alone: Vec<usize> = recorded
        .named("place_all")
        .into_iter()
        .filter(|&p| recorded.spans[p].parent == Some(mallory))
        .collect();
    assert_eq!(alone.len(), 1, "{recorded:#?}");
    // Every statement's span is under a call's span, directly (served alone) or through its
    // batch: none is a root, lost from every trace.
    for span in recorded.named("place_all") {
        let parent = recorded.spans[span].parent.expect("a parent");
        let name = recorded.spans[parent].name;
        assert!(
            name == "caller" || name == "batch",
            "place_all under {name}"
        );
    }
}
