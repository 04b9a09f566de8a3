//! Per-connection limits: every bound the protocol core enforces, in one place.

use std::time::Duration;

/// Every per-connection bound wsloop enforces, with defaults chosen for a
/// server that must survive hostile peers while passing the Autobahn suite.
///
/// One value of this struct is shared by all connections of a server. Sizes
/// are bytes, durations are wall-clock time measured with the `now` the
/// driver passes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line plus headers, up to and including
    /// the blank line). Larger heads are answered `431`. Default 8 KiB.
    pub max_request_head: usize,
    /// Largest body of a plain HTTP request (a REST call's JSON, say): the
    /// request is answered once all of it is in; a larger one is answered
    /// `413` without reading it. Default 16 MiB.
    pub max_request_body: usize,
    /// Most header fields in a request head. More are answered `431`.
    /// Default 64.
    pub max_headers: usize,
    /// Time from accept until the opening handshake must be complete; the
    /// connection is dropped when it runs out. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest payload of a single frame. Larger frames close with 1009.
    /// Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest message, summed over its fragments. Larger messages close with
    /// 1009. Default 16 MiB.
    pub max_message_size: usize,
    /// Most frames in one fragmented message. Default 1,048,576: Autobahn 9.3.1
    /// sends one message in 65,536 fragments, and since each fragment costs
    /// only its payload in memory the bound exists to cap per-frame CPU work.
    pub max_fragments: usize,
    /// Unsent output above which the server stops reading from the
    /// connection until the output drains below half of it. Default 1 MiB.
    pub write_buffer_soft: usize,
    /// Unsent output at which a connection that the application keeps
    /// writing to is closed with 1008: a send is refused when this much is
    /// already queued, so output never exceeds it by more than one
    /// message. Default 16 MiB.
    pub write_buffer_hard: usize,
    /// Most bytes a compressed message inflates to in one step. A larger
    /// message is inflated a step per turn of the event loop, so a peer
    /// whose 15 KB inflate to 15 MiB cannot hold the loop for the whole of
    /// it; other connections are served between steps. Default 256 KiB
    /// (well under a millisecond of zlib's time).
    pub inflate_slice: usize,
    /// Time from the first byte of a frame (or the first frame of a
    /// fragmented message) until the last byte of it (or of the message)
    /// must have arrived; a peer trickling one slower is closed with 1008.
    /// Pings and pongs in between are not progress. Default 60 s.
    pub frame_timeout: Duration,
    /// Silence after which the server sends a ping. Default 30 s.
    pub ping_interval: Duration,
    /// Time after a keepalive ping within which the peer must send
    /// something, or the connection closes with 1011. Default 30 s.
    pub pong_timeout: Duration,
    /// Time the server waits for the peer to finish the closing handshake
    /// (or to close TCP after it) before dropping the connection. Default 5 s.
    pub close_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_head: 8 * 1024,
            max_request_body: 16 * 1024 * 1024,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            max_frame_size: 16 * 1024 * 1024,
            max_message_size: 16 * 1024 * 1024,
            max_fragments: 1 << 20,
            write_buffer_soft: 1024 * 1024,
            write_buffer_hard: 16 * 1024 * 1024,
            inflate_slice: 256 * 1024,
            frame_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
        }
    }
}
