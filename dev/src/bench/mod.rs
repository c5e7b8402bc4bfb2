//! `orderflow bench`: how many orders per second the system sustains and how long a customer
//! waits for COMPLETED, beside the limits of this machine measured in the same run (the
//! broker's raw produce→consume rate and PostgreSQL's rate for the per-order write pattern),
//! with the CPU each component used in every run. Prints a table and writes the same figures
//! as JSON.

mod batching;
mod cpu;
mod hops;
pub mod limits;
mod runs;
mod targets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use orderflow_platform::{KafkaArgs, Published, RetentionArgs};
use serde::Serialize;

use runs::Readers;

#[derive(Args)]
pub struct BenchArgs {
    /// The gateway's URL.
    #[arg(
        long,
        env = "ORDERFLOW_GATEWAY_URL",
        default_value = "https://127.0.0.1:9200"
    )]
    pub gateway: String,
    /// The offered rate of the fixed-rate run, in orders per second: by default the rate of
    /// the latency target (p99 to COMPLETED at most 150 ms at 200/s).
    #[arg(long, default_value_t = targets::LATENCY_RATE)]
    pub rate: f64,
    /// Seconds each run offers load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Offer the fixed rate this many times back to back: a soak. Each run is reported with
    /// every component's memory (PSS) at its end, and the idle cost is measured again after
    /// the last, so memory growth over many orders shows run by run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Rates tried by the find-the-maximum search, in order; it stops at the first rate the
    /// system does not sustain.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,300,350,400,450,500,600,800,1000"
    )]
    pub max_rates: Vec<f64>,
    /// Seconds of each find-the-maximum step.
    #[arg(long, default_value_t = 10)]
    pub step_seconds: u64,
    /// Skip the find-the-maximum search.
    #[arg(long)]
    pub no_max: bool,
    /// Skip measuring the broker's and PostgreSQL's limits.
    #[arg(long)]
    pub no_limits: bool,
    /// Gateway connections the load is spread over. Each order is watched to its end on one
    /// of them, and the gateway allows 100 open WatchOrder streams per connection by default:
    /// 32 connections watch 3,200 orders at once, enough for a saturated step. Beyond that an
    /// order's watch waits for one to end (counted, and in its latency), as a client keeping
    /// to the gateway's limits would.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// SKUs the orders are spread over (round-robin).
    #[arg(long, default_value_t = 50)]
    pub skus: usize,
    /// PostgreSQL server for the write-pattern limit (a scratch database is created and dropped).
    #[arg(
        long,
        env = "ORDERFLOW_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-results/latest.json")]
    pub out: PathBuf,
    /// Use the system as it is: do not run `up` first.
    #[arg(long)]
    pub no_up: bool,
    /// Do not check that every status of every order of a fixed-rate run was delivered by
    /// the notifications service (for a system run without it). Checked by default, through
    /// the notifications service's database as the services' settings name it.
    #[arg(long)]
    pub no_notifications_check: bool,
    /// Do not read where each fixed-rate run's time went hop by hop (for a system run without
    /// the history service). Read by default from the history service's database, as the
    /// services' settings name it.
    #[arg(long)]
    pub no_hops: bool,
    /// The services' retention settings, as `up` starts them (the same flags and variables):
    /// the PostgreSQL limit's relay treats acknowledged outbox rows as the services do.
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub up: crate::local::UpArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    memory_gib: f64,
    cpu: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    // Every CPU of the machine, not only those this process may use (a pinned run).
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    Machine {
        cores: if processors > 0 {
            processors
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        },
        memory_gib: kib / 1024.0 / 1024.0,
        cpu,
    }
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    configuration: Vec<(String, String)>,
    limits: Vec<limits::Limit>,
    runs: Vec<runs::RunResult>,
    /// The highest offered rate the system sustained (achieved ≥ 95 % of offered, no errors,
    /// every order correct).
    max_sustained_per_sec: Option<f64>,
    /// orderflow's best achieved rate as a fraction of the tighter limit.
    fraction_of_limit: Option<f64>,
    /// What the system costs with no load at all, after the warm-up.
    idle: Option<cpu::Usage>,
    /// The same after the last fixed-rate run, when it was repeated (`--repeat`).
    idle_after_runs: Option<cpu::Usage>,
    /// Issue 13's targets, each judged from the figures above.
    targets: Vec<targets::Target>,
}

