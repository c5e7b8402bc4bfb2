//! Where the machine's CPU goes during a run: CPU time, memory and context switches per
//! component, read from `/proc` before and after, so the report shows which process the two
//! cores were spent on and which threads kept waking up.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

/// Linux reports process CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture's user-visible ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far, per component, and by the whole machine.
pub struct Snapshot {
    at: Instant,
    by_component: BTreeMap<String, f64>,
    /// Memory per component, in MiB: the proportional set size summed over its processes.
    memory_mib: BTreeMap<String, f64>,
    machine_busy: f64,
    /// Context switches of every thread of the system and the load generator so far, keyed by
    /// thread, so that a thread born or ended between two snapshots counts only what it did
    /// while both saw it (or, born in between, from zero).
    threads: HashMap<Tid, ThreadSwitches>,
    /// Context switches of the whole machine since boot (`ctxt` of `/proc/stat`).
    machine_switches: u64,
}

/// Counts by name (a component, or a component's threads of one name), largest first.
pub type Counts = Vec<(String, u64)>;

/// A thread: its process id and its own id.
type Tid = (u32, u32);

/// One thread's context switches so far and whose they are.
struct ThreadSwitches {
    component: String,
    /// What the thread does: its name with a trailing number folded (`rdk:broker#`), or for
    /// PostgreSQL the database a backend serves or a background process's role.
    thread: String,
    switches: u64,
}

/// Cores used on average between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// How long the measurement lasted.
    pub wall_secs: f64,
    /// Cores busy on the whole machine (everything, including the kernel).
    pub machine_cores: f64,
    /// CPU seconds the whole machine spent in that time.
    pub machine_cpu_secs: f64,
    /// Cores used by the system itself: broker, PostgreSQL and every `orderflow serve`
    /// component, not the load generator nor the machine's other processes.
    pub system_cores: f64,
    /// Cores used by each component, largest first.
    pub by_component: Vec<(String, f64)>,
    /// Memory of each component at the end, in MiB: the proportional set size (PSS) summed
    /// over its processes, so a page shared by n processes (PostgreSQL's shared buffers)
    /// counts once in all, not once in each.
    pub memory_mib: Vec<(String, f64)>,
    /// Context switches of the whole machine, per second (every process and the kernel's
    /// own threads; each one a thread going off a CPU, voluntarily or not).
    pub machine_switches_per_sec: f64,
    /// Context switches of the whole machine in the window.
    pub machine_switches: u64,
    /// Context switches of each component in the window (the sum over its threads), largest
    /// first.
    pub switches_by_component: Counts,
    /// The threads that switched most in the window, as "component thread", their switches
    /// summed over threads of the same name ([`TOP_THREADS`] of them, largest first).
    pub switches_by_thread: Counts,
}

/// How many of the threads that switched most a report lists.
pub const TOP_THREADS: usize = 8;

/// Components that are not part of the system under test.
const NOT_THE_SYSTEM: [&str; 2] = ["load generator", "other"];

impl Snapshot {
    pub fn take() -> Snapshot {
        let me = std::process::id();
        let mut by_component = BTreeMap::new();
        let mut memory_mib = BTreeMap::new();
        let mut threads = HashMap::new();
        for pid in processes() {
            let (Some(seconds), Some(component)) = (cpu_seconds(pid), component(pid, me)) else {
                continue;
            };
            // The machine's other processes count for CPU only: their memory and threads are
            // not reported, and reading a process's PSS walks its page tables.
            if component != "other" {
                *memory_mib.entry(component.clone()).or_insert(0.0) +=
                    memory_kib(pid).unwrap_or(0.0) / 1024.0;
                read_threads(pid, &component, &mut threads);
            }
            *by_component.entry(component).or_insert(0.0) += seconds;
        }
        Snapshot {
            at: Instant::now(),
            by_component,
            memory_mib,
            machine_busy: machine_busy_seconds().unwrap_or(0.0),
            threads,
            machine_switches: machine_switches().unwrap_or(0),
        }
    }

