//! The container event hub behind `GetContainerEvents`: every event goes to every subscriber
//! through that subscriber's own bounded queue, so publishing never waits for a reader.
//!
//! A subscriber whose queue is full has fallen behind: rather than silently losing events
//! (kubelet's evented PLEG would then trust a stale pod cache), the hub drops the subscriber.
//! Its stream delivers what was queued, then ends with `RESOURCE_EXHAUSTED`; the client
//! subscribes again and relists, as kubelet does after a stream error.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use proto::cri::{ContainerEventResponse, ContainerEventType};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;
use tracing::{debug, warn};

/// Counters the hub keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events that happened, by [`ContainerEventType`] (index = the enum's value).
    pub published: [AtomicU64; 4],
    /// Subscribers dropped because their queue overflowed.
    pub dropped_subscribers: AtomicU64,
}

/// Fans container events out to the current subscribers.
#[derive(Debug)]
pub struct EventHub {
    queue: usize,
    inner: Arc<Mutex<Subscribers>>,
    counters: EventCounters,
}

#[derive(Debug, Default)]
struct Subscribers {
    next_id: u64,
    list: Vec<Subscriber>,
    closed: bool,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<ContainerEventResponse>,
    overflowed: Arc<AtomicBool>,
}

impl EventHub {
    /// A hub whose subscribers may each have `queue` undelivered events (at least one).
    pub fn new(queue: usize) -> EventHub {
        EventHub {
            queue: queue.max(1),
            inner: Arc::default(),
            counters: EventCounters::default(),
        }
    }

    fn subscribers(&self) -> MutexGuard<'_, Subscribers> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new subscriber's stream of every event published from now on; `Unavailable` once
    /// the hub is closed (berthd is shutting down).
    pub fn subscribe(&self) -> Result<Subscription, Status> {
        let mut subs = self.subscribers();
        if subs.closed {
            return Err(Status::unavailable("berthd is shutting down"));
        }
        let (tx, rx) = mpsc::channel(self.queue);
        let overflowed = Arc::new(AtomicBool::new(false));
        subs.next_id += 1;
        let id = subs.next_id;
        subs.list.push(Subscriber {
            id,
            tx,
            overflowed: overflowed.clone(),
        });
        debug!(subscriber = id, "container event subscriber joined");
        Ok(Subscription {
            id,
            rx,
            overflowed,
            hub: Arc::downgrade(&self.inner),
            done: false,
        })
    }

    /// Whether anyone listens (events are only built when someone does).
    pub fn has_subscribers(&self) -> bool {
        !self.subscribers().list.is_empty()
    }

    /// How many subscribers are connected.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers().list.len()
    }

    /// The hub's counters.
    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// Counts an event of `kind` (whether or not anyone listens).
    pub fn count(&self, kind: ContainerEventType) {
        if let Some(n) = self.counters.published.get(kind as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues `event` for every subscriber without waiting; a subscriber whose queue is full is
    /// dropped (with a warning), one that went away is forgotten.
    pub fn publish(&self, event: ContainerEventResponse) {
        let mut subs = self.subscribers();
        subs.list.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.overflowed.store(true, Ordering::Relaxed);
                self.counters
                    .dropped_subscribers
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    subscriber = s.id,
                    queue = self.queue,
                    container_id = %event.container_id,
                    "container event subscriber fell {} events behind: dropping it (its stream ends with RESOURCE_EXHAUSTED)",
                    self.queue
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Ends every subscriber's stream (after what is queued) and refuses new ones.
    pub fn close(&self) {
        let mut subs = self.subscribers();
        subs.closed = true;
        subs.list.clear();
    }
}

/// One subscriber's event stream (the `GetContainerEvents` response stream).
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<ContainerEventResponse>,
    overflowed: Arc<AtomicBool>,
    hub: std::sync::Weak<Mutex<Subscribers>>,
    done: bool,
}

impl Stream for Subscription {
    type Item = Result<ContainerEventResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(None) => {
                self.done = true;
                if self.overflowed.load(Ordering::Relaxed) {
                    return Poll::Ready(Some(Err(Status::resource_exhausted(
                        "container event subscriber fell too far behind and was dropped: \
                         events were lost; subscribe again and relist",
                    ))));
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let mut subs = hub.lock().unwrap_or_else(|p| p.into_inner());
            subs.list.retain(|s| s.id != self.id);
        }
        debug!(subscriber = self.id, "container event subscriber left");
    }
}

/// The event type's name as used in logs and metric labels.
pub fn type_label(kind: ContainerEventType) -> &'static str {
    match kind {
        ContainerEventType::ContainerCreatedEvent => "created",
        ContainerEventType::ContainerStartedEvent => "started",
        ContainerEventType::ContainerStoppedEvent => "stopped",
        ContainerEventType::ContainerDeletedEvent => "deleted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn event(id: &str, kind: ContainerEventType) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: id.into(),
            container_event_type: kind as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let hub = EventHub::new(8);
        let mut a = hub.subscribe().expect("a");
        let mut b = hub.subscribe().expect("b");
        hub.publish(event("c1", ContainerEventType::ContainerCreatedEvent));
        hub.publish(event("c1", ContainerEventType::ContainerStartedEvent));
        hub.count(ContainerEventType::ContainerCreatedEvent);
        for sub in [&mut a, &mut b] {
            let first = sub.next().await.expect("first").expect("ok");
            let second = sub.next().await.expect("second").expect("ok");
            assert_eq!(
                first.container_event_type,
                ContainerEventType::ContainerCreatedEvent as i32
            );
            assert_eq!(
                second.container_event_type,
                ContainerEventType::ContainerStartedEvent as i32
            );
        }
        assert_eq!(hub.counters().published[0].load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn full_subscriber_is_dropped_and_told_after_its_queue_while_others_continue() {
        let hub = EventHub::new(2);
        let mut slow = hub.subscribe().expect("slow");
        let mut fast = hub.subscribe().expect("fast");
        for i in 0..5 {
            hub.publish(event(
                &format!("c{i}"),
                ContainerEventType::ContainerCreatedEvent,
            ));
            let got = fast.next().await.expect("event").expect("ok");
            assert_eq!(got.container_id, format!("c{i}"));
        }
        assert_eq!(hub.subscriber_count(), 1, "only the fast one is left");
        assert_eq!(
            hub.counters().dropped_subscribers.load(Ordering::Relaxed),
            1
        );
        let ids: Vec<_> = [slow.next().await, slow.next().await]
            .into_iter()
            .map(|e| e.expect("queued").expect("ok").container_id)
            .collect();
        assert_eq!(ids, ["c0", "c1"], "what was queued is delivered");
        let err = slow
            .next()
            .await
            .expect("error item")
            .expect_err("overflow");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(slow.next().await.is_none());
    }

    #[tokio::test]
    async fn dropped_subscription_leaves_and_close_ends_streams() {
        let hub = EventHub::new(4);
        let gone = hub.subscribe().expect("gone");
        let mut stays = hub.subscribe().expect("stays");
        drop(gone);
        assert_eq!(hub.subscriber_count(), 1);
        hub.publish(event("c", ContainerEventType::ContainerDeletedEvent));
        hub.close();
        assert!(stays.next().await.expect("queued").is_ok());
        assert!(stays.next().await.is_none(), "closed hub ends the stream");
        assert_eq!(
            hub.subscribe().expect_err("closed").code(),
            tonic::Code::Unavailable
        );
    }
}
