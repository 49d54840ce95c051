//! The one judge of what the host does to a new connection from the
//! network: it walks every base chain of the input path in the kernel's
//! order, follows jumps, gotos and returns on a real call stack, and takes
//! every test three ways (holds, fails, or both when it depends on the
//! source, the interface, the address, a rate or something unmodelled),
//! so each path through the rules ends in a pass, a drop, a translation
//! away from this host, or unknown. An answer says closed only when every
//! path drops. Pure: reads the model, runs nothing.
//!
//! "From the network" means a packet that arrives on an interface other
//! than loopback, addressed to one of this host's own addresses: `-i lo`
//! never holds for it. What local accounts reach over loopback is not what
//! closed and open describe.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use chrono::{DateTime, Datelike, Timelike, Utc};
use ipnet::IpNet;

use crate::config::{Family, PortSpec, Protocol};
use crate::firewall::model::PortState;
use crate::firewall::ruleset::{
    AddressKind, Addresses, Base, CONNTRACK_PRIORITY, Effect, Hook, InputPath, Match, Policy,
    Ranges, Rule, States, Step, Table, Test, TimeTest, Tool, Verdict, number,
};

/// What is asked: a new connection to `ports` in `family`, from anywhere,
/// or from `from` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    pub family: Family,
    pub ports: PortSpec,
    pub from: Option<IpNet>,
}

/// What a new connection finds, and the rules that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub state: PortState,
    /// Why, in words, citing the deciding rules as their tools print them.
    pub reason: String,
    /// What drops it for everyone (or for those it is asked about).
    pub dropped_by: Vec<Cited>,
    /// The first rule along each way through that let it on, where one did.
    pub passed_by: Vec<Cited>,
    /// For `OpenToSources`: the networks (or interfaces) let in.
    pub sources: Vec<String>,
    /// Sources dropped while everyone else gets through (fail2ban's bans).
    pub banned: usize,
}

/// A rule, or a chain's policy (`rule` None), that an answer cites.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cited {
    pub family: Family,
    pub table: String,
    /// The table's nft family word (`ip`, `inet`).
    pub table_family: String,
    pub tool: Tool,
    pub chain: String,
    pub rule: Option<CitedRule>,
    /// The manager that made it, when one can be told.
    pub manager: Option<crate::firewall::ruleset::Manager>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CitedRule {
    pub text: String,
    pub handle: Option<u64>,
    pub comment: Option<String>,
    /// It names destination ports (it is not a default deny).
    pub names_ports: bool,
}

impl std::hash::Hash for Tool {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Tool::Iptables { binary, legacy } => (0u8, binary, legacy).hash(state),
            Tool::Nft => 1u8.hash(state),
        }
    }
}

impl Cited {
    /// portlocker's tag on it (`portlocker:ssh`), if it is one of its rules.
    pub fn tag(&self) -> Option<&str> {
        let comment = self.rule.as_ref()?.comment.as_deref()?;
        comment.starts_with("portlocker:").then_some(comment)
    }

    /// `` `-A INPUT -j DROP` (iptables filter, chain INPUT)``, or the policy.
    pub fn shown(&self) -> String {
        match &self.rule {
            Some(rule) => format!("`{}`", rule.text),
            None => format!(
                "the policy drop of chain {} ({} {})",
                self.chain,
                tool_word(&self.tool),
                self.table_named()
            ),
        }
    }

    /// The table as messages name it: `filter`, `inet filter`.
    pub fn table_named(&self) -> String {
        match self.tool {
            Tool::Nft => format!("{} {}", self.table_family, self.table),
            Tool::Iptables { .. } => self.table.clone(),
        }
    }
}

fn tool_word(tool: &Tool) -> &'static str {
    match tool {
        Tool::Iptables { legacy: true, .. } => "legacy iptables",
        Tool::Iptables { .. } => "iptables",
        Tool::Nft => "nftables",
    }
}

/// How many times one question's ways through the rules may fork before
/// the answer is unknown rather than slow.
const PATH_BUDGET: usize = 10_000;

/// How deep jumps may nest before the answer is unknown (the kernel's own
/// limit is lower).
const MAX_DEPTH: usize = 64;

/// The answer to `question` about `path`, at `now` (time matches).
pub fn evaluate(path: &InputPath, question: &Question, now: DateTime<Utc>) -> Answer {
    Judge::new(path).answer(question, now)
}

/// Answers many questions about one path, working out once what they all
/// need (which rules of a chain differ only in their source): asking per
/// source of thousands let in cost each question the whole chain again.
pub struct Judge<'a> {
    path: &'a InputPath,
    runs: Runs,
}

/// Per chain (table index, name), its runs of rules that differ only in
/// their source.
type Runs = RefCell<HashMap<(usize, String), Rc<[Run]>>>;

impl<'a> Judge<'a> {
    pub fn new(path: &'a InputPath) -> Judge<'a> {
        Judge {
            path,
            runs: RefCell::default(),
        }
    }

    /// The answer to `question`, at `now` (time matches).
    pub fn answer(&self, question: &Question, now: DateTime<Utc>) -> Answer {
        let mut walk = Walk::new(self.path, question, now, &self.runs);
        let leaves = walk.run();
        classify(self.path, question, leaves)
    }
}

/// Whether `rule` could match some new connection from the network to one
/// of `ports` (or to any port, when `ports` is empty): what a reader uses
/// to skip chains only unmatchable rules lead to. Errs toward yes.
pub fn may_match(path: &InputPath, rule: &Rule, ports: &[PortSpec]) -> bool {
    let protocols: Vec<Protocol> = match ports {
        [] => vec![Protocol::Tcp, Protocol::Udp],
        _ => ports.iter().map(|spec| spec.protocol).collect(),
    };
    protocols.into_iter().any(|protocol| {
        let mut spans = Vec::new();
        for spec in ports.iter().filter(|spec| spec.protocol == protocol) {
            spans.push((u128::from(spec.first), u128::from(spec.last)));
        }
        if ports.is_empty() {
            spans.push((0, 65535));
        }
        let question = Question {
            family: path.family,
            ports: PortSpec {
                protocol,
                first: 0,
                last: 65535,
            },
            from: None,
        };
        let runs = Runs::default();
        let mut walk = Walk::new(path, &question, DateTime::<Utc>::MIN_UTC, &runs);
        walk.lenient = true;
        let mut state = walk.initial();
        state.ports = Ranges::from_spans(spans);
        state.mark = None;
        state.ct_mark = None;
        let context = Context {
            table: 0,
            before_conntrack: false,
        };
        walk.steps(rule, None, state, &context)
            .iter()
            .any(|(_, reached)| !matches!(reached, Reached::No))
    })
}

/// Whether some new connection from the network to one of `ports` may be
/// translated to another host on `path` (judged leniently, as `may_match`
/// judges): then where it is forwarded must be read too.
pub fn may_publish(path: &InputPath, ports: &[PortSpec]) -> bool {
    ports.iter().any(|&spec| {
        let question = Question {
            family: path.family,
            ports: spec,
            from: None,
        };
        let runs = Runs::default();
        let mut walk = Walk::new(path, &question, DateTime::<Utc>::MIN_UTC, &runs);
        walk.lenient = true;
        walk.run()
            .iter()
            .any(|leaf| matches!(leaf.outcome, Outcome::Published { .. }))
    })
}

/// Where one way through the rules ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Through every base chain: the connection reaches this host.
    Pass,
    Drop(Cited),
    /// Its destination was translated away from this host: it goes
    /// through forwarding, not input. `forwarded`: the forward hook was
    /// read and let it through (otherwise it was not read).
    Published {
        by: Cited,
        to: String,
        forwarded: bool,
    },
    Unknown(String),
}

/// One way through, with what it assumed.
#[derive(Debug, Clone)]
struct Leaf {
    outcome: Outcome,
    /// Taken only by some sources or interfaces: what they are.
    specific: Option<Vec<String>>,
    /// How many sources `specific` holds.
    source_count: usize,
    /// Tests it took one way though portlocker could not tell which.
    unknowns: Vec<Rc<str>>,
    /// Rate tests it took as a flood would.
    rates: Vec<Rc<str>>,
    /// It holds only for some of the ports or addresses asked about.
    narrowed: bool,
    passed_by: Option<Cited>,
}

/// A rule's place: table index, chain, rule index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RuleAt {
    table: usize,
    chain: String,
    index: usize,
}

/// What is known of the packet on one way through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    /// Destination ports it may have.
    ports: Ranges,
    /// Source addresses it may come from.
    sources: Ranges,
    /// Named sets of unknown contents it is (or is not) in.
    sets_in: Vec<String>,
    sets_out: Vec<String>,
    /// The sources were narrowed by a test that holds for some of them.
    source_narrowed: bool,
    /// Which of this host's interfaces it may come in on (None: unknown).
    iface: Option<Vec<String>>,
    /// Which of this host's addresses it may be sent to (None: unknown).
    dest: Option<Vec<u128>>,
    narrowed: bool,
    untracked: bool,
    translated: bool,
    /// Its destination ports before the first translation (None: not
    /// translated, they are `ports`).
    original_ports: Option<Ranges>,
    /// Translated to another host: the interface it leaves by, when known.
    out: Option<String>,
    mark: Option<u32>,
    ct_mark: Option<u32>,
    unknowns: Vec<Rc<str>>,
    rates: Vec<Rc<str>>,
    passed_by: Option<RuleAt>,
    /// Translated away from this host by the rule, to the target.
    published: Option<(RuleAt, String)>,
}

