//! The `watch` timer function: the approximate message count of every poison queue, one `poison-queue`
//! row each, so a stuck message raises an alert within minutes (the storage account's queue metric is
//! account-wide and refreshed about daily).
//!
//! A poison queue that does not exist yet counts 0: the Functions host and the agent create them on the
//! first poisoned message.

use axum::http::StatusCode;
use queue_message::QueueError;

use super::{rows, Answer, Outcome, Reports};

impl Reports {
    /// Handles one `watch` invocation (the timer's Data/Metadata body is not needed).
    pub async fn watch(&self) -> Answer {
        if self.settings.logs.is_none() {
            tracing::warn!("watch: PORTCULLIS_LOGS_ENDPOINT / PORTCULLIS_LOGS_RULE_ID unset; poison queues not reported.");
            return Answer {
                status: StatusCode::OK,
                logs: vec!["no logs sink configured".to_owned()],
            };
        }
        let now = (self.clock)();
        let mut logs = Vec::new();
        let mut status = StatusCode::OK;
        let mut out = Vec::new();
        for (site, queue) in &self.poison_queues {
            match queue.approximate_count().await {
                Ok(count) => out.push(rows::poison_queue_row(&now, site, queue.name(), count)),
                Err(QueueError::NotFound(_)) => {
                    out.push(rows::poison_queue_row(&now, site, queue.name(), 0));
                }
                Err(err) => {
                    tracing::warn!(queue = queue.name(), error = %err, "watch: cannot read a poison queue's count.");
                    logs.push(format!("{}: {err}", queue.name()));
                    status = StatusCode::SERVICE_UNAVAILABLE;
                }
            }
        }
        let key = format!("watch:{}", now.timestamp());
        for outcome in self.upload_events(&key, &out).await {
            match outcome {
                Outcome::Done => {}
                Outcome::Permanent(why) => logs.push(format!("permanent: {why}")),
                Outcome::Transient(why) => {
                    logs.push(format!("transient: {why}"));
                    status = StatusCode::SERVICE_UNAVAILABLE;
                }
            }
        }
        logs.push(format!("{} poison queue(s) counted", out.len()));
        Answer { status, logs }
    }
}
