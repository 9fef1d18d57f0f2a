//! What leaves the gate: the request the origin receives (without the
//! client's token), the origin's answer as the client receives it, every
//! answer the gate gives itself, the signed assertion that tells the origin
//! which call the gate authorized, and the log line that records it.
pub mod assertion;
pub mod log;
pub mod origin;
pub mod reply;
pub mod rewrite;