/// How a walk through one chain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Off its end, or by a return.
    Fell,
    Accept,
    Drop(RuleAt),
    Unknown(String),
}

/// How far a rule's steps got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reached {
    No,
    Yes,
    Unknown(String),
}

/// Where a chain is walked.
struct Context {
    table: usize,
    before_conntrack: bool,
}

/// Whether a test holds, per state. Moved once per test: boxing the
/// states would allocate per test instead.
#[allow(clippy::large_enum_variant)]
enum Split {
    Yes(State),
    No(State),
    Both { yes: State, no: State },
}

impl Split {
    fn negated(self, negate: bool) -> Split {
        if !negate {
            return self;
        }
        match self {
            Split::Yes(state) => Split::No(state),
            Split::No(state) => Split::Yes(state),
            Split::Both { yes, no } => Split::Both { yes: no, no: yes },
        }
    }
}

struct Walk<'a> {
    path: &'a InputPath,
    question: &'a Question,
    now: DateTime<Utc>,
    budget: usize,
    /// Results of chains already walked from the same state.
    memo: HashMap<(usize, String, State), Vec<(State, End)>>,
    /// Runs of rules that differ only in their source, per chain.
    runs: &'a Runs,
    /// Judging whether a rule may match at all: nothing is forked by time.
    lenient: bool,
}

/// Rules `first..first + len` of a chain differ only in their source: the
/// walk takes them as one test of `sources`.
#[derive(Debug, Clone)]
struct Run {
    first: usize,
    len: usize,
    sources: Option<Ranges>,
}

