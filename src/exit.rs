//! The exit codes, each with one meaning, mapped in one place.

/// The exit codes, each with one meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every service is as the control file asks (or: the check passed).
    Ok = 0,
    /// The run failed, or a service is not as asked (more open, or more
    /// closed: a lockout); nothing from a bad control file was applied.
    Failed = 1,
    /// Usage or config error; nothing was done.
    Usage = 2,
    /// Another run holds the lock; this one changed nothing (EX_TEMPFAIL).
    Busy = 75,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_fixed() {
        assert_eq!(Exit::Ok as u8, 0);
        assert_eq!(Exit::Failed as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(Exit::Busy as u8, 75);
    }
}
