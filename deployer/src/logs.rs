//! Application logs: every instance's stdout and stderr, followed from the engine as they
//! are written and kept in the store (bounded per service, oldest out first), so they
//! outlive the instance: across restarts, scale to zero and crashes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::Ctx;

/// Lines kept in memory before they are written (or after [`FLUSH_EVERY`]).
const BATCH: usize = 256;
/// How long a line may wait to be written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The followers: one task per container, owned by one tracker.
#[derive(Default)]
pub(crate) struct Followers {
    following: Mutex<HashSet<String>>,
    pub tasks: tokio_util::task::TaskTracker,
}

impl Ctx {
    /// Follows a container's output into the store, unless it is followed already.
    pub(crate) fn follow_logs(
        self: &Arc<Self>,
        service: &str,
        revision: i64,
        instance: &str,
        container: &str,
    ) {
        {
            let mut f = self
                .logs
                .following
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !f.insert(container.to_string()) {
                return;
            }
        }
        let (ctx, service, instance, container) = (
            Arc::clone(self),
            service.to_string(),
            instance.to_string(),
            container.to_string(),
        );
        self.logs.tasks.spawn(async move {
            ctx.follow(&service, revision, &instance, &container).await;
            ctx.logs
                .following
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&container);
        });
    }

    /// Keeps what a stopped container wrote (its stream ends by itself), waiting at most
    /// `within`: for a container about to be removed.
    pub(crate) async fn keep_logs_of_stopped(
        &self,
        service: &str,
        revision: i64,
        instance: &str,
        container: &str,
        within: Duration,
    ) {
        let done = self.follow(service, revision, instance, container);
        if tokio::time::timeout(within, done).await.is_err() {
            tracing::debug!(
                service,
                instance,
                "the output of a stopped container took too long"
            );
        }
    }

    async fn follow(&self, service: &str, revision: i64, instance: &str, container: &str) {
        // After a restart, from where the kept lines end.
        let since = self.store.last_app_log_ms(instance).unwrap_or(0);
        let mut stream = match self.runtime.follow_logs(container, since).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(service, instance, "following the logs: {e}");
                return;
            }
        };
        let mut batch: Vec<(i64, bool, String)> = Vec::new();
        let mut due: Option<Instant> = None;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                    self.keep(service, revision, instance, &mut batch);
                    due = None;
                }
                item = stream.next() => match item {
                    Some(Ok(l)) => {
                        batch.push((l.at_ms, l.stderr, l.line));
                        if batch.len() >= BATCH {
                            self.keep(service, revision, instance, &mut batch);
                            due = None;
                        } else if due.is_none() {
                            due = Some(Instant::now() + FLUSH_EVERY);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(service, instance, "the log stream broke: {e}");
                        break;
                    }
                    // The container stopped.
                    None => break,
                },
            }
        }
        self.keep(service, revision, instance, &mut batch);
    }

    fn keep(
        &self,
        service: &str,
        revision: i64,
        instance: &str,
        batch: &mut Vec<(i64, bool, String)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let bound = self
            .store
            .snapshot()
            .service(service)
            .map_or(10 << 20, |r| u64::from(r.spec.logs_max_bytes));
        if let Err(e) = self
            .store
            .append_app_logs(service, revision, instance, batch, bound)
        {
            tracing::warn!(service, "store: keeping {} log line(s): {e}", batch.len());
        }
        batch.clear();
    }
}
