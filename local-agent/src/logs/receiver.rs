//! The syslog listeners: UDP (RFC 5426, one message per datagram; a datagram holding several lines is
//! split) and TCP (RFC 6587, octet counting and newline framing), on the addresses the owner chose.
//! Senders outside `allowed_senders` are counted and ignored, since syslog is unauthenticated. The UDP
//! receive buffer is enlarged (`SO_RCVBUF`) and the kernel's drops on it are read from `/proc/net/udp`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::{Buf as _, BytesMut};
use chrono::Utc;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::LogsConfig;
use super::metrics::{inc, LogMetrics};
use super::pipeline::Pipeline;

/// Receive buffer requested for each UDP socket. Linux grants at most twice `net.core.rmem_max`; at
/// 20,000 lines/s of ~250 bytes this holds about a second of traffic while the agent is busy.
pub const UDP_RECEIVE_BUFFER: usize = 8 * 1024 * 1024;

/// Longest syslog frame accepted over TCP (and the UDP datagram limit anyway).
pub const MAX_FRAME: usize = 64 * 1024;

/// Datagrams processed per lock of the pipeline before yielding to other tasks.
const BURST: usize = 256;

/// What the receive tasks share.
#[derive(Debug)]
pub struct Shared {
    /// The `[logs]` section.
    pub config: Arc<LogsConfig>,
    /// Parser and open window.
    pub pipeline: Mutex<Pipeline>,
    /// Counters.
    pub metrics: Arc<LogMetrics>,
    /// Notified when the open window must close early (memory bound reached).
    pub close_now: Notify,
}

impl Shared {
    fn ingest(&self, data: &[u8], sender: IpAddr) {
        let mut pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pipeline.ingest(data, sender, Utc::now());
        if pipeline.must_close() {
            self.close_now.notify_one();
        }
    }
}

/// Binds a UDP socket with the large receive buffer. Returns the socket and the buffer the kernel granted.
pub fn bind_udp(addr: SocketAddr) -> io::Result<(UdpSocket, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Best effort: the kernel caps the request at net.core.rmem_max; what it granted is reported.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    let granted = socket.recv_buffer_size().unwrap_or(0);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket.into())?;
    Ok((socket, granted))
}