impl<'a> Walk<'a> {
    fn new(
        path: &'a InputPath,
        question: &'a Question,
        now: DateTime<Utc>,
        runs: &'a Runs,
    ) -> Walk<'a> {
        Walk {
            path,
            question,
            now,
            budget: PATH_BUDGET,
            memo: HashMap::new(),
            runs,
            lenient: false,
        }
    }

    fn initial(&self) -> State {
        let family = self.question.family;
        let sources = match self.question.from {
            Some(net) => Ranges::of_net(&net),
            None => Ranges::everything(family),
        };
        State {
            ports: Ranges::span(
                u128::from(self.question.ports.first),
                u128::from(self.question.ports.last),
            ),
            sources,
            sets_in: Vec::new(),
            sets_out: Vec::new(),
            source_narrowed: false,
            iface: self
                .path
                .interfaces
                .clone()
                .filter(|names| !names.is_empty()),
            dest: self
                .path
                .local
                .as_ref()
                .filter(|local| !local.is_empty())
                .map(|local| local.iter().map(|addr| number(*addr)).collect()),
            narrowed: false,
            untracked: false,
            translated: false,
            original_ports: None,
            out: None,
            mark: Some(0),
            ct_mark: Some(0),
            unknowns: Vec::new(),
            rates: Vec::new(),
            passed_by: None,
            published: None,
        }
    }

    /// Every way through every base chain, as leaves: up to routing, then
    /// input for what stays on this host and forward for what was
    /// translated away.
    fn run(&mut self) -> Vec<Leaf> {
        let mut leaves = Vec::new();
        let arrived = self.through(|hook| hook < Hook::Input, vec![self.initial()], &mut leaves);
        let (away, here): (Vec<State>, Vec<State>) = arrived
            .into_iter()
            .partition(|state| state.published.is_some());
        let here = self.through(|hook| hook == Hook::Input, here, &mut leaves);
        leaves.extend(
            here.into_iter()
                .map(|state| self.leaf(state, Outcome::Pass)),
        );
        let forwarded = self.path.forward_read;
        let away = match forwarded {
            true => self.through(|hook| hook == Hook::Forward, away, &mut leaves),
            false => away,
        };
        for state in away {
            let (at, to) = state.published.clone().expect("partitioned on it");
            let by = self.cite(&at);
            let outcome = Outcome::Published { by, to, forwarded };
            leaves.push(self.leaf(state, outcome));
        }
        leaves
    }

    /// Every way through the base chains on the hooks `on` picks, in
    /// order, from the states `live`: those that go on past them; those
    /// that end there become leaves.
    fn through(
        &mut self,
        on: impl Fn(Hook) -> bool,
        mut live: Vec<State>,
        leaves: &mut Vec<Leaf>,
    ) -> Vec<State> {
        let bases = &self.path.bases;
        for (index, base) in bases.iter().enumerate().filter(|(_, base)| on(base.hook)) {
            let mut next = Vec::new();
            for state in std::mem::take(&mut live) {
                for (state, outcome) in self.walk_base(index, base, state) {
                    match outcome {
                        None => next.push(state),
                        Some(outcome) => leaves.push(self.leaf(state, outcome)),
                    }
                }
            }
            live = next;
        }
        live
    }

    /// One base chain; None where the packet goes on to the next.
    fn walk_base(
        &mut self,
        index: usize,
        base: &Base,
        mut state: State,
    ) -> Vec<(State, Option<Outcome>)> {
        if let Some(device) = &base.device {
            let test = Test::InInterface(vec![device.clone()]);
            match self.test(&test, state, "") {
                Split::No(state) => return vec![(state, None)],
                Split::Yes(yes) => state = yes,
                Split::Both { yes, no } => {
                    let mut out = vec![(no, None)];
                    out.extend(self.walk_base(
                        index,
                        &Base {
                            device: None,
                            ..base.clone()
                        },
                        yes,
                    ));
                    return out;
                }
            }
        }
        if self.marks_uncertain(index) {
            state.mark = None;
        }
        let context = Context {
            table: base.table,
            before_conntrack: base.hook == Hook::Ingress
                || (base.hook == Hook::Prerouting && base.priority < CONNTRACK_PRIORITY),
        };
        let ended = self.walk_chain(&context, &base.chain, state, 0);
        ended
            .into_iter()
            .map(|(state, end)| {
                let outcome = match end {
                    End::Accept => None,
                    End::Fell if base.policy == Policy::Accept => None,
                    End::Fell => Some(Outcome::Drop(self.policy(base))),
                    End::Drop(at) => Some(Outcome::Drop(self.cite(&at))),
                    End::Unknown(why) => Some(Outcome::Unknown(why)),
                };
                (state, outcome)
            })
            .collect()
    }

    /// Whether another base chain on the same hook at the same priority
    /// sets marks: their order is not guaranteed, so the mark is unknown.
    fn marks_uncertain(&self, index: usize) -> bool {
        let base = &self.path.bases[index];
        self.path.bases.iter().enumerate().any(|(other, peer)| {
            other != index
                && peer.hook == base.hook
                && peer.priority == base.priority
                && self.path.tables[peer.table].chains.values().any(|chain| {
                    chain.rules.iter().any(|rule| {
                        rule.steps.iter().any(|step| {
                            matches!(
                                step,
                                Step::Do(Effect::Mark { .. } | Effect::CopyMark { .. })
                            )
                        })
                    })
                })
        })
    }

    /// Every way through chain `name`, from `state`.
    fn walk_chain(
        &mut self,
        context: &Context,
        name: &str,
        state: State,
        depth: usize,
    ) -> Vec<(State, End)> {
        let key = (context.table, name.to_owned(), state);
        if let Some(known) = self.memo.get(&key) {
            return known.clone();
        }
        let state = key.2.clone();
        let ended = self.walk_chain_fresh(context, name, state, depth);
        self.memo.insert(key, ended.clone());
        ended
    }

    fn walk_chain_fresh(
        &mut self,
        context: &Context,
        name: &str,
        state: State,
        depth: usize,
    ) -> Vec<(State, End)> {
        let table = &self.path.tables[context.table];
        let Some(chain) = table.chains.get(name) else {
            let why = format!("chain {name} of {} was not read", table.shown());
            return vec![(state, End::Unknown(why))];
        };
        if let Some(why) = &chain.unread {
            return vec![(state, End::Unknown(why.clone()))];
        }
        if depth > MAX_DEPTH {
            let why = format!("jumps nest deeper than {MAX_DEPTH} chains at {name}");
            return vec![(state, End::Unknown(why))];
        }
        let runs = self.runs_of(context.table, name);
        let mut live = vec![state];
        let mut ended = Vec::new();
        for run in runs.iter() {
            if live.is_empty() {
                break;
            }
            let rule = &chain.rules[run.first];
            let at = RuleAt {
                table: context.table,
                chain: name.to_owned(),
                index: run.first,
            };
            let mut next = Vec::new();
            for state in std::mem::take(&mut live) {
                for (state, reached) in self.steps_of_run(rule, &at, run, state, context) {
                    match reached {
                        Reached::No => next.push(state),
                        Reached::Unknown(why) => ended.push((state, End::Unknown(why))),
                        Reached::Yes => {
                            let at = RuleAt {
                                index: first_in_run_for(&chain.rules, run, &state.sources),
                                ..at.clone()
                            };
                            self.verdict(rule, &at, state, context, depth, &mut next, &mut ended)
                        }
                    }
                }
            }
            live = distinct(next);
        }
        ended.extend(live.into_iter().map(|state| (state, End::Fell)));
        ended
    }

    /// What a rule's verdict does to a state that reached it.
    #[allow(clippy::too_many_arguments)]
    fn verdict(
        &mut self,
        rule: &Rule,
        at: &RuleAt,
        mut state: State,
        context: &Context,
        depth: usize,
        next: &mut Vec<State>,
        ended: &mut Vec<(State, End)>,
    ) {
        // What lets it on: an accept, or a return out of a chain that holds
        // portlocker's drops (past them).
        let lets_on = match rule.verdict {
            Verdict::Accept => true,
            Verdict::Return => self.holds_ours(at),
            _ => false,
        };
        if lets_on && state.passed_by.is_none() {
            state.passed_by = Some(at.clone());
        }
        match &rule.verdict {
            Verdict::Continue => next.push(state),
            Verdict::Accept => ended.push((state, End::Accept)),
            Verdict::Drop | Verdict::Reject => ended.push((state, End::Drop(at.clone()))),
            Verdict::Return => ended.push((state, End::Fell)),
            Verdict::Unknown(what) => {
                let why = format!("`{}` hands it to {what}", rule.text);
                ended.push((state, End::Unknown(why)));
            }
            Verdict::Jump(target) => {
                for (state, end) in self.walk_chain(context, target, state, depth + 1) {
                    match end {
                        End::Fell => next.push(state),
                        end => ended.push((state, end)),
                    }
                }
            }
            // A goto's chain returns to the caller's caller: its end is ours.
            Verdict::Goto(target) => {
                ended.extend(self.walk_chain(context, target, state, depth + 1))
            }
        }
    }

    /// Whether the chain of `at` holds a rule of portlocker's.
    fn holds_ours(&self, at: &RuleAt) -> bool {
        self.path.tables[at.table]
            .chains
            .get(&at.chain)
            .is_some_and(|chain| {
                chain.rules.iter().any(|rule| {
                    rule.comment
                        .as_deref()
                        .is_some_and(|c| c.starts_with("portlocker:"))
                })
            })
    }

    /// The runs of rules of a chain that differ only in their source.
    fn runs_of(&mut self, table: usize, name: &str) -> Rc<[Run]> {
        let key = (table, name.to_owned());
        if let Some(runs) = self.runs.borrow().get(&key) {
            return Rc::clone(runs);
        }
        let rules = &self.path.tables[table].chains[name].rules;
        let mut runs: Vec<Run> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let joined = runs
                .last_mut()
                .filter(|run| run.sources.is_some() && same_but_source(&rules[run.first], rule));
            match (joined, lone_source(rule)) {
                (Some(run), Some(sources)) => {
                    run.len += 1;
                    run.sources = run.sources.as_ref().map(|all| all.union(sources));
                }
                (_, sources) => runs.push(Run {
                    first: index,
                    len: 1,
                    sources: sources.cloned(),
                }),
            }
        }
        let runs: Rc<[Run]> = runs.into();
        self.runs.borrow_mut().insert(key, Rc::clone(&runs));
        runs
    }

    /// The steps of a run's first rule, its source test widened to the run's.
    fn steps_of_run(
        &mut self,
        rule: &Rule,
        at: &RuleAt,
        run: &Run,
        state: State,
        context: &Context,
    ) -> Vec<(State, Reached)> {
        if run.len == 1 {
            return self.steps(rule, Some(at), state, context);
        }
        let sources = run
            .sources
            .clone()
            .expect("a run of more than one rule has sources");
        let widened = Rule {
            steps: rule
                .steps
                .iter()
                .map(|step| match step {
                    Step::Test(Match {
                        negated: false,
                        test: Test::Source(_),
                    }) => Step::Test(Match::is(Test::Source(Addresses::Ranges(sources.clone())))),
                    other => other.clone(),
                })
                .collect(),
            ..rule.clone()
        };
        self.steps(&widened, Some(at), state, context)
    }

    /// Takes `rule`'s steps (the rule at `at`) in order from `state`: each
    /// way, how far it got.
    fn steps(
        &mut self,
        rule: &Rule,
        at: Option<&RuleAt>,
        state: State,
        context: &Context,
    ) -> Vec<(State, Reached)> {
        if self.certainly_fails(rule, &state, context) {
            return vec![(state, Reached::No)];
        }
        let mut live = vec![state];
        let mut out = Vec::new();
        for step in &rule.steps {
            let mut next = Vec::new();
            for state in live {
                match step {
                    Step::Test(matched) => {
                        let split = self.test(&matched.test, state, &rule.text);
                        let split = self.before_conntrack(split, &matched.test, context, rule);
                        match split.negated(matched.negated) {
                            Split::Yes(state) => next.push(state),
                            Split::No(state) => out.push((state, Reached::No)),
                            Split::Both { yes, .. } if self.budget == 0 => {
                                let why = format!(
                                    "more than {PATH_BUDGET} ways through the rules to follow"
                                );
                                out.push((yes, Reached::Unknown(why)));
                            }
                            Split::Both { yes, no } => {
                                self.budget -= 1;
                                next.push(yes);
                                out.push((no, Reached::No));
                            }
                        }
                    }
                    Step::Do(effect) => match self.effect(effect, state, context, rule, at) {
                        (state, None) => next.push(state),
                        (state, Some(why)) => out.push((state, Reached::Unknown(why))),
                    },
                }
            }
            live = next;
        }
        out.extend(live.into_iter().map(|state| (state, Reached::Yes)));
        out
    }

    /// Before conntrack has seen the packet its state is not that of a new
    /// connection yet: a state test there is not judged.
    fn before_conntrack(&self, split: Split, test: &Test, context: &Context, rule: &Rule) -> Split {
        if !context.before_conntrack || !matches!(test, Test::State(_)) {
            return split;
        }
        let state = match split {
            Split::Yes(state) | Split::No(state) => state,
            Split::Both { yes, .. } => yes,
        };
        both_unknown(state, &rule.text)
    }

    /// What an effect does to the packet, and why the walk cannot go on
    /// past it, if it cannot.
    fn effect(
        &self,
        effect: &Effect,
        mut state: State,
        context: &Context,
        rule: &Rule,
        at: Option<&RuleAt>,
    ) -> (State, Option<String>) {
        match effect {
            Effect::Mark {
                connection,
                clear,
                toggle,
            } => {
                let mark = if *connection {
                    &mut state.ct_mark
                } else {
                    &mut state.mark
                };
                *mark = match (*mark, *clear) {
                    (_, u32::MAX) => Some(*toggle),
                    (Some(mark), clear) => Some((mark & !clear) ^ toggle),
                    (None, _) => None,
                };
            }
            Effect::CopyMark { to_packet: true } => state.mark = state.ct_mark,
            Effect::CopyMark { to_packet: false } => state.ct_mark = state.mark,
            Effect::Notrack if context.before_conntrack => state.untracked = true,
            Effect::Notrack => {}
            Effect::Dnat { address, port, to } => {
                return self.translate(state, (*address, *port), to, rule, at);
            }
            Effect::Unknown(what) => {
                let why = format!(
                    "`{}` does {what}, which portlocker cannot follow",
                    rule.text
                );
                return (state, Some(why));
            }
        }
        (state, None)
    }

    /// A destination translation: to another host, the packet is published
    /// (and will leave input's path once routed); to this one, it goes on
    /// to the new port.
    fn translate(
        &self,
        mut state: State,
        (address, port): (Option<IpAddr>, Option<u16>),
        to: &str,
        rule: &Rule,
        at: Option<&RuleAt>,
    ) -> (State, Option<String>) {
        let local = match (address, &self.path.local) {
            (None, _) => true,
            (Some(address), _) if address.is_loopback() => true,
            (Some(address), Some(local)) => local.contains(&address),
            (Some(_), None) => {
                let why = format!(
                    "`{}` translates it to {to}, and this host's addresses are not known",
                    rule.text
                );
                return (state, Some(why));
            }
        };
        state.translated = true;
        if state.original_ports.is_none() {
            state.original_ports = Some(state.ports.clone());
        }
        if let Some(port) = port {
            state.ports = Ranges::span(u128::from(port), u128::from(port));
        }
        if let (false, None, Some(at), Some(address)) = (local, &state.published, at, address) {
            state.published = Some((at.clone(), to.to_owned()));
            // Sent on to `address`: later tests see it, and routing sends
            // it out by the interface whose network holds it.
            state.dest = Some(vec![number(address)]);
            state.out = self.path.leaving_by(address).map(str::to_owned);
        }
        (state, None)
    }

    /// Whether `test` holds for the packet of `state`.
    fn test(&self, test: &Test, state: State, text: &str) -> Split {
        if let Some(holds) = self.judge(test, &state) {
            return yes_if(holds, state);
        }
        match test {
            Test::DestPort(ports) => split_ports(state, ports),
            Test::Source(addresses) => self.split_sources(state, addresses),
            Test::Destination(addresses) => split_destination(state, addresses, text),
            Test::InInterface(names) => split_iface(state, names, text),
            Test::Rate { over } if !self.lenient => split_rate(state, *over, text),
            _ => both_unknown(state, text),
        }
    }

    /// Whether `test` holds for every packet `state` stands for (Some(true)),
    /// for none (Some(false)), or it depends (None).
    fn judge(&self, test: &Test, state: &State) -> Option<bool> {
        // Whether a rule may match at all: what depends on the moment or on
        // earlier rules may go either way.
        let earlier = matches!(
            test,
            Test::Time(_)
                | Test::State(_)
                | Test::Translated
                | Test::OriginalDestPort(_)
                | Test::Mark { .. }
        );
        if self.lenient && earlier {
            return None;
        }
        let protocol = self.question.ports.protocol;
        let number = match protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        };
        match test {
            Test::Protocol(0) | Test::Always | Test::ReversePath => Some(true),
            Test::Protocol(p) => Some(*p == number),
            Test::Protocols(ps) => Some(ps.contains(&number)),
            Test::DestPort(ports) => within(&state.ports, ports),
            Test::Source(
                Addresses::Ranges(ranges)
                | Addresses::Set {
                    ranges: Some(ranges),
                    ..
                },
            ) => within(&state.sources, ranges),
            Test::Source(Addresses::Set { name, ranges: None }) => judge_opaque_set(state, name),
            Test::Destination(
                Addresses::Ranges(ranges)
                | Addresses::Set {
                    ranges: Some(ranges),
                    ..
                },
            ) => judge_destination(state, ranges),
            Test::InInterface(names) => judge_iface(state, names),
            Test::State(states) => Some(judge_conntrack(state, *states)),
            Test::Translated => Some(state.translated),
            Test::OriginalDestPort(ports) => {
                within(state.original_ports.as_ref().unwrap_or(&state.ports), ports)
            }
            Test::Reply => Some(false),
            // Only a packet translated away has an interface it leaves by
            // before input; over input, portlocker does not judge one.
            Test::OutInterface(names) => state
                .out
                .as_ref()
                .filter(|_| state.published.is_some())
                .map(|out| iface_matches(names, out)),
            // A new connection's first packet carries SYN alone.
            Test::TcpFlags { mask, compare } => {
                Some(protocol == Protocol::Tcp && 0x02 & mask == *compare)
            }
            Test::AddressType { destination, kinds } => {
                let away = *destination && state.published.is_some();
                address_type(*destination && !away, kinds)
            }
            Test::PacketType(kinds) => address_type(true, kinds),
            // A new connection's first packet: whole, with no extension header.
            Test::Fragment | Test::ExtensionHeader => Some(false),
            Test::Time(time) => Some(time_holds(time, self.now)),
            Test::Mark {
                connection,
                mask,
                value,
            } => judge_mark(state, *connection, *mask, *value),
            Test::Family(family) => Some(*family == self.question.family),
            _ => None,
        }
    }

    /// Whether a test of `rule` before its first effect certainly fails
    /// for `state`: then the rule is not taken, and nothing forks on it.
    fn certainly_fails(&self, rule: &Rule, state: &State, context: &Context) -> bool {
        rule.steps
            .iter()
            .map_while(|step| match step {
                Step::Test(matched) => Some(matched),
                Step::Do(_) => None,
            })
            .filter(|matched| !(context.before_conntrack && matches!(matched.test, Test::State(_))))
            .any(|matched| {
                self.judge(&matched.test, state)
                    .map(|holds| holds != matched.negated)
                    == Some(false)
            })
    }

    /// Splits the sources by `addresses`.
    fn split_sources(&self, state: State, addresses: &Addresses) -> Split {
        let ranges = match addresses {
            Addresses::Ranges(ranges) => ranges,
            Addresses::Set {
                ranges: Some(ranges),
                ..
            } => ranges,
            Addresses::Set { name, ranges: None } => return split_opaque_set(state, name),
        };
        let inside = state.sources.intersect(ranges);
        if inside.is_empty() {
            return Split::No(state);
        }
        let outside = state.sources.subtract(ranges);
        if outside.is_empty() {
            return Split::Yes(state);
        }
        let mut yes = state.clone();
        yes.sources = inside;
        yes.source_narrowed = true;
        let mut no = state;
        no.sources = outside;
        Split::Both { yes, no }
    }

    fn leaf(&self, state: State, outcome: Outcome) -> Leaf {
        let family = self.question.family;
        let specific = (state.source_narrowed || !state.sets_in.is_empty()).then(|| {
            let mut what: Vec<String> = Vec::new();
            if state.source_narrowed {
                what.extend(
                    state
                        .sources
                        .nets(family, 8)
                        .iter()
                        .map(ToString::to_string),
                );
                if state.sources.0.len() > 8 {
                    what.push("…".to_owned());
                }
            }
            what.extend(state.sets_in.iter().map(|set| format!("set {set}")));
            what
        });
        let source_count = match state.source_narrowed {
            true => state.sources.nets(family, 100_000).len(),
            false => 0,
        } + state.sets_in.len();
        Leaf {
            outcome,
            specific,
            source_count,
            unknowns: state.unknowns,
            rates: state.rates,
            narrowed: state.narrowed,
            passed_by: state.passed_by.map(|at| self.cite(&at)),
        }
    }

    /// The cited form of the rule at `at`.
    fn cite(&self, at: &RuleAt) -> Cited {
        let table = &self.path.tables[at.table];
        let rule = table
            .chains
            .get(&at.chain)
            .and_then(|chain| chain.rules.get(at.index));
        Cited {
            family: self.path.family,
            table: table.name.clone(),
            table_family: table.family.clone(),
            tool: table.tool.clone(),
            chain: at.chain.clone(),
            manager: rule.and_then(|rule| rule.manager(table, &at.chain)),
            rule: rule.map(|rule| CitedRule {
                text: rule.text.clone(),
                handle: rule.handle,
                comment: rule.comment.clone(),
                names_ports: rule.names_ports(),
            }),
        }
    }

    /// The policy of `base`, cited.
    fn policy(&self, base: &Base) -> Cited {
        let table: &Table = &self.path.tables[base.table];
        Cited {
            family: self.path.family,
            table: table.name.clone(),
            table_family: table.family.clone(),
            tool: table.tool.clone(),
            chain: base.chain.clone(),
            rule: None,
            // A built-in chain's policy is the manager's whose chains it
            // calls (ufw's, firewalld's).
            manager: crate::firewall::ruleset::Manager::of(table, &base.chain, None).or_else(
                || {
                    let rules = table
                        .chains
                        .get(&base.chain)
                        .map_or(&[][..], |c| &c.rules[..]);
                    // portlocker's own jump, first in INPUT, makes no policy its own.
                    let others = |rule: &Rule| {
                        let manager = rule.manager(table, &base.chain);
                        manager.filter(|m| *m != crate::firewall::ruleset::Manager::Portlocker)
                    };
                    rules.iter().find_map(others)
                },
            ),
        }
    }
}