/// How long the idle measurement lasts, after a pause for the warm-up's work to drain.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// The CPU the system uses while nothing is offered.
async fn idle_usage() -> cpu::Usage {
    tokio::time::sleep(IDLE_SETTLE).await;
    let before = cpu::Snapshot::take();
    tokio::time::sleep(IDLE_WINDOW).await;
    before.usage_until(&cpu::Snapshot::take())
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if !args.no_up {
        crate::local::up(args.up.clone()).await?;
    }
    // The broker `up` started serves TLS and SCRAM logins: the bench's own clients log in.
    let home = std::path::absolute(&args.up.home.home)?;
    crate::local::secure_for_tools(&home, &mut args.kafka)?;
    let machine = machine();
    // What runs, as the broker sees it: partitions of the `orders` topic.
    let partitions = {
        let (kafka, topic) = (args.kafka.clone(), args.kafka.topics().orders);
        tokio::task::spawn_blocking(move || {
            orderflow_platform::progress::read(
                &kafka,
                "bench-probe",
                &[topic],
                Duration::from_secs(5),
            )
        })
        .await?
        .map(|p| p.len().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    let (load_generator_cpus, system_cpus) = cpu::allowed_cpus();
    let configuration = vec![
        ("CPUs of the system's processes".to_owned(), system_cpus),
        ("CPUs of the load generator".to_owned(), load_generator_cpus),
        ("topic partitions".to_owned(), partitions),
        (
            "instances per service".to_owned(),
            if args.no_up {
                "as already running".to_owned()
            } else {
                args.up.instances.to_string()
            },
        ),
        (
            "consumer fetch.wait.max.ms".to_owned(),
            args.kafka.fetch_wait_ms.to_string(),
        ),
        (
            "consumer fetch.min.bytes".to_owned(),
            args.kafka.fetch_min_bytes.to_string(),
        ),
        (
            "producer linger.ms".to_owned(),
            args.kafka.linger_ms.to_string(),
        ),
        (
            "consumer batch (messages per transaction, at most)".to_owned(),
            args.kafka.consumer_batch.to_string(),
        ),
        ("producer".to_owned(), "idempotent, acks=all".to_owned()),
        (
            "outbox rows once acknowledged".to_owned(),
            match Published::for_retention(args.retention.outbox) {
                Published::Deleted => Published::Deleted.to_string(),
                Published::Kept => format!(
                    "{}, purged after {:?}",
                    Published::Kept,
                    args.retention.outbox
                ),
            },
        ),
        (
            "gateway connections".to_owned(),
            args.connections.to_string(),
        ),
        ("SKUs".to_owned(), args.skus.to_string()),
        (
            "payment method".to_owned(),
            "pm_card_visa (every order should COMPLETE)".to_owned(),
        ),
    ];
    eprintln!(
        "machine: {} cores, {:.1} GiB, {}",
        machine.cores, machine.memory_gib, machine.cpu
    );

    let mut limits = Vec::new();
    if !args.no_limits {
        eprintln!("measuring the broker's produce→consume limit ...");
        limits.push(limits::broker_limit(&args.kafka, 250, 20_000).await?);
        let batch = args.kafka.consumer_batch.max(1);
        eprintln!(
            "measuring PostgreSQL's limit for the per-order write pattern (consumer batches of {batch}) ..."
        );
        let ten_seconds = Duration::from_secs(10);
        let published = Published::for_retention(args.retention.outbox);
        limits
            .push(limits::postgres_limit(&args.postgres, 8, ten_seconds, batch, published).await?);
        if batch > 1 {
            eprintln!("measuring it again with one transaction per message, for comparison ...");
            limits.push(
                limits::postgres_limit(&args.postgres, 8, ten_seconds, 1, published)
                    .await?
                    .for_comparison(),
            );
        }
    }

    let key = args.up.home.home.join(orderflow_auth::DEV_SIGNING_KEY_FILE);
    let issuer = orderflow_auth::LocalIssuer::read(&key)?;
    let tls = crate::local::client_tls(&args.up.home.home, &args.gateway)?;
    let gateway =
        crate::load::Gateway::lazy(&args.gateway, args.connections, tls, Some(Arc::new(issuer)))?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let skus = runs::skus(&run_id, args.skus);
    let stock: Vec<(String, i32)> = skus
        .iter()
        .map(|s| (s.clone(), runs::INITIAL_STOCK))
        .collect();
    gateway.stock_up(&stock).await?;

    let mut runs = Vec::new();
    // A short warm-up, not reported: connections, schema ids and consumer groups settle.
    runs::run(
        "warm-up",
        &gateway,
        &skus,
        50.0,
        Duration::from_secs(2),
        Readers::default(),
    )
    .await?;
    let notifications = if args.no_notifications_check {
        None
    } else {
        let url = crate::local::notifications_database_url()?;
        Some(runs::Notifications::connect(url.expose()).await?)
    };
    let history = if args.no_hops {
        None
    } else {
        let url = crate::local::history_database_url()?;
        Some(hops::History::connect(url.expose()).await?)
    };
    let batching = batching::Scraper::new(crate::local::metrics_endpoints(&home)?);
    eprintln!(
        "idle: the system's CPU with nothing offered, for {}s ...",
        IDLE_WINDOW.as_secs()
    );
    let idle = Some(idle_usage().await);
    for round in 1..=args.repeat {
        let label = if args.repeat == 1 {
            format!("fixed {}/s", args.rate)
        } else {
            format!("fixed {}/s #{round}", args.rate)
        };
        eprintln!("{label}: {} orders/s for {}s ...", args.rate, args.seconds);
        let run = runs::run(
            &label,
            &gateway,
            &skus,
            args.rate,
            Duration::from_secs(args.seconds),
            Readers {
                notifications: notifications.as_ref(),
                history: history.as_ref(),
                batching: Some(&batching),
            },
        )
        .await?;
        eprintln!(
            "  {:.1}/s achieved, {}; memory MiB (PSS): {}",
            run.achieved_per_sec,
            run.correctness,
            per_component(&run.cpu.memory_mib, 0)
        );
        runs.push(run);
    }
    let fixed_runs = runs.len();
    let idle_after_runs = if args.repeat > 1 {
        eprintln!(
            "idle again after {} orders, for {}s ...",
            runs.iter().map(|r| r.orders).sum::<usize>(),
            IDLE_WINDOW.as_secs()
        );
        Some(idle_usage().await)
    } else {
        None
    };
    let mut max_sustained = None;
    if !args.no_max {
        for &rate in &args.max_rates {
            eprintln!(
                "find-the-maximum: {rate} orders/s for {}s ...",
                args.step_seconds
            );
            let result = runs::run(
                &format!("max step {rate}/s"),
                &gateway,
                &skus,
                rate,
                Duration::from_secs(args.step_seconds),
                Readers {
                    batching: Some(&batching),
                    ..Readers::default()
                },
            )
            .await?;
            let ok = result.sustained;
            runs.push(result);
            if !ok {
                break;
            }
            max_sustained = Some(rate);
        }
    }

    let best = runs
        .iter()
        .filter(|r| r.correct)
        .map(|r| r.achieved_per_sec)
        .fold(0.0, f64::max);
    let tightest = limits
        .iter()
        .filter(|l| l.bounds_the_system)
        .map(|l| l.orders_per_sec)
        .fold(f64::INFINITY, f64::min);
    let fraction = (tightest.is_finite() && tightest > 0.0).then(|| best / tightest);
    let targets = targets::judge(&runs, max_sustained, idle.as_ref());
    let report = Report {
        targets,
        machine,
        configuration,
        limits,
        runs,
        max_sustained_per_sec: max_sustained,
        fraction_of_limit: fraction,
        idle,
        idle_after_runs,
    };
    print_table(&report);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nJSON report: {}", args.out.display());
    // The fixed-rate runs are the ones a user runs the system at: every order must end
    // COMPLETED and stock must be exact. Find-the-maximum steps past the limit may leave
    // orders unfinished when the step ends; they are reported, not failed.
    for fixed in &report.runs[..fixed_runs] {
        anyhow::ensure!(
            fixed.correct,
            "the run {} was not correct: {}",
            fixed.label,
            fixed.correctness
        );
    }
    Ok(())
}

/// "name value, name value, …" with `decimals` decimals.
fn per_component(figures: &[(String, f64)], decimals: usize) -> String {
    figures
        .iter()
        .map(|(name, value)| format!("{name} {value:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts of a window divided by the orders it completed ("broker 254, postgres 301"), or
/// the counts themselves when none completed.
fn per_order(counts: &[(String, u64)], orders: usize) -> String {
    let orders = orders.max(1) as f64;
    counts
        .iter()
        .map(|(name, n)| format!("{name} {:.0}", *n as f64 / orders))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "order 1204 (3.1), payment 980 (1.0)": each component's batches and their mean size.
fn batches(batches: &[batching::Batches]) -> String {
    if batches.is_empty() {
        return "none read".to_owned();
    }
    batches
        .iter()
        .map(|b| format!("{} {} ({:.1})", b.component, b.batches, b.mean))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts of a window divided by its length in seconds.
fn per_second(counts: &[(String, u64)], secs: f64) -> String {
    counts
        .iter()
        .map(|(name, n)| format!("{name} {:.0}", *n as f64 / secs.max(1e-9)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(report: &Report) {
    let m = &report.machine;
    println!(
        "\nmachine: {} cores, {:.1} GiB RAM, {}",
        m.cores, m.memory_gib, m.cpu
    );
    for (k, v) in &report.configuration {
        println!("  {k}: {v}");
    }
    if !report.limits.is_empty() {
        println!("\nlimits of this machine (same run):");
        for l in &report.limits {
            println!(
                "  {:<24} {:>6.0} ops/s ÷ {:.2} per order = {:>5.0} orders/s{}   ({})",
                l.name,
                l.ops_per_sec,
                l.per_order,
                l.orders_per_sec,
                if l.bounds_the_system {
                    ""
                } else {
                    " (comparison)"
                },
                l.what
            );
        }
    }
    println!(
        "\n{:<18} {:>8} {:>9} {:>6}  {:>27}  {:>27}  correct",
        "run",
        "offered",
        "achieved",
        "errors",
        "PlaceOrder ms p50/p90/p99/max",
        "to COMPLETED ms p50/p90/p99/max"
    );
    for r in &report.runs {
        let p = |x: &crate::load::Percentiles| {
            format!(
                "{:.0}/{:.0}/{:.0}/{:.0}",
                x.p50_ms, x.p90_ms, x.p99_ms, x.max_ms
            )
        };
        println!(
            "{:<18} {:>8.0} {:>9.1} {:>6}  {:>27}  {:>27}  {}",
            r.label,
            r.offered_per_sec,
            r.achieved_per_sec,
            r.errors,
            p(&r.place_order),
            p(&r.time_to_terminal),
            r.correctness
        );
        println!(
            "    {}: {:.0} % of the offered rate achieved",
            if r.sustained {
                "sustained"
            } else {
                "NOT sustained"
            },
            100.0 * r.achieved_per_sec / r.offered_per_sec
        );
        for e in &r.first_errors {
            println!("    error: {e}");
        }
        if r.calls_shed > 0 {
            println!(
                "    {} calls shed by the gateway at its limits (RESOURCE_EXHAUSTED) and made again",
                r.calls_shed
            );
        }
        if r.watches_waited > 0 {
            println!(
                "    {} orders' watches waited for a stream slot (more in flight than the load's connections may watch)",
                r.watches_waited
            );
        }
        println!(
            "    CPU cores: machine {:.2} of {}{}; {}",
            r.cpu.machine_cores,
            report.machine.cores,
            r.machine_cpu_ms_per_order
                .map(|ms| format!(" ({ms:.2} ms of machine CPU per completed order)"))
                .unwrap_or_default(),
            per_component(&r.cpu.by_component, 2)
        );
        println!(
            "    memory MiB (PSS) at the end: {}",
            per_component(&r.cpu.memory_mib, 0)
        );
        println!(
            "    context switches: machine {:.0}/s{}; per completed order: {}",
            r.cpu.machine_switches_per_sec,
            r.machine_switches_per_order
                .map(|n| format!(" ({n:.0} per completed order)"))
                .unwrap_or_default(),
            per_order(&r.cpu.switches_by_component, r.completed)
        );
        println!(
            "    threads that switched most, per completed order: {}",
            per_order(&r.cpu.switches_by_thread, r.completed)
        );
        if let Some(hops) = &r.hops {
            let hops: Vec<String> = hops
                .iter()
                .map(|h| format!("{} {:.0}/{:.0}", h.name, h.latency.p50_ms, h.latency.p99_ms))
                .collect();
            println!(
                "    hops of the completed orders, ms p50/p99: {}",
                hops.join(", ")
            );
        }
        if let Some(batching) = &r.batching {
            println!(
                "    consumer transactions (messages in each, on average): {}",
                batches(&batching.consumer)
            );
            println!(
                "    outbox relay rounds (rows in each, on average): {}",
                batches(&batching.relay)
            );
        }
    }
    let idles = [
        ("idle", &report.idle),
        ("idle after the runs", &report.idle_after_runs),
    ];
    for (what, idle) in idles {
        let Some(idle) = idle else { continue };
        println!(
            "\n{what} ({:.0} s, nothing offered): the system {:.3} cores, machine {:.2}; {}",
            idle.wall_secs,
            idle.system_cores,
            idle.machine_cores,
            per_component(&idle.by_component, 3)
        );
        println!(
            "  memory MiB (PSS) while idle: {}",
            per_component(&idle.memory_mib, 0)
        );
        println!(
            "  context switches a second: machine {:.0}; {}",
            idle.machine_switches_per_sec,
            per_second(&idle.switches_by_component, idle.wall_secs)
        );
    }
    if let Some(max) = report.max_sustained_per_sec {
        println!("\nhighest sustained rate: {max} orders/s");
    }
    if let Some(f) = report.fraction_of_limit {
        println!(
            "best achieved rate = {:.0} % of the tighter machine limit",
            f * 100.0
        );
    }
    println!("\ntargets (issue 13), judged from this run:");
    for t in &report.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        println!("  {:<62} {:<13} {}", t.target, verdict, t.measured);
    }
}
