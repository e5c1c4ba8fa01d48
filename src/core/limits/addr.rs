//! What counts as one address, and which addresses are exempt.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The unit of per-address accounting: an IPv4 address, or an IPv6 /64.
///
/// A /64 is what one IPv6 subscriber is normally given, so counting single
/// IPv6 addresses would let one host take 2^64 fresh identities. An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener
/// reports for an IPv4 peer) is the IPv4 address it maps.
///
/// Nine bytes, `Copy`, a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrKey {
    V4([u8; 4]),
    /// The first 64 bits of the address.
    V6([u8; 8]),
}

impl From<IpAddr> for AddrKey {
    fn from(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => AddrKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                AddrKey::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        }
    }
}

impl fmt::Display for AddrKey {
    /// `192.0.2.1`, or `2001:db8:1:2::/64`: fit for a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrKey::V4(o) => Ipv4Addr::from(o).fmt(f),
            AddrKey::V6(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(&p);
                write!(f, "{}/64", Ipv6Addr::from(o))
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; anything else
/// unchanged. (Not `Ipv6Addr::to_ipv4`, which would also turn `::1` into
/// `0.0.0.1`.)
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// One CIDR block, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cidr {
    V4 { net: u32, prefix: u8 },
    V6 { net: u128, prefix: u8 },
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Cidr::V4 { net, prefix }, IpAddr::V4(a)) => u32::from(a) & mask4(prefix) == net,
            (Cidr::V6 { net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask6(prefix) == net,
            _ => false,
        }
    }

    fn parse(item: &str) -> Result<Cidr, ExemptParseError> {
        let bad = |why: &str| ExemptParseError(format!("`{item}`: {why}"));
        let (addr, prefix) = match item.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (item, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            bad("not an IP address or CIDR block (examples: 10.0.0.0/8, 192.0.2.7, 2001:db8::/32, ::1)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .map_err(|_| bad("prefix length is not a number"))?,
            Some(_) => return Err(bad("prefix length is not a number")),
        };
        if prefix > max {
            return Err(bad(&format!("prefix length {prefix} is over {max}")));
        }
        // Host bits below the prefix are cleared, as most tools do:
        // `127.0.0.1/8` means `127.0.0.0/8`.
        Ok(match addr {
            IpAddr::V4(a) => Cidr::V4 {
                net: u32::from(a) & mask4(prefix),
                prefix,
            },
            IpAddr::V6(a) => Cidr::V6 {
                net: u128::from(a) & mask6(prefix),
                prefix,
            },
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cidr::V4 { net, prefix: 32 } => Ipv4Addr::from(net).fmt(f),
            Cidr::V4 { net, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(net)),
            Cidr::V6 { net, prefix: 128 } => Ipv6Addr::from(net).fmt(f),
            Cidr::V6 { net, prefix } => write!(f, "{}/{prefix}", Ipv6Addr::from(net)),
        }
    }
}

/// `--exempt LIST`: addresses free of the per-address limits (not of flood
/// control), so that local tools and a reverse proxy on the same machine are
/// not taken for one abusive address. Default: loopback, `127.0.0.0/8,::1`.
///
/// Parses from a comma-separated list of CIDR blocks or bare addresses (a
/// bare address is a /32 or /128), or `none`. It is a short list scanned
/// linearly; the table asks it once per connection or hash job, not per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exempt {
    blocks: Vec<Cidr>,
}

/// Why an `--exempt` list did not parse; the message names the bad item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExemptParseError(String);

impl fmt::Display for ExemptParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad --exempt list: {}", self.0)
    }
}

impl std::error::Error for ExemptParseError {}

impl Exempt {
    /// The default list: `127.0.0.0/8,::1`.
    pub fn loopback() -> Self {
        Exempt {
            blocks: vec![
                Cidr::V4 {
                    net: 0x7f00_0000,
                    prefix: 8,
                },
                Cidr::V6 {
                    net: 1,
                    prefix: 128,
                },
            ],
        }
    }

    /// No address exempt (`--exempt none`).
    pub fn none() -> Self {
        Exempt { blocks: Vec::new() }
    }

    /// Parses `--exempt`: `none`, or comma-separated CIDRs / addresses with
    /// optional spaces around each. An empty list or an empty item is an
    /// error (write `none` to exempt nothing), so a typo never silently
    /// exempts nothing or everything.
    pub fn parse(list: &str) -> Result<Self, ExemptParseError> {
        let list = list.trim();
        if list.eq_ignore_ascii_case("none") {
            return Ok(Exempt::none());
        }
        if list.is_empty() {
            return Err(ExemptParseError(
                "empty list (write `none` to exempt no address)".into(),
            ));
        }
        let blocks = list
            .split(',')
            .map(|item| match item.trim() {
                "" => Err(ExemptParseError(format!(
                    "empty item in `{list}` (a stray comma?)"
                ))),
                item => Cidr::parse(item),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exempt { blocks })
    }

    /// Whether `ip` is exempt. An IPv4-mapped IPv6 address is also checked
    /// as the IPv4 address it maps, so `127.0.0.0/8` covers
    /// `::ffff:127.0.0.1` from a dual-stack listener.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canon = canonical(ip);
        self.blocks
            .iter()
            .any(|b| b.contains(canon) || (canon != ip && b.contains(ip)))
    }