/// A rule's only source test, when it has exactly one, unnegated, of ranges.
fn lone_source(rule: &Rule) -> Option<&Ranges> {
    let mut found = None;
    for step in &rule.steps {
        if let Step::Test(Match {
            test: Test::Source(addresses),
            negated,
        }) = step
        {
            match (found, negated, addresses) {
                (None, false, Addresses::Ranges(ranges)) => found = Some(ranges),
                _ => return None,
            }
        }
    }
    found
}

/// The rule of `run` that `sources`, having met the run's widened test,
/// meet first: the one to cite (the ban of the address asked about, not
/// the run's first ban).
fn first_in_run_for(rules: &[Rule], run: &Run, sources: &Ranges) -> usize {
    (run.first..run.first + run.len)
        .find(|&index| {
            lone_source(&rules[index]).is_some_and(|own| !own.intersect(sources).is_empty())
        })
        .unwrap_or(run.first)
}

/// Whether two rules differ in nothing but their source test, and end the
/// walk (so which of them matched does not matter beyond the citation).
fn same_but_source(a: &Rule, b: &Rule) -> bool {
    // Drops only: which of them matched is then only a matter of citation.
    let terminal = |rule: &Rule| matches!(rule.verdict, Verdict::Drop | Verdict::Reject);
    let not_source = |step: &&Step| {
        !matches!(
            step,
            Step::Test(Match {
                test: Test::Source(_),
                ..
            })
        )
    };
    let same_rest = a
        .steps
        .iter()
        .filter(not_source)
        .eq(b.steps.iter().filter(not_source));
    terminal(a) && a.verdict == b.verdict && same_rest
}

