//! A faithful stand-in for the Functions host's queue trigger and timer, which cannot be installed here.
//!
//! It does what the Storage Queues extension does (`QueueProcessor`, see the reference notes): receive a
//! message from the queue in Azurite over the REST API, POST it to the handler at `/<function>` in the
//! Data/Metadata shape (`Data.<binding>` = the message text; `Metadata.DequeueCount`, `Id`,
//! `InsertionTime`, `ExpirationTime`, `NextVisibleTime`, `PopReceipt`, `sys`), delete it on 2xx, make it
//! visible again on anything else, and after `max_dequeue_count` deliveries copy it to `<queue>-poison`
//! (created if needed) and delete the original.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

/// One invocation the emulator made.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub(crate) message_id: String,
    pub(crate) dequeue_count: u32,
    pub(crate) status: u16,
    /// When the invocation was posted (for the P11 breakdown; never asserted on).
    pub(crate) started: std::time::Instant,
}

pub(crate) struct Host {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub(crate) invocations: Arc<std::sync::Mutex<Vec<Invocation>>>,
    pub(crate) poisoned: Arc<AtomicUsize>,
}

/// An account SAS for Azurite's development account with every queue permission the host uses.
pub(crate) fn account_sas() -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(queue_message::connection::DEV_ACCOUNT_KEY)
        .unwrap();
    queue_message::sas::AccountSas {
        account: "devstoreaccount1",
        permissions: "rwdlacup",
        resource_types: "sco",
        start: None,
        expiry: chrono::Utc::now() + chrono::Duration::hours(2),
        protocol: "https,http",
    }
    .sign(&key)
}

#[derive(Debug)]
struct Message {
    id: String,
    pop_receipt: String,
    text: String,
    dequeue_count: u32,
    insertion: String,
    expiration: String,
    next_visible: String,
}

