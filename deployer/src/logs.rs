//! Application logs: every instance's stdout and stderr, followed from the engine as they
//! are written and kept in the store (bounded per service, oldest out first), so they
//! outlive the instance: across restarts, scale to zero and crashes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use slipway_runtime::RuntimeError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Ctx;

/// Lines kept in memory before they are written (or after [`FLUSH_EVERY`]).
const BATCH: usize = 256;
/// How long a line may wait to be written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How long a removal waits for a stopped container's follower to read the rest.
const LAST_WORDS: Duration = Duration::from_secs(3);

/// The followers: one task per container, owned by one tracker.
#[derive(Default)]
pub(crate) struct Followers {
    /// Per followed container, cancelled when its follower is done.
    following: Mutex<HashMap<String, CancellationToken>>,
    pub tasks: tokio_util::task::TaskTracker,
}

impl Followers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.following.lock().unwrap_or_else(|p| p.into_inner())
    }
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
        let done = CancellationToken::new();
        {
            let mut f = self.logs.lock();
            if f.contains_key(container) {
                return;
            }
            f.insert(container.to_string(), done.clone());
        }
        let (ctx, service, instance, container) = (
            Arc::clone(self),
            service.to_string(),
            instance.to_string(),
            container.to_string(),
        );
        self.logs.tasks.spawn(async move {
            ctx.follow(&service, revision, &instance, &container).await;
            ctx.logs.lock().remove(&container);
            done.cancel();
        });
    }

    /// Stops a container (`grace_s` 0 kills it), lets its follower read the last of its
    /// output (at most [`LAST_WORDS`]), then removes it: the engine's copy of a
    /// container's output goes with the container, and a busy engine may not have
    /// answered the follower yet.
    pub(crate) async fn stop_and_remove(
        &self,
        container: &str,
        grace_s: i32,
    ) -> Result<(), RuntimeError> {
        let followed = self.logs.lock().get(container).cloned();
        match followed {
            Some(done) => match self.runtime.stop(container, grace_s).await {
                Ok(()) => {
                    if tokio::time::timeout(LAST_WORDS, done.cancelled())
                        .await
                        .is_err()
                    {
                        tracing::debug!(container, "its log follower took too long");
                    }
                }
                // Removal kills it anyway; what was read is kept.
                Err(e) => tracing::debug!(container, "stop: {e}"),
            },
            None if grace_s > 0 => {
                if let Err(e) = self.runtime.stop(container, grace_s).await {
                    tracing::debug!(container, "stop: {e}");
                }
            }
            None => {}
        }
        self.runtime.remove(container).await
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
