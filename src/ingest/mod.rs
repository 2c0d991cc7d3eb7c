//! Inbound webhooks: signature verification on raw bytes, then tolerant payload parsing.

pub mod payload;
pub mod verify;
