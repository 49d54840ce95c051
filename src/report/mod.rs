//! What a run tells and where: the report every output renders (`status`),
//! the HTML page (`page`), `portlocker status` as text (`text`) and as JSON
//! (`json`), the metrics, the notices to the owner's own program, the rules
//! that keep cron quiet (`quiet`), the log (`logging`), and what a run tells
//! of portlocker's rules found wiped (`wiped`). The report renders values;
//! what the firewall does is judged in `firewall`.

pub(crate) mod json;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod page;
pub(crate) mod quiet;
pub(crate) mod status;
pub(crate) mod text;
pub(crate) mod wiped;
