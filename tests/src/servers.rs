//! Servers on the host's loopback for the namespaced side to reach.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::thread::JoinHandle;
use std::time::Duration;

/// A TCP server on `addr:0` that answers each connection's first line with
/// `reply: LINE` and closes. Returns the port.
pub fn tcp_echo(addr: &str) -> u16 {
    let l = TcpListener::bind((addr, 0)).expect("binding a loopback TCP port");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 512];
                let mut got = Vec::new();
                while !got.contains(&b'\n') {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&got).trim().to_string();
                let _ = s.write_all(format!("reply: {line}\n").as_bytes());
            });
        }
    });
    port
}

/// A UDP server on `addr:0` answering each datagram with `reply: DATA`.
pub fn udp_echo(addr: &str) -> u16 {
    let s = UdpSocket::bind((addr, 0)).expect("binding a loopback UDP port");
    let port = s.local_addr().unwrap().port();
    let _h: JoinHandle<()> = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let line = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            let _ = s.send_to(format!("reply: {line}\n").as_bytes(), from);
        }
    });
    port
}
