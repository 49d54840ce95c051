//! Every file root reads or writes, reached from `/` one directory
//! descriptor at a time (see `walk`) and then opened, created, renamed and
//! synced relative to the last: the page, the metrics and the log (where
//! others may write too), and what root trusts — the config, the control
//! file, the state, the programs it runs — which, run as root, must be root's
//! and writable by no one else, as must every directory above them (OpenSSH's
//! StrictModes). The only module that opens paths root writes; knows nothing
//! of what the files hold.

mod walk;

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{AtFlags, Mode, OFlags};

use walk::{Dir, Looked, Missing, Refusal, Rules};

/// How many `#!` interpreters deep a program is checked (the kernel's own limit).
const MAX_INTERPRETERS: usize = 4;

/// Whether this process runs as root (uid 0, also inside a user namespace).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The rules for a walk: `strict` (every directory only root can change)
/// only when running as root, where it protects something.
fn rules(strict: bool) -> Rules {
    Rules {
        me: rustix::process::geteuid().as_raw(),
        strict: strict && is_root(),
    }
}

/// `path`, made absolute against the working directory if it is relative.
fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// A refusal as an error about `what` at `path`: a judgement names what
/// to change, a system error says it could not be opened.
fn refused(what: &str, path: &Path, refusal: &Refusal) -> anyhow::Error {
    let shown = path.display();
    if refusal.system {
        // Kept an io::Error, so a caller can tell a missing file by its kind.
        anyhow::Error::new(io::Error::new(refusal.kind, refusal.told(path)))
            .context(format!("cannot open {what} {shown}"))
    } else if refusal.at == path {
        anyhow!("{what} {shown} {}", refusal.reason)
    } else {
        anyhow!(
            "{what} {shown}: {} {}",
            refusal.at.display(),
            refusal.reason
        )
    }
}

// ---- files others may write beside: the page, the metrics, the log ------

/// Replaces `path` with `contents` in one step, with permissions `mode`: a
/// reader sees the old file or the new one, never a mix, even if this
/// process is killed midway. Safe in a directory other accounts can write
/// (a web root, a metrics directory): the directory is held by descriptor
/// from the moment it is reached, so no swap above it redirects the write,
/// and no link there is followed. A failed write leaves no temporary behind.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let written = || -> Result<()> {
        let path = absolute(path)?;
        let (dir, name) =
            walk::resolve(&path, rules(false), false).map_err(|r| anyhow!(r.told(&path)))?;
        replace(&dir, &name, contents, mode)?;
        Ok(())
    };
    written().with_context(|| format!("cannot write {}", path.display()))
}

/// Opens `path` for appending, creating it with `mode` if it is missing:
/// for the log. Refuses a link there, anything but a regular file (a FIFO
/// would hold the run on its open), a file with another name (a hard link
/// to a file of root's), and one another account owns.
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    let path = absolute(path)?;
    let rules = rules(false);
    let (dir, name) = walk::resolve(&path, rules, false).map_err(|r| r.into_io(&path))?;
    let flags = OFlags::WRONLY | OFlags::APPEND;
    let file = match dir.look(&name) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => create(&dir, &name, flags, mode)?,
        Err(error) => return Err(error),
        Ok(looked) => {
            let looked = regular(&dir, &name, looked, Odd::Remove).map_err(|r| r.into_io(&path))?;
            reopen(&dir, &name, &looked, flags).map_err(|r| r.into_io(&path))?
        }
    };
    let meta = file.metadata()?;
    let at = dir.join(&name);
    if meta.nlink() != 1 {
        let reason = format!(
            "has {} names (hard links): another could be a file of root's: remove it",
            meta.nlink()
        );
        return Err(Refusal::new(&at, io::ErrorKind::PermissionDenied, reason).into_io(&path));
    }
    if !rules.trusts(meta.uid()) {
        let reason = format!("is owned by uid {}, not root: remove it", meta.uid());
        return Err(Refusal::new(&at, io::ErrorKind::PermissionDenied, reason).into_io(&path));
    }
    // Never readable by everyone: a file of root's moved in at this name by
    // whoever owns the directory (the status page, mode 644) would be.
    if meta.mode() & 0o007 != 0 {
        rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode() & 0o770 & mode))?;
    }
    Ok(file)
}

