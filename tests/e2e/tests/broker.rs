//! The local broker's consumer groups and fetches, as orderflow's services rely on them,
//! checked with plain librdkafka members run as separate processes (`group_member`) so that
//! one can be SIGKILLed. Each fixes a defect of tansu 0.6.0 that a patch in
//! scripts/tansu-patches/ removes (docs/tansu.md); Apache Kafka behaves this way as well.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orderflow_e2e::{test_broker, wait_for};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PARTITIONS: i32 = 6;

/// A fresh topic of `partitions` partitions and a fresh group name.
async fn topic_and_group(partitions: i32) -> (String, String) {
    let suffix = orderflow_testkit::unique_suffix();
    let topic = format!("groups-{suffix}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", test_broker())
        .create()
        .expect("admin client");
    let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("create topic");
    assert!(
        results.iter().all(Result::is_ok),
        "create {topic}: {results:?}"
    );
    (topic, format!("group-{suffix}"))
}

/// One `group_member` process and the last assignment it printed.
struct Member {
    child: Child,
    assigned: Arc<Mutex<Option<BTreeSet<i32>>>>,
    fatal: Arc<Mutex<Option<String>>>,
}

impl Member {
    fn start(topic: &str, group: &str, instance_id: Option<&str>) -> Member {
        let mut command = Command::new(env!("CARGO_BIN_EXE_group_member"));
        command
            .args([&test_broker(), topic, group])
            .args(instance_id)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start group_member");
        let assigned = Arc::new(Mutex::new(None));
        let fatal = Arc::new(Mutex::new(None));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (a, f) = (assigned.clone(), fatal.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(list) = line.strip_prefix("assigned ") {
                    let set = list.split(',').filter_map(|p| p.parse().ok()).collect();
                    *a.lock().unwrap() = Some(set);
                } else if let Some(error) = line.strip_prefix("fatal ") {
                    *f.lock().unwrap() = Some(error.to_owned());
                }
            }
        });
        Member {
            child,
            assigned,
            fatal,
        }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.assigned.lock().unwrap().clone().unwrap_or_default()
    }

    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap");
    }
}

/// Waits until the members' assignments are disjoint, cover every partition, and each
/// member in `owners` has some; returns the assignments.
async fn wait_covered(members: &[&Member], what: &str, timeout: Duration) -> Vec<BTreeSet<i32>> {
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    wait_for(what, timeout, || async {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assigned()).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        (union == all && total == all.len() && sets.iter().all(|s| !s.is_empty())).then_some(sets)
    })
    .await
}

