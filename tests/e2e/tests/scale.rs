//! Several instances of every service on six partitions, as real processes, with real faults:
//! an instance SIGKILLed and not restarted, restarted with its id, replaced by one with a new
//! id, a rolling restart, scaling out to three and back, the broker restarted, and a stalled
//! partition. After each, the fault suite's invariants hold (every order terminal exactly
//! once through gap-free versions, stock exact, one charge per paid order, one refund per
//! refunded order), every order is terminal within a stated bound after the fault, and
//! health tells the truth while a partition is stalled.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use orderflow_e2e::load;
use orderflow_e2e::process::{Databases, Options, Proc, ProcessSystem};
use orderflow_e2e::wait_for;

const SERVICES: [Proc; 3] = [Proc::Order, Proc::Payment, Proc::Inventory];
const PARTITIONS: i32 = 6;
const ORDERS: usize = 60;
const INTERVAL: Duration = Duration::from_millis(50);
/// Every order must be terminal this long after the fault at the latest: a session timeout
/// (10 s), a rebalance, and the backlog.
const BOUND: Duration = Duration::from_secs(90);

type Load = load::Running;

/// Two instances of each service (room for a third), and a load of `orders` in the background.
async fn start_scaled(orders: usize, options: Options) -> (ProcessSystem, Arc<AtomicUsize>, Load) {
    let system = ProcessSystem::start_with(Databases::shared().await, options).await;
    let (progress, running) = load::start(&system, orders, INTERVAL).await;
    (system, progress, running)
}

/// Waits for the load, then for every order to be terminal within [`BOUND`] of `fault`, and
/// checks the invariants.
async fn finish(system: &ProcessSystem, running: Load, fault: Instant) {
    let placed = running.await.expect("load task");
    let left = BOUND.saturating_sub(fault.elapsed());
    load::wait_all_terminal(&system.load_gateway(), &placed, left).await;
    eprintln!("every order terminal {:?} after the fault", fault.elapsed());
    load::verify(system, &placed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_of_each_service_killed_for_good() {
    let (mut system, progress, running) =
        start_scaled(ORDERS, Options::scaled(2, PARTITIONS)).await;
    load::wait_progress(&progress, 15).await;
    let fault = Instant::now();
    for p in SERVICES {
        system.kill_instance(p, 2).await;
    }
    finish(&system, running, fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_and_restarted_with_their_ids() {
    let (mut system, progress, running) =
        start_scaled(ORDERS, Options::scaled(2, PARTITIONS)).await;
    load::wait_progress(&progress, 15).await;
    let fault = Instant::now();
    for p in SERVICES {
        system.kill_instance(p, 1).await;
    }
    // The same admin ports: the same derived instance ids.
    for p in SERVICES {
        system.start_instance(p, 1).await;
    }
    finish(&system, running, fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_and_replaced_by_new_ones() {
    let (mut system, progress, running) =
        start_scaled(ORDERS, Options::scaled(2, PARTITIONS)).await;
    load::wait_progress(&progress, 15).await;
    let fault = Instant::now();
    for p in SERVICES {
        system.kill_instance(p, 2).await;
    }
    // Instance 3 has its own admin port, hence a new id; the dead member's id never returns.
    for p in SERVICES {
        system.start_instance(p, 3).await;
    }
    finish(&system, running, fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load() {
    let (mut system, progress, running) =
        start_scaled(2 * ORDERS, Options::scaled(2, PARTITIONS)).await;
    load::wait_progress(&progress, 10).await;
    let fault = Instant::now();
    for p in SERVICES {
        for n in [1, 2] {
            assert_eq!(
                system.terminate_instance(p, n).await,
                Some(0),
                "{p:?} {n} stops gracefully on SIGTERM"
            );
            system.start_instance(p, n).await;
        }
    }
    finish(&system, running, fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_out_to_three_instances_and_back_under_load() {
    let (mut system, progress, running) =
        start_scaled(2 * ORDERS, Options::scaled(1, PARTITIONS)).await;
    load::wait_progress(&progress, 10).await;
    let fault = Instant::now();
    for n in [2, 3] {
        for p in SERVICES {
            system.start_instance(p, n).await;
        }
    }
    load::wait_progress(&progress, 60).await;
    for n in [3, 2] {
        for p in SERVICES {
            assert_eq!(system.terminate_instance(p, n).await, Some(0));
        }
    }
    finish(&system, running, fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_load_with_two_instances() {
    let (mut system, progress, running) =
        start_scaled(2 * ORDERS, Options::scaled(2, PARTITIONS)).await;
    load::wait_progress(&progress, 15).await;
    system.broker.stop(false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    system.broker.restart().await;
    let fault = Instant::now();
    finish(&system, running, fault).await;
}

/// The problems `/health` of an admin endpoint reports, as `component: reason` lines; empty
/// while it is healthy.
async fn problems(admin_url: &str) -> Option<String> {
    let body: serde_json::Value = reqwest::get(format!("{admin_url}/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let problems = body["problems"].as_array()?;
    Some(
        problems
            .iter()
            .map(|p| format!("{}: {}", p["component"], p["reason"]))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// One payment instance is frozen (SIGSTOP): until its session expires, its partitions have
/// lag and no progress, and the other instance's `/health` says so, naming group, topic and
/// partition. Once the group has moved on, health is ok again and every order completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partition_degrades_the_health_of_the_other_instances() {
    let options = Options {
        stall_threshold_secs: Some(3),
        ..Options::scaled(2, PARTITIONS)
    };
    let (system, progress, running) = start_scaled(ORDERS, options).await;
    load::wait_progress(&progress, 5).await;
    let fault = Instant::now();
    system.signal_instance(Proc::Payment, 2, "STOP");
    let survivor = system.admin_url_of((Proc::Payment, 1));
    let group = format!("{}payment", system.topic_prefix);
    let reason = wait_for(
        "the survivor's health to name the stalled partition",
        Duration::from_secs(30),
        || async {
            let problems = problems(&survivor).await?;
            problems.contains("group-progress").then_some(problems)
        },
    )
    .await;
    assert!(
        reason.contains(&format!(
            "group {group} is stalled on topic {}orders partition",
            system.topic_prefix
        )),
        "health names group, topic and partition: {reason}"
    );
    // The frozen member's session expires; the survivor takes its partitions and catches up.
    wait_for(
        "the survivor's health to be ok again",
        Duration::from_secs(60),
        || async { problems(&survivor).await?.is_empty().then_some(()) },
    )
    .await;
    system.signal_instance(Proc::Payment, 2, "CONT");
    finish(&system, running, fault).await;
}
