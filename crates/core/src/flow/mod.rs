//! One request from arrival to answer: the decision, and the synchronous
//! passes the edge drives it in.
pub mod gate;
pub mod pass;
