//! The durable on-disk spool: closed windows wait here, one gzip'd JSON file per batch, until they are
//! shipped, oldest first. Each file is written to a temporary name, synced and renamed, so a kill -9
//! leaves either the whole batch or none of it, and a restart finds every batch that was spooled. The
//! spool is bounded by `spool_max_bytes`: the oldest batches are dropped first, and counted.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use super::metrics::LogMetrics;
use super::summarise::Row;

/// Most rows (and raw lines) in one spooled batch, so one failed send repeats little.
pub const MAX_BATCH_ROWS: usize = 1000;

const SUFFIX: &str = ".json.gz";

/// One batch: summarised rows and, with `ship_unparsed`, raw rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Rows.
    pub rows: Vec<Row>,
}

impl Batch {
    /// Rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits a closed window into batches of at most [`MAX_BATCH_ROWS`] rows.
    pub fn split(rows: Vec<Row>) -> Vec<Self> {
        let mut out = Vec::new();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            out.push(Self {
                rows: rows.by_ref().take(MAX_BATCH_ROWS).collect(),
            });
        }
        out
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    entries: u64,
    bytes: u64,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    files: VecDeque<Entry>,
    next_seq: u64,
    bytes: u64,
    metrics: Arc<LogMetrics>,
}

fn name(seq: u64, entries: u64) -> String {
    format!("{seq:020}-{entries}{SUFFIX}")
}

fn parse_name(file: &str) -> Option<(u64, u64)> {
    let stem = file.strip_suffix(SUFFIX)?;
    let (seq, entries) = stem.split_once('-')?;
    Some((seq.parse().ok()?, entries.parse().ok()?))
}

