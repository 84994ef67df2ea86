//! A bounded load generator for tests: paced GETs from several tasks, counting every
//! outcome, plus a few long requests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{get_via, HttpClient};

#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub non_2xx: AtomicU64,
    pub errors: AtomicU64,
    pub samples: Mutex<Vec<String>>,
    /// Per path: the sends its workers' pace scheduled, and those that started more than
    /// half a pace after their slot or never started (the load fell behind).
    pub pacing: Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

impl Tally {
    fn bad(&self, what: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < 20 {
            s.push(what);
        }
    }
    pub fn summary(&self) -> String {
        format!(
            "ok {} non-2xx {} errors {} samples {:?}",
            self.ok.load(Ordering::Relaxed),
            self.non_2xx.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.samples.lock().unwrap()
        )
    }
    /// (scheduled, missed) sends of `path`.
    pub fn pacing(&self, path: &str) -> (u64, u64) {
        self.pacing
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or_default()
    }
    fn paced(&self, path: &str, scheduled: u64, missed: u64) {
        let mut p = self.pacing.lock().unwrap();
        let e = p.entry(path.to_string()).or_default();
        e.0 += scheduled;
        e.1 += missed;
    }
    pub fn failures(&self) -> u64 {
        self.non_2xx.load(Ordering::Relaxed) + self.errors.load(Ordering::Relaxed)
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub tally: Arc<Tally>,
}

impl Load {
    /// `workers` tasks each sending one request to `path` every `pace` (closed loop, so
    /// the rate is at most workers / pace), until stopped or `max` elapses.
    pub fn start(
        http: &HttpClient,
        port: u16,
        service: &str,
        specs: &[(&str, usize, Duration)],
        max: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut tasks = Vec::new();
        for (path, workers, pace) in specs {
            for _ in 0..*workers {
                let (http, stop, tally) = (http.clone(), stop.clone(), tally.clone());
                let (service, path, pace) = (service.to_string(), path.to_string(), *pace);
                tasks.push(tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + max;
                    // When this worker's next send is due.
                    let mut slot = tokio::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                        let late = tokio::time::Instant::now() > slot + pace / 2;
                        tally.paced(&path, 1, u64::from(late));
                        match get_via(&http, port, &service, &path).await {
                            Ok((s, _)) if (200..300).contains(&s) => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((s, b)) => {
                                tally.non_2xx.fetch_add(1, Ordering::Relaxed);
                                let b: String = b.chars().take(120).collect();
                                tally.bad(format!("{path}: {s} {b}"));
                            }
                            Err(e) => {
                                tally.errors.fetch_add(1, Ordering::Relaxed);
                                tally.bad(format!("{path}: {e}"));
                            }
                        }
                        slot += pace;
                        // Slots that passed while the request ran were never sent: each is
                        // scheduled and missed (bounded by the time the request took).
                        let now = tokio::time::Instant::now();
                        if now > slot + pace {
                            let behind = ((now - slot).as_nanos() / pace.as_nanos().max(1)) as u64;
                            tally.paced(&path, behind, behind);
                            slot += pace * behind as u32;
                        }
                        tokio::time::sleep_until(slot).await;
                    }
                }));
            }
        }
        Load { stop, tasks, tally }
    }

    pub async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        self.tally
    }
}
