//! The firewall-log receive path: any bytes as one datagram through the syslog envelope, format
//! detection and every format parser (`logs::parse::parse_line`), which must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_agent::logs::parse::parse_line;

fuzz_target!(|data: &[u8]| {
    // The receiver decodes datagrams lossily and splits them into lines; do the same.
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        let _ = parse_line(line);
    }
});
