//! `GetContainerEvents` end to end: subscribers on a real berthd see pod and container
//! lifecycles in order with the pod status attached, exits the container makes by itself
//! included; a subscriber that never reads blocks nothing. Needs root (CI runs as root).

mod obs_env;

use std::time::{Duration, Instant};

use e2e::daemon::Berthd;
use nix::sys::signal::Signal;
use obs_env::{env, env_with};
use proto::cri::{
    self, ContainerEventResponse, ContainerEventType, ContainerState, PodSandboxState,
};
use tokio::sync::mpsc;
use tonic::Code;

type Event = Result<ContainerEventResponse, tonic::Status>;

/// Opens a GetContainerEvents stream; berthd has registered it when this returns.
async fn subscribe(d: &Berthd) -> tonic::Streaming<ContainerEventResponse> {
    d.runtime()
        .await
        .expect("client")
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// Reads a stream in the background into a channel.
fn collect(mut stream: tonic::Streaming<ContainerEventResponse>) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let item = stream.message().await;
            let end = !matches!(item, Ok(Some(_)));
            let sent = match item {
                Ok(Some(ev)) => tx.send(Ok(ev)),
                Ok(None) => break,
                Err(status) => tx.send(Err(status)),
            };
            if end || sent.is_err() {
                break;
            }
        }
    });
    rx
}

/// The next event, failing the test if none comes within `timeout`.
async fn next(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    timeout: Duration,
) -> ContainerEventResponse {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("event, not an error")
}

fn kind(ev: &ContainerEventResponse) -> ContainerEventType {
    ContainerEventType::try_from(ev.container_event_type).expect("known event type")
}

/// The state of container `id` in the event's container statuses, if listed.
fn state_in(ev: &ContainerEventResponse, id: &str) -> Option<(ContainerState, i32)> {
    ev.containers_statuses.iter().find(|c| c.id == id).map(|c| {
        (
            ContainerState::try_from(c.state).expect("state"),
            c.exit_code,
        )
    })
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn two_subscribers_see_a_full_lifecycle_in_order_with_pod_status() {
    let Some(e) = env().await else { return };
    let mut a = collect(subscribe(&e.d).await);
    let mut b = collect(subscribe(&e.d).await);

    let pc = e.pod("events");
    let pod = e.run_pod(&pc).await;
    let stopped = e
        .run(&pod, &pc, e.container("stopped", &["sleep", "300"]))
        .await;
    let pod_status =
        e.d.runtime()
            .await
            .expect("client")
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner();
    let listed: Vec<(String, i32)> = pod_status
        .containers_statuses
        .iter()
        .map(|c| (c.id.clone(), c.state))
        .collect();
    assert_eq!(
        listed,
        [(stopped.clone(), ContainerState::ContainerRunning as i32)],
        "PodSandboxStatus lists the pod's containers for the evented PLEG"
    );
    assert!(pod_status.timestamp > 0);
    e.stop(&stopped).await;
    e.remove(&stopped).await;
    let exits = e
        .run(
            &pod,
            &pc,
            e.container("exits", &["sh", "-c", "sleep 0.3; exit 3"]),
        )
        .await;
    // Nobody asks about the container: berthd must notice the exit by itself.
    let mut seen = Vec::new();
    loop {
        let ev = next(&mut a, WAIT).await;
        let done =
            ev.container_id == exits && kind(&ev) == ContainerEventType::ContainerStoppedEvent;
        seen.push(ev);
        if done {
            break;
        }
    }
    e.remove(&exits).await;
    e.d.remove_pod(&pod).await;
    while seen.len() < 12 {
        seen.push(next(&mut a, WAIT).await);
    }

    use ContainerEventType::*;
    let expected = [
        (&pod, ContainerCreatedEvent),
        (&pod, ContainerStartedEvent),
        (&stopped, ContainerCreatedEvent),
        (&stopped, ContainerStartedEvent),
        (&stopped, ContainerStoppedEvent),
        (&stopped, ContainerDeletedEvent),
        (&exits, ContainerCreatedEvent),
        (&exits, ContainerStartedEvent),
        (&exits, ContainerStoppedEvent),
        (&exits, ContainerDeletedEvent),
        (&pod, ContainerStoppedEvent),
        (&pod, ContainerDeletedEvent),
    ];
    let got: Vec<(String, ContainerEventType)> = seen
        .iter()
        .map(|ev| (ev.container_id.clone(), kind(ev)))
        .collect();
    let want: Vec<(String, ContainerEventType)> =
        expected.iter().map(|(id, k)| ((*id).clone(), *k)).collect();
    assert_eq!(got, want);

    // The second subscriber saw the same, in the same order.
    let mut other = Vec::new();
    while other.len() < 12 {
        let ev = next(&mut b, WAIT).await;
        other.push((ev.container_id.clone(), kind(&ev)));
    }
    assert_eq!(other, want);

    let uid = pc.metadata.as_ref().expect("metadata").uid.clone();
    let mut last = 0;
    for ev in &seen {
        let ps = ev.pod_sandbox_status.as_ref().expect("pod status attached");
        assert_eq!(ps.id, pod);
        assert_eq!(ps.metadata.as_ref().expect("pod metadata").uid, uid);
        assert!(
            ev.created_at >= last && ev.created_at > 0,
            "timestamps in order"
        );
        last = ev.created_at;
    }
    assert_eq!(
        state_in(&seen[3], &stopped).map(|s| s.0),
        Some(ContainerState::ContainerRunning)
    );
    assert_eq!(
        state_in(&seen[4], &stopped).map(|s| s.0),
        Some(ContainerState::ContainerExited)
    );
    assert_eq!(
        state_in(&seen[5], &stopped),
        None,
        "deleted container no longer listed"
    );
    assert_eq!(
        state_in(&seen[8], &exits),
        Some((ContainerState::ContainerExited, 3)),
        "self-exit recorded with its code"
    );
    assert_eq!(
        seen[10].pod_sandbox_status.as_ref().expect("status").state,
        PodSandboxState::SandboxNotready as i32
    );
    assert!(seen[11].containers_statuses.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a.try_recv().is_err(),
        "nothing more (STOPPED fired once per container)"
    );
}

#[tokio::test]
async fn a_subscriber_that_never_reads_blocks_no_rpc_and_is_dropped() {
    let Some(e) = env_with("[events]\nsubscriber_queue = 8\n").await else {
        return;
    };
    let stalled = subscribe(&e.d).await;
    let mut reader = collect(subscribe(&e.d).await);
    let pc = e.pod("flood");
    let pod = e.run_pod(&pc).await;
    // Each event carries every container of the pod: ~200 events of growing size overflow
    // the stalled stream's transport buffers and then its queue of 8.
    let mut ids = Vec::new();
    for i in 0..100 {
        let c = e.container(&format!("c{i}"), &["true"]);
        let id = rpc_in_time(e.create(&pod, &pc, c))
            .await
            .expect("CreateContainer");
        ids.push(id);
    }
    for id in &ids {
        rpc_in_time(async {
            e.remove(id).await;
            Ok(())
        })
        .await
        .expect("RemoveContainer");
    }
    let version = rpc_in_time(async {
        e.d.runtime()
            .await
            .expect("client")
            .version(cri::VersionRequest::default())
            .await
    })
    .await;
    assert!(version.is_ok(), "RPCs keep answering");

    // The reader got all of it, in order.
    let mut got = Vec::new();
    while got.len() < 202 {
        got.push(next(&mut reader, WAIT).await);
    }
    assert_eq!(got[2].container_id, ids[0]);
    assert_eq!(got[101].container_id, ids[99]);
    assert_eq!(kind(&got[201]), ContainerEventType::ContainerDeletedEvent);
    assert_eq!(got[201].container_id, ids[99]);

    // The stalled one gets what was queued for it, then the reason it was dropped.
    let mut stalled = collect(stalled);
    let mut delivered = 0;
    let err = loop {
        match tokio::time::timeout(WAIT, stalled.recv())
            .await
            .expect("in time")
        {
            Some(Ok(_)) => delivered += 1,
            Some(Err(status)) => break status,
            None => panic!("stream ended without saying it was dropped"),
        }
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        delivered < 202,
        "events were dropped ({delivered} delivered)"
    );
    let metrics = e.d.metrics_text().await.expect("metrics");
    assert!(
        metrics.contains("berth_container_event_subscribers_dropped_total 1"),
        "{metrics}"
    );
    assert!(
        e.d.stderr().contains("fell 8 events behind"),
        "drop is logged"
    );
}

/// Runs one RPC, failing the test if it takes more than 10 s (a blocked runtime).
async fn rpc_in_time<T>(
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("RPC blocked for {:?}", started.elapsed()))
}

