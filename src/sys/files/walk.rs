//! Reaching a path from `/` one component at a time, each opened relative to
//! the directory before it without following a link (O_PATH|O_NOFOLLOW), so
//! no rename between a look and a use can redirect root: what was judged is
//! the descriptor that is used. Links are resolved here, never by the kernel,
//! and only those the rules allow. Knows nothing of what the files hold.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// The most links one walk follows (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// How a walk judges the directories and links it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// This process's uid: besides root, the one owner it trusts as itself.
    pub me: u32,
    /// Every directory on the way, and the file, must be one only a trusted
    /// owner can change: for what root trusts (the config, the control file,
    /// the state, a program). Without it, directories others can write are
    /// walked through by descriptor (the page, the metrics, the log).
    pub strict: bool,
}

impl Rules {
    /// Root, or this process's own uid.
    pub fn trusts(&self, uid: u32) -> bool {
        uid == 0 || uid == self.me
    }
}

/// How far others can change the entries of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// A trusted owner's, writable by no one else: only they can.
    Closed,
    /// A trusted owner's, writable by others but sticky (/tmp): others can
    /// add entries, but not rename or remove one they do not own.
    Sticky,
    /// Anyone who can write it, or who owns it, can replace any entry.
    Open,
}

/// A directory reached by a walk: its descriptor (O_PATH), the path it was
/// reached by (for messages), and who can change its entries.
#[derive(Debug)]
pub struct Dir {
    pub fd: File,
    pub path: PathBuf,
    pub guard: Guard,
}

/// Why a walk stopped, about one component: `at` (a path as walked: after a
/// link, its target's) and a `reason` that reads after it ("is owned by uid
/// 65534, not root: fix with …"), or the system's error there.
#[derive(Debug)]
pub struct Refusal {
    pub at: PathBuf,
    pub reason: String,
    pub kind: io::ErrorKind,
    /// The system refused (`reason` is its error), not the rules.
    pub system: bool,
    /// For a component that does not exist: whether another account could
    /// create it (its directory is not one only a trusted owner can change).
    pub others_may_create: bool,
}

impl Refusal {
    pub fn new(at: &Path, kind: io::ErrorKind, reason: String) -> Refusal {
        Refusal {
            at: at.to_owned(),
            reason,
            kind,
            system: false,
            others_may_create: false,
        }
    }

    /// A system call's error at `at`.
    pub fn io(at: &Path, error: io::Error) -> Refusal {
        Refusal {
            system: true,
            ..Refusal::new(at, error.kind(), error.to_string())
        }
    }

    /// The refusal in words, for a walk of `path`: about the path itself as
    /// "it …", about a component on the way by its own path.
    pub fn told(&self, path: &Path) -> String {
        let reason = &self.reason;
        match (self.at == path, self.system) {
            (true, true) => reason.to_owned(),
            (true, false) => format!("it {reason}"),
            (false, true) => format!("{}: {reason}", self.at.display()),
            (false, false) => format!("{} {reason}", self.at.display()),
        }
    }

    pub fn into_io(self, path: &Path) -> io::Error {
        io::Error::new(self.kind, self.told(path))
    }
}

/// An entry looked at without following it: its O_PATH descriptor and metadata.
pub struct Looked {
    pub fd: File,
    pub meta: Metadata,
}

impl Dir {
    /// The root directory, judged as every directory is.
    pub fn root(rules: Rules) -> Result<Dir, Refusal> {
        let root = Path::new("/");
        let fd = rustix::fs::open(root, path_flags() | OFlags::DIRECTORY, Mode::empty())
            .map_err(|error| Refusal::io(root, error.into()))?;
        let fd = File::from(fd);
        let meta = fd.metadata().map_err(|error| Refusal::io(root, error))?;
        let dir = Dir {
            guard: guard(&meta, rules),
            fd,
            path: root.to_owned(),
        };
        judge_dir(&dir.path, &meta, rules, true)?;
        Ok(dir)
    }

    /// The entry `name` here, as it is, a link included (never followed).
    pub fn look(&self, name: &OsStr) -> io::Result<Looked> {
        let fd = File::from(rustix::fs::openat(
            &self.fd,
            name,
            path_flags(),
            Mode::empty(),
        )?);
        let meta = fd.metadata()?;
        Ok(Looked { fd, meta })
    }

    /// The path of `name` here, for messages.
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Whether an entry owned by `uid` stays where it is unless a trusted
    /// owner moves it.
    pub fn holds_firmly(&self, uid: u32, rules: Rules) -> bool {
        match self.guard {
            Guard::Closed => true,
            Guard::Sticky => rules.trusts(uid),
            Guard::Open => false,
        }
    }
}

