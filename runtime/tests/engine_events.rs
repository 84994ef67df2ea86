//! `DockerRuntime::events` against the real engine: a container of this platform that
//! starts and exits is reported with its labels and exit code, and another platform's
//! containers are not.

use std::time::Duration;

use futures_util::StreamExt;
use slipway_runtime::{DockerRuntime, EventAction, InstanceConfig, Runtime};

fn cfg(instance: &str) -> InstanceConfig {
    InstanceConfig {
        service: "events".into(),
        revision: 1,
        instance: instance.into(),
        image: "slipway/busybox:latest".into(),
        // The image's own command: it starts, and ends when stopped (or at once).
        env: Vec::new(),
        port: 8080,
        nano_cpus: 500_000_000,
        memory_bytes: 64 << 20,
    }
}

#[tokio::test]
async fn the_engine_reports_this_platforms_starts_and_deaths() {
    let id = format!("evt{:x}", std::process::id());
    let rt = DockerRuntime::connect(&id).await.expect("a Docker engine");
    let other = DockerRuntime::connect(&format!("{id}-other"))
        .await
        .unwrap();
    let mut events = rt.events().await.unwrap();
    // The other platform's container starts first: it must not be reported.
    let noise = other.create(&cfg("noise")).await.unwrap();
    other.start(&noise, 8080).await.unwrap();
    let c = rt.create(&cfg("mine")).await.unwrap();
    rt.start(&c, 8080).await.unwrap();
    rt.stop(&c, 1).await.unwrap();
    let mut seen = Vec::new();
    let collect = async {
        while let Some(e) = events.next().await {
            let e = e.unwrap();
            let done = matches!(e.action, EventAction::Die { .. });
            seen.push(e);
            if done {
                break;
            }
        }
    };
    let timed_out = tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .is_err();
    for (r, id) in [(&rt, &c), (&other, &noise)] {
        r.remove(id).await.unwrap();
    }
    assert!(!timed_out, "no death reported: {seen:?}");
    assert!(seen.iter().all(|e| e.container_id == c), "{seen:?}");
    assert_eq!(seen[0].action, EventAction::Start, "{seen:?}");
    assert_eq!(
        (seen[0].service.as_str(), seen[0].instance.as_str()),
        ("events", "mine")
    );
    // How it ended depends on the image's command; the code is what the engine said.
    assert!(
        matches!(
            seen.last().unwrap().action,
            EventAction::Die { exit_code: Some(_) }
        ),
        "{seen:?}"
    );
}