/// Binds a TCP listener.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Receives datagrams until `shutdown`.
pub async fn udp_loop(socket: UdpSocket, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let first = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            () = shutdown.cancelled() => return,
        };
        let mut next = Some(first);
        let mut n = 0;
        // Drain what is queued with one lock per datagram but no wake-up per datagram.
        while let Some(result) = next.take() {
            match result {
                Ok((len, from)) => {
                    if shared.config.sender_allowed(from.ip()) {
                        shared.ingest(&buf[..len], from.ip());
                    } else {
                        inc(&shared.metrics.rejected_senders);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "syslog UDP receive failed");
                }
            }
            n += 1;
            if n < BURST {
                match socket.try_recv_from(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => next = Some(other),
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Accepts TCP connections until `shutdown`.
pub async fn tcp_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, from)) => {
                if !shared.config.sender_allowed(from.ip()) {
                    inc(&shared.metrics.rejected_senders);
                    drop(stream);
                    continue;
                }
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    connection(stream, from.ip(), &shared, shutdown).await;
                });
            }
            Err(error) => {
                tracing::debug!(%error, "syslog TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One framed unit taken from a TCP byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete message.
    Message(Vec<u8>),
    /// More bytes are needed.
    Incomplete,
    /// A message over [`MAX_FRAME`]: the connection is closed (its framing can no longer be trusted).
    TooLong,
}

/// Takes the next frame from `buf`. Octet counting (`LEN SP MSG`) is recognised by digits, a space and
/// a `<` (the PRI every RFC 5424 / 3164 message starts with); anything else is newline framing, so a
/// PRI-less line that starts with a digit (`1 2021-08-04T…`) is not mistaken for a length.
pub fn next_frame(buf: &mut BytesMut) -> Frame {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && digits <= 6 && buf.get(digits) == Some(&b' ') && buf.first() != Some(&b'0') {
        let after = buf.get(digits + 1).copied();
        if after.is_none() {
            return Frame::Incomplete;
        }
        if after == Some(b'<') {
            let len: usize = std::str::from_utf8(&buf[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(usize::MAX);
            if len > MAX_FRAME {
                return Frame::TooLong;
            }
            if buf.len() < digits + 1 + len {
                return Frame::Incomplete;
            }
            buf.advance(digits + 1);
            return Frame::Message(buf.split_to(len).to_vec());
        }
    } else if digits == buf.len() && digits <= 6 {
        return Frame::Incomplete;
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end > MAX_FRAME => Frame::TooLong,
        Some(end) => {
            let line = buf.split_to(end + 1);
            Frame::Message(line[..end].to_vec())
        }
        None if buf.len() > MAX_FRAME => Frame::TooLong,
        None => Frame::Incomplete,
    }
}

async fn connection(
    mut stream: TcpStream,
    sender: IpAddr,
    shared: &Shared,
    shutdown: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match next_frame(&mut buf) {
                Frame::Message(message) => shared.ingest(&message, sender),
                Frame::Incomplete => break,
                Frame::TooLong => {
                    inc(&shared.metrics.frames_too_long);
                    return;
                }
            }
        }
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            () = shutdown.cancelled() => return,
        };
        match read {
            Ok(0) => {
                // The sender closed: a last line without a newline still counts.
                if !buf.is_empty() && buf.len() <= MAX_FRAME {
                    shared.ingest(&buf, sender);
                }
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Datagrams the kernel dropped on the sockets with these inodes, from `/proc/net/udp` and
/// `/proc/net/udp6` (last column). `None` where that file does not exist.
pub fn kernel_drops(inodes: &[u64]) -> Option<u64> {
    let mut total = None;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(inode), Some(drops)) = (fields.get(9), fields.last()) else {
                continue;
            };
            if inode.parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                *total.get_or_insert(0) += drops.parse::<u64>().unwrap_or(0);
            }
        }
        total.get_or_insert(0);
    }
    total
}

/// The inode of a socket (what `/proc/net/udp` lists), from `/proc/self/fd`.
pub fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()
        .map(|m| m.ino())
}

/// Publishes the kernel's drop count and the granted buffer size.
pub fn publish_socket_stats(metrics: &LogMetrics, inodes: &[u64], granted: usize) {
    if let Some(drops) = kernel_drops(inodes) {
        metrics.kernel_drops.store(drops, Ordering::Relaxed);
    }
    metrics
        .receive_buffer_bytes
        .store(granted as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> (Vec<String>, BytesMut) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Frame::Message(m) = next_frame(&mut buf) {
            out.push(String::from_utf8(m).unwrap());
        }
        (out, buf)
    }

    #[test]
    fn octet_counting_and_newlines() {
        let (got, rest) = frames(
            b"11 <13>a b c d11 <13>hello\nx1 2021-08-04T06:59:07Z h filterlog 1 - - x\n<13>par",
        );
        assert_eq!(
            got,
            vec![
                "<13>a b c d",
                "<13>hello\nx",
                "1 2021-08-04T06:59:07Z h filterlog 1 - - x"
            ]
        );
        assert_eq!(&rest[..], b"<13>par");
    }

    #[test]
    fn partial_octet_frames_wait() {
        for partial in [&b"12"[..], b"12 ", b"12 <13>hel"] {
            let mut buf = BytesMut::from(partial);
            assert_eq!(next_frame(&mut buf), Frame::Incomplete, "{partial:?}");
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = BytesMut::from(&b"999999 <13>x"[..]);
        assert_eq!(next_frame(&mut buf), Frame::TooLong);
        let mut buf = BytesMut::from(&vec![b'a'; MAX_FRAME + 2][..]);
        assert_eq!(next_frame(&mut buf), Frame::TooLong);
    }
}