/// O_PATH|O_NOFOLLOW: a handle on the entry itself, never opened for I/O, so
/// a FIFO or a device is not touched and a link is not followed.
fn path_flags() -> OFlags {
    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn guard(meta: &Metadata, rules: Rules) -> Guard {
    let mode = meta.mode();
    if !rules.trusts(meta.uid()) {
        Guard::Open
    } else if mode & 0o022 == 0 {
        Guard::Closed
    } else if mode & 0o1000 != 0 {
        Guard::Sticky
    } else {
        Guard::Open
    }
}

/// Under strict rules, refuses a directory another account owns or can
/// write; one `on_the_way` to what root trusts is told as such.
fn judge_dir(at: &Path, meta: &Metadata, rules: Rules, on_the_way: bool) -> Result<(), Refusal> {
    if !rules.strict || guard(meta, rules) != Guard::Open {
        return Ok(());
    }
    let mut refusal = owner_or_mode(at, meta, rules);
    if on_the_way {
        let (who, fix) = refusal
            .reason
            .split_once(": fix with ")
            .expect("owner_or_mode names a fix");
        let they = if rules.trusts(meta.uid()) {
            "they"
        } else {
            "that account"
        };
        refusal.reason = format!(
            "{who}, so {they} could replace what is in it: fix with {fix}, or keep what root \
             trusts in directories only root can change"
        );
    }
    Err(refusal)
}

/// What makes `meta` untrusted, as a refusal with the command that fixes it.
pub fn owner_or_mode(at: &Path, meta: &Metadata, rules: Rules) -> Refusal {
    let shown = at.display();
    let reason = if !rules.trusts(meta.uid()) {
        format!(
            "is owned by uid {}, not root: fix with `chown root {shown}`",
            meta.uid()
        )
    } else {
        format!(
            "is writable by group or others (mode {:o}): fix with `chmod go-w {shown}`",
            meta.mode() & 0o777
        )
    };
    Refusal::new(at, io::ErrorKind::PermissionDenied, reason)
}

/// What a walk does with a component that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Stops with NotFound.
    Stop,
    /// Makes it a directory with this mode (0755 on the way, the caller's
    /// mode for the last), then goes on.
    Create(u32),
}

/// Walks `path` (absolute) to the directory holding its last component,
/// and returns it with that component's name. With `follow_last`, a last
/// component that is a link the rules allow is followed too, so the name
/// returned is never such a link.
pub fn resolve(path: &Path, rules: Rules, follow_last: bool) -> Result<(Dir, OsString), Refusal> {
    let mut walk = Walk::new(path, rules)?;
    loop {
        let Some(name) = walk.next_name()? else {
            return Err(Refusal::new(
                path,
                io::ErrorKind::InvalidInput,
                "is not a file path".to_owned(),
            ));
        };
        if !walk.rest.is_empty() {
            walk.enter(&name, Missing::Stop)?;
            continue;
        }
        if follow_last && walk.follow_if_link(&name)? {
            continue;
        }
        let dir = walk.stack.pop().expect("the walk holds the root at least");
        return Ok((dir, name));
    }
}

/// Walks `path` (absolute), every component a directory, and returns the last.
pub fn directory(path: &Path, rules: Rules, missing: Missing) -> Result<Dir, Refusal> {
    let mut walk = Walk::new(path, rules)?;
    walk.to_directory = true;
    while let Some(name) = walk.next_name()? {
        let mode = match missing {
            Missing::Create(mode) if walk.rest.is_empty() => Missing::Create(mode),
            Missing::Create(_) => Missing::Create(0o755),
            Missing::Stop => Missing::Stop,
        };
        walk.enter(&name, mode)?;
    }
    Ok(walk.stack.pop().expect("the walk holds the root at least"))
}

/// A walk under way: the directories from the root to where it stands, and
/// the components still to walk (a link's target is put in front of them).
struct Walk {
    rules: Rules,
    /// The walk is to a directory (its last component is the target).
    to_directory: bool,
    stack: Vec<Dir>,
    rest: VecDeque<OsString>,
    links: usize,
}

impl Walk {
    fn new(path: &Path, rules: Rules) -> Result<Walk, Refusal> {
        if !path.is_absolute() {
            return Err(Refusal::new(
                path,
                io::ErrorKind::InvalidInput,
                "is not an absolute path".to_owned(),
            ));
        }
        Ok(Walk {
            rules,
            stack: vec![Dir::root(rules)?],
            rest: components(path),
            links: 0,
            to_directory: false,
        })
    }

