//! portlocker keeps a server's ports shut until its owner opens them by
//! editing a plain text file that portlocker pulls over HTTPS.

pub mod app;
pub mod backend;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod exit;
#[cfg(test)]
mod fake;
pub mod fetch;
pub mod files;
pub mod firewall;
pub mod intake;
pub mod intent;
pub mod leftovers;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod notify;
pub mod plan;
#[cfg(test)]
mod properties;
pub mod quiet;
pub mod run;
pub mod runner;
pub mod signature;
pub mod source;
pub mod state;
pub mod status;
pub mod verdict;
