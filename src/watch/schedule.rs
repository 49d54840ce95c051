//! When `watch` asks the source next, and how often it may put its rules
//! back before it stops fighting. Pure: times in, times out; the caller
//! reads the clock and rolls the dice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The longest pause between fetches after failures: cron's pace, which
/// the owner had before watch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Jitter: each pause is `every` less up to a fifth (never more: an edit
/// takes effect within `every`, plus the run).
const JITTER_PARTS: u32 = 5;

/// When the source is asked next.
#[derive(Debug, Clone)]
pub struct SourceSchedule {
    every: Duration,
    /// Failed fetches in a row.
    failures: u32,
}

impl SourceSchedule {
    pub fn new(every: Duration) -> SourceSchedule {
        SourceSchedule { every, failures: 0 }
    }

    pub fn every(&self) -> Duration {
        self.every
    }

    /// The pause after a fetch: `every` less jitter; after failures, twice
    /// as long for each (at most `MAX_BACKOFF`, or `every` if longer); never
    /// less than what the source asked (`retry_after`). `random` spreads it.
    pub fn after(&mut self, failed: bool, retry_after: Option<Duration>, random: u64) -> Duration {
        self.failures = if failed {
            self.failures.saturating_add(1)
        } else {
            0
        };
        let doubled = self
            .every
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_BACKOFF.max(self.every));
        let spread = doubled / JITTER_PARTS;
        let pause = doubled - Duration::from_millis(random % (spread.as_millis() as u64 + 1));
        pause.max(retry_after.unwrap_or_default())
    }
}

/// How many repairs, and over what window, before `watch` stops putting
/// its rules back at once: a manager's reload of both families can be two
/// repairs, and an admin may reload a few times in a row.
pub const REPAIRS_IN_WINDOW: usize = 10;
pub const REPAIR_WINDOW: Duration = Duration::from_secs(60);
/// In a fight, the first pause between repairs; it doubles to `MAX_BACKOFF`.
pub const FIRST_FIGHT_PAUSE: Duration = Duration::from_secs(10);

/// The repairs `watch` made, and whether it is fighting another program.
#[derive(Debug, Clone, Default)]
pub struct Repairs {
    recent: VecDeque<Instant>,
    fight: Option<Fight>,
}

/// Another program keeps removing portlocker's rules: they are put back
/// once a `pause`, not at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fight {
    pub since: Instant,
    pub pause: Duration,
    /// When the next repair may come.
    pub next: Instant,
}

/// What a repair made of the fight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Repairs go on at once.
    Calm,
    /// This repair began a fight: tell the owner.
    Began,
    /// A fight goes on, with a longer pause.
    Longer,
}

impl Repairs {
    /// When a repair may be made: None now, or the moment it may.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        self.fight
            .as_ref()
            .map(|f| f.next)
            .filter(|&next| next > now)
    }

    #[cfg(test)]
    pub fn fight(&self) -> Option<&Fight> {
        self.fight.as_ref()
    }

    /// Records a repair made at `now`.
    pub fn made(&mut self, now: Instant) -> Turn {
        while self
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) >= REPAIR_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        match &mut self.fight {
            Some(fight) => {
                fight.pause = (fight.pause * 2).min(MAX_BACKOFF);
                fight.next = now + fight.pause;
                Turn::Longer
            }
            None if self.recent.len() > REPAIRS_IN_WINDOW => {
                self.fight = Some(Fight {
                    since: now,
                    pause: FIRST_FIGHT_PAUSE,
                    next: now + FIRST_FIGHT_PAUSE,
                });
                Turn::Began
            }
            None => Turn::Calm,
        }
    }

    /// Ends a fight when nobody touched portlocker's rules for a whole
    /// pause since `last_touch`; true when it ended now.
    pub fn calm(&mut self, now: Instant, last_touch: Option<Instant>) -> bool {
        let Some(fight) = &self.fight else {
            return false;
        };
        let quiet_since = last_touch.map_or(fight.since, |touch| touch.max(fight.since));
        if now.duration_since(quiet_since) >= fight.pause {
            self.fight = None;
            self.recent.clear();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_come_every_period_with_jitter_and_back_off_on_failure() {
        let every = Duration::from_secs(10);
        let mut schedule = SourceSchedule::new(every);
        for random in [0, 1, 1999, 2000, 4000, u64::MAX] {
            let pause = schedule.after(false, None, random);
            assert!(
                (Duration::from_secs(8)..=every).contains(&pause),
                "{pause:?}"
            );
        }
        let pauses: Vec<u64> = (0..8)
            .map(|_| schedule.after(true, None, 0).as_secs())
            .collect();
        // 20 s, 40 s … then at most five minutes.
        assert_eq!(pauses, [20, 40, 80, 160, 300, 300, 300, 300]);
        assert_eq!(
            schedule.after(false, None, 0).as_secs(),
            10,
            "one success resets"
        );
        let asked = Duration::from_secs(600);
        assert_eq!(
            schedule.after(true, Some(asked), 0),
            asked,
            "Retry-After is honoured"
        );
        assert_eq!(
            schedule
                .after(false, Some(Duration::from_secs(1)), 0)
                .as_secs(),
            10
        );
        // A period over five minutes is never lengthened by a failure.
        let mut slow = SourceSchedule::new(Duration::from_secs(3600));
        assert_eq!(slow.after(true, None, 0).as_secs(), 3600);
    }

    #[test]
    fn a_fight_begins_after_too_many_repairs_and_ends_when_calm() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut repairs = Repairs::default();
        for n in 0..REPAIRS_IN_WINDOW as u64 {
            assert_eq!(repairs.wait_until(at(n * 1000)), None);
            assert_eq!(repairs.made(at(n * 1000)), Turn::Calm);
        }
        assert_eq!(repairs.made(at(5000)), Turn::Began);
        assert_eq!(repairs.wait_until(at(5001)), Some(at(15_000)));
        assert_eq!(repairs.wait_until(at(15_000)), None);
        assert_eq!(repairs.made(at(15_000)), Turn::Longer);
        assert_eq!(repairs.fight().unwrap().pause, Duration::from_secs(20));
        // Touched again and again: the fight goes on, the pause grows to five minutes.
        assert!(!repairs.calm(at(30_000), Some(at(29_000))));
        let mut now = 35_000;
        for _ in 0..10 {
            repairs.made(at(now));
            now += 1000;
        }
        assert_eq!(repairs.fight().unwrap().pause, MAX_BACKOFF);
        // Nobody touched them for a whole pause: calm again.
        let touch = at(now);
        assert!(!repairs.calm(touch + MAX_BACKOFF - Duration::from_millis(1), Some(touch)));
        assert!(repairs.calm(touch + MAX_BACKOFF, Some(touch)));
        assert_eq!(repairs.fight(), None);
        assert_eq!(repairs.made(touch + MAX_BACKOFF), Turn::Calm);
    }

    #[test]
    fn repairs_spread_out_never_begin_a_fight() {
        let start = Instant::now();
        let mut repairs = Repairs::default();
        for n in 0..100u64 {
            let turn =
                repairs.made(start + REPAIR_WINDOW / 5 * n as u32 + Duration::from_millis(n));
            assert_eq!(turn, Turn::Calm, "repair {n}");
        }
    }
}
