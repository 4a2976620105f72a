#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slotgate::protocol::fuzzing::request_parser(data));
