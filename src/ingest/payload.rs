//! Payload parsing.