/// `states` with each only once: ways that forked on what did not matter
/// meet again.
fn distinct(states: Vec<State>) -> Vec<State> {
    if states.len() < 2 {
        return states;
    }
    let mut seen = std::collections::HashSet::new();
    states
        .into_iter()
        .filter(|state| seen.insert(state.clone()))
        .collect()
}

/// Whether all of `have` is within `wanted` (Some(true)), none of it
/// (Some(false)), or part (None).
fn within(have: &Ranges, wanted: &Ranges) -> Option<bool> {
    let inside = have.intersect(wanted);
    match (inside.is_empty(), inside == *have) {
        (true, _) => Some(false),
        (false, true) => Some(true),
        (false, false) => None,
    }
}

/// Whether the packet's source is in set `name`, whose members are not
/// known: only an earlier split on the same set tells.
fn judge_opaque_set(state: &State, name: &str) -> Option<bool> {
    let is = |sets: &[String]| sets.iter().any(|set| set == name);
    (is(&state.sets_in) || is(&state.sets_out)).then(|| is(&state.sets_in))
}

/// Whether every address the packet may be sent to is in `ranges`, none
/// is, or some are; None too while those addresses are not known.
fn judge_destination(state: &State, ranges: &Ranges) -> Option<bool> {
    let dest = state.dest.as_ref()?;
    let inside = dest.iter().filter(|a| ranges.contains(**a)).count();
    (inside == 0 || inside == dest.len()).then_some(inside > 0)
}

/// Whether every interface the packet may come in on is one of `names`,
/// none is, or some are. Never loopback: a packet from the network
/// arrives elsewhere.
fn judge_iface(state: &State, names: &[String]) -> Option<bool> {
    match &state.iface {
        Some(current) => {
            let inside = current
                .iter()
                .filter(|name| iface_matches(names, name))
                .count();
            (inside == 0 || inside == current.len()).then_some(inside > 0)
        }
        None => names.iter().all(|name| name == "lo").then_some(false),
    }
}

/// Whether the packet's conntrack state is one of `states`: new or
/// untracked, and DNAT once translated.
fn judge_conntrack(state: &State, states: States) -> bool {
    let now = if state.untracked {
        States::UNTRACKED
    } else {
        States::NEW
    };
    states.has(now) || state.translated && states.has(States::DNAT)
}

/// Whether the packet's mark (or its connection's) masked is `value`;
/// None while the mark is not known.
fn judge_mark(state: &State, connection: bool, mask: u32, value: u32) -> Option<bool> {
    let mark = if connection {
        state.ct_mark
    } else {
        state.mark
    };
    mark.map(|mark| mark & mask == value)
}

fn yes_if(holds: bool, state: State) -> Split {
    if holds {
        Split::Yes(state)
    } else {
        Split::No(state)
    }
}

/// Both ways, each remembering that it rests on `text`, which portlocker
/// cannot judge.
fn both_unknown(state: State, text: &str) -> Split {
    let mut yes = state;
    if !yes.unknowns.iter().any(|known| &**known == text) && yes.unknowns.len() < 4 {
        yes.unknowns.push(Rc::from(text));
    }
    let no = yes.clone();
    Split::Both { yes, no }
}

/// A rate test: the way a flood would take carries the rule.
fn split_rate(state: State, over: bool, text: &str) -> Split {
    let mut flood = state.clone();
    if !flood.rates.iter().any(|known| &**known == text) {
        flood.rates.push(Rc::from(text));
    }
    if over {
        Split::Both {
            yes: flood,
            no: state,
        }
    } else {
        Split::Both {
            yes: state,
            no: flood,
        }
    }
}

fn split_ports(state: State, ports: &Ranges) -> Split {
    let inside = state.ports.intersect(ports);
    if inside.is_empty() {
        return Split::No(state);
    }
    let outside = state.ports.subtract(ports);
    if outside.is_empty() {
        return Split::Yes(state);
    }
    let mut yes = state.clone();
    yes.ports = inside;
    yes.narrowed = true;
    let mut no = state;
    no.ports = outside;
    no.narrowed = true;
    Split::Both { yes, no }
}

fn split_opaque_set(state: State, name: &str) -> Split {
    if state.sets_in.iter().any(|set| set == name) {
        return Split::Yes(state);
    }
    if state.sets_out.iter().any(|set| set == name) {
        return Split::No(state);
    }
    let mut yes = state.clone();
    yes.sets_in.push(name.to_owned());
    let mut no = state;
    no.sets_out.push(name.to_owned());
    Split::Both { yes, no }
}

fn split_destination(state: State, addresses: &Addresses, text: &str) -> Split {
    let ranges = match addresses {
        Addresses::Ranges(ranges)
        | Addresses::Set {
            ranges: Some(ranges),
            ..
        } => ranges,
        Addresses::Set { ranges: None, .. } => return both_unknown(state, text),
    };
    let Some(dest) = &state.dest else {
        return both_unknown(state, text);
    };
    let (inside, outside): (Vec<u128>, Vec<u128>) = dest.iter().partition(|a| ranges.contains(**a));
    if inside.is_empty() {
        return Split::No(state);
    }
    if outside.is_empty() {
        return Split::Yes(state);
    }
    let mut yes = state.clone();
    yes.dest = Some(inside);
    yes.narrowed = true;
    let mut no = state;
    no.dest = Some(outside);
    no.narrowed = true;
    Split::Both { yes, no }
}

/// Whether interface `name` is one of `patterns` (`eth+`, `veth*`: any
/// name starting so).
fn iface_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| {
        match pattern
            .strip_suffix('+')
            .or_else(|| pattern.strip_suffix('*'))
        {
            Some(prefix) => name.starts_with(prefix),
            None => pattern == name,
        }
    })
}

/// Splits the interfaces the packet may come in on by `names`. Never
/// loopback: a packet from the network arrives elsewhere.
fn split_iface(state: State, names: &[String], text: &str) -> Split {
    let Some(current) = &state.iface else {
        if names.iter().all(|name| name == "lo") {
            return Split::No(state);
        }
        return both_unknown(state, text);
    };
    let (inside, outside): (Vec<String>, Vec<String>) = current
        .iter()
        .cloned()
        .partition(|name| iface_matches(names, name));
    if inside.is_empty() {
        return Split::No(state);
    }
    if outside.is_empty() {
        return Split::Yes(state);
    }
    let mut yes = state.clone();
    yes.iface = Some(inside);
    yes.narrowed = true;
    let mut no = state;
    no.iface = Some(outside);
    no.narrowed = true;
    Split::Both { yes, no }
}

/// Whether an address of our packet is of one of `kinds`: to this host,
/// unicast; from elsewhere, unicast and never local. None for a kind
/// portlocker does not know.
fn address_type(destination: bool, kinds: &[AddressKind]) -> Option<bool> {
    if kinds
        .iter()
        .any(|kind| matches!(kind, AddressKind::Other(_)))
    {
        return None;
    }
    Some(kinds.iter().any(|kind| match kind {
        AddressKind::Local => destination,
        AddressKind::Unicast => true,
        _ => false,
    }))
}

fn time_holds(test: &TimeTest, now: DateTime<Utc>) -> bool {
    match test {
        TimeTest::From(moment) => now >= *moment,
        TimeTest::Before(moment) => now < *moment,
        TimeTest::Daily(start, stop) => {
            let time = now.time().with_nanosecond(0).unwrap_or(now.time());
            if start <= stop {
                *start <= time && time <= *stop
            } else {
                time >= *start || time <= *stop
            }
        }
        TimeTest::Weekdays(days) => days.contains(&now.weekday().number_from_monday()),
    }
}

/// The answer from every way through.
fn classify(path: &InputPath, question: &Question, leaves: Vec<Leaf>) -> Answer {
    let _ = (path, question);
    let mut answer = Answer {
        state: PortState::Unknown,
        reason: String::new(),
        dropped_by: Vec::new(),
        passed_by: Vec::new(),
        sources: Vec::new(),
        banned: 0,
    };
    let passes = |leaf: &Leaf| matches!(leaf.outcome, Outcome::Pass | Outcome::Published { .. });
    for leaf in &leaves {
        if let Outcome::Drop(by) = &leaf.outcome
            && leaf.specific.is_none()
            && !answer.dropped_by.contains(by)
        {
            answer.dropped_by.push(by.clone());
        }
        if let Some(by) = &leaf.passed_by
            && passes(leaf)
            && !answer.passed_by.contains(by)
        {
            answer.passed_by.push(by.clone());
        }
    }
    if leaves
        .iter()
        .all(|leaf| matches!(leaf.outcome, Outcome::Drop(_)))
    {
        if answer.dropped_by.is_empty() {
            answer.dropped_by = drops_of(leaves.iter());
        }
        answer.state = PortState::Closed;
        answer.reason = format!("dropped by {}", listed(&answer.dropped_by));
        return answer;
    }
    let (generic, specific): (Vec<&Leaf>, Vec<&Leaf>) =
        leaves.iter().partition(|leaf| leaf.specific.is_none());
    let generic = if generic.is_empty() {
        specific.clone()
    } else {
        generic
    };
    if let Some(why) = generic.iter().find_map(|leaf| match &leaf.outcome {
        Outcome::Unknown(why) => Some(why.clone()),
        _ => None,
    }) {
        answer.reason = why;
        return answer;
    }
    let (open, shut): (Vec<&Leaf>, Vec<&Leaf>) = generic.iter().partition(|leaf| passes(leaf));
    if shut.is_empty() {
        open_for_all(&mut answer, &open, &specific);
    } else if open.is_empty() {
        open_to_some(&mut answer, &specific);
    } else {
        split(&mut answer, &open, &shut);
    }
    answer
}

