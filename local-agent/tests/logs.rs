//! The firewall-log receiver over real UDP and TCP sockets on loopback: sender filtering, framing,
//! summarised rows, the spool across an outage and a restart.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use portcullis_agent::logs::config::LogsConfig;
use portcullis_agent::logs::envelope::Zone;
use portcullis_agent::logs::event::Format;
use portcullis_agent::logs::generator::{Generator, Mix};
use portcullis_agent::logs::metrics::LogMetrics;
use portcullis_agent::logs::ship::MemoryShipper;
use portcullis_agent::logs::spool::{Batch, Spool};
use portcullis_agent::logs::summarise::Row;
use portcullis_agent::logs::{self, Running};
use queue_message::FirewallAction;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::util::eventually_async;

const LIMIT: Duration = Duration::from_secs(30);

fn config(window: Duration) -> LogsConfig {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c = LogsConfig::listening(vec![local], vec![local]);
    c.allowed_senders = vec!["127.0.0.1/32".parse().unwrap()];
    c.timezone = Zone::Named(chrono_tz::UTC);
    c.window = window;
    c
}

fn start(
    config: LogsConfig,
    dir: &std::path::Path,
    shipper: Arc<MemoryShipper>,
) -> (Running, CancellationToken) {
    let token = CancellationToken::new();
    let running = logs::start(
        config,
        "home".to_owned(),
        dir,
        shipper,
        Arc::new(LogMetrics::default()),
        token.clone(),
    )
    .expect("logs start");
    (running, token)
}

async fn udp_from(source: &str) -> UdpSocket {
    UdpSocket::bind(format!("{source}:0")).await.unwrap()
}

fn spooled(dir: &std::path::Path) -> Vec<Batch> {
    let mut spool = Spool::open(dir, u64::MAX, Arc::new(LogMetrics::default())).unwrap();
    let mut out = Vec::new();
    while let Some((seq, batch)) = spool.oldest().unwrap() {
        out.push(batch);
        spool.remove(seq).unwrap();
    }
    out
}

fn rows(batches: &[Batch]) -> Vec<Row> {
    batches.iter().flat_map(|b| b.rows.clone()).collect()
}

fn scan_line(src: &str, dport: u16) -> String {
    let bsd = Utc::now().format("%b %e %H:%M:%S");
    format!(
        "<4>{bsd} nas kernel: [1.2] DROP wan: IN=eth0 OUT= SRC={src} DST=192.168.1.2 LEN=44 TOS=0x00 PREC=0x00 TTL=50 ID=1 PROTO=TCP SPT=40000 DPT={dport} WINDOW=1024 RES=0x00 SYN URGP=0 "
    )
}

#[tokio::test]
async fn udp_and_tcp_lines_become_rows_and_strangers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // A window far longer than the test: rows reach the spool when the receiver shuts down.
    let (running, token) = start(
        config(Duration::from_secs(3600)),
        dir.path(),
        Arc::new(MemoryShipper::default()),
    );
    let (udp, tcp) = (running.udp[0], running.tcp[0]);
    let metrics = running.metrics.clone();

    // UDP from an allowed sender: one scanner five times on port 23, a non-firewall line, and two lines
    // in one datagram.
    let ok = udp_from("127.0.0.1").await;
    for _ in 0..5 {
        ok.send_to(scan_line("203.0.113.5", 23).as_bytes(), udp)
            .await
            .unwrap();
    }
    ok.send_to(
        b"<30>Dec  1 06:00:00 gw dnsmasq-dhcp[811]: DHCPACK(br0) 192.168.1.9",
        udp,
    )
    .await
    .unwrap();
    let two = format!(
        "{}\n{}\n",
        scan_line("203.0.113.6", 22),
        scan_line("203.0.113.6", 3389)
    );
    ok.send_to(two.as_bytes(), udp).await.unwrap();

    // TCP: octet counting, then newline framing on one connection.
    let stream = TcpSocket::new_v4().unwrap();
    stream.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut stream = stream.connect(tcp).await.unwrap();
    let framed = scan_line("203.0.113.7", 445);
    stream
        .write_all(format!("{} {framed}", framed.len()).as_bytes())
        .await
        .unwrap();
    stream
        .write_all(
            format!(
                "{}\n{}\n",
                scan_line("203.0.113.7", 445),
                scan_line("203.0.113.8", 80)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();

    // A sender outside allowed_senders, over UDP and over TCP.
    let stranger = udp_from("127.0.0.2").await;
    stranger
        .send_to(scan_line("203.0.113.66", 22).as_bytes(), udp)
        .await
        .unwrap();
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    if let Ok(mut s) = s.connect(tcp).await {
        let _ = s
            .write_all(format!("{}\n", scan_line("203.0.113.67", 22)).as_bytes())
            .await;
    }

    let want_lines = 5 + 1 + 2 + 3;
    assert!(
        eventually_async(LIMIT, || {
            let m = metrics.clone();
            async move {
                m.lines_received.load(Ordering::Relaxed) == want_lines
                    && m.rejected_senders.load(Ordering::Relaxed) == 2
            }
        })
        .await,
        "counts: {:?}",
        metrics.counts()
    );
    token.cancel();
    running.join().await;

    let c = metrics.counts();
    assert_eq!((c.lines_parsed, c.lines_not_firewall), (10, 1));
    let rows = rows(&spooled(dir.path()));
    let mut got: Vec<(String, Option<u16>, u64)> = rows
        .iter()
        .map(|r| (r.src_ip.unwrap().to_string(), r.dst_port, r.count))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("203.0.113.5".to_owned(), Some(23), 5),
            ("203.0.113.6".to_owned(), Some(22), 1),
            ("203.0.113.6".to_owned(), Some(3389), 1),
            ("203.0.113.7".to_owned(), Some(445), 2),
            ("203.0.113.8".to_owned(), Some(80), 1),
        ]
    );
    for row in &rows {
        assert_eq!(
            (
                row.site.as_str(),
                row.device.as_str(),
                row.format.as_str(),
                row.action
            ),
            ("home", "nas", "netfilter", Some(FirewallAction::Drop))
        );
        assert_eq!(
            (
                row.rule.as_deref(),
                row.interface.as_deref(),
                row.protocol.as_deref()
            ),
            (Some("DROP wan"), Some("eth0"), Some("tcp"))
        );
    }
}