    /// The average cores used from `self` to `later`. A process that started or stopped in
    /// between counts only for the part seen in both snapshots' totals.
    pub fn usage_until(&self, later: &Snapshot) -> Usage {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let mut by_component: Vec<(String, f64)> = later
            .by_component
            .iter()
            .map(|(name, &after)| {
                let before = self.by_component.get(name).copied().unwrap_or(0.0);
                (
                    name.clone(),
                    ((after - before).max(0.0) / wall * 1000.0).round() / 1000.0,
                )
            })
            .filter(|(_, cores)| *cores > 0.0)
            .collect();
        by_component.sort_by(|a, b| b.1.total_cmp(&a.1));
        let machine_cpu_secs = (later.machine_busy - self.machine_busy).max(0.0);
        let system_cores = by_component
            .iter()
            .filter(|(name, _)| !NOT_THE_SYSTEM.contains(&name.as_str()))
            .map(|(_, cores)| cores)
            .sum::<f64>();
        let machine_switches = later.machine_switches.saturating_sub(self.machine_switches);
        let (switches_by_component, switches_by_thread) = self.switches_until(later);
        Usage {
            wall_secs: wall,
            machine_cores: (machine_cpu_secs / wall * 100.0).round() / 100.0,
            machine_cpu_secs,
            system_cores: (system_cores * 1000.0).round() / 1000.0,
            by_component,
            memory_mib: later
                .memory_mib
                .iter()
                .filter(|(name, _)| name.as_str() != "other")
                .map(|(name, mib)| (name.clone(), mib.round()))
                .collect(),
            machine_switches_per_sec: (machine_switches as f64 / wall).round(),
            machine_switches,
            switches_by_component,
            switches_by_thread,
        }
    }

    /// Context switches from `self` to `later`, per component and per thread name (the
    /// [`TOP_THREADS`] that switched most), largest first.
    fn switches_until(&self, later: &Snapshot) -> (Counts, Counts) {
        let mut by_component: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_thread: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (tid, after) in &later.threads {
            let before = self.threads.get(tid).map_or(0, |t| t.switches);
            let switches = after.switches.saturating_sub(before);
            *by_component.entry(&after.component).or_default() += switches;
            *by_thread
                .entry((&after.component, &after.thread))
                .or_default() += switches;
        }
        let largest_first = |mut figures: Counts| {
            figures.retain(|(_, n)| *n > 0);
            figures.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            figures
        };
        let components = largest_first(
            by_component
                .into_iter()
                .map(|(name, n)| (name.to_owned(), n))
                .collect(),
        );
        let mut threads = largest_first(
            by_thread
                .into_iter()
                .map(|((component, thread), n)| (format!("{component} {thread}"), n))
                .collect(),
        );
        threads.truncate(TOP_THREADS);
        (components, threads)
    }
}

/// Adds each thread of process `pid` (of `component`) with its context switches so far.
fn read_threads(pid: u32, component: &str, threads: &mut HashMap<Tid, ThreadSwitches>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    // A PostgreSQL process is one thread; what it does is in its command line.
    let postgres_role = (component == "postgres")
        .then(|| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .flatten()
        .map(|cmdline| postgres_role(&String::from_utf8_lossy(&cmdline)));
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // The thread may have ended since the directory was listed.
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
            continue;
        };
        let thread = match &postgres_role {
            Some(role) => role.clone(),
            None => thread_kind(
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Name:"))
                    .unwrap_or("")
                    .trim(),
            ),
        };
        threads.insert(
            (pid, tid),
            ThreadSwitches {
                component: component.to_owned(),
                thread,
                switches: switches_in(&status),
            },
        );
    }
}

