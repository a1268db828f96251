//! The client a request is counted for: the unit of every per-client limit
//! (token requests, the outstanding-token partition, fair shares of a
//! replica, unfinished resumable uploads).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// A client address as limits count it: an IPv4 address, or the /64 of an
/// IPv6 one (the block one subscriber commonly holds). An IPv4-mapped IPv6
/// address is its IPv4 address. A request whose address is unknown counts
/// as [`ClientAddress::UNKNOWN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientAddress(Option<IpAddr>);

impl ClientAddress {
    /// The client of a request with no address (not a TCP peer).
    pub const UNKNOWN: Self = Self(None);

    /// The client `ip` belongs to.
    pub fn of(ip: IpAddr) -> Self {
        Self(Some(match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    IpAddr::V6(Ipv6Addr::from(segments))
                }
            },
        }))
    }

    /// How the client is named in keys, logs and metrics: `192.0.2.7`,
    /// `2001:db8:1:2::/64`, or `unknown`.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Some(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            None => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(text: &str) -> ClientAddress {
        ClientAddress::of(text.parse().unwrap())
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_one_its_ipv4() {
        assert_eq!(client("2001:db8:1:2::1"), client("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_eq!(client("2001:db8:1:2:ffff::1").key(), "2001:db8:1:2::/64");
        assert_eq!(client("::ffff:10.0.0.1"), client("10.0.0.1"));
        assert_eq!(client("10.0.0.1").key(), "10.0.0.1");
        assert_ne!(client("10.0.0.1"), client("10.0.0.2"));
        assert_eq!(ClientAddress::UNKNOWN.key(), "unknown");
    }
}
