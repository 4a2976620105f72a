#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slotgate::command::multi::fuzzing::merge_replies(data));