/// Whether the way to `path`, a file root writes (the log, the page, the
/// metrics), passes: for `check`, which writes nothing.
pub fn check_way(path: &Path) -> Result<()> {
    let path = absolute(path)?;
    match walk::resolve(&path, rules(false), false) {
        Ok(_) => Ok(()),
        Err(refusal) => Err(anyhow!(refusal.told(&path))),
    }
}

/// Creates `name` in `dir` exclusively, opened with `flags`; if another
/// process made it first, opens that one as `open_append` would.
fn create(dir: &Dir, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
    let created = rustix::fs::openat(
        &dir.fd,
        name,
        flags | OFlags::CREATE | OFlags::EXCL | open_flags(),
        Mode::from_raw_mode(mode),
    );
    match created {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::EXIST) => {
            let at = dir.join(name);
            let looked =
                regular(dir, name, dir.look(name)?, Odd::Remove).map_err(|r| r.into_io(&at))?;
            reopen(dir, name, &looked, flags).map_err(|r| r.into_io(&at))
        }
        Err(error) => Err(error.into()),
    }
}

/// Flags for every real open: no link followed, no wait on a FIFO, no
/// terminal taken as the controlling one, nothing inherited by a child.
fn open_flags() -> OFlags {
    OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// How a file that is not a regular one is refused: for a file root writes,
/// "remove it"; for one it reads, what it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Odd {
    Remove,
    Describe,
}

/// `looked` (the entry `name` in `dir`), if it is a regular file.
fn regular(dir: &Dir, name: &OsStr, looked: Looked, odd: Odd) -> Result<Looked, Refusal> {
    let at = dir.join(name);
    let kind = looked.meta.file_type();
    let reason = if kind.is_symlink() {
        "is a symbolic link, which portlocker never follows: remove it".to_owned()
    } else if kind.is_file() {
        return Ok(looked);
    } else if odd == Odd::Remove {
        format!(
            "is not a regular file ({}): remove it",
            walk::kind_of(&looked.meta)
        )
    } else {
        format!("is {}, not a regular file", walk::kind_of(&looked.meta))
    };
    Err(Refusal::new(&at, io::ErrorKind::InvalidInput, reason))
}

