//! What a run tells and where: the status page and the text status
//! (`status`), the metrics, the notices to the owner's own program, the
//! rules that keep cron quiet (`quiet`), the log (`logging`), and what a
//! run tells of portlocker's rules found wiped (`wiped`).

pub mod logging;
pub mod metrics;
pub mod notify;
pub mod quiet;
pub mod status;
pub mod wiped;
