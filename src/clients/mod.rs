//! Typed REST clients of the two upstream systems.
