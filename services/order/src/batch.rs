//! Calls served together. Concurrent callers wait in one queue; each of a few workers takes
//! everything waiting (up to a bound) and serves it in shared statements. There is no wait
//! for company: a lone call is served at once, and calls share statements only when they
//! arrived while the workers were busy, which is when sharing saves most (docs/performance.md,
//! sections 39, 41 and 42). The [`crate::Placer`] and the [`crate::HistoryReader`] are such
//! queues.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::OrderError;
use crate::metrics::BatchMetrics;

/// Starts `workers` workers that take turns at the returned queue, each taking up to `most`
/// waiting calls at a time and handing them to `serve`, until every clone of the queue is
/// dropped. Each batch is counted in `metrics` under `name`.
pub fn start<R, S, F>(
    name: &'static str,
    metrics: BatchMetrics,
    workers: usize,
    most: usize,
    serve: S,
) -> mpsc::Sender<R>
where
    R: Send + 'static,
    S: Fn(Vec<R>) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let (queue, calls) = mpsc::channel(most * 16);
    let calls = Arc::new(Mutex::new(calls));
    for _ in 0..workers {
        let (calls, serve, metrics) = (calls.clone(), serve.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(most);
            loop {
                let taken = calls.lock().await.recv_many(&mut batch, most).await;
                if taken == 0 {
                    return;
                }
                metrics.taken(name, taken);
                serve(std::mem::take(&mut batch)).await;
            }
        });
    }
    queue
}

/// Queues the call `call` makes around its answer's sender and waits for the answer; `workers`
/// names the workers in the error if they have stopped.
pub async fn call<R, A>(
    queue: &mpsc::Sender<R>,
    workers: &str,
    call: impl FnOnce(oneshot::Sender<Result<A, OrderError>>) -> R,
) -> Result<A, OrderError> {
    let (answer, answered) = oneshot::channel();
    let stopped = || OrderError::Internal(anyhow::anyhow!("the {workers} stopped"));
    queue.send(call(answer)).await.map_err(|_| stopped())?;
    answered.await.map_err(|_| stopped())?
}