#[tokio::test]
async fn an_outage_loses_nothing_and_batches_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let shipper = Arc::new(MemoryShipper::default());
    shipper.set_failing(true);
    let (running, token) = start(config(Duration::from_secs(1)), dir.path(), shipper.clone());
    let udp = running.udp[0];
    let metrics = running.metrics.clone();
    let sender = udp_from("127.0.0.1").await;
    let mut generator = Generator::new(11, Mix::SCAN_HEAVY);
    let mut sent_drops = 0u64;
    // Three windows' worth while the queue is down.
    for round in 0..3u64 {
        for _ in 0..200 {
            let line = generator.line(Format::Filterlog, Utc::now());
            sent_drops += u64::from(line.contains(",block,"));
            sender.send_to(line.as_bytes(), udp).await.unwrap();
        }
        assert!(
            eventually_async(LIMIT, || {
                let m = metrics.clone();
                async move { m.spool_batches.load(Ordering::Relaxed) > round }
            })
            .await,
            "window {round} spooled"
        );
    }
    assert!(shipper.attempts() > 0, "sends were tried during the outage");
    assert!(shipper.batches().is_empty());
    shipper.set_failing(false);
    assert!(
        eventually_async(Duration::from_secs(90), || {
            let m = metrics.clone();
            async move { m.spool_batches.load(Ordering::Relaxed) == 0 }
        })
        .await,
        "spool drained"
    );
    token.cancel();
    running.join().await;
    let batches = shipper.batches();
    let rows = rows(&batches);
    assert_eq!(
        rows.iter().map(|r| r.count).sum::<u64>(),
        sent_drops,
        "every dropped packet is counted once"
    );
    let firsts: Vec<_> = batches
        .iter()
        .map(|b| b.rows.iter().map(|r| r.first_seen).min().unwrap())
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] <= w[1]),
        "oldest batch first: {firsts:?}"
    );
    assert_eq!(metrics.counts().rows_shipped, rows.len() as u64);
    assert!(metrics.counts().bytes_shipped > 0);
}

#[tokio::test]
async fn a_restart_ships_what_the_spool_kept() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(MemoryShipper::default());
    down.set_failing(true);
    let (running, token) = start(config(Duration::from_secs(3600)), dir.path(), down);
    let sender = udp_from("127.0.0.1").await;
    for port in [22, 23, 25] {
        sender
            .send_to(scan_line("203.0.113.9", port).as_bytes(), running.udp[0])
            .await
            .unwrap();
    }
    let metrics = running.metrics.clone();
    assert!(
        eventually_async(LIMIT, || {
            let m = metrics.clone();
            async move { m.lines_parsed.load(Ordering::Relaxed) == 3 }
        })
        .await
    );
    // Shutdown writes the open window to the spool; nothing was shipped.
    token.cancel();
    running.join().await;

    let up = Arc::new(MemoryShipper::default());
    let (running, token) = start(config(Duration::from_secs(3600)), dir.path(), up.clone());
    assert!(
        eventually_async(LIMIT, || {
            let up = up.clone();
            async move { !up.batches().is_empty() }
        })
        .await,
        "the spooled batch is shipped after the restart"
    );
    token.cancel();
    running.join().await;
    let mut ports: Vec<_> = rows(&up.batches()).iter().map(|r| r.dst_port).collect();
    ports.sort();
    assert_eq!(ports, vec![Some(22), Some(23), Some(25)]);
}

