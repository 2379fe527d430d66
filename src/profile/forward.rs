//! A forwarded port as a profile and the command line write it: `[tcp:|udp:][HOST:]GUEST`.
//! Parsed here, at the bottom, so the profile's checks and the VM's arguments share it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Transport of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The name QEMU's hostfwd takes.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A forward as the profile writes it: `[tcp:|udp:][HOST:]GUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Transport.
    pub proto: Proto,
    /// The host port; None: a free one, chosen per run.
    pub host: Option<u16>,
    /// The guest port.
    pub guest: u16,
}

impl Forward {
    /// Parses "8888:22", "22", "udp:5353:53".
    pub fn parse(s: &str) -> Result<Forward, String> {
        let (proto, rest) = match s.split_once(':') {
            Some(("tcp", r)) => (Proto::Tcp, r),
            Some(("udp", r)) => (Proto::Udp, r),
            _ => (Proto::Tcp, s),
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "`{s}`: `{p}` is not a port (1-65535); write \"HOST:GUEST\" such as \"8888:22\", or \"GUEST\" for a free host port"
                )),
            }
        };
        let (host, guest) = match rest.split_once(':') {
            Some((h, g)) => (Some(port(h)?), port(g)?),
            None => (None, port(rest)?),
        };
        Ok(Forward { proto, host, guest })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.proto == Proto::Udp {
            f.write_str("udp:")?;
        }
        match self.host {
            Some(h) => write!(f, "{h}:{}", self.guest),
            None => write!(f, "{}", self.guest),
        }
    }
}
