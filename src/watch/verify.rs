//! A look at the firewall between runs: would a run change anything now,
//! from the kept state alone? The same stages a run goes through (the kept
//! wanted state, resolved at the moment, planned against what the firewall
//! holds), stopped before any change: reads only, writes nothing, and
//! keeps quiet (what a run would log is dropped; the run that follows logs it).

use chrono::{DateTime, FixedOffset};

use crate::config::{Config, Family};
use crate::firewall::forward::Mirror;
use crate::firewall::{self, plan};
use crate::intake::state::{Loaded, State};
use crate::intake::{self};
use crate::report::logging;
use crate::report::wiped;
use crate::run::{resolve, sources_seen};
use crate::sys::runner::SystemRunner;

/// What a look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// The firewall holds what the owner asked: nothing to change.
    Whole,
    /// A run would make `changes` changes; what is missing of portlocker's
    /// place, per family, if anything is.
    Differs {
        changes: usize,
        gone: Vec<(Family, String)>,
    },
    /// The firewall or the state could not be read: why. A run tells it.
    Unread(String),
}

/// Whether a run at `now` would change the firewall.
pub fn look(config: &Config, now: DateTime<FixedOffset>) -> Look {
    logging::hold();
    let look = look_quietly(config, now);
    logging::discard();
    look
}

fn look_quietly(config: &Config, now: DateTime<FixedOffset>) -> Look {
    let state = match State::peek(&config.state_dir) {
        Loaded::Kept(state) => state,
        Loaded::Legacy(mut state) => {
            intake::migrate(config, &mut state);
            state
        }
        // A run moves it aside and says so.
        Loaded::Damaged(reason) => return Look::Unread(reason),
    };
    let wanted = intake::asked(config, &state, now);
    let resolved = resolve(config, &wanted, &state.opens, now);
    let (kept, _) = intake::kept_wanted(config, &state);
    let seen = sources_seen(&kept, &wanted);
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    if let Err(reason) = backend.preflight() {
        return Look::Unread(reason);
    }
    let (holdings, errors) = backend.observe(false);
    if let Some(error) = errors.first() {
        return Look::Unread(error.to_string());
    }
    let steps = plan::plan(config, &resolved.wants(), &holdings, &seen);
    // Where Docker forwards: the mirror of portlocker's place as it is.
    let mirror = Mirror::of(config, &holdings).knowing_docker(state.docker_seen);
    let mirrored = backend.forward(&mirror, true);
    if let Some(error) = mirrored.errors.first() {
        return Look::Unread(error.to_string());
    }
    match steps.len() + usize::from(!mirrored.said.is_empty()) {
        0 => Look::Whole,
        changes => Look::Differs {
            changes,
            gone: wiped::gone_in(config, &holdings),
        },
    }
}
