//! Failures the fuzz properties found in rk-ports (both fixed since): the
//! reproducers stay as regression tests.

use std::path::Path;

/// rk-ports: a chunked body whose trailer section passes `MAX_HEAD` is
/// refused (431) when it arrives in pieces but taken when it arrives at
/// once.
#[test]
fn chunked_trailer_over_max_head() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("known-failures/api_request/chunked-trailer-over-max-head");
    rk_driver_fuzz::ports::api_request(&std::fs::read(path).unwrap());
}

/// rk-ports: `parse_response` recurses once per interim (1xx) response, so
/// a peer that sends some ten thousand of them (250 kB) overflows the
/// stack of the client (rootlessctl), which aborts.
#[test]
fn many_interim_responses() {
    let mut data = vec![2u8];
    data.extend(b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000));
    data.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    // The size of a main thread's stack, whatever the test harness uses.
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || rk_driver_fuzz::ports::api_request(&data))
        .unwrap()
        .join()
        .unwrap();
}
