//! `POST /api/blocks`, the manual API: raw bytes as the caller's JSON body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::service::process;
use portcullis::Function;

fuzz_target!(|data: &[u8]| {
    let state = portcullis_fuzz::state();
    let processed = portcullis_fuzz::runtime().block_on(process(
        &state,
        Function::Blocks,
        Some("application/json"),
        data,
    ));
    assert!(
        processed.reply.status.as_u16() < 500,
        "{}",
        processed.summary
    );
});