/// Every way taken by everyone passes: open, some sources perhaps banned.
fn open_for_all(answer: &mut Answer, open: &[&Leaf], specific: &[&Leaf]) {
    answer.state = PortState::Open;
    answer.reason = match (published_by(open), &answer.passed_by[..]) {
        (Some(published), _) => published,
        (None, []) => "no rule drops it".to_owned(),
        (None, passed) => format!("let in by {}", listed(passed)),
    };
    let banned: Vec<&&Leaf> = specific
        .iter()
        .filter(|leaf| matches!(leaf.outcome, Outcome::Drop(_)))
        .collect();
    if !banned.is_empty() {
        answer.banned = banned.iter().map(|leaf| leaf.source_count.max(1)).sum();
        let by = drops_of(banned.iter().map(|leaf| **leaf));
        answer.reason.push_str(&format!(
            "; {} {} dropped by {}",
            answer.banned,
            if answer.banned == 1 {
                "source is"
            } else {
                "sources are"
            },
            listed(&by)
        ));
    }
}

/// Everyone's ways are dropped: closed but to the sources let in.
fn open_to_some(answer: &mut Answer, specific: &[&Leaf]) {
    let passing: Vec<&&Leaf> = specific
        .iter()
        .filter(|leaf| matches!(leaf.outcome, Outcome::Pass | Outcome::Published { .. }))
        .collect();
    if let Some(unknown) = specific.iter().find_map(|leaf| match &leaf.outcome {
        Outcome::Unknown(why) => Some((leaf, why)),
        _ => None,
    }) {
        let who = unknown.0.specific.clone().unwrap_or_default().join(", ");
        answer.reason = format!(
            "closed to everyone but {who}, for whom {} — dropped for the rest by {}",
            unknown.1,
            listed(&answer.dropped_by)
        );
        return;
    }
    if passing.is_empty() {
        // Only specific ways remain, all dropped: as closed.
        answer.state = PortState::Closed;
        answer.reason = format!("dropped by {}", listed(&answer.dropped_by));
        return;
    }
    answer.state = PortState::OpenToSources;
    for leaf in &passing {
        for what in leaf.specific.iter().flatten() {
            if !answer.sources.contains(what) {
                answer.sources.push(what.clone());
            }
        }
    }
    answer.reason = format!(
        "open to {} only; dropped for everyone else by {}",
        answer.sources.join(", "),
        listed(&answer.dropped_by)
    );
}

/// Everyone's ways part: by a rate, by something unknown, or by port or
/// address.
fn split(answer: &mut Answer, open: &[&Leaf], shut: &[&Leaf]) {
    split_reason(answer, open, shut);
    if let Some(published) = published_by(open) {
        answer.reason = format!("{published}; {}", answer.reason);
    }
}

/// The state and reason of a port some ways into which are shut and others open.
fn split_reason(answer: &mut Answer, open: &[&Leaf], shut: &[&Leaf]) {
    let by = drops_of(shut.iter().copied());
    if shut.iter().all(|leaf| !leaf.rates.is_empty())
        && open.iter().all(|leaf| leaf.rates.is_empty())
    {
        answer.state = PortState::RateLimited;
        let rates: Vec<&Rc<str>> = shut.iter().flat_map(|leaf| &leaf.rates).collect();
        answer.reason = format!(
            "open, but new connections past a rate are dropped ({} then {})",
            rates
                .first()
                .map_or(String::new(), |text| format!("`{text}`")),
            listed(&by)
        );
        return;
    }
    let unknowns: Vec<&Rc<str>> = open
        .iter()
        .chain(shut)
        .flat_map(|leaf| &leaf.unknowns)
        .collect();
    if let Some(first) = unknowns.first() {
        answer.state = PortState::Unknown;
        answer.reason = format!(
            "depends on `{first}`, which portlocker cannot evaluate: some connections would be \
             dropped by {}, others let in",
            listed(&by)
        );
        return;
    }
    if open.iter().chain(shut).any(|leaf| leaf.narrowed) {
        answer.state = PortState::Partial;
        answer.reason = format!(
            "open for some of its ports or of this host's addresses; the others are dropped by {}",
            listed(&by)
        );
        return;
    }
    answer.reason = format!(
        "some connections are dropped by {}, others let in",
        listed(&by)
    );
}

/// What translates a port away to another host, among the ways in that
/// let it through: `published by Docker: RULE sends it to ADDRESS, …`.
fn published_by(open: &[&Leaf]) -> Option<String> {
    let (by, to, forwarded) = open.iter().find_map(|leaf| match &leaf.outcome {
        Outcome::Published { by, to, forwarded } => Some((by, to, *forwarded)),
        _ => None,
    })?;
    let who = by
        .manager
        .map_or("another firewall tool".to_owned(), |m| m.to_string());
    let how = match forwarded {
        true => "and forwarding lets it through",
        false => "so it is reached through forwarding, not input",
    };
    Some(format!(
        "published by {who}: {} sends it to {to}, {how}",
        by.shown()
    ))
}

/// The distinct drops of `leaves`.
fn drops_of<'l>(leaves: impl Iterator<Item = &'l Leaf>) -> Vec<Cited> {
    let mut by: Vec<Cited> = Vec::new();
    for leaf in leaves {
        if let Outcome::Drop(cited) = &leaf.outcome
            && !by.contains(cited)
        {
            by.push(cited.clone());
        }
    }
    by
}

