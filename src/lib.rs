//! portlocker keeps a server's ports shut until its owner opens them by
//! editing a plain text file that portlocker pulls over HTTPS.
//!
//! The pipeline, by stage: `intake` (the control file in: source, fetch,
//! signature, grammar, intent, state), `firewall` (what the host holds and
//! what portlocker makes of it: model, verdicts, plan, one module per
//! backend), `report` (what a run tells: page, metrics, notices, log), and
//! `sys` (processes, files root touches, the clock). `run` and `app` put
//! them together; `watch` runs them as a resident loop; `cli` and `exit`
//! are the command line's two ends.

pub mod app;
mod check;
pub mod cli;
pub mod config;
pub mod exit;
pub mod firewall;
pub mod intake;
#[cfg(test)]
mod properties;
pub mod report;
mod run;
pub mod sys;
pub mod watch;
