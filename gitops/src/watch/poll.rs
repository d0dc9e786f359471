//! Polling: one tokio task per source that emits a [`ChangeEvent`] right away and then every
//! interval, until the receiver is dropped or the task is aborted.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{ChangeEvent, Trigger};
use crate::source::SourceId;

/// Starts polling `source` every `interval` (at least 1 s). Must be called inside a tokio
/// runtime. A slow consumer delays ticks instead of queueing a burst of them.
pub fn spawn_poller(
    source: SourceId,
    interval: Duration,
    tx: mpsc::Sender<ChangeEvent>,
) -> JoinHandle<()> {
    let interval = interval.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let event = ChangeEvent {
                source: source.clone(),
                trigger: Trigger::Poll,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn polls_immediately_then_every_interval() {
        let (tx, mut rx) = mpsc::channel(8);
        let id = SourceId::new("default", "apps");
        let task = spawn_poller(id.clone(), Duration::from_secs(10), tx);
        let start = tokio::time::Instant::now();
        for i in 0..3u64 {
            let ev = rx.recv().await.unwrap();
            assert_eq!(
                ev,
                ChangeEvent {
                    source: id.clone(),
                    trigger: Trigger::Poll
                }
            );
            assert_eq!(start.elapsed().as_secs(), i * 10);
        }
        drop(rx);
        // The task ends once nobody listens.
        tokio::time::advance(Duration::from_secs(11)).await;
        task.await.unwrap();
    }
}
