//! From bytes to lines and back: [`framing`] cuts a byte stream into lines and
//! cleans them; [`protocol`] turns lines into commands and holds the reply
//! catalogue of the line protocol.

pub mod dialect;
pub mod framing;
pub mod line;
pub mod protocol;
pub mod when;
