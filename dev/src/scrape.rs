//! Figures read from a process's `/metrics` page (Prometheus text), for the benchmark and the
//! fault tests.

/// The sum of every series of `name` on a metrics page: its `name{…} value` lines and its
/// unlabelled `name value` line; 0 when it has none. `name` is the full series name, suffix
/// included (`orderflow_dead_letters_total`, `orderflow_consumer_batch_messages_sum`).
pub fn series_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_of_the_name_and_no_other_is_summed() {
        let text = "# HELP orderflow_batch_messages Messages.\n\
                    # TYPE orderflow_batch_messages histogram\n\
                    orderflow_batch_messages_sum{consumer=\"order\"} 12.0\n\
                    orderflow_batch_messages_sum{consumer=\"payment\"} 3.5\n\
                    orderflow_batch_messages_sum_other 100\n\
                    orderflow_batch_messages_count{consumer=\"order\"} 4\n\
                    orderflow_rows_sum 7.0\n";
        assert_eq!(series_sum(text, "orderflow_batch_messages_sum"), 15.5);
        assert_eq!(series_sum(text, "orderflow_batch_messages_count"), 4.0);
        assert_eq!(series_sum(text, "orderflow_rows_sum"), 7.0);
        assert_eq!(series_sum(text, "orderflow_absent_total"), 0.0);
    }
}
