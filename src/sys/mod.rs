//! What portlocker asks of the operating system: running programs
//! (`runner`, the only user of `std::process`), the files root reads and
//! writes (`files`), this host's addresses (`net`), and the time (`clock`).

pub(crate) mod clock;
pub(crate) mod files;
pub mod net;
pub mod runner;