/// A member killed without leaving: its partitions go to the survivor once its session
/// (6 s) expires. tansu 0.6.0 left them assigned to the dead member for good.
async fn survivor_takes_over(static_ids: bool) {
    let (topic, group) = topic_and_group(PARTITIONS).await;
    let ids = |id| static_ids.then_some(id);
    let a = Member::start(&topic, &group, ids("a"));
    wait_covered(
        &[&a],
        "the first member to own every partition",
        Duration::from_secs(60),
    )
    .await;
    let mut b = Member::start(&topic, &group, ids("b"));
    wait_covered(
        &[&a, &b],
        "the partitions to be shared",
        Duration::from_secs(60),
    )
    .await;
    let killed = Instant::now();
    b.kill().await;
    wait_covered(
        &[&a],
        "the survivor to own every partition",
        Duration::from_secs(45),
    )
    .await;
    eprintln!(
        "survivor owned every partition {:?} after the kill",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dynamic_members_partitions_go_to_the_survivor() {
    survivor_takes_over(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_static_members_partitions_go_to_the_survivor() {
    survivor_takes_over(true).await;
}

/// Static members killed and restarted with their old ids, one after the other, get
/// partitions again: tansu 0.6.0 could leave the group with a leader that was no longer a
/// member, so that nobody could send the assignment and everyone rejoined for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_members_restarted_with_their_ids_share_the_partitions_again() {
    let (topic, group) = topic_and_group(PARTITIONS).await;
    let mut a = Member::start(&topic, &group, Some("a"));
    let mut b = Member::start(&topic, &group, Some("b"));
    wait_covered(
        &[&a, &b],
        "the partitions to be shared",
        Duration::from_secs(60),
    )
    .await;
    for round in 0..3 {
        // Kill the leader and the other member in turn, restart each with its id.
        a.kill().await;
        a = Member::start(&topic, &group, Some("a"));
        wait_covered(
            &[&a, &b],
            &format!("round {round}: shared again after a restarted"),
            Duration::from_secs(60),
        )
        .await;
        b.kill().await;
        b = Member::start(&topic, &group, Some("b"));
        wait_covered(
            &[&a, &b],
            &format!("round {round}: shared again after b restarted"),
            Duration::from_secs(60),
        )
        .await;
    }
}

/// Two processes with one `group.instance.id`: the newer one takes the member's place and
/// the older one is fenced (a fatal error in librdkafka), as Apache Kafka does. tansu 0.6.0
/// let both consume the same partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_instance_id_fences_the_first() {
    let (topic, group) = topic_and_group(PARTITIONS).await;
    let mut first = Member::start(&topic, &group, Some("same"));
    wait_covered(
        &[&first],
        "the first member to own every partition",
        Duration::from_secs(60),
    )
    .await;
    let second = Member::start(&topic, &group, Some("same"));
    let error = wait_for(
        "the first member to be fenced",
        Duration::from_secs(30),
        || async { first.fatal.lock().unwrap().clone() },
    )
    .await;
    assert!(
        error.contains("FENCED") || error.contains("Fenced") || error.contains("fenced"),
        "fatal error of the first member: {error}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), first.child.wait())
        .await
        .expect("the fenced member exits")
        .expect("reap");
    assert_eq!(status.code(), Some(3), "the fenced member's exit");
    wait_covered(
        &[&second],
        "the second member to own every partition",
        Duration::from_secs(30),
    )
    .await;
}

/// A consumer of `topic` in `group` whose fetches wait up to `wait_ms` for data, and a
/// producer that sends each record at once.
fn waiting_consumer_and_producer(
    topic: &str,
    group: &str,
    wait_ms: u64,
) -> (StreamConsumer, FutureProducer) {
    fetching_consumer_and_producer(topic, group, wait_ms, &[])
}

/// As [`waiting_consumer_and_producer`], the consumer with the fetch settings `fetch` too.
fn fetching_consumer_and_producer(
    topic: &str,
    group: &str,
    wait_ms: u64,
    fetch: &[(&str, &str)],
) -> (StreamConsumer, FutureProducer) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", test_broker())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", wait_ms.to_string());
    for (key, value) in fetch {
        config.set(*key, *value);
    }
    let consumer: StreamConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", test_broker())
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    (consumer, producer)
}

/// Sends `payload` to `topic` (to `partition` if given) and waits for the acknowledgement.
async fn produce(producer: &FutureProducer, topic: &str, partition: Option<i32>, payload: &str) {
    let mut record = FutureRecord::to(topic).key("k").payload(payload);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send(record, Duration::from_secs(5))
        .await
        .expect("produce");
}

/// The pause before append `i` after the first: uneven, so that the appends do not line
/// up with any poll interval of the broker.
fn uneven_gap(i: usize) -> Duration {
    Duration::from_millis(150 + 37 * (i as u64 % 5))
}

/// A fetch is answered as soon as a record is there, not after the consumer's whole
/// `fetch.wait.max.ms` (tansu 0.6.0 held every fetch that long, which bounded each hop of an
/// order at the wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_is_answered_when_a_record_arrives() {
    const WAIT_MS: u64 = 3_000;
    let (topic, group) = topic_and_group(1).await;
    let (consumer, producer) = waiting_consumer_and_producer(&topic, &group, WAIT_MS);
    let mut latencies = BTreeMap::new();
    for i in 0..5 {
        // Let the consumer settle into waiting on an empty partition first.
        tokio::time::sleep(Duration::from_millis(if i == 0 { 4_000 } else { 500 })).await;
        let sent = Instant::now();
        produce(&producer, &topic, None, "v").await;
        tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("a record within 10 s")
            .expect("consume");
        latencies.insert(i, sent.elapsed());
    }
    let worst = latencies.values().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_millis(WAIT_MS / 2),
        "produce→consume took up to {worst:?} with fetch.wait.max.ms {WAIT_MS}: {latencies:?}"
    );
}

