//! One non-blocking `send()` on a socket the event loop owns, without Python.
//!
//! Fan-out hands a pre-encoded frame straight to the kernel for every connection whose outbound
//! path is idle, which is what the event loop's transport would do itself after several Python
//! calls. The socket is borrowed, never closed: the transport keeps owning it.

use std::io;

/// Outcome of offering `data` to the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The kernel took every byte.
    All,
    /// The kernel took the first `n` bytes (`n < data.len()`; 0 where sockets are not file
    /// descriptors); the rest must follow at once, through the transport.
    Part(usize),
    /// Nothing was taken: the socket buffer is full, or sending is not possible here.
    Nothing,
}

/// Sends what the kernel takes now; never blocks, never raises SIGPIPE.
///
/// Errors other than a full buffer (a reset peer, a closed descriptor) also come back as
/// [`Sent::Nothing`]: the caller then writes through the transport, which reports them its way.
#[cfg(unix)]
pub fn send_now(fd: i32, data: &[u8]) -> Sent {
    use std::io::Write;
    use std::mem::ManuallyDrop;
    use std::net::TcpStream;
    use std::os::unix::io::FromRawFd;

    if fd < 0 || data.is_empty() {
        return Sent::Nothing;
    }
    // SAFETY: the descriptor is open for the duration of the call (the caller checked that its
    // transport is not closing, and nothing else runs meanwhile) and ManuallyDrop keeps the
    // stream from closing it. std's TcpStream::write is one send(MSG_NOSIGNAL), so it works for
    // any stream socket; the loop made the descriptor non-blocking.
    let mut socket = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    loop {
        return match socket.write(data) {
            Ok(n) if n == data.len() => Sent::All,
            Ok(0) => Sent::Nothing,
            Ok(n) => Sent::Part(n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Sent::Nothing,
        };
    }
}

/// Windows sockets are not file descriptors: every frame goes through the transport.
#[cfg(not(unix))]
pub fn send_now(_fd: i32, data: &[u8]) -> Sent {
    if data.is_empty() {
        Sent::Nothing
    } else {
        Sent::Part(0)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::io::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    #[test]
    fn a_small_frame_goes_out_whole() {
        let (server, mut client) = pair();
        assert_eq!(send_now(server.as_raw_fd(), b"\x81\x02hi"), Sent::All);
        let mut got = [0; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x81\x02hi");
    }

    #[test]
    fn a_full_buffer_takes_part_then_nothing() {
        let (server, mut client) = pair();
        let chunk = vec![7u8; 1 << 20];
        let mut sent = 0;
        let mut saw_part = false;
        loop {
            match send_now(server.as_raw_fd(), &chunk) {
                Sent::All => sent += chunk.len(),
                Sent::Part(n) => {
                    saw_part = true;
                    sent += n;
                }
                Sent::Nothing => break,
            }
        }
        assert!(saw_part || sent % chunk.len() == 0);
        // The socket stays open and usable: everything sent arrives.
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), sent);
        assert!(got.iter().all(|&byte| byte == 7));
    }

    #[test]
    fn a_reset_peer_or_a_bad_descriptor_takes_nothing() {
        let (server, client) = pair();
        drop(client);
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            outcomes.push(send_now(server.as_raw_fd(), b"\x81\x00"));
        }
        assert_eq!(outcomes.last(), Some(&Sent::Nothing));
        assert_eq!(send_now(-1, b"\x81\x00"), Sent::Nothing);
        assert_eq!(send_now(server.as_raw_fd(), b""), Sent::Nothing);
    }
}
