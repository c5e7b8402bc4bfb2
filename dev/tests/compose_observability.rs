//! compose's Grafana and Prometheus files against the code: every metric a dashboard panel
//! or an alert rule queries is one a component registers (read from the `register` calls in
//! their sources, so a renamed or doubly prefixed metric fails here, not as an empty panel in
//! a deployment), and every panel reads the data source Grafana is provisioned with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `orderflow_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("orderflow_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len().max(1)..];
        names.insert(name);
    }
    names
}

/// The series names a metric registered as `name` exposes: `orderflow_<name>` (gauges),
/// with `_total` (counters), with the unit (`_seconds`) and `_bucket`, `_sum`, `_count`
/// (histograms). Loose on the kind, exact on the name.
fn series_of(name: &str, unit: Option<&str>) -> Vec<String> {
    let base = match unit {
        Some(unit) => format!("orderflow_{name}_{unit}"),
        None => format!("orderflow_{name}"),
    };
    ["", "_total", "_bucket", "_sum", "_count"]
        .iter()
        .map(|suffix| format!("{base}{suffix}"))
        .collect()
}

/// Every series the components register: the name (a string literal) that is the first
/// argument of each `register(` and `register_with_unit(` call in their sources, with the
/// unit of the latter.
fn registered() -> BTreeSet<String> {
    let sources = sources();
    let mut series = BTreeSet::new();
    for (call, has_unit) in [("register_with_unit(", true), ("register(", false)] {
        let mut rest = sources.as_str();
        while let Some(at) = rest.find(call) {
            rest = &rest[at + call.len()..];
            let Some(args) = rest.trim_start().strip_prefix('"') else {
                continue; // a name that is not a literal, or the method's definition
            };
            let name = &args[..args.find('"').expect("a closing quote")];
            assert!(
                !name.starts_with("orderflow_"),
                "metric {name:?} is registered with the prefix the registry adds again"
            );
            let unit = has_unit.then(|| {
                let after = &args[name.len()..];
                let unit = &after[after.find("Unit::").expect("the unit") + "Unit::".len()..];
                let unit: String = unit.chars().take_while(char::is_ascii_alphabetic).collect();
                unit.to_lowercase()
            });
            series.extend(series_of(name, unit.as_deref()));
        }
    }
    series
}

/// The Rust sources of every component.
fn sources() -> String {
    let mut text = String::new();
    for dir in ["platform/runtime/src", "services", "gateway/src"] {
        let mut stack = vec![root().join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    stack.push(entry.unwrap().path());
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    text
}

fn check_registered(file: &str, queried: &BTreeSet<String>) {
    let registered = registered();
    let missing: Vec<&String> = queried.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "{file} queries metrics no component registers: {missing:?}"
    );
}

#[test]
fn every_dashboard_panel_queries_registered_metrics_from_the_provisioned_source() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("compose/grafana/dashboards/orderflow.json"))
            .expect("the dashboard is JSON");
    let datasources = read("compose/grafana/provisioning/datasources/prometheus.yml");
    assert!(
        datasources.contains("uid: prometheus") && datasources.contains("http://prometheus:9090")
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert_eq!(panel["datasource"]["uid"], "prometheus", "panel {title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {title}: {expr}");
            queried.extend(names);
        }
    }
    // What the issue asks the dashboard to show.
    for wanted in [
        "orderflow_analytics_orders",
        "orderflow_order_time_to_end_seconds_bucket",
        "orderflow_group_lag",
        "orderflow_dead_letters_total",
        "orderflow_outbox_backlog",
    ] {
        assert!(queried.contains(wanted), "no panel shows {wanted}");
    }
    check_registered("the dashboard", &queried);
    // compose mounts what the provisioning file points at.
    let compose = read("compose/docker-compose.yml");
    assert!(compose.contains("./grafana/dashboards:/var/lib/grafana/dashboards:ro"));
    assert!(
        read("compose/grafana/provisioning/dashboards/orderflow.yml")
            .contains("path: /var/lib/grafana/dashboards")
    );
}

#[test]
fn every_alert_rule_queries_registered_metrics() {
    let alerts = read("compose/prometheus/alerts.yml");
    let queried: BTreeSet<String> = alerts
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with('#')
                && !l.contains("summary:")
                && !l.contains("description:")
        })
        .flat_map(metric_names)
        .collect();
    assert!(queried.len() >= 5, "{queried:?}");
    check_registered("compose/prometheus/alerts.yml", &queried);
}