/// `a`, `a and b`, `a, b and 3 more`.
fn listed(cited: &[Cited]) -> String {
    let shown: Vec<String> = cited.iter().take(2).map(Cited::shown).collect();
    match (cited.len(), &shown[..]) {
        (0, _) => "nothing".to_owned(),
        (1, [only]) => only.clone(),
        (2, [a, b]) => format!("{a} and {b}"),
        (n, [a, b]) => format!("{a}, {b} and {} more", n - 2),
        _ => unreachable!("at most two shown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::host::{Recorded, from_recorded};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    /// IPv4 of a host whose iptables-save is `filter` (the filter table's
    /// lines after `*filter`) and `more` (other tables, whole), and whose
    /// nft ruleset is `nft`.
    fn host(filter: &str, more: &str, nft: Option<&str>) -> InputPath {
        let save = format!("*filter\n:INPUT ACCEPT [0:0]\n{filter}\nCOMMIT\n{more}");
        let recorded = Recorded {
            iptables_save: Some(save),
            nft_ruleset: nft.map(str::to_owned),
            local: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            interfaces: Some(vec!["eth0".to_owned()]),
            ..Recorded::default()
        };
        let host = from_recorded(&recorded, &[Family::Ipv4]).unwrap();
        host.family(Family::Ipv4).unwrap().clone()
    }

    fn ask(path: &InputPath, ports: &str) -> Answer {
        ask_from(path, ports, None)
    }

    fn ask_from(path: &InputPath, ports: &str, from: Option<&str>) -> Answer {
        let question = Question {
            family: Family::Ipv4,
            ports: PortSpec::parse(ports).unwrap(),
            from: from.map(|net| net.parse().unwrap()),
        };
        evaluate(path, &question, now())
    }

    fn state(filter: &str) -> PortState {
        ask(&host(filter, "", None), "22").state
    }

    const SSH_DROP: &str = "-A PORTLOCKER -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP";

    #[test]
    fn rules_in_order_make_the_states() {
        use PortState::*;
        let ours = |rules: &[&str]| {
            let mut text = ":PORTLOCKER - [0:0]\n-A INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER\n".to_owned();
            for rule in rules {
                text.push_str(rule);
                text.push('\n');
            }
            text
        };
        let cases: &[(&[&str], PortState)] = &[
            (&[], Open),
            (&[SSH_DROP], Closed),
            (
                &["-A PORTLOCKER -p tcp -m tcp --dport 22 -j ACCEPT", SSH_DROP],
                Open,
            ),
            (&["-A PORTLOCKER -j RETURN", SSH_DROP], Open),
            (
                &["-A PORTLOCKER -p tcp -m tcp --dport 80 -j ACCEPT", SSH_DROP],
                Closed,
            ),
            (&["-A PORTLOCKER -p udp -j ACCEPT", SSH_DROP], Closed),
            (
                &[
                    "-A PORTLOCKER -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN",
                    SSH_DROP,
                ],
                OpenToSources,
            ),
            (
                &[
                    "-A PORTLOCKER -m set --match-set allow src -j ACCEPT",
                    SSH_DROP,
                ],
                OpenToSources,
            ),
            (
                &["-A PORTLOCKER -m u32 --u32 0x0=0x0 -j ACCEPT", SSH_DROP],
                Unknown,
            ),
            (&["-A PORTLOCKER -j SOMEWHERE", SSH_DROP], Unknown),
            // Never for a new connection from the network.
            (
                &[
                    "-A PORTLOCKER -i lo -j ACCEPT",
                    "-A PORTLOCKER -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                    SSH_DROP,
                ],
                Closed,
            ),
        ];
        for (rules, expected) in cases {
            assert_eq!(state(&ours(rules)), *expected, "{rules:?}");
        }
        assert_eq!(state("-A INPUT -p tcp -m tcp --dport 22 -j DROP"), Closed);
        assert_eq!(state("-A INPUT -s 198.51.100.0/24 -j DROP"), Open);
        assert_eq!(state(":INPUT DROP [0:0]\n"), Closed);
    }

    #[test]
    fn a_negated_match_is_never_read_as_a_positive_one() {
        for rule in [
            "-A INPUT -p tcp -m tcp ! --dport 23 -j DROP",
            "-A INPUT ! -p udp -j DROP",
            "-A INPUT -p tcp -m multiport ! --dports 25,465 -j DROP",
            "-A INPUT -m conntrack ! --ctstate INVALID -j DROP",
            "-A INPUT ! -i lo -j DROP",
        ] {
            assert_eq!(state(rule), PortState::Closed, "{rule}");
        }
        for rule in [
            "-A INPUT -p tcp -m tcp ! --dport 22 -j DROP",
            "-A INPUT ! -p tcp -j DROP",
            "-A INPUT -i lo -j DROP",
        ] {
            assert_eq!(state(rule), PortState::Open, "{rule}");
        }
        assert_eq!(
            ask(&host("-A INPUT ! -s 10.0.0.0/8 -j DROP", "", None), "22").sources,
            ["10.0.0.0/8"]
        );
    }

    #[test]
    fn fail2bans_bans_leave_the_port_open_with_sources_banned() {
        let filter = ":f2b-sshd - [0:0]\n-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd\n\
                      -A f2b-sshd -s 192.0.2.7/32 -j REJECT --reject-with icmp-port-unreachable\n\
                      -A f2b-sshd -s 198.51.100.9/32 -j REJECT --reject-with icmp-port-unreachable\n\
                      -A f2b-sshd -j RETURN";
        let answer = ask(&host(filter, "", None), "22");
        assert_eq!(answer.state, PortState::Open, "{answer:?}");
        assert_eq!(answer.banned, 2);
        assert!(
            answer
                .reason
                .contains("2 sources are dropped by `-A f2b-sshd -s 192.0.2.7/32"),
            "{}",
            answer.reason
        );
        // Then portlocker's drop, in INPUT after the jump: closed, every run.
        let closed = format!("{filter}\n{}", SSH_DROP.replace("PORTLOCKER", "INPUT"));
        assert_eq!(ask(&host(&closed, "", None), "22").state, PortState::Closed);
        // A banned source asking is dropped, by its own ban (hostile
        // tester 8, finding 3: the run's first ban was named).
        for banned in ["192.0.2.7/32", "198.51.100.9/32"] {
            let answer = ask_from(&host(filter, "", None), "22", Some(banned));
            assert_eq!(answer.state, PortState::Closed);
            let by: Vec<String> = answer.dropped_by.iter().map(Cited::shown).collect();
            assert_eq!(by.len(), 1, "{by:?}");
            assert!(by[0].contains(&format!("-s {banned} ")), "{by:?}");
        }
    }

    #[test]
    fn goto_returns_to_the_callers_caller_and_jump_to_the_next_rule() {
        let tail = ":g - [0:0]\n:INPUT DROP [0:0]\n-A g -p tcp -m tcp --dport 80 -j ACCEPT";
        let jump = format!("{tail}\n-A INPUT -j g\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT");
        let goto = format!("{tail}\n-A INPUT -g g\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT");
        assert_eq!(ask(&host(&jump, "", None), "22").state, PortState::Open);
        assert_eq!(ask(&host(&goto, "", None), "22").state, PortState::Closed);
        let answer = ask(&host(&goto, "", None), "22");
        assert!(
            answer.reason.contains("policy drop of chain INPUT"),
            "{}",
            answer.reason
        );
    }

    #[test]
    fn a_limit_that_drops_a_flood_is_open_rate_limited() {
        let filter = ":ufw-user-input - [0:0]\n:ufw-user-limit - [0:0]\n:ufw-user-limit-accept - [0:0]\n:INPUT DROP [0:0]\n\
                      -A INPUT -j ufw-user-input\n\
                      -A ufw-user-input -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --set --name DEFAULT --mask 255.255.255.255 --rsource\n\
                      -A ufw-user-input -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 --name DEFAULT --mask 255.255.255.255 --rsource -j ufw-user-limit\n\
                      -A ufw-user-input -p tcp -m tcp --dport 22 -j ufw-user-limit-accept\n\
                      -A ufw-user-limit -m limit --limit 3/min -j LOG --log-prefix \"[UFW LIMIT BLOCK] \"\n\
                      -A ufw-user-limit -j REJECT --reject-with icmp-port-unreachable\n\
                      -A ufw-user-limit-accept -j ACCEPT";
        let answer = ask(&host(filter, "", None), "22");
        assert_eq!(answer.state, PortState::RateLimited, "{answer:?}");
        assert_eq!(ask(&host(filter, "", None), "80").state, PortState::Closed);
    }

    #[test]
    fn an_accept_ends_only_its_own_base_chain_and_a_drop_is_final() {
        let nft = |first: &str, second: &str| {
            format!(
                r#"{{"nftables": [
                {{"chain": {{"family": "inet", "table": "a", "name": "in", "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}}}},
                {{"rule": {{"family": "inet", "table": "a", "chain": "in", "handle": 2, "expr": [{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "tcp", "field": "dport"}}}}, "right": 22}}}}, {{"{first}": null}}]}}}},
                {{"chain": {{"family": "inet", "table": "b", "name": "in", "type": "filter", "hook": "input", "prio": 10, "policy": "{second}"}}}}]}}"#
            )
        };
        let state = |first, second| ask(&host("", "", Some(&nft(first, second))), "22").state;
        assert_eq!(state("accept", "drop"), PortState::Closed);
        assert_eq!(state("accept", "accept"), PortState::Open);
        assert_eq!(state("drop", "accept"), PortState::Closed);
        let answer = ask(&host("", "", Some(&nft("accept", "drop"))), "22");
        assert!(
            answer
                .reason
                .contains("policy drop of chain in (nftables inet b)"),
            "{}",
            answer.reason
        );
    }

    /// An nft redirect ends its chain, as iptables' REDIRECT does, and is
    /// named as what lets the port in (the reason said "no rule drops it").
    #[test]
    fn an_nft_redirect_past_a_drop_is_named() {
        let nft = r#"{"nftables": [
            {"chain": {"family": "ip", "table": "n", "name": "pre", "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
            {"rule": {"family": "ip", "table": "n", "chain": "pre", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 1723}}, {"redirect": {"port": 2222}}]}},
            {"rule": {"family": "ip", "table": "n", "chain": "pre", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 1723}}, {"redirect": {"port": 22}}]}}]}"#;
        let drop = "-A INPUT -p tcp -m tcp --dport 1723 -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -j DROP";
        let answer = ask(&host(drop, "", Some(nft)), "1723");
        assert_eq!(answer.state, PortState::Open, "{answer:?}");
        assert!(
            answer.reason.contains("redirect to :2222"),
            "{}",
            answer.reason
        );
    }

    #[test]
    fn notrack_in_raw_carries_a_new_connection_past_a_drop_for_new_alone() {
        let drop_new = "-A INPUT -p udp -m udp --dport 1194 -m conntrack --ctstate NEW -j DROP";
        let raw = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -m udp --dport 1194 -j CT --notrack\nCOMMIT\n";
        assert_eq!(
            ask(&host(drop_new, "", None), "1194/udp").state,
            PortState::Closed
        );
        assert_eq!(
            ask(&host(drop_new, raw, None), "1194/udp").state,
            PortState::Open
        );
        let both =
            "-A INPUT -p udp -m udp --dport 1194 -m conntrack --ctstate NEW,UNTRACKED -j DROP";
        assert_eq!(
            ask(&host(both, raw, None), "1194/udp").state,
            PortState::Closed
        );
    }

    /// Docker publishing a container's port 80 as 8080, in its own layout:
    /// FORWARD drops by default and lets in only what goes out by docker0
    /// to the container; `user` goes in DOCKER-USER. With `networks`, this
    /// host knows docker0 is on 172.17.0.0/16.
    fn docker(user: &[&str], networks: bool) -> InputPath {
        let nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
                   -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
                   -A DOCKER -i docker0 -j RETURN\n\
                   -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\nCOMMIT\n";
        let mut filter = ":FORWARD DROP [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n\
                          -A FORWARD -j DOCKER-USER\n\
                          -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
                          -A FORWARD -o docker0 -j DOCKER\n\
                          -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n"
            .to_owned();
        for rule in user {
            filter.push_str(&format!("-A DOCKER-USER {rule}\n"));
        }
        filter.push_str("-A DOCKER-USER -j RETURN");
        let save = format!("*filter\n:INPUT ACCEPT [0:0]\n{filter}\nCOMMIT\n{nat}");
        let recorded = Recorded {
            iptables_save: Some(save),
            local: vec!["192.0.2.1".parse().unwrap()],
            // From eth0 only: what comes in on docker0 is not translated.
            interfaces: Some(vec!["eth0".to_owned()]),
            networks: networks.then(|| {
                vec![
                    ("docker0".to_owned(), "172.17.0.0/16".parse().unwrap()),
                    ("eth0".to_owned(), "192.0.2.0/24".parse().unwrap()),
                ]
            }),
            ..Recorded::default()
        };
        let host = from_recorded(&recorded, &[Family::Ipv4]).unwrap();
        host.family(Family::Ipv4).unwrap().clone()
    }

    /// Where forwarding drops a port Docker publishes, it is closed, and
    /// the drop says why; where it lets it through, it is open (hostile
    /// tester 8, finding 7: both were "open").
    #[test]
    fn a_published_port_is_judged_where_it_is_forwarded() {
        let open = ask(&docker(&[], true), "8080");
        assert_eq!(open.state, PortState::Open, "{open:?}");
        assert!(
            open.reason
                .contains("sends it to 172.17.0.2:80, and forwarding lets it through"),
            "{}",
            open.reason
        );
        // Docker's own advice: filter by the port the connection was sent to.
        let by_original = "-p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -j DROP";
        let closed = ask(&docker(&[by_original], true), "8080");
        assert_eq!(closed.state, PortState::Closed, "{closed:?}");
        assert!(closed.reason.contains(by_original), "{}", closed.reason);
        // Or by the container's port, which forwarding sees.
        let by_translated = "-p tcp -m tcp --dport 80 -j DROP";
        let closed = ask(&docker(&[by_translated], true), "8080");
        assert_eq!(closed.state, PortState::Closed, "{closed:?}");
        // Neither matches a new connection otherwise.
        for misses in [
            "-p tcp -m conntrack --ctorigdstport 8080 --ctdir REPLY -j DROP",
            "-p tcp -m conntrack --ctorigdstport 9090 -j DROP",
            "-p tcp -m tcp --dport 8080 -j DROP",
            "-m addrtype --dst-type LOCAL -j DROP",
        ] {
            let answer = ask(&docker(&[misses], true), "8080");
            assert_eq!(answer.state, PortState::Open, "{misses}: {answer:?}");
        }
        // Only from some sources.
        let some = "! -s 198.51.100.0/24 -p tcp -m conntrack --ctorigdstport 8080 -j DROP";
        let answer = ask(&docker(&[some], true), "8080");
        assert_eq!(answer.state, PortState::OpenToSources, "{answer:?}");
        // Which interface it leaves by is not known: FORWARD's `-o docker0`
        // may go either way, and the answer is never closed.
        let answer = ask(&docker(&[], false), "8080");
        assert_eq!(answer.state, PortState::Unknown, "{answer:?}");
        assert!(answer.reason.contains("-o docker0"), "{}", answer.reason);
        // Not published, 22 meets INPUT (which lets it in).
        assert_eq!(
            ask(&docker(&[by_original], true), "22").state,
            PortState::Open
        );
    }

    #[test]
    fn a_port_translated_away_is_published_never_closed() {
        let nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
                   -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
                   -A DOCKER ! -i docker0 -p tcp -m tcp --dport 22 -j DNAT --to-destination 172.17.0.2:22\nCOMMIT\n";
        let answer = ask(
            &host(SSH_DROP.replace("PORTLOCKER", "INPUT").as_str(), nat, None),
            "22",
        );
        assert_eq!(answer.state, PortState::Open, "{answer:?}");
        assert!(
            answer
                .reason
                .starts_with("published by Docker: `-A DOCKER ! -i docker0"),
            "{}",
            answer.reason
        );
        // No FORWARD chain here: forwarding filters nothing.
        assert!(
            answer.reason.ends_with("forwarding lets it through"),
            "{}",
            answer.reason
        );
        let mut unread = host(SSH_DROP.replace("PORTLOCKER", "INPUT").as_str(), nat, None);
        unread.forward_read = false;
        let answer = ask(&unread, "22");
        assert_eq!(answer.state, PortState::Open, "{answer:?}");
        assert!(answer.reason.contains("not input"), "{}", answer.reason);
        // To this host (a redirect), input sees the new port.
        let redirect = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -m tcp --dport 2222 -j REDIRECT --to-ports 22\nCOMMIT\n";
        let dropped = SSH_DROP.replace("PORTLOCKER", "INPUT");
        assert_eq!(
            ask(&host(&dropped, redirect, None), "2222").state,
            PortState::Closed
        );
    }

    #[test]
    fn ways_that_fork_on_what_does_not_matter_meet_again() {
        // Unknowns that set the same mark, and addresses that cannot be this
        // host's (a ClusterIP): nothing to follow twice.
        let mut filter = String::new();
        for i in 0..40 {
            filter.push_str(&format!(
                "-A INPUT -m u32 --u32 0x{i:x}=0x0 -j MARK --set-xmark 0x1/0xffffffff\n\
                 -A INPUT -d 10.96.{i}.1/32 -p tcp -m tcp --dport 80 -j ACCEPT\n"
            ));
        }
        filter.push_str("-A INPUT -p tcp -m tcp --dport 22 -j DROP\n");
        assert_eq!(ask(&host(&filter, "", None), "22").state, PortState::Closed);
    }

    #[test]
    fn ranges_split_by_port_are_partly_closed() {
        let path = host("-A INPUT -p udp -m udp --dport 60500 -j DROP", "", None);
        assert_eq!(ask(&path, "60000-61000/udp").state, PortState::Partial);
        let path = host(
            "-A INPUT -p udp -m multiport --dports 1,59000:62000 -j DROP",
            "",
            None,
        );
        assert_eq!(ask(&path, "60000-61000/udp").state, PortState::Closed);
    }

    #[test]
    fn time_matches_are_judged_at_the_moment_asked() {
        let before = "-A INPUT -p tcp -m tcp --dport 22 -m time --datestart 2026-11-25T13:00:00 --datestop 2038-01-19T03:14:07 -j DROP";
        let after = "-A INPUT -p tcp -m tcp --dport 22 -m time --datestart 2026-11-25T11:00:00 --datestop 2038-01-19T03:14:07 -j DROP";
        assert_eq!(state(before), PortState::Open);
        assert_eq!(state(after), PortState::Closed);
    }

    #[test]
    fn an_open_to_a_source_that_another_rule_drops_is_closed_to_it() {
        let filter =
            ":INPUT DROP [0:0]\n-A INPUT -s 203.0.113.0/24 -p tcp -m tcp --dport 22 -j ACCEPT";
        let path = host(filter, "", None);
        assert_eq!(ask(&path, "22").state, PortState::OpenToSources);
        assert_eq!(
            ask_from(&path, "22", Some("203.0.113.7/32")).state,
            PortState::Open
        );
        assert_eq!(
            ask_from(&path, "22", Some("198.51.100.0/24")).state,
            PortState::Closed
        );
    }

    #[test]
    fn a_drop_on_another_address_of_this_host_is_partial() {
        let recorded = Recorded {
            iptables_save: Some("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -d 192.0.2.1/32 -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n".into()),
            local: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
            ..Recorded::default()
        };
        let host = from_recorded(&recorded, &[Family::Ipv4]).unwrap();
        let path = host.family(Family::Ipv4).unwrap();
        assert_eq!(ask(path, "22").state, PortState::Partial);
        // Addresses that are not this host's are never its packets'.
        assert_eq!(
            state("-A INPUT -d 10.96.0.1/32 -p tcp -m tcp --dport 22 -j DROP"),
            PortState::Open
        );
    }

    #[test]
    fn too_many_ways_through_is_unknown_not_slow() {
        // Each way sets its own bits: 2^30 different ways, none alike.
        let mut filter = String::new();
        for i in 0..30 {
            filter.push_str(&format!(
                "-A INPUT -m u32 --u32 0x{i:x}=0x0 -j MARK --or-mark 0x{:x}\n",
                1u32 << i
            ));
        }
        filter.push_str("-A INPUT -p tcp -m tcp --dport 22 -j DROP\n");
        let answer = ask(&host(&filter, "", None), "22");
        assert_eq!(answer.state, PortState::Unknown);
        assert!(
            answer.reason.starts_with("more than 10000 ways"),
            "{}",
            answer.reason
        );
    }
}
