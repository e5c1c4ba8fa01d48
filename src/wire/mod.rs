//! From bytes to lines and back: [`framing`] cuts a byte stream into lines and
//! cleans them; [`protocol`] turns lines into commands and holds the reply
//! catalogue of the line protocol; [`dialect`] is the seam between them and
//! the loop, with the line protocol ([`mod@line`]) and IRC ([`irc`]) behind it.

pub mod dialect;
pub mod framing;
pub mod irc;
pub mod line;
pub mod protocol;
pub mod when;
