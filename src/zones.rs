//! Zones: which zone (or region) slotgate runs in, and which zone each node is in, from a map
//! of address ranges (CIDR) and host-name suffixes. What replica reads will prefer; reported per
//! node in `/topology` and INFO today.
//!
//! Pure: parsing and matching only. It must never resolve a name or touch a socket: a node
//! named by host is matched by its name's suffix, never by looking it up.

use std::net::IpAddr;

/// One rule of the zone map: addresses in a range, or host names ending with a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Cidr { net: IpAddr, bits: u8 },
    Suffix(String),
}

impl Rule {
    fn parse(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        if let Some((ip, bits)) = s.split_once('/') {
            let net: IpAddr = ip
                .parse()
                .map_err(|_| format!("'{s}' is not an address range (CIDR)"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits
                .parse()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?;
            return Ok(Rule::Cidr { net, bits });
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Rule::Cidr { net: ip, bits });
        }
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(format!(
                "'{s}' is neither an address range nor a host-name suffix"
            ));
        }
        Ok(Rule::Suffix(s.to_ascii_lowercase()))
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match (self, ip) {
            (Rule::Cidr { net, bits }, Some(ip)) => in_range(ip, *net, *bits),
            (Rule::Cidr { .. }, None) => false,
            (Rule::Suffix(s), None) => host.to_ascii_lowercase().ends_with(s.as_str()),
            (Rule::Suffix(_), Some(_)) => false,
        }
    }
}

/// Whether `ip` is in `net/bits` (an IPv4 address never matches an IPv6 range, and back).
fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32),
        _ => return false,
    };
    let bits = u32::from(bits).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (a >> shift) == (b >> shift)
}

/// The zone map: zones in the order given, each with its rules; a node takes the first zone
/// one of whose rules matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneMap {
    zones: Vec<(String, Vec<Rule>)>,
}

impl ZoneMap {
    /// Adds zone `name` with its comma-separated ranges and suffixes (`10.1.0.0/16,
    /// .eu-west-1a.internal`). `Err` says which entry is wrong.
    pub fn add(&mut self, name: &str, rules: &str) -> Result<(), String> {
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("'{name}' is not a zone name"));
        }
        let parsed = rules
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(Rule::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err(format!(
                "zone {name} has no address range or host-name suffix"
            ));
        }
        match self.zones.iter_mut().find(|(n, _)| n == name) {
            Some((_, r)) => r.extend(parsed),
            None => self.zones.push((name.to_string(), parsed)),
        }
        Ok(())
    }

    /// A `--zone-map NAME=RULE[,RULE...]` flag.
    pub fn add_flag(&mut self, flag: &str) -> Result<(), String> {
        let (name, rules) = flag
            .split_once('=')
            .ok_or_else(|| format!("'{flag}' is not NAME=CIDR[,CIDR...]"))?;
        self.add(name, rules)
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The zone of the node at `addr` (`host:port` or `[v6]:port`), if one matches.
    pub fn zone_of(&self, addr: &str) -> Option<&str> {
        let host = host_of(addr);
        let ip = host.parse::<IpAddr>().ok();
        self.zones
            .iter()
            .find(|(_, rules)| rules.iter().any(|r| r.matches(host, ip)))
            .map(|(n, _)| n.as_str())
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match addr.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> ZoneMap {
        let mut m = ZoneMap::default();
        for (n, r) in entries {
            m.add(n, r).unwrap();
        }
        m
    }

    #[test]
    fn nodes_take_the_first_zone_that_matches_them() {
        let m = map(&[
            ("b", "127.0.0.2/32"),
            ("c", "127.0.0.3"),
            ("a", "127.0.0.0/8, .zone-a.internal"),
            ("v6", "fd00::/8"),
        ]);
        assert_eq!(m.zone_of("127.0.0.2:7000"), Some("b"));
        assert_eq!(m.zone_of("127.0.0.3:7000"), Some("c"));
        assert_eq!(m.zone_of("127.0.0.1:7000"), Some("a"));
        assert_eq!(m.zone_of("redis-1.ZONE-A.internal:6379"), Some("a"));
        assert_eq!(m.zone_of("[fd12::1]:6379"), Some("v6"));
        assert_eq!(m.zone_of("fd12::1"), Some("v6"));
        assert_eq!(m.zone_of("10.0.0.1:6379"), None);
        assert_eq!(m.zone_of("redis-2.zone-b.internal:6379"), None);
        // A suffix never matches an address, nor a range a name.
        assert_eq!(map(&[("x", ".1")]).zone_of("10.0.0.1:1"), None);
    }

    #[test]
    fn ranges_cover_exactly_their_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_range(ip("10.1.2.3"), ip("10.1.0.0"), 16));
        assert!(!in_range(ip("10.2.0.0"), ip("10.1.0.0"), 16));
        assert!(in_range(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(!in_range(ip("10.1.2.3"), ip("fd00::"), 8));
        assert!(in_range(ip("fd00::1"), ip("fd00::"), 127));
    }

    #[test]
    fn bad_entries_are_named() {
        let mut m = ZoneMap::default();
        assert!(m.add("a", "10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(
            m.add("a", "10.0.0.x/8")
                .unwrap_err()
                .contains("not an address range")
        );
        assert!(m.add("a", "").unwrap_err().contains("no address range"));
        assert!(
            m.add("a b", "10.0.0.0/8")
                .unwrap_err()
                .contains("zone name")
        );
        assert!(m.add_flag("a").unwrap_err().contains("NAME=CIDR"));
        assert!(m.add_flag("a=10.0.0.0/8,fd00::/7").is_ok());
        assert!(!m.is_empty());
    }
}