    fn top(&self) -> &Dir {
        self.stack.last().expect("the walk holds the root at least")
    }

    /// The next name to look up, after going up for each `..` before it.
    fn next_name(&mut self) -> Result<Option<OsString>, Refusal> {
        while let Some(name) = self.rest.pop_front() {
            if name == ".." {
                if self.stack.len() > 1 {
                    self.stack.pop();
                }
                continue;
            }
            return Ok(Some(name));
        }
        Ok(None)
    }

    /// Goes into the directory `name`, following a link there if the rules allow.
    fn enter(&mut self, name: &OsStr, missing: Missing) -> Result<(), Refusal> {
        let at = self.top().join(name);
        let looked = match self.top().look(name) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => match missing {
                Missing::Stop => {
                    return Err(Refusal {
                        others_may_create: self.top().guard != Guard::Closed,
                        ..Refusal::io(&at, error)
                    });
                }
                Missing::Create(mode) => {
                    match rustix::fs::mkdirat(&self.top().fd, name, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(error) => return Err(Refusal::io(&at, error.into())),
                    }
                    self.top()
                        .look(name)
                        .map_err(|error| Refusal::io(&at, error))?
                }
            },
            Err(error) => return Err(Refusal::io(&at, error)),
            Ok(looked) => looked,
        };
        let kind = looked.meta.file_type();
        if kind.is_symlink() {
            self.follow(name, looked)
        } else if kind.is_dir() {
            self.push(&at, looked)
        } else {
            Err(Refusal::new(
                &at,
                io::ErrorKind::NotADirectory,
                "is not a directory".to_owned(),
            ))
        }
    }

    /// Follows `name` if it is a link, and says whether it was; a link the
    /// rules forbid is refused.
    fn follow_if_link(&mut self, name: &OsStr) -> Result<bool, Refusal> {
        match self.top().look(name) {
            Ok(looked) if looked.meta.file_type().is_symlink() => {
                self.follow(name, looked)?;
                Ok(true)
            }
            // Missing or not a link: the caller looks at it again itself.
            _ => Ok(false),
        }
    }

    /// Goes into a directory. Under strict rules the one it stands in is
    /// closed or sticky already, and a directory a trusted owner does not
    /// own is refused here: so none on the way can be replaced by others.
    fn push(&mut self, at: &Path, looked: Looked) -> Result<(), Refusal> {
        let target = self.to_directory && self.rest.is_empty();
        judge_dir(at, &looked.meta, self.rules, !target)?;
        self.stack.push(Dir {
            guard: guard(&looked.meta, self.rules),
            fd: looked.fd,
            path: at.to_owned(),
        });
        Ok(())
    }

    /// Follows the link `name`: only one a trusted owner owns, in a directory
    /// only a trusted owner can change, and within the kernel's count.
    fn follow(&mut self, name: &OsStr, looked: Looked) -> Result<(), Refusal> {
        let at = self.top().join(name);
        let owner = looked.meta.uid();
        if !self.rules.trusts(owner) {
            return Err(Refusal::new(
                &at,
                io::ErrorKind::PermissionDenied,
                format!(
                    "is a symbolic link owned by uid {owner}: portlocker, as root, never follows \
                     another account's link (make it a directory or a file, or a link root owns \
                     in a directory only root can change)"
                ),
            ));
        }
        if !self.top().holds_firmly(owner, self.rules) {
            return Err(Refusal::new(
                &at,
                io::ErrorKind::PermissionDenied,
                format!(
                    "is a symbolic link in {}, which another account can change: portlocker, as \
                     root, follows only links in directories only root can change",
                    self.top().path.display()
                ),
            ));
        }
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(Refusal::new(
                &at,
                io::ErrorKind::InvalidInput,
                format!("leads through more than {MAX_LINKS} symbolic links"),
            ));
        }
        let target = rustix::fs::readlinkat(&looked.fd, c"", Vec::new())
            .map_err(|error| Refusal::io(&at, error.into()))?;
        let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
        if target.is_absolute() {
            self.stack.truncate(1);
        }
        for component in components(&target).into_iter().rev() {
            self.rest.push_front(component);
        }
        Ok(())
    }
}

/// The names of `path` to look up in turn, with `..` kept and `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// What a file that is not a regular file is, for a message.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "something else"
    }
}
