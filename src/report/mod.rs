//! What a run tells and where: the status page and the text status
//! (`status`), the metrics, the notices to the owner's own program, the
//! rules that keep cron quiet (`quiet`), and the log (`logging`).

pub mod logging;
pub mod metrics;
pub mod notify;
pub mod quiet;
pub mod status;