fn xml_field(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
        .to_owned()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// RFC 1123 (the queue service's XML) → RFC 3339 with offset (what the host puts in Metadata).
fn iso(rfc1123: &str) -> String {
    chrono::DateTime::parse_from_rfc2822(rfc1123)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// The queue REST calls the host makes.
#[derive(Clone)]
pub(crate) struct QueueRest {
    http: reqwest::Client,
    service: String,
    sas: String,
}

impl QueueRest {
    pub(crate) fn new(service: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            service: service.trim_end_matches('/').to_owned(),
            sas: account_sas(),
        }
    }

    async fn receive(&self, queue: &str, visibility_secs: u32) -> Option<Message> {
        let xml = self
            .http
            .get(format!(
                "{}/{queue}/messages?numofmessages=1&visibilitytimeout={visibility_secs}&{}",
                self.service, self.sas
            ))
            .header("x-ms-version", "2025-11-05")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        if !xml.contains("<QueueMessage>") {
            return None;
        }
        Some(Message {
            id: xml_field(&xml, "MessageId"),
            pop_receipt: xml_field(&xml, "PopReceipt"),
            text: unescape(&xml_field(&xml, "MessageText")),
            dequeue_count: xml_field(&xml, "DequeueCount").parse().unwrap_or(1),
            insertion: iso(&xml_field(&xml, "InsertionTime")),
            expiration: iso(&xml_field(&xml, "ExpirationTime")),
            next_visible: iso(&xml_field(&xml, "TimeNextVisible")),
        })
    }

    async fn delete(&self, queue: &str, m: &Message) {
        let _ = self
            .http
            .delete(format!(
                "{}/{queue}/messages/{}?popreceipt={}&{}",
                self.service,
                m.id,
                urlencode(&m.pop_receipt),
                self.sas
            ))
            .header("x-ms-version", "2025-11-05")
            .send()
            .await;
    }

    /// Update Message with a new visibility timeout (the host's `visibilityTimeout`, 0 by default).
    async fn release(&self, queue: &str, m: &Message, visibility_secs: u32) {
        let _ = self
            .http
            .put(format!(
                "{}/{queue}/messages/{}?popreceipt={}&visibilitytimeout={visibility_secs}&{}",
                self.service,
                m.id,
                urlencode(&m.pop_receipt),
                self.sas
            ))
            .header("x-ms-version", "2025-11-05")
            .body(format!(
                "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
                escape(&m.text)
            ))
            .send()
            .await;
    }

    pub(crate) async fn create(&self, queue: &str) {
        let _ = self
            .http
            .put(format!("{}/{queue}?{}", self.service, self.sas))
            .header("x-ms-version", "2025-11-05")
            .send()
            .await;
    }

    pub(crate) async fn add(&self, queue: &str, text: &str) {
        let status = self
            .http
            .post(format!("{}/{queue}/messages?{}", self.service, self.sas))
            .header("x-ms-version", "2025-11-05")
            .body(format!(
                "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
                escape(text)
            ))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "add to {queue}: {status}");
    }

    /// Approximate message count (`x-ms-approximate-messages-count`), 0 for a missing queue.
    pub(crate) async fn count(&self, queue: &str) -> u64 {
        let response = self
            .http
            .get(format!(
                "{}/{queue}?comp=metadata&{}",
                self.service, self.sas
            ))
            .header("x-ms-version", "2025-11-05")
            .send()
            .await
            .unwrap();
        response
            .headers()
            .get("x-ms-approximate-messages-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The texts in `queue`, peeked.
    pub(crate) async fn peek(&self, queue: &str) -> Vec<String> {
        let xml = self
            .http
            .get(format!(
                "{}/{queue}/messages?peekonly=true&numofmessages=32&{}",
                self.service, self.sas
            ))
            .header("x-ms-version", "2025-11-05")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml.split("<MessageText>")
            .skip(1)
            .map(|rest| unescape(rest.split("</MessageText>").next().unwrap()))
            .collect()
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The host's settings for one queue-triggered function.
#[derive(Clone)]
pub(crate) struct Trigger {
    pub(crate) queue: String,
    pub(crate) function: String,
    pub(crate) binding: String,
    pub(crate) max_dequeue_count: u32,
    pub(crate) polling: Duration,
    /// How long a message stays hidden while the function runs.
    pub(crate) lease_secs: u32,
    /// `visibilityTimeout`: delay before a failed message reappears.
    pub(crate) retry_after_secs: u32,
}

impl Host {
    /// Starts polling `trigger.queue` and invoking the handler at `handler_url`.
    pub(crate) fn start(service: &str, handler_url: &str, trigger: Trigger) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let invocations = Arc::new(std::sync::Mutex::new(Vec::new()));
        let poisoned = Arc::new(AtomicUsize::new(0));
        let rest = QueueRest::new(service);
        let handler_url = handler_url.to_owned();
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            let invocations = Arc::clone(&invocations);
            let poisoned = Arc::clone(&poisoned);
            async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let poison = format!("{}-poison", trigger.queue);
                while !stop.load(Ordering::SeqCst) {
                    let Some(m) = rest.receive(&trigger.queue, trigger.lease_secs).await else {
                        tokio::time::sleep(trigger.polling).await;
                        continue;
                    };
                    let body = json!({
                        "Data": { trigger.binding.clone(): m.text },
                        "Metadata": {
                            "DequeueCount": m.dequeue_count,
                            "ExpirationTime": m.expiration,
                            "Id": m.id,
                            "InsertionTime": m.insertion,
                            "NextVisibleTime": m.next_visible,
                            "PopReceipt": m.pop_receipt,
                            "sys": {
                                "MethodName": trigger.function,
                                "UtcNow": chrono::Utc::now().to_rfc3339(),
                                "RandGuid": uuid::Uuid::new_v4().to_string()
                            }
                        }
                    });
                    let started = std::time::Instant::now();
                    let status = http
                        .post(format!("{handler_url}/{}", trigger.function))
                        .header("Content-Type", "application/json")
                        .header(
                            "X-Azure-Functions-InvocationId",
                            uuid::Uuid::new_v4().to_string(),
                        )
                        .body(body.to_string())
                        .send()
                        .await
                        .map_or(599, |r| r.status().as_u16());
                    invocations.lock().unwrap().push(Invocation {
                        message_id: m.id.clone(),
                        dequeue_count: m.dequeue_count,
                        status,
                        started,
                    });
                    if (200..300).contains(&status) {
                        rest.delete(&trigger.queue, &m).await;
                    } else if m.dequeue_count >= trigger.max_dequeue_count {
                        rest.create(&poison).await;
                        rest.add(&poison, &m.text).await;
                        rest.delete(&trigger.queue, &m).await;
                        poisoned.fetch_add(1, Ordering::SeqCst);
                    } else {
                        rest.release(&trigger.queue, &m, trigger.retry_after_secs)
                            .await;
                    }
                }
            }
        });
        Self {
            stop,
            task: Some(task),
            invocations,
            poisoned,
        }
    }

    pub(crate) fn invocations(&self) -> Vec<Invocation> {
        self.invocations.lock().unwrap().clone()
    }

    pub(crate) async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One timer invocation as the host makes it (`Data.timer` with the schedule status).
pub(crate) async fn fire_timer(handler_url: &str, function: &str) -> (u16, Value) {
    let body = json!({
        "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
        "Metadata": { "sys": { "MethodName": function, "UtcNow": chrono::Utc::now().to_rfc3339(), "RandGuid": uuid::Uuid::new_v4().to_string() } }
    });
    let response = reqwest::Client::new()
        .post(format!("{handler_url}/{function}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