    /// Whether the list is empty (`--exempt none`).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl Default for Exempt {
    fn default() -> Self {
        Exempt::loopback()
    }
}

impl FromStr for Exempt {
    type Err = ExemptParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Exempt::parse(s)
    }
}

impl fmt::Display for Exempt {
    /// The list as `--exempt` takes it: `127.0.0.0/8,::1`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.blocks.is_empty() {
            return f.write_str("none");
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            b.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn key_v4_is_the_address() {
        assert_eq!(AddrKey::from(ip("192.0.2.7")), AddrKey::V4([192, 0, 2, 7]));
        assert_ne!(
            AddrKey::from(ip("192.0.2.7")),
            AddrKey::from(ip("192.0.2.8"))
        );
    }

    #[test]
    fn key_v6_is_the_slash_64() {
        let a = AddrKey::from(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(a, AddrKey::from(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(a, AddrKey::from(ip("2001:db8:1:3::1")));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn key_v4_mapped_is_the_v4() {
        assert_eq!(
            AddrKey::from(ip("::ffff:192.0.2.7")),
            AddrKey::from(ip("192.0.2.7"))
        );
        // ::1 is not "IPv4-compatible 0.0.0.1".
        assert_eq!(AddrKey::from(ip("::1")), AddrKey::V6([0; 8]));
        assert_eq!(AddrKey::from(ip("192.0.2.7")).to_string(), "192.0.2.7");
        assert!(std::mem::size_of::<AddrKey>() <= 9);
    }

    #[test]
    fn default_exempts_loopback_only() {
        let e = Exempt::default();
        assert_eq!(e.to_string(), "127.0.0.0/8,::1");
        assert_eq!(e, Exempt::parse("127.0.0.0/8,::1").unwrap());
        for a in ["127.0.0.1", "127.255.0.3", "::1", "::ffff:127.0.0.2"] {
            assert!(e.contains(ip(a)), "{a}");
        }
        for a in [
            "128.0.0.1",
            "10.0.0.1",
            "::2",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!e.contains(ip(a)), "{a}");
        }
    }

    #[test]
    fn none_exempts_nothing() {
        let e = Exempt::parse("none").unwrap();
        assert!(e.is_empty());
        assert!(!e.contains(ip("127.0.0.1")));
        assert_eq!(e.to_string(), "none");
        assert_eq!(Exempt::parse(" NONE ").unwrap(), e);
    }

    #[test]
    fn parses_lists() {
        let e: Exempt = " 10.0.0.0/8 , 192.0.2.7,2001:db8::/32 ,0.0.0.0/0"
            .parse()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "10.0.0.0/8,192.0.2.7,2001:db8::/32,0.0.0.0/0"
        );
        assert!(e.contains(ip("8.8.8.8")));
        assert!(e.contains(ip("2001:db8:ffff::1")));
        assert!(!e.contains(ip("2001:db9::1")));
        // Host bits are cleared.
        assert_eq!(
            Exempt::parse("127.0.0.1/8").unwrap().to_string(),
            "127.0.0.0/8"
        );
        // ::/0 covers every IPv6 address, mapped ones included.
        assert!(
            Exempt::parse("::/0")
                .unwrap()
                .contains(ip("::ffff:1.2.3.4"))
        );
        let e = Exempt::parse("2001:db8::5").unwrap();
        assert!(e.contains(ip("2001:db8::5")));
        assert!(!e.contains(ip("2001:db8::6")));
    }

    #[test]
    fn rejects_bad_lists_with_a_message_naming_the_item() {
        for (bad, says) in [
            ("", "empty list"),
            ("  ", "empty list"),
            ("10.0.0.0/8,", "empty item"),
            (",::1", "empty item"),
            ("localhost", "`localhost`"),
            ("10.0.0.0/33", "over 32"),
            ("::/129", "over 128"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0.0/8/8", "not a number"),
            ("10.0.0/8", "`10.0.0/8`"),
            ("1.2.3.4/0008", "not a number"),
        ] {
            let err = Exempt::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("bad --exempt list: "), "{bad}: {err}");
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Exempt::parse(&s);
        }

        #[test]
        fn display_round_trips(a in any::<u32>(), p in 0u8..=32, b in any::<u128>(), q in 0u8..=128) {
            let text = format!("{}/{p},{}/{q}", Ipv4Addr::from(a), Ipv6Addr::from(b));
            let e = Exempt::parse(&text).unwrap();
            prop_assert_eq!(Exempt::parse(&e.to_string()).unwrap(), e.clone());
            prop_assert!(e.contains(IpAddr::V4(Ipv4Addr::from(a))));
            prop_assert!(e.contains(IpAddr::V6(Ipv6Addr::from(b))));
        }
    }
}