/// A fetch waiting on an empty partition is woken by the append itself, as Apache Kafka's
/// fetch purgatory does, rather than finding the record at its next poll of storage: the
/// time from the producer's acknowledgement to the consumer is a few milliseconds, not up to
/// a poll interval (50 ms with 0003 alone). This is what lets orderflow's consumers wait
/// 500 ms per fetch without costing any hop latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_is_woken_by_the_append() {
    const RECORDS: usize = 15;
    let (topic, group) = topic_and_group(1).await;
    let (consumer, producer) = waiting_consumer_and_producer(&topic, &group, 3_000);
    let mut latencies = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        // Let the consumer settle into a waiting fetch first; the uneven gaps keep the
        // appends from lining up with any poll interval.
        let gap = if i == 0 {
            Duration::from_secs(4)
        } else {
            uneven_gap(i)
        };
        tokio::time::sleep(gap).await;
        produce(&producer, &topic, None, "v").await;
        let acknowledged = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("a record within 10 s")
            .expect("consume");
        latencies.push(acknowledged.elapsed());
    }
    latencies.sort();
    let median = latencies[RECORDS / 2];
    assert!(
        median < Duration::from_millis(15),
        "acknowledged→consumed: median {median:?}, all {latencies:?}"
    );
}

/// A fetch that asks for `fetch.min.bytes` is answered once that many record bytes are
/// there, not at the first record and not at the end of its wait: the appends below the
/// threshold wake it without answering it, and the append that makes up the bytes answers
/// it at once. The broker reads storage again only when the bytes appended since its last
/// read could make up the rest (patch 0014); one that missed the last append would answer
/// at its next 500 ms poll of storage, so every round must end within 150 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_waits_for_its_min_bytes_and_is_answered_when_they_are_there() {
    // Far longer than the test: a wait that ran out mid-round would answer with too few.
    const WAIT_MS: u64 = 30_000;
    const RECORD_BYTES: usize = 1_000;
    const MIN_BYTES: usize = 4 * RECORD_BYTES;
    let (topic, group) = topic_and_group(1).await;
    let (consumer, producer) = fetching_consumer_and_producer(
        &topic,
        &group,
        WAIT_MS,
        &[("fetch.min.bytes", &MIN_BYTES.to_string())],
    );
    let payload = "x".repeat(RECORD_BYTES);
    let mut latencies = Vec::new();
    for round in 0..4 {
        let gap = if round == 0 {
            Duration::from_secs(4)
        } else {
            uneven_gap(round)
        };
        tokio::time::sleep(gap).await;
        // Three records: under the fetch's min bytes, so none is answered yet.
        for _ in 0..3 {
            produce(&producer, &topic, None, &payload).await;
            tokio::time::sleep(uneven_gap(round) / 3).await;
        }
        if let Ok(early) = tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await {
            panic!(
                "round {round}: a record was consumed before {MIN_BYTES} bytes were there: {:?}",
                early.map(|m| m.offset())
            );
        }
        produce(&producer, &topic, None, &payload).await;
        let acknowledged = Instant::now();
        for record in 0..4 {
            tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("round {round}: record {record} not consumed in 10 s"))
                .expect("consume");
        }
        latencies.push(acknowledged.elapsed());
    }
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_millis(150),
        "the append that made up fetch.min.bytes → consumed: worst {worst:?}, all {latencies:?}"
    );
}