#[tokio::test]
async fn exit_while_berthd_is_down_is_recorded_at_start() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("away");
    let pod = e.run_pod(&pc).await;
    let id = e
        .run(
            &pod,
            &pc,
            e.container("away", &["sh", "-c", "sleep 1; exit 7"]),
        )
        .await;
    e.d.stop_with(Signal::SIGKILL, Duration::from_secs(10))
        .await
        .expect("kill -9 berthd");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = e.d.dir().to_path_buf();
    let mut again = Berthd::spawn_in_existing(&dir, &e.config).expect("respawn");
    again
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    // The gauge reads records as they are, without asking shims: start-up recorded the exit.
    let metrics = again.metrics_text().await.expect("metrics");
    assert!(
        metrics.contains("berth_containers{state=\"exited\"} 1"),
        "{metrics}"
    );
    let st = status_of(&again, &id).await;
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 7)
    );
    again.remove_pod(&pod).await;
}

async fn status_of(d: &Berthd, id: &str) -> cri::ContainerStatus {
    d.runtime()
        .await
        .expect("client")
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("status")
}

#[tokio::test]
async fn sigterm_ends_open_event_streams_and_berthd_exits_promptly() {
    let mut d = Berthd::start().await.expect("berthd");
    let mut stream = collect(subscribe(&d).await);
    // berthd gives in-flight calls 10 s: exiting well before means the stream did not hold it.
    let status = d
        .stop_with(Signal::SIGTERM, Duration::from_secs(8))
        .await
        .expect("berthd exits before the 10 s drain limit");
    assert!(status.success(), "exit {status}");
    let end = tokio::time::timeout(WAIT, stream.recv())
        .await
        .expect("stream ends");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no event, just the end: {end:?}"
    );
}