/// Generated UDP traffic through the receiver and the queue shipper into Azurite: the reports queue
/// holds signed log-batch reports whose rows add up to the drops that were sent.
#[tokio::test]
async fn rows_reach_the_reports_queue_as_signed_log_batches() {
    queue_message::require!(queue_message::testing::azurite_available());
    use portcullis_agent::logs::ship::QueueShipper;
    use queue_message::{Report, ReportBody};

    let env = crate::util::Env::new().await;
    let connection =
        Arc::new(queue_message::QueueConnection::parse(&env.azurite.connection_string()).unwrap());
    let reports = connection.queue("portcullis-reports");
    reports.create_if_missing().await.unwrap();
    let shipper = Arc::new(QueueShipper::new(
        connection.queue("portcullis-reports"),
        env.key.clone(),
        "home".to_owned(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let running = logs::start(
        config(Duration::from_secs(1)),
        "home".to_owned(),
        dir.path(),
        shipper,
        Arc::new(LogMetrics::default()),
        token.clone(),
    )
    .unwrap();
    let metrics = running.metrics.clone();
    let sender = udp_from("127.0.0.1").await;
    let mut generator = Generator::new(5, Mix::SCAN_HEAVY);
    let mut drops = 0u64;
    for i in 0..2000 {
        let format = Format::ALL[i % Format::ALL.len()];
        let line = generator.line(format, Utc::now());
        let parsed = portcullis_agent::logs::parse::parse_line(&line);
        if let portcullis_agent::logs::parse::Outcome::Event(e) = parsed {
            drops += u64::from(e.action == Some(portcullis_agent::logs::event::Action::Drop));
        }
        sender
            .send_to(line.as_bytes(), running.udp[0])
            .await
            .unwrap();
        if i % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        eventually_async(LIMIT, || {
            let m = metrics.clone();
            async move {
                let c = m.counts();
                c.lines_received == 2000 && c.spool_batches == 0 && c.rows_shipped > 0
            }
        })
        .await,
        "{:?}",
        metrics.counts()
    );
    token.cancel();
    running.join().await;
    let mut total = 0;
    let mut messages = 0;
    loop {
        let got = reports.receive(32, 30).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            messages += 1;
            let report =
                Report::decode(&m.text, std::slice::from_ref(&env.key)).expect("signed report");
            assert_eq!(report.site, "home");
            let ReportBody::Logs(batch) = report.body else {
                panic!("not a log batch")
            };
            for row in batch.rows {
                assert_eq!(
                    row.action,
                    Some(FirewallAction::Drop),
                    "default actions ship drops only"
                );
                total += row.count;
            }
            reports.delete(&m.id, &m.pop_receipt).await.unwrap();
        }
    }
    assert!(messages > 0);
    assert_eq!(total, drops, "every drop sent is counted in the rows");
    assert_eq!(metrics.counts().lines_received, 2000);
}

/// The agent binary with `[logs]`: UDP lines become signed log-batch reports on the reports queue, and
/// `status` shows the log counters.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_binary_ships_logs_to_the_reports_queue() {
    queue_message::require!(queue_message::testing::azurite_available());
    use queue_message::{Report, ReportBody};

    let env = crate::util::Env::new().await;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let firewall = format!(
        "[firewall]\nbackend = \"dry-run\"\nreconcile_interval = \"5s\"\n\n[logs]\nlisten_udp = \"127.0.0.1:{port}\"\nwindow = \"1s\"\ntimezone = \"UTC\"\n"
    );
    let config = env.config(&firewall, "", "create_queues = true");
    let _agent = crate::util::AgentProcess::start(&config, &[]);
    let connection =
        Arc::new(queue_message::QueueConnection::parse(&env.azurite.connection_string()).unwrap());
    let reports = connection.queue("portcullis-reports");
    let sender = udp_from("127.0.0.1").await;
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rows = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (sender, reports, key) = (Arc::new(sender), Arc::new(reports), env.key.clone());
    // The receiver may not be bound yet: keep sending the same scanner until a report arrives.
    let arrived = eventually_async(Duration::from_secs(60), || {
        let (sender, reports, key, rows) =
            (sender.clone(), reports.clone(), key.clone(), rows.clone());
        async move {
            let _ = sender
                .send_to(scan_line("203.0.113.44", 22).as_bytes(), target)
                .await;
            for m in reports.receive(32, 30).await.unwrap_or_default() {
                let report =
                    Report::decode(&m.text, std::slice::from_ref(&key)).expect("signed report");
                if let ReportBody::Logs(batch) = report.body {
                    rows.lock().unwrap().extend(batch.rows);
                }
            }
            !rows.lock().unwrap().is_empty()
        }
    })
    .await;
    let rows = rows.lock().unwrap().clone();
    assert!(arrived, "no log report reached the reports queue");
    assert!(rows
        .iter()
        .all(|r| r.src_ip == Some("203.0.113.44".parse().unwrap()) && r.dst_port == Some(22)));
    let status = crate::util::cli_ok(&config, &["status", "--json"]);
    assert!(status.contains("\"lines_parsed\""), "{status}");
    let text = crate::util::cli_ok(&config, &["status"]);
    assert!(text.contains("firewall logs:"), "{text}");
}