impl Spool {
    /// Opens (creating) the spool in `dir` and finds the batches a previous run left.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<LogMetrics>) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for item in fs::read_dir(dir)? {
            let item = item?;
            let file_name = item.file_name();
            let Some(file) = file_name.to_str() else {
                continue;
            };
            if file.ends_with(".tmp") {
                // A write that a crash interrupted before its rename: never a complete batch.
                let _ = fs::remove_file(item.path());
                continue;
            }
            if let Some((seq, entries)) = parse_name(file) {
                files.push(Entry {
                    seq,
                    entries,
                    bytes: item.metadata()?.len(),
                });
            }
        }
        files.sort_by_key(|e| e.seq);
        let next_seq = files.last().map_or(0, |e| e.seq + 1);
        let bytes = files.iter().map(|e| e.bytes).sum();
        let spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            files: files.into(),
            next_seq,
            bytes,
            metrics,
        };
        spool.publish();
        Ok(spool)
    }

    fn path(&self, entry: &Entry) -> PathBuf {
        self.dir.join(name(entry.seq, entry.entries))
    }

    fn publish(&self) {
        self.metrics
            .spool_bytes
            .store(self.bytes, Ordering::Relaxed);
        self.metrics
            .spool_batches
            .store(self.files.len() as u64, Ordering::Relaxed);
    }

    /// Writes a batch durably, then drops the oldest batches while the spool is over its bound.
    pub fn push(&mut self, batch: &Batch) -> io::Result<()> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        serde_json::to_writer(&mut encoder, batch).map_err(io::Error::other)?;
        let body = encoder.finish()?;
        let entry = Entry {
            seq: self.next_seq,
            entries: batch.len() as u64,
            bytes: body.len() as u64,
        };
        let path = self.path(&entry);
        let tmp = path.with_extension("tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        // The rename itself must survive a power cut: sync the directory.
        File::open(&self.dir)?.sync_all()?;
        self.next_seq += 1;
        self.bytes += entry.bytes;
        self.files.push_back(entry);
        while self.bytes > self.max_bytes && self.files.len() > 1 {
            if let Some(old) = self.files.pop_front() {
                let _ = fs::remove_file(self.path(&old));
                self.bytes -= old.bytes;
                self.metrics
                    .spool_dropped_batches
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .spool_dropped_rows
                    .fetch_add(old.entries, Ordering::Relaxed);
            }
        }
        self.publish();
        Ok(())
    }

    /// The oldest batch and its sequence number. A file that cannot be read back (disk damage) is
    /// dropped, counted, and the next one returned.
    pub fn oldest(&mut self) -> io::Result<Option<(u64, Batch)>> {
        while let Some(entry) = self.files.front() {
            let seq = entry.seq;
            let path = self.path(entry);
            let mut text = Vec::new();
            let read = File::open(&path)
                .and_then(|f| GzDecoder::new(f).read_to_end(&mut text))
                .and_then(|_| serde_json::from_slice::<Batch>(&text).map_err(io::Error::other));
            match read {
                Ok(batch) => return Ok(Some((seq, batch))),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "dropping an unreadable spooled log batch");
                    let entries = entry.entries;
                    self.remove(seq)?;
                    self.metrics
                        .spool_dropped_batches
                        .fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .spool_dropped_rows
                        .fetch_add(entries, Ordering::Relaxed);
                }
            }
        }
        Ok(None)
    }

    /// Removes a shipped batch (a no-op when the bound already dropped it).
    pub fn remove(&mut self, seq: u64) -> io::Result<()> {
        if let Some(i) = self.files.iter().position(|e| e.seq == seq) {
            if let Some(entry) = self.files.remove(i) {
                match fs::remove_file(self.path(&entry)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                self.bytes -= entry.bytes;
            }
        }
        self.publish();
        Ok(())
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn row(n: u64) -> Row {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
        Row {
            time_generated: t,
            site: "home".to_owned(),
            device: "fw".to_owned(),
            format: "filterlog".to_owned(),
            action: Some(queue_message::FirewallAction::Drop),
            rule: Some("1000000103".to_owned()),
            interface: Some("igb0".to_owned()),
            protocol: Some("tcp".to_owned()),
            src_ip: Some(format!("203.0.113.{}", n % 250).parse().unwrap()),
            src_port: None,
            dst_ip: Some("198.51.100.1".parse().unwrap()),
            dst_port: Some((n % 65535) as u16),
            count: n,
            first_seen: t,
            last_seen: t,
            dst_sample: vec!["198.51.100.1".parse().unwrap()],
            raw: None,
        }
    }

    fn batch(first: u64, n: u64) -> Batch {
        Batch {
            rows: (first..first + n).map(row).collect(),
        }
    }

    #[test]
    fn batches_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(LogMetrics::default());
        {
            let mut spool = Spool::open(dir.path(), 10_000_000, metrics.clone()).unwrap();
            for i in 0..3 {
                spool.push(&batch(i * 10, 10)).unwrap();
            }
            // A write interrupted before its rename is not a batch.
            fs::write(
                dir.path().join("00000000000000000099-5.json.tmp"),
                b"partial",
            )
            .unwrap();
        }
        let mut spool = Spool::open(dir.path(), 10_000_000, metrics.clone()).unwrap();
        assert_eq!(spool.len(), 3);
        assert_eq!(metrics.spool_batches.load(Ordering::Relaxed), 3);
        for i in 0..3 {
            let (seq, got) = spool.oldest().unwrap().unwrap();
            assert_eq!(
                got,
                batch(i * 10, 10),
                "batch {i} comes back whole and in order"
            );
            spool.remove(seq).unwrap();
        }
        assert!(spool.oldest().unwrap().is_none());
        assert_eq!(
            (spool.bytes(), metrics.spool_bytes.load(Ordering::Relaxed)),
            (0, 0)
        );
        // New batches continue the sequence after a restart.
        spool.push(&batch(100, 1)).unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), 10_000_000, metrics).unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().1, batch(100, 1));
        assert!(!dir.path().join("00000000000000000099-5.json.tmp").exists());
    }

    #[test]
    fn the_bound_drops_the_oldest_first_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(LogMetrics::default());
        let mut spool = Spool::open(dir.path(), 30_000, metrics.clone()).unwrap();
        let mut pushed = 0;
        while metrics.spool_dropped_batches.load(Ordering::Relaxed) < 3 {
            spool.push(&batch(pushed * 500, 500)).unwrap();
            pushed += 1;
            assert!(spool.bytes() <= 30_000, "never over the bound");
        }
        let dropped = metrics.spool_dropped_batches.load(Ordering::Relaxed);
        assert_eq!(
            metrics.spool_dropped_rows.load(Ordering::Relaxed),
            dropped * 500
        );
        assert_eq!(spool.len() as u64 + dropped, pushed);
        let (_, oldest) = spool.oldest().unwrap().unwrap();
        assert_eq!(
            oldest,
            batch(dropped * 500, 500),
            "the oldest kept is the one after the dropped ones"
        );
    }

    #[test]
    fn an_unreadable_file_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(LogMetrics::default());
        let mut spool = Spool::open(dir.path(), 10_000_000, metrics.clone()).unwrap();
        spool.push(&batch(0, 4)).unwrap();
        spool.push(&batch(4, 4)).unwrap();
        fs::write(dir.path().join(name(0, 4)), b"not gzip").unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().1, batch(4, 4));
        assert_eq!(metrics.spool_dropped_rows.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn split_caps_batches() {
        let rows: Vec<Row> = (0..2500).map(row).collect();
        let sizes: Vec<usize> = Batch::split(rows).iter().map(Batch::len).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        assert!(Batch::split(Vec::new()).is_empty());
    }
}
