//! One request from arrival to answer: the state machine that runs it
//! ([`machine`]), the I/O-free pieces of its decision ([`gate`]), and the
//! native driver that runs the machine from a script ([`script`]).
pub mod gate;
pub mod machine;
#[cfg(not(target_arch = "wasm32"))]
pub mod script;
