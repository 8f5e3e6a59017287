//! `POST /api/alerts` in forwarding mode: raw bytes as the caller's JSON body, through detection,
//! extraction, the policy and signing. Any panic is a finding; every refusal must be a reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::service::process;
use portcullis::Function;

fuzz_target!(|data: &[u8]| {
    let state = portcullis_fuzz::state();
    let processed = portcullis_fuzz::runtime().block_on(process(
        &state,
        Function::Alerts,
        Some("application/json"),
        data,
    ));
    assert!(
        processed.reply.status.as_u16() < 500,
        "{}",
        processed.summary
    );
});