/// Opens the entry `looked` at, with `flags`: the same file, or a refusal
/// if it was replaced in between.
fn reopen(dir: &Dir, name: &OsStr, looked: &Looked, flags: OFlags) -> Result<File, Refusal> {
    let at = dir.join(name);
    let fd = rustix::fs::openat(&dir.fd, name, flags | open_flags(), Mode::empty())
        .map_err(|error| Refusal::io(&at, error.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|error| Refusal::io(&at, error))?;
    if !same(&meta, &looked.meta) {
        let reason = "was replaced while portlocker opened it: try again".to_owned();
        return Err(Refusal::new(&at, io::ErrorKind::Interrupted, reason));
    }
    Ok(file)
}

fn same(a: &Metadata, b: &Metadata) -> bool {
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Replaces `name` in `dir` with a new file of `contents` and `mode`.
fn replace(dir: &Dir, name: &OsStr, contents: &[u8], mode: u32) -> io::Result<()> {
    let temporary = temporary_name(name)?;
    // O_EXCL under a random name: nothing another account planted is opened.
    let fd = rustix::fs::openat(
        &dir.fd,
        &temporary,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | open_flags(),
        Mode::from_raw_mode(0o600),
    )?;
    let mut file = File::from(fd);
    let written = (|| -> io::Result<()> {
        // On the descriptor, never by path.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        // Replaces whatever entry `name` is, a link included, without following it.
        rustix::fs::renameat(&dir.fd, &temporary, &dir.fd, name)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&dir.fd, &temporary, AtFlags::empty());
    }
    written?;
    sync(dir)
}

/// `.NAME.XXXXXXXXXXXX.tmp`, with twelve random hex digits.
fn temporary_name(name: &OsStr) -> io::Result<std::ffi::OsString> {
    let mut random = [0u8; 6];
    rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
    let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{hex}.tmp"));
    Ok(temporary)
}

/// Makes a rename in `dir` durable.
fn sync(dir: &Dir) -> io::Result<()> {
    let fd = rustix::fs::openat(
        &dir.fd,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fsync(fd)?;
    Ok(())
}

// ---- what root trusts: the config, the control file, programs -----------

/// Opens the regular file at `path` (`what`, for messages: "config") to
/// read it. Run as root, refuses it before reading a byte when another
/// account could have chosen what it holds: a file or a directory above it
/// that is not root's or that group or others can write, a link another
/// account owns or in such a directory. Links root owns in directories only
/// root can change (an admin's `/etc/x -> /srv/x`) are followed here.
pub fn open_trusted(path: &Path, what: &str) -> Result<File> {
    let path = absolute(path).with_context(|| format!("cannot open {what} {}", path.display()))?;
    let rules = rules(true);
    let opened = || -> Result<File, Refusal> {
        let (dir, name) = walk::resolve(&path, rules, true)?;
        let at = dir.join(&name);
        let looked = dir.look(&name).map_err(|error| Refusal::io(&at, error))?;
        let looked = regular(&dir, &name, looked, Odd::Describe)?;
        judge_file(&at, &looked.meta, rules)?;
        reopen(&dir, &name, &looked, OFlags::RDONLY)
    };
    opened().map_err(|refusal| refused(what, &path, &refusal))
}

/// Checks, without opening it, the file at `path` that another program
/// reads for root (`fetch.ca_file`), as `open_trusted` would.
pub fn check_trusted(path: &Path, what: &str) -> Result<()> {
    let path = absolute(path)?;
    let rules = rules(true);
    let checked = || -> Result<(), Refusal> {
        let (dir, name) = walk::resolve(&path, rules, true)?;
        let at = dir.join(&name);
        let looked = dir.look(&name).map_err(|error| Refusal::io(&at, error))?;
        let looked = regular(&dir, &name, looked, Odd::Describe)?;
        judge_file(&at, &looked.meta, rules)
    };
    checked().map_err(|refusal| refused(what, &path, &refusal))
}

/// The one check every program root runs passes (the iptables tools, nft,
/// the other iptables backend's, `[notify] command`): run as root, the
/// program and every directory above it are root's and writable by no one
/// else, no link on the way is another account's, and the same holds for
/// the interpreter a `#!` line names. A program that does not exist passes
/// (running it fails, and says so) unless another account could create it
/// before it runs: in a directory others can write to, sticky or not.
pub fn check_program(path: &Path, what: &str) -> Result<()> {
    check_program_within(path, what, 0)
}

fn check_program_within(path: &Path, what: &str, depth: usize) -> Result<()> {
    let path = absolute(path)?;
    let rules = rules(true);
    let resolved = walk::resolve(&path, rules, true);
    let missing = |refusal: &Refusal| refusal.system && refusal.kind == io::ErrorKind::NotFound;
    let (dir, name) = match resolved {
        Err(refusal) if missing(&refusal) => return absent(what, &path, &refusal, rules),
        Err(refusal) => return Err(refused(what, &path, &refusal)),
        Ok(found) => found,
    };
    let at = dir.join(&name);
    let looked = match dir.look(&name) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let refusal = Refusal {
                others_may_create: dir.guard != walk::Guard::Closed,
                ..Refusal::io(&at, error)
            };
            return absent(what, &path, &refusal, rules);
        }
        Err(error) => return Err(refused(what, &path, &Refusal::io(&at, error))),
        // Not a program at all: running it fails, and says so.
        Ok(looked) if !looked.meta.is_file() => return Ok(()),
        Ok(looked) => looked,
    };
    judge_file(&at, &looked.meta, rules).map_err(|refusal| refused(what, &path, &refusal))?;
    let Some((interpreter, arguments)) = interpreter(&dir, &name, &looked) else {
        return Ok(());
    };
    let shown = path.display();
    if !interpreter.is_absolute() {
        bail!(
            "{what} {shown} is a script whose #! line names {}, not an absolute path: write the \
             interpreter's full path",
            interpreter.display()
        );
    }
    if depth + 1 >= MAX_INTERPRETERS {
        bail!("{what} {shown}: its #! interpreters nest more than {MAX_INTERPRETERS} deep");
    }
    check_program_within(&interpreter, "interpreter", depth + 1)
        .with_context(|| format!("{what} {shown} is a script for {}", interpreter.display()))?;
    // `#!/usr/bin/env -S /some/where/sh`: env runs what its words name.
    if interpreter.file_name() == Some(OsStr::new("env")) {
        for word in arguments {
            let named = word
                .strip_prefix("--split-string=")
                .or_else(|| word.strip_prefix("-S"))
                .unwrap_or(&word);
            // env's own escapes and variables (`\_`, `${TZ}`) would make of
            // the words another program than the one checked.
            if named.contains(['\\', '$']) {
                bail!(
                    "{what} {shown} is a script whose #! line has env unescape or expand {named}: \
                     write the interpreter's full path, without env"
                );
            }
            if !named.contains('/') {
                continue;
            }
            let program = Path::new(named);
            if !program.is_absolute() {
                bail!(
                    "{what} {shown} is a script whose #! line has env run {named}, not an \
                     absolute path: write the interpreter's full path"
                );
            }
            check_program_within(program, "program env runs", depth + 1)
                .with_context(|| format!("{what} {shown} is a script env runs with {named}"))?;
        }
    }
    Ok(())
}

/// A program that does not exist: fine, unless another account could put
/// one there before it runs.
fn absent(what: &str, path: &Path, missing: &Refusal, rules: Rules) -> Result<()> {
    if !(rules.strict && missing.others_may_create) {
        return Ok(());
    }
    let directory = missing.at.parent().unwrap_or(Path::new("/"));
    bail!(
        "{what} {} does not exist, and another account could put a program of its own there \
         before it runs ({} is writable by others): keep programs in directories only root can \
         change",
        path.display(),
        directory.display()
    )
}

/// The interpreter a `#!` line at the start of the file names, if any,
/// with the words after it. A file root cannot read is no script it can run.
fn interpreter(dir: &Dir, name: &OsStr, looked: &Looked) -> Option<(PathBuf, Vec<String>)> {
    let mut file = reopen(dir, name, looked, OFlags::RDONLY).ok()?;
    let mut head = [0u8; 256];
    let read = file.read(&mut head).ok()?;
    let line = head[..read].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|word| !word.is_empty());
    let interpreter = PathBuf::from(OsStr::from_bytes(words.next()?));
    let rest = words.map(|word| String::from_utf8_lossy(word).into_owned());
    Some((interpreter, rest.collect()))
}

