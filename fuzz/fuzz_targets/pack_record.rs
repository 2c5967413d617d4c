#![no_main]
// See spark_reliability::checks::check_pack_records for the property; the same function runs in cargo test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spark_reliability::checks::check_pack_records(data));
