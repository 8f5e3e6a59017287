//! The agent's side of the wire: decode and verify a queue message text. A message that verifies must
//! encode again to a text that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_message::BlockMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = portcullis_fuzz::key();
    if let Ok(message) = BlockMessage::decode(text, std::slice::from_ref(&key)) {
        let again = BlockMessage::decode(&message.encode(&key), std::slice::from_ref(&key))
            .expect("a re-encoded message verifies");
        assert_eq!(again, message);
    }
});