/// Under strict rules, refuses a file another account owns or can write,
/// or one in a sticky directory that is not root's.
fn judge_file(at: &Path, meta: &Metadata, rules: Rules) -> Result<(), Refusal> {
    if rules.strict && (!rules.trusts(meta.uid()) || meta.mode() & 0o022 != 0) {
        return Err(walk::owner_or_mode(at, meta, rules));
    }
    Ok(())
}

// ---- the state directory ---------------------------------------------------

/// A directory root trusts (`state_dir`), held by descriptor: the files in
/// it are read, created, replaced and renamed relative to it.
#[derive(Debug)]
pub struct Directory {
    dir: Dir,
    rules: Rules,
}

impl Directory {
    /// Reaches the directory `path` (`what`, for messages), as root only
    /// through directories root alone can change, itself included. With
    /// `create`, makes what is missing (the last with that mode, those
    /// above it 755); without, a missing one is an error of kind NotFound.
    pub fn open(path: &Path, what: &str, create: Option<u32>) -> io::Result<Directory> {
        let path = absolute(path)?;
        let rules = rules(true);
        let missing = create.map_or(Missing::Stop, Missing::Create);
        let as_error = |refusal: Refusal| {
            io::Error::new(refusal.kind, refused(what, &path, &refusal).to_string())
        };
        let dir = walk::directory(&path, rules, missing).map_err(as_error)?;
        // Sticky is not enough here: others could add the files root reads.
        if rules.strict && dir.guard != walk::Guard::Closed {
            let meta = dir.fd.metadata()?;
            return Err(as_error(walk::owner_or_mode(&dir.path, &meta, rules)));
        }
        Ok(Directory { dir, rules })
    }