/// Voluntary plus involuntary context switches in a `/proc/<pid>/task/<tid>/status` text.
fn switches_in(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            line.strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

/// A thread's name with its trailing number folded, so that a pool's threads count as one:
/// `rdk:broker12` and `rdk:broker3` are both `rdk:broker#`.
fn thread_kind(name: &str) -> String {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() < name.len() && !stem.is_empty() {
        format!("{stem}#")
    } else {
        name.to_owned()
    }
}

/// What a PostgreSQL process does, from the title it sets as its command line: the database
/// of a client's backend (`postgres: 15/main: user orderflow_order 127.0.0.1(5432) idle`),
/// the role of a background process (`postgres: 15/main: walwriter`), or `postmaster` for
/// the server itself (`/usr/lib/postgresql/15/bin/postgres -D ...`).
fn postgres_role(cmdline: &str) -> String {
    let title = cmdline.replace('\0', " ");
    let Some(rest) = title.strip_prefix("postgres:") else {
        return "postmaster".to_owned();
    };
    // Past the cluster's name ("15/main:"), when the title has one: a word before a colon
    // (not the colons of a client's IPv6 address, which come after the user and database).
    let rest = match rest.split_once(':') {
        Some((cluster, after)) if !cluster.trim().contains(char::is_whitespace) => after,
        _ => rest,
    }
    .trim();
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [_user, database, client, ..] if client.contains('(') || *client == "[local]" => {
            format!("backend {database}")
        }
        _ => rest.to_owned(),
    }
}

/// The ids of the machine's processes, as `/proc` lists them now.
fn processes() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// User plus system CPU seconds of process `pid` (all its threads).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Memory of process `pid` in KiB: its proportional set size (`Pss` in `smaps_rollup`), or
/// its resident size (`VmRSS`) where the kernel does not show the former.
fn memory_kib(pid: u32) -> Option<f64> {
    proc_field(pid, "smaps_rollup", "Pss:")
        .or_else(|| proc_field(pid, "status", "VmRSS:"))?
        .parse()
        .ok()
}

/// The first value of the line starting with `name` in `/proc/<pid>/<file>`
/// (`Pss:    1234 kB` gives "1234").
fn proc_field(pid: u32, file: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    Some(line.split_whitespace().nth(1)?.to_owned())
}

/// Which part of the system process `pid` is: the broker, PostgreSQL, one of the
/// `orderflow serve` components, the load generator (this process) or something else.
fn component(pid: u32, me: u32) -> Option<String> {
    if pid == me {
        return Some("load generator".to_owned());
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = args.first().map(String::as_str).unwrap_or("");
    if program.ends_with("tansu") {
        return Some("broker".to_owned());
    }
    if let Some(i) = args.iter().position(|a| a == "serve")
        && program.ends_with("orderflow")
    {
        return args.get(i + 1).cloned();
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() == "postgres" || program.starts_with("postgres") {
        return Some("postgres".to_owned());
    }
    Some("other".to_owned())
}

/// The CPUs each part may run on (`Cpus_allowed_list`): the load generator's, and the
/// distinct sets of the system's processes (one set unless the system was pinned in parts).
pub fn allowed_cpus() -> (String, String) {
    let me = std::process::id();
    let mut system = std::collections::BTreeSet::new();
    for pid in processes() {
        let is_system =
            component(pid, me).is_some_and(|name| !NOT_THE_SYSTEM.contains(&name.as_str()));
        if is_system && let Some(cpus) = cpus_allowed(pid) {
            system.insert(cpus);
        }
    }
    let load_generator = cpus_allowed(me).unwrap_or_else(|| "unknown".to_owned());
    let system = if system.is_empty() {
        "unknown".to_owned()
    } else {
        system.into_iter().collect::<Vec<_>>().join(" / ")
    };
    (load_generator, system)
}

/// The CPUs process `pid` may run on, as the kernel lists them ("0-1", "0").
fn cpus_allowed(pid: u32) -> Option<String> {
    proc_field(pid, "status", "Cpus_allowed_list:")
}

/// Context switches of the whole machine since boot.
fn machine_switches() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("ctxt "))?
        .trim()
        .parse()
        .ok()
}

