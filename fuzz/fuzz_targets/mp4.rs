#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skyreels_fuzz::mp4(data));
