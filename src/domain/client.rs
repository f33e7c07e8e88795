//! Who is asking: the client's address, seen through trusted reverse proxies, and the
//! block of addresses one client controls (what per-address limits count).

use std::net::IpAddr;

/// Reverse proxies whose `X-Forwarded-For` is believed, as addresses or CIDR blocks.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, fd00::/8`.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut blocks = Vec::new();
        for item in list.split([',', ' ']).filter(|s| !s.is_empty()) {
            let (address, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = address
                .parse()
                .map_err(|_| format!("{item:?} is not an address or CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{item:?} has a bad prefix length"))?,
                None => max,
            };
            blocks.push((ip, bits));
        }
        Ok(TrustedProxies(blocks))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|&(block, bits)| in_block(ip, block, bits))
    }

    /// The client behind `peer`: when `peer` is a trusted proxy, the right-most address of
    /// `X-Forwarded-For` that is not itself a trusted proxy; otherwise `peer`.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let Some(forwarded) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in forwarded.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
        client
    }
}

fn in_block(ip: IpAddr, block: IpAddr, bits: u8) -> bool {
    match (ip, block) {
        (IpAddr::V4(ip), IpAddr::V4(block)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(block) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(block)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(block) & mask
        }
        _ => false,
    }
}

/// The unit one client controls: an IPv4 address, or an IPv6 /64 (a single host usually
/// has a whole /64 to rotate through).
pub fn address_block(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        assert_eq!(
            proxies.client(ip("10.1.2.3"), Some("203.0.113.7")),
            ip("203.0.113.7")
        );
        assert_eq!(
            proxies.client(ip("198.51.100.1"), Some("203.0.113.7")),
            ip("198.51.100.1"),
            "an untrusted peer cannot claim an address"
        );
        // A client-supplied entry on the left is ignored: the right-most untrusted hop wins.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), Some("1.2.3.4, 203.0.113.7, 10.0.0.2")),
            ip("203.0.113.7")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.1"), Some("garbage")),
            ip("10.0.0.1")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), Some("203.0.113.7")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(
            address_block(ip("2001:db8:1:2:3:4:5:6")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(address_block(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(address_block(ip("192.0.2.1")), "192.0.2.1");
    }
}
