#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rk_driver_fuzz::offload::coalesce(data);
});