/// Busy CPU seconds of the whole machine since boot (everything but idle and iowait).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, t)| t)
        .sum();
    Some(busy / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_list_of_cpus() {
        let me = std::process::id();
        let kib = memory_kib(me).expect("own memory from /proc");
        // A test binary's proportional set size: more than a page, less than its whole
        // resident size plus rounding.
        let resident: f64 = proc_field(me, "status", "VmRSS:")
            .and_then(|kib| kib.parse().ok())
            .expect("own VmRSS");
        assert!(
            kib > 4.0 && kib <= resident + 4.0,
            "{kib} KiB of {resident}"
        );
        let cpus = cpus_allowed(me).expect("own Cpus_allowed_list");
        assert!(
            !cpus.is_empty()
                && cpus
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == ','),
            "{cpus:?}"
        );
        let (load_generator, _system) = allowed_cpus();
        assert_eq!(load_generator, cpus);
    }

    #[test]
    fn a_pool_of_threads_counts_as_one_kind() {
        assert_eq!(thread_kind("rdk:broker12"), "rdk:broker#");
        assert_eq!(thread_kind("rdk:broker3"), "rdk:broker#");
        assert_eq!(thread_kind("tokio-runtime-w"), "tokio-runtime-w");
        // A name that is only a number stays as it is.
        assert_eq!(thread_kind("42"), "42");
    }

    #[test]
    fn a_postgres_process_is_named_by_its_database_or_its_role() {
        let backend = "postgres: 15/main: postgres orderflow_order 127.0.0.1(43210) idle\0\0";
        assert_eq!(postgres_role(backend), "backend orderflow_order");
        assert_eq!(
            postgres_role("postgres: postgres orderflow_payment ::1(5) idle in transaction"),
            "backend orderflow_payment"
        );
        assert_eq!(
            postgres_role("postgres: 15/main: root test [local] idle"),
            "backend test"
        );
        assert_eq!(postgres_role("postgres: 15/main: walwriter "), "walwriter");
        assert_eq!(
            postgres_role("postgres: 15/main: autovacuum launcher "),
            "autovacuum launcher"
        );
        assert_eq!(postgres_role("postgres: checkpointer "), "checkpointer");
        assert_eq!(
            postgres_role("/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main\0"),
            "postmaster"
        );
    }

    #[test]
    fn switches_are_voluntary_plus_involuntary() {
        let status = "Name:\tworker\nState:\tS (sleeping)\n\
                      voluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches_in(status), 127);
        assert_eq!(switches_in("Name:\tx\n"), 0);
    }

    #[test]
    fn a_thread_that_sleeps_and_wakes_is_counted_under_its_name() {
        let before = Snapshot::take();
        // A thread born after `before`, snapshotted while it lives: each sleep takes it off
        // the CPU, at least one voluntary switch each.
        let (started, stop) = (
            std::sync::Arc::new(std::sync::Barrier::new(2)),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let thread = std::thread::Builder::new()
            .name("switcher-8".to_owned())
            .spawn({
                let (started, stop) = (started.clone(), stop.clone());
                move || {
                    started.wait();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            })
            .expect("spawn");
        started.wait();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let after = Snapshot::take();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        thread.join().expect("join");

        let usage = before.usage_until(&after);
        let load_generator = usage
            .switches_by_component
            .iter()
            .find(|(name, _)| name == "load generator")
            .map_or(0, |(_, n)| *n);
        // Born after `before`, the thread counts from zero: 100 ms of 1 ms sleeps.
        assert!(load_generator >= 20, "{usage:?}");
        assert!(usage.machine_switches >= load_generator, "{usage:?}");
        assert!(usage.switches_by_thread.len() <= TOP_THREADS);
        assert!(
            usage
                .switches_by_thread
                .iter()
                .any(|(name, n)| name == "load generator switcher-#" && *n >= 20),
            "{usage:?}"
        );
    }

    #[test]
    fn this_process_is_the_load_generator_and_its_cpu_is_counted() {
        let me = std::process::id();
        let before = Snapshot::take();
        // Burn CPU until the kernel has charged this process at least 50 ms of it.
        let charged_before = cpu_seconds(me).expect("own /proc/self/stat");
        let mut x = 0u64;
        let start = Instant::now();
        while cpu_seconds(me).unwrap_or(0.0) - charged_before < 0.05
            && start.elapsed().as_secs() < 10
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let after = Snapshot::take();
        let usage = before.usage_until(&after);
        let load_generator = usage
            .by_component
            .iter()
            .find(|(name, _)| name == "load generator")
            .map(|(_, cores)| *cores)
            .unwrap_or(0.0);
        assert!(load_generator > 0.0, "{usage:?}");
        assert!(usage.machine_cores > 0.0, "{usage:?}");
    }
}