    /// The path it was reached by.
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// The whole of the regular file `name` here; a link is refused.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_read(name)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The regular file `name` here, open for reading; a link is refused.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        let name = OsStr::new(name);
        let at = self.dir.join(name);
        let looked = self.dir.look(name)?;
        let looked = regular(&self.dir, name, looked, Odd::Remove).map_err(|r| r.into_io(&at))?;
        reopen(&self.dir, name, &looked, OFlags::RDONLY).map_err(|r| r.into_io(&at))
    }

    /// Opens the regular file `name` here for reading and writing, creating
    /// it with `mode` if missing (the run lock, watch's presence); a link is
    /// refused.
    pub fn open_or_create(&self, name: &str, mode: u32) -> io::Result<File> {
        let name = OsStr::new(name);
        match self.dir.look(name) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                create(&self.dir, name, OFlags::RDWR, mode)
            }
            Err(error) => Err(error),
            Ok(looked) => {
                let at = self.dir.join(name);
                let looked =
                    regular(&self.dir, name, looked, Odd::Remove).map_err(|r| r.into_io(&at))?;
                reopen(&self.dir, name, &looked, OFlags::RDWR).map_err(|r| r.into_io(&at))
            }
        }
    }

    /// Replaces `name` here as `write_atomic` does.
    pub fn replace(&self, name: &str, contents: &[u8], mode: u32) -> io::Result<()> {
        replace(&self.dir, OsStr::new(name), contents, mode)
    }

    /// Keeps `name` here a regular file of at least `bytes` bytes (mode
    /// 600), written out so that they are its own on the disk; made anew
    /// as `replace` makes a file, so never left part-made.
    pub fn reserve(&self, name: &str, bytes: u64) -> io::Result<()> {
        let kept = self.dir.look(OsStr::new(name));
        if kept.is_ok_and(|kept| kept.meta.is_file() && kept.meta.len() >= bytes) {
            return Ok(());
        }
        let zeros = vec![0; usize::try_from(bytes).unwrap_or(usize::MAX)];
        self.replace(name, &zeros, 0o600)
    }

    /// Removes the file `name` here; false when there was none.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.dir.fd, name, AtFlags::empty()) {
            Err(rustix::io::Errno::NOENT) => Ok(false),
            removed => removed.map(|()| true).map_err(io::Error::from),
        }
    }

    /// Renames `from` to `to`, both here.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.dir.fd, from, &self.dir.fd, to)?;
        sync(&self.dir)
    }

    /// Removes the temporary files `replace` leaves here when it is killed
    /// (`.NAME.XXXXXXXXXXXX.tmp`) that are older than `age`: a younger one
    /// may be another process's, being written. What was removed.
    pub fn sweep_temporaries(&self, age: std::time::Duration) -> io::Result<Vec<String>> {
        let listing = rustix::fs::openat(
            &self.dir.fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rustix::fs::Dir::new)?;
        let mut removed = Vec::new();
        for entry in listing {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
                continue;
            };
            let random = stem.rsplit_once('.').map(|(_, random)| random);
            if !random.is_some_and(|r| r.len() == 12 && r.bytes().all(|b| b.is_ascii_hexdigit())) {
                continue;
            }
            let looked = self.dir.look(OsStr::new(name))?;
            let modified = looked.meta.modified()?;
            let old = modified.elapsed().is_ok_and(|elapsed| elapsed > age);
            if looked.meta.is_file() && old {
                rustix::fs::unlinkat(&self.dir.fd, name, AtFlags::empty())?;
                removed.push(name.to_owned());
            }
        }
        Ok(removed)
    }

    /// As root, refuses a file in it someone other than root could change,
    /// or a link (`what`: "state_dir"): whoever could plant one could choose
    /// what root reads from it.
    pub fn check_entries(&self, what: &str) -> Result<()> {
        let listing = rustix::fs::openat(
            &self.dir.fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rustix::fs::Dir::new)
        .with_context(|| format!("cannot read {what} {}", self.path().display()))?;
        for entry in listing {
            let entry =
                entry.with_context(|| format!("cannot read {what} {}", self.path().display()))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let at = self.dir.join(name);
            let shown = at.display();
            let looked = self
                .dir
                .look(name)
                .with_context(|| format!("{what} {shown}"))?;
            if looked.meta.file_type().is_symlink() {
                bail!(
                    "{what} holds a symbolic link {shown}, and portlocker never follows links \
                     there: remove it with `rm {shown}`"
                );
            }
            if looked.meta.is_file() {
                judge_file(&at, &looked.meta, self.rules)
                    .map_err(|refusal| anyhow!("{what} file {shown} {}", refusal.reason))?;
            }
        }
        Ok(())
    }
}

/// For a test that needs root (to give a file to another account): true
/// as root; otherwise says on stderr that it skips, or fails when CI
/// (PORTLOCKER_REQUIRE_NETNS=1) forbids skipping.
#[cfg(test)]
pub(crate) fn root_for_test(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("PORTLOCKER_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test} needs root and PORTLOCKER_REQUIRE_NETNS=1 forbids skipping it");
    }
    // Past libtest's capture, so a passing run shows it.
    let _ = writeln!(io::stderr(), "SKIPPED {test}: not root");
    false
}

#[cfg(test)]
mod tests;
