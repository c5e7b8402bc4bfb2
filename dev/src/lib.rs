//! Development tooling for orderflow, kept out of the production `orderflow` binary: the
//! whole system on this machine (`up`, `down`, `status`, `demo`), the local tansu broker
//! launcher shared by `up`, scripts/test.sh and the fault tests, the load generator and the
//! benchmark.

pub mod bench;
pub mod demo;
pub mod load;
pub mod local;
pub mod scrape;
pub mod tansu;
