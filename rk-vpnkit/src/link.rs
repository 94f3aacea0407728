//! A connection to vpnkit: the handshake, then ethernet frames.

use crate::framing::FrameReader;
use crate::wire::{self, HandshakeError, Vif, FRAME_HEADER_LEN};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Room for many frames per read from the stream.
pub const READ_BUFFER: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("vpnkit closed the connection during the handshake ({0})")]
    Closed(&'static str),
    #[error("vpnkit did not answer the handshake within {}s ({what})", .waited.as_secs())]
    Timeout {
        waited: Duration,
        what: &'static str,
    },
    #[error("vpnkit connection: {0}")]
    Io(#[from] io::Error),
}

/// A connected interface.
pub struct Link {
    pub stream: UnixStream,
    pub vif: Vif,
    pub uuid: String,
    /// Frames read during set-up but not yet consumed stay here for the pump.
    pub reader: FrameReader,
}

impl Link {
    /// Greets vpnkit and asks for an ethernet interface named `uuid`.
    pub fn handshake(
        mut stream: UnixStream,
        uuid: String,
        timeout: Duration,
    ) -> Result<Link, LinkError> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let step = |s: &mut UnixStream, out: &[u8], into: &mut [u8], what| {
            s.write_all(out)
                .and_then(|()| s.read_exact(into))
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
                        LinkError::Closed(what)
                    }
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => LinkError::Timeout {
                        waited: timeout,
                        what,
                    },
                    _ => LinkError::Io(e),
                })
        };
        let mut init = [0u8; wire::INIT_LEN];
        step(&mut stream, &wire::client_init(), &mut init, "greeting")?;
        wire::parse_server_init(&init)?;
        let mut response = [0u8; wire::RESPONSE_LEN];
        step(
            &mut stream,
            &wire::ethernet_command(&uuid),
            &mut response,
            "ethernet command",
        )?;
        let vif = wire::parse_response(&response)?;
        Ok(Link {
            stream,
            vif,
            uuid,
            reader: FrameReader::new(READ_BUFFER),
        })
    }

    /// Sends one frame (set-up only: the pump batches its own).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let len = u16::try_from(frame.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 65535 bytes")
        })?;
        let mut record = Vec::with_capacity(FRAME_HEADER_LEN + frame.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(frame);
        self.stream.write_all(&record)
    }

    /// Waits until `deadline` for a frame that `pick` accepts, and returns
    /// what `pick` made of it; other frames are dropped (nothing else
    /// listens on the link during set-up). `None` at the deadline.
    pub fn receive<T>(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, LinkError> {
        loop {
            while let Some(frame) = self.reader.next_frame() {
                if let Some(t) = pick(frame) {
                    return Ok(Some(t));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            match self.reader.fill(&mut self.stream) {
                Ok(0) => return Err(LinkError::Closed("set-up")),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Back to blocking I/O without timeouts, for the pump.
    pub fn into_parts(self) -> io::Result<(UnixStream, FrameReader, Vif)> {
        self.stream.set_read_timeout(None)?;
        self.stream.set_write_timeout(None)?;
        Ok((self.stream, self.reader, self.vif))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that answers like gvproxy, with the given response type byte.
    fn peer(response_type: u8, magic: &'static [u8; 5]) -> UnixStream {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut init = [0u8; wire::INIT_LEN];
            theirs.read_exact(&mut init).unwrap();
            init[..5].copy_from_slice(magic);
            theirs.write_all(&init).unwrap();
            let mut cmd = [0u8; wire::COMMAND_LEN];
            if theirs.read_exact(&mut cmd).is_err() {
                return;
            }
            let mut resp = [0u8; wire::RESPONSE_LEN];
            resp[0] = response_type;
            resp[1..3].copy_from_slice(&1500u16.to_le_bytes());
            resp[3..5].copy_from_slice(&1514u16.to_le_bytes());
            resp[5..11].copy_from_slice(&[0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
            theirs.write_all(&resp).unwrap();
            // Two frames in one write, the second split over two writes.
            theirs.write_all(&[3, 0, 1, 2, 3, 2, 0, 9]).unwrap();
            theirs.write_all(&[9]).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        });
        ours
    }

    #[test]
    fn handshake_then_frames() {
        let uuid = "c3d68012-0208-41ea-9fd7-f2189899ab08".to_owned();
        let mut link = Link::handshake(peer(1, b"VMN3T"), uuid, Duration::from_secs(2)).unwrap();
        assert_eq!(link.vif.mtu, 1500);
        let deadline = Instant::now() + Duration::from_secs(2);
        let got = link.receive(deadline, |f| (f.len() == 2).then(|| f.to_vec()));
        assert_eq!(got.unwrap(), Some(vec![9, 9]));
        // The peer closes after its frames: set-up sees the end.
        let err = link.receive(Instant::now() + Duration::from_secs(2), |_| Some(()));
        assert!(matches!(err, Err(LinkError::Closed(_))), "{err:?}");
    }

    #[test]
    fn bad_magic_is_a_clear_error() {
        let uuid = "c3d68012-0208-41ea-9fd7-f2189899ab08".to_owned();
        let err = Link::handshake(peer(1, b"HTTP/"), uuid, Duration::from_secs(2))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("does not speak the vpnkit ethernet protocol"),
            "{err}"
        );
    }

    #[test]
    fn silent_peer_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let uuid = "c3d68012-0208-41ea-9fd7-f2189899ab08".to_owned();
        let err = Link::handshake(ours, uuid, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(err, LinkError::Timeout { .. }), "{err}");
    }

    #[test]
    fn receive_gives_up_at_the_deadline() {
        let uuid = "c3d68012-0208-41ea-9fd7-f2189899ab08".to_owned();
        let mut link = Link::handshake(peer(1, b"VMN3T"), uuid, Duration::from_secs(2)).unwrap();
        let got = link.receive(Instant::now() + Duration::from_millis(50), |f| {
            (f.len() == 100).then_some(())
        });
        assert_eq!(got.unwrap(), None);
    }
}
