//! The request mix: what each kind of request is, how often it is sent, and
//! what a correct proxy answers to it.

/// Header telling the mock upstream how to answer (the proxy forwards it
/// like any other end-to-end header).
pub const MODE_HEADER: &str = "x-soak-mode";
/// Header with which the mock echoes the request id it received.
pub const ECHO_HEADER: &str = "x-soak-id";
/// Header with which the mock reports how many knowledge blocks it saw.
pub const BLOCKS_HEADER: &str = "x-soak-blocks";

/// A task the shipped KB augments (CWE-89) under the default `detect` policy.
pub const SQL_TASK: &str =
    "Write a Python function that builds an SQL query from a user-supplied name";
/// A request `detect` does not send to the plugin.
pub const PLAIN_TASK: &str = "What is the capital of France?";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Chat completion the proxy augments: 200, one knowledge block upstream.
    AugmentedChat,
    /// Chat completion that is not a coding task: 200, body untouched.
    PlainChat,
    /// Augmented chat with `"stream": true`: 200, SSE read to `[DONE]`.
    Stream,
    /// Anthropic Messages, augmented: 200.
    Anthropic,
    /// `GET /v1/models`: passed through, 200.
    Passthrough,
    /// Body that is not JSON: the proxy's 400, nothing sent upstream.
    BadJson,
    /// Body over `server.max_body_bytes`: the proxy's 413.
    Oversize,
    /// The upstream answers 500: passed through as 500.
    Upstream5xx,
    /// The upstream sends headers and two SSE chunks, then resets the
    /// connection: the client gets 200 and then a body error.
    UpstreamReset,
    /// The client reads the first SSE chunk of a long stream and hangs up:
    /// the proxy must cancel the upstream stream.
    ClientDisconnect,
}

/// What a correct answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// This status, body read to the end.
    Status(u16),
    /// 200, then the body fails (the upstream reset the stream).
    ResetAfterHeaders,
    /// 200 and a first chunk; the client leaves.
    FirstChunkThenLeave,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::AugmentedChat,
        Kind::PlainChat,
        Kind::Stream,
        Kind::Anthropic,
        Kind::Passthrough,
        Kind::BadJson,
        Kind::Oversize,
        Kind::Upstream5xx,
        Kind::UpstreamReset,
        Kind::ClientDisconnect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::AugmentedChat => "augmented_chat",
            Kind::PlainChat => "plain_chat",
            Kind::Stream => "stream_sse",
            Kind::Anthropic => "anthropic_messages",
            Kind::Passthrough => "passthrough_get",
            Kind::BadJson => "bad_json",
            Kind::Oversize => "oversize_body",
            Kind::Upstream5xx => "upstream_5xx",
            Kind::UpstreamReset => "upstream_reset_mid_stream",
            Kind::ClientDisconnect => "client_disconnect_mid_stream",
        }
    }

    /// Relative frequency in the mix (out of 100): mostly the traffic a
    /// gateway carries, with every fault present throughout the run.
    pub fn weight(self) -> u32 {
        match self {
            Kind::AugmentedChat => 28,
            Kind::PlainChat => 14,
            Kind::Stream => 12,
            Kind::Anthropic => 10,
            Kind::Passthrough => 8,
            Kind::BadJson => 6,
            Kind::Oversize => 4,
            Kind::Upstream5xx => 6,
            Kind::UpstreamReset => 6,
            Kind::ClientDisconnect => 6,
        }
    }

    pub fn expect(self) -> Expect {
        match self {
            Kind::BadJson => Expect::Status(400),
            Kind::Oversize => Expect::Status(413),
            Kind::Upstream5xx => Expect::Status(500),
            Kind::UpstreamReset => Expect::ResetAfterHeaders,
            Kind::ClientDisconnect => Expect::FirstChunkThenLeave,
            _ => Expect::Status(200),
        }
    }

    /// Whether a correct proxy sends this request upstream at all.
    pub fn reaches_upstream(self) -> bool {
        !matches!(self, Kind::BadJson | Kind::Oversize)
    }

    /// Picks a kind by weight from a uniform number in 0..100.
    pub fn pick(roll: u32) -> Kind {
        let mut roll = roll % 100;
        for kind in Kind::ALL {
            if roll < kind.weight() {
                return kind;
            }
            roll -= kind.weight();
        }
        Kind::AugmentedChat
    }
}

/// A small deterministic generator (xorshift64*): runs are reproducible from
/// their seed, and no dependency is needed for it.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // A zero state would stay zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_cover_the_whole_range() {
        assert_eq!(Kind::ALL.iter().map(|k| k.weight()).sum::<u32>(), 100);
        assert_eq!(Kind::pick(0), Kind::AugmentedChat);
        assert_eq!(Kind::pick(99), Kind::ClientDisconnect);
    }

    #[test]
    fn every_kind_comes_up_in_a_short_run() {
        let mut rng = Rng::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            seen.insert(Kind::pick(rng.next_u32()));
        }
        assert_eq!(seen.len(), Kind::ALL.len());
    }
}
