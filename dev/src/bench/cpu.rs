//! Where the machine's CPU goes during a run: CPU time per component, read from `/proc`
//! before and after, so the report shows which process the two cores were spent on.

use std::collections::BTreeMap;
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
}

/// Components that are not part of the system under test.
const NOT_THE_SYSTEM: [&str; 2] = ["load generator", "other"];

impl Snapshot {
    pub fn take() -> Snapshot {
        let me = std::process::id();
        let mut by_component = BTreeMap::new();
        let mut memory_mib = BTreeMap::new();
        for pid in processes() {
            let (Some(seconds), Some(component)) = (cpu_seconds(pid), component(pid, me)) else {
                continue;
            };
            // The machine's other processes count for CPU only: their memory is not reported,
            // and reading a process's PSS walks its page tables.
            if component != "other" {
                *memory_mib.entry(component.clone()).or_insert(0.0) +=
                    memory_kib(pid).unwrap_or(0.0) / 1024.0;
            }
            *by_component.entry(component).or_insert(0.0) += seconds;
        }
        Snapshot {
            at: Instant::now(),
            by_component,
            memory_mib,
            machine_busy: machine_busy_seconds().unwrap_or(0.0),
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
        }
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
