//! Input limits through the real binary: what a refused body costs the client and the handler.
//!
//! No queue is reached: every request here is refused or names nothing, so the handler runs against an
//! Azurite address where nothing listens.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{Handler, KEY_B64};

fn handler(max_body: &str) -> Handler {
    Handler::start(&[
        ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
        ("PORTCULLIS_SIGNING_KEY", KEY_B64),
        ("PORTCULLIS_MAX_BODY_BYTES", max_body),
    ])
}

/// Plays a client that writes its whole request (head and body) before reading a byte of the answer, as
/// Python `urllib` does. Returns the write error, if any, and whatever answer could be read.
fn write_all_then_read(
    port: u16,
    head: &str,
    body: &[u8],
    chunked: bool,
) -> (Option<String>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut written = stream.write_all(head.as_bytes());
    if written.is_ok() {
        written = if chunked {
            body.chunks(64 * 1024)
                .try_for_each(|chunk| {
                    stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                    stream.write_all(chunk)?;
                    stream.write_all(b"\r\n")
                })
                .and_then(|()| stream.write_all(b"0\r\n\r\n"))
        } else {
            stream.write_all(body)
        };
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let error = match (written, read) {
        (Err(w), _) => Some(format!("write: {w}")),
        (Ok(()), Err(r)) if answer.is_empty() => Some(format!("read: {r}")),
        _ => None,
    };
    (error, String::from_utf8_lossy(&answer).into_owned())
}

/// Issue 9 item 12: the 413 was sent before the body was read and the socket closed with unread data, so
/// a client that writes everything first got a connection reset instead of the answer. Forwarding mode
/// with a declared length, the same with a chunked body, and Data/Metadata mode.
#[test]
fn a_413_reaches_a_client_that_writes_its_whole_body_first() {
    let handler = handler("65536");
    // Far more than the socket buffers hold, so the client blocks in write until the handler reads.
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(4 * 1024 * 1024));
    let declared = format!(
        "POST /api/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let chunked = "POST /api/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let envelope =
        serde_json::json!({"Data": {"req": {"Method": "POST", "Body": body}}}).to_string();
    let invoke = format!(
        "POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        envelope.len()
    );
    for (name, head, bytes, is_chunked, want) in [
        (
            "declared length",
            declared.as_str(),
            body.as_bytes(),
            false,
            "HTTP/1.1 413",
        ),
        ("chunked", chunked, body.as_bytes(), true, "HTTP/1.1 413"),
        // The host gets 200 with the caller's 413 inside.
        (
            "data/metadata",
            invoke.as_str(),
            envelope.as_bytes(),
            false,
            "HTTP/1.1 200",
        ),
    ] {
        let (error, answer) = write_all_then_read(handler.port, head, bytes, is_chunked);
        assert_eq!(
            error, None,
            "{name}: the client saw {error:?}; answer so far {answer:?}"
        );
        assert!(answer.starts_with(want), "{name}: {answer}");
        assert!(answer.contains("payload-too-large"), "{name}: {answer}");
    }
}

/// Issue 9 item 11: Data/Metadata mode parsed the whole envelope into a `serde_json::Value` before looking
/// at `Body`; 24 MB of small JSON values took about ten times that in memory. The envelope is now walked
/// without being built, so peak memory grows by a small multiple of the envelope, not by a `Value` tree.
#[tokio::test]
async fn a_huge_envelope_costs_about_its_own_size() {
    let handler = handler("4194304");
    // About 24 MB of `[]` in an ignored member: 8 million JSON values, each a 32-byte `Value` when built.
    let filler = "[],".repeat(8_000_000);
    let envelope = format!(
        "{{\"Metadata\":{{\"x\":[{filler}[]]}},\"Data\":{{\"req\":{{\"Method\":\"POST\",\"Body\":\"{{}}\"}}}}}}"
    );
    let before = handler.peak_rss_kib();
    let response = reqwest::Client::new()
        .post(handler.url("/alerts"))
        .header("Content-Type", "application/json")
        .body(envelope.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    // `{}` is no alert kind: the caller's answer is the 422, so the envelope was read to the end.
    assert_eq!(answer["Outputs"]["res"]["statusCode"], 422, "{answer}");
    let grown_mib = (handler.peak_rss_kib() - before) / 1024;
    let envelope_mib = (envelope.len() / (1024 * 1024)) as u64;
    // The body is collected once (the envelope) and unescaped once (tiny here); allocator slack and the
    // growth of the collecting buffer may double it. A `Value` tree of these 8 M values is over 250 MiB.
    assert!(
        grown_mib < 3 * envelope_mib,
        "peak memory grew by {grown_mib} MiB for a {envelope_mib} MiB envelope"
    );
}
