//! Signature verification.