/// A fetch waiting on several partitions is woken by an append to any one of them and
/// returns that partition's new records at once, whichever partition it is and however the
/// appends interleave. The broker remembers each partition's offsets between fetches and
/// reads a partition from storage again only after an append to it (patch 0012), so a
/// partition whose append was not noticed would wait out the broker's 2 s trust in what it
/// knew, or the consumer's 3 s fetch wait: every record must arrive within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_returns_the_records_of_whichever_partition_is_appended_to() {
    // Partitions in an order that is neither ascending nor the consumer's own, with some
    // appends to two partitions at once.
    const ROUNDS: [&[i32]; 12] = [
        &[3],
        &[0],
        &[5, 1],
        &[4],
        &[2],
        &[1],
        &[5],
        &[0, 3],
        &[2],
        &[4, 5],
        &[3],
        &[1],
    ];
    let (topic, group) = topic_and_group(PARTITIONS).await;
    let (consumer, producer) = waiting_consumer_and_producer(&topic, &group, 3_000);
    // One record in every partition first, not timed: a consumer's first record from a
    // fresh topic can take a whole fetch wait on either broker, patched or not, before it
    // settles into waiting at each partition's end.
    for partition in 0..PARTITIONS {
        produce(&producer, &topic, Some(partition), "first").await;
    }
    for _ in 0..PARTITIONS {
        tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("the first records within 10 s")
            .expect("consume");
    }
    let mut latencies = Vec::new();
    for (round, partitions) in ROUNDS.iter().enumerate() {
        let gap = if round == 0 {
            Duration::from_secs(2)
        } else {
            uneven_gap(round)
        };
        tokio::time::sleep(gap).await;
        for &partition in *partitions {
            produce(
                &producer,
                &topic,
                Some(partition),
                &format!("{round}-{partition}"),
            )
            .await;
        }
        let acknowledged = Instant::now();
        let mut expected: BTreeSet<String> = partitions
            .iter()
            .map(|partition| format!("{round}-{partition}"))
            .collect();
        while !expected.is_empty() {
            let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("round {round}: {expected:?} not consumed in 10 s"))
                .expect("consume");
            let payload =
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            assert!(
                expected.remove(&payload),
                "round {round}: consumed {payload:?} (partition {}, offset {}), expected {expected:?}",
                message.partition(),
                message.offset()
            );
            latencies.push((acknowledged.elapsed(), payload));
        }
    }
    latencies.sort();
    let (median, _) = &latencies[latencies.len() / 2];
    let (worst, which) = latencies.last().expect("records");
    assert!(
        *worst < Duration::from_secs(1) && *median < Duration::from_millis(15),
        "acknowledged→consumed: median {median:?}, worst {worst:?} ({which}), all {latencies:?}"
    );
}

/// The broker's sqlite storage has the index on `header (topition, offset_id)` that tansu
/// 0.6.0 lacked (without it every fetched record scanned the whole header table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_indexes_record_headers() {
    let broker = orderflow_e2e::process::Broker::start().await;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(','.join(r[0] for r in c.execute(\"select name from sqlite_master where type = 'index' and tbl_name = 'header'\")))",
        )
        .arg(broker.data_dir().join("tansu.db"))
        .output()
        .expect("python3");
    let indexes = String::from_utf8_lossy(&output.stdout);
    assert!(
        indexes
            .split(',')
            .any(|i| i.trim() == "orderflow_header_record"),
        "header indexes: {indexes:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// DescribeGroups answers with the group's members (tansu patch 0009: it failed for every
/// group that exists, closing the connection): `orderflow replay` relies on it to refuse
/// while a service's instances are running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_described_with_its_members() {
    let (topic, group) = topic_and_group(PARTITIONS).await;
    let kafka = orderflow_e2e::kafka_args(test_broker(), String::new());
    assert_eq!(
        orderflow_platform::replay::group_members(&kafka, &group)
            .await
            .expect("describe a group nobody joined"),
        0
    );
    let mut member = Member::start(&topic, &group, None);
    wait_covered(&[&member], "one member", Duration::from_secs(30)).await;
    let members = orderflow_platform::replay::group_members(&kafka, &group)
        .await
        .expect("describe a group with a member");
    assert_eq!(members, 1);
    member.kill().await;
    // A killed member stays until its session times out (6 s), then the group is empty.
    wait_for("the group to be empty", Duration::from_secs(30), || async {
        (orderflow_platform::replay::group_members(&kafka, &group)
            .await
            .ok()?
            == 0)
            .then_some(())
    })
    .await;
}
