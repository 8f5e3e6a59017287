//! The queue operations against a real Azurite: account-key connection strings (derived SAS) and SAS URLs.

use std::sync::Arc;

use queue_message::testing::Azurite;
use queue_message::{QueueConnection, QueueError};

#[tokio::test]
async fn send_receive_delete_with_an_account_key() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let connection = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
    let queue = connection.queue("roundtrip");
    assert!(!queue.exists().await.unwrap());
    assert!(matches!(
        queue.send("x", 60).await,
        Err(QueueError::NotFound(_))
    ));
    queue.create_if_missing().await.unwrap();
    queue.create_if_missing().await.unwrap();
    queue.send("{\"a\":\"<&>\"}", 60).await.unwrap();
    queue.send("second", 60).await.unwrap();
    assert_eq!(queue.approximate_count().await.unwrap(), 2);

    let received = queue.receive(32, 30).await.unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].text, "{\"a\":\"<&>\"}");
    assert_eq!(received[0].dequeue_count, 1);
    // Hidden while the visibility timeout runs.
    assert!(queue.receive(32, 30).await.unwrap().is_empty());
    for m in &received {
        queue.delete(&m.id, &m.pop_receipt).await.unwrap();
    }
    assert_eq!(queue.approximate_count().await.unwrap(), 0);
    // exists, failed send, 2 creates, 2 sends, count, 2 receives, 2 deletes, count.
    assert_eq!(queue.transactions(), 12);
}

#[tokio::test]
async fn a_sas_url_reaches_the_queue_and_a_wrong_key_is_denied() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let admin = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
    admin.queue("site1").create_if_missing().await.unwrap();

    // A service URL with an account SAS signed by the well-known key, as a user would paste it.
    let sas = queue_message::sas::AccountSas {
        account: "devstoreaccount1",
        permissions: "raup",
        resource_types: "sco",
        start: None,
        expiry: chrono::Utc::now() + chrono::Duration::hours(1),
        protocol: "https,http",
    }
    .sign(&base64_key());
    let url = format!("{}/site1?{sas}", azurite.service_url("http"));
    let connection = Arc::new(QueueConnection::parse(&url).unwrap());
    let queue = connection.queue(connection.queue_hint().unwrap());
    queue.send("via sas", 60).await.unwrap();
    assert_eq!(queue.receive(1, 5).await.unwrap()[0].text, "via sas");

    let wrong = azurite.connection_string().replace("Eby8", "Zby8");
    let denied = Arc::new(QueueConnection::parse(&wrong).unwrap())
        .queue("site1")
        .send("x", 60)
        .await;
    match denied {
        Err(QueueError::Denied(text)) => assert!(
            !text.contains("sig=") || text.contains("sig=REDACTED"),
            "{text}"
        ),
        other => panic!("expected Denied, got {other:?}"),
    }
}

fn base64_key() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(queue_message::connection::DEV_ACCOUNT_KEY)
        .unwrap()
}

#[tokio::test]
async fn peek_reads_without_hiding_or_counting_a_delivery() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let connection = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
    let queue = connection.queue("peeked");
    queue.create_if_missing().await.unwrap();
    assert!(queue.peek(32).await.unwrap().is_empty());
    queue.send("one", 60).await.unwrap();
    let peeked = queue.peek(32).await.unwrap();
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].text, "one");
    assert_eq!(peeked[0].dequeue_count, 0);
    // Still visible, and the first real receive is delivery number one.
    let received = queue.receive(32, 30).await.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].dequeue_count, 1);
}

#[tokio::test]
async fn a_message_lives_exactly_its_ttl() {
    queue_message::require!(queue_message::testing::azurite_available());
    // The handler sends each message with a time-to-live that ends at the block's `expires_at`; check
    // the service stores exactly what `send` asks for. `Peeked` has no times, so read them with the SDK.
    let azurite = Azurite::start();
    let connection = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
    let queue = connection.queue("ttl");
    queue.create_if_missing().await.unwrap();
    let ttl = 30 * 86_400 + 5;
    queue.send("lives 30 days and 5 s", ttl).await.unwrap();

    let sas = queue_message::sas::AccountSas {
        account: "devstoreaccount1",
        permissions: "r",
        resource_types: "sco",
        start: None,
        expiry: chrono::Utc::now() + chrono::Duration::hours(1),
        protocol: "https,http",
    }
    .sign(&base64_key());
    let url = format!("{}/ttl?{sas}", azurite.service_url("http"));
    let client = azure_storage_queue::QueueClient::new(
        azure_core::http::Url::parse(&url).unwrap(),
        None,
        None,
    )
    .unwrap();
    let peeked = client
        .peek_messages(None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let message = &peeked.items.unwrap()[0];
    let lifetime = message.expiration_time.unwrap() - message.insertion_time.unwrap();
    assert_eq!(lifetime.whole_seconds(), ttl);
}

/// A queue service that answers every request 503; returns its port and the number of requests so far.
fn always_unavailable() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the head and the body, so the client sees an answer rather than a reset.
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, requests)
}

#[tokio::test]
async fn with_retry_bounds_the_sdk_retries() {
    // The SDK's default retries (8, within a minute) kept a handler request waiting ~80 s on a dead queue.
    let (port, requests) = always_unavailable();
    let text = format!(
        "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};QueueEndpoint=http://127.0.0.1:{port}/{account}",
        account = queue_message::connection::DEV_ACCOUNT,
        key = queue_message::connection::DEV_ACCOUNT_KEY,
    );
    for (retries, attempts) in [(0, 1), (2, 3)] {
        let connection = Arc::new(
            QueueConnection::parse(&text)
                .unwrap()
                .with_retry(retries, std::time::Duration::from_secs(60)),
        );
        requests.store(0, std::sync::atomic::Ordering::SeqCst);
        let err = connection.queue("q").send("x", 60).await.unwrap_err();
        assert!(matches!(err, QueueError::Unavailable(_)), "{err:?}");
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            attempts,
            "{retries} retries"
        );
    }
}

#[tokio::test]
async fn a_narrowed_account_sas_can_add_but_not_read() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let admin = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
    admin.queue("narrow").create_if_missing().await.unwrap();
    let sender = Arc::new(
        QueueConnection::parse(&azurite.connection_string())
            .unwrap()
            .with_account_sas_permissions("a"),
    );
    let queue = sender.queue("narrow");
    queue.send("added", 60).await.unwrap();
    assert!(matches!(
        queue.receive(1, 5).await,
        Err(QueueError::Denied(_))
    ));
    assert!(matches!(
        sender.queue("other").create_if_missing().await,
        Err(QueueError::Denied(_))
    ));
    assert_eq!(
        admin.queue("narrow").receive(1, 5).await.unwrap()[0].text,
        "added"
    );
}
