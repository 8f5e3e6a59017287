//! Readiness benchmark (see BENCHMARKS.md): spawns the handler binary N times, as the Functions host does,
//! and measures the time from spawn to the first answered `GET /` (polled every millisecond; the host
//! polls every 25 ms, so this is the finer measurement).
//!
//! `cargo run --release --example bench_readiness -- target/release/portcullis-handler [N]`

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn answered(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args.get(1).expect("path to portcullis-handler");
    let runs: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(30);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let start = Instant::now();
        let mut child = Command::new(binary)
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env(
                "PORTCULLIS_SIGNING_KEY",
                "cG9ydGN1bGxpcy1pbnRlZ3JhdGlvbi10ZXN0LWtleSE=",
            )
            .env("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the handler starts");
        while !answered(port) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not ready after 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "readiness over {runs} spawns: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (goal <= 50 ms)",
        pct(0.5),
        pct(0.9),
        times[times.len() - 1]
    );
}
