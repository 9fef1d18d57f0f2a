//! What leaves the gate: the request the origin receives (without the
//! client's token), and every answer the gate gives itself.
pub mod origin;
pub mod reply;
