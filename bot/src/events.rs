//! The in-process event stream (run requested, approved, step started/finished, run finished)
//! that front-ends and the notifier subscribe to. Events are published after their
//! transaction commits, so a subscriber never sees an event the store does not hold.

use serde::Serialize;
use tokio::sync::broadcast;

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run was requested (it may await approval).
    RunRequested {
        run_id: i64,
        runbook: String,
        needs_approval: bool,
    },
    /// An approval was recorded; `quorum` when it was the deciding one.
    Approved {
        run_id: i64,
        request_id: i64,
        person: String,
        quorum: bool,
    },
    /// A request was denied.
    Denied {
        run_id: i64,
        request_id: i64,
        person: String,
    },
    /// A request expired.
    Expired { run_id: i64, request_id: i64 },
    /// A decision (gate, retry, skip, abort) awaits approval.
    DecisionRequested {
        run_id: i64,
        request_id: i64,
        action: String,
    },
    /// A step started.
    StepStarted {
        run_id: i64,
        idx: usize,
        name: String,
        attempt: u32,
    },
    /// A progress line from a running step.
    StepProgress {
        run_id: i64,
        idx: usize,
        line: String,
    },
    /// A step ended (`succeeded`, `failed`, `skipped`).
    StepFinished {
        run_id: i64,
        idx: usize,
        name: String,
        state: String,
        duration_ms: u64,
    },
    /// The run paused or ended; `state` is the run state.
    RunStateChanged {
        run_id: i64,
        state: String,
        detail: Option<String>,
    },
}

/// Broadcast hub.
#[derive(Clone)]
pub struct EventBus(
    broadcast::Sender<Event>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
);

impl Default for EventBus {
    fn default() -> Self {
        Self(broadcast::channel(1024).0, Default::default())
    }
}

impl EventBus {
    /// Publishes; without subscribers the event is dropped.
    pub fn publish(&self, e: Event) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.0.send(e);
    }

    /// Counts published events: a cache of store state built at generation N is current for
    /// this process's own changes while the generation is still N.
    pub fn generation(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// A new subscription (lagging subscribers lose the oldest events, never block drbot).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
