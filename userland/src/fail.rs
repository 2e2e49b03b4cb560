//! How a server's run says it failed: a [`Failure`] returned from the
//! function [`entry!`](crate::entry) runs is printed as `BIN: FAIL reason`
//! (BIN the server's binary) and ends the server with exit code 1.
//!
//! The test and demo servers fail in one way everywhere (the in-QEMU tests
//! look for `FAIL`), so each step that can fail says what it was doing
//! with [`OrFail::or_fail`] and hands the rest to `?`, instead of every
//! server printing and returning 1 by hand.

use alloc::string::{String, ToString};
use core::fmt::{self, Debug, Display};

use abi::Error;

/// Why a server's run failed: the text after `FAIL `.
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    /// A failure that says `reason`.
    pub fn new(reason: impl Display) -> Self {
        Self(reason.to_string())
    }
}

impl Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A step's result as a [`Failure`] that says what the step was.
pub trait OrFail<T> {
    /// `what` failed: for an error, `what: error`; for a `None`, `what`.
    fn or_fail(self, what: impl Display) -> Result<T, Failure>;
}

impl<T, E: Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: impl Display) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(format_args!("{what}: {e}")))
    }
}

impl<T> OrFail<T> for Option<T> {
    fn or_fail(self, what: impl Display) -> Result<T, Failure> {
        self.ok_or_else(|| Failure::new(what))
    }
}

/// A step a test server expects the system to refuse with `want` (a grant
/// it lacks, an address it may not use): `Ok` when it was refused so;
/// anything else, success included, is a failure that says `what returned`
/// and the result.
pub fn must_refuse<T: Debug>(
    result: Result<T, Error>,
    want: Error,
    what: impl Display,
) -> Result<(), Failure> {
    match result {
        Err(e) if e == want => Ok(()),
        other => Err(Failure::new(format_args!("{what} returned {other:?}"))),
    }
}

/// What a server's main function may return: an exit code, or a
/// [`Failure`] that [`entry!`](crate::entry) reports.
pub trait Outcome {
    /// The exit code; `server` names the server in a failure's line.
    fn exit_code(self, server: &str) -> i32;
}

impl Outcome for i32 {
    fn exit_code(self, _server: &str) -> i32 {
        self
    }
}

impl Outcome for Result<(), Failure> {
    fn exit_code(self, server: &str) -> i32 {
        match self {
            Ok(()) => 0,
            Err(failure) => {
                crate::println!("{server}: FAIL {failure}");
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_the_step_then_the_error() {
        let step: Result<(), &str> = Err("no such service");
        let failure = step.or_fail("cannot open echo").unwrap_err();
        assert_eq!(failure.to_string(), "cannot open echo: no such service");
        let none: Option<u8> = None;
        assert_eq!(
            none.or_fail("no client").unwrap_err().to_string(),
            "no client"
        );
        assert_eq!(Some(3).or_fail("no client").unwrap(), 3);
        assert_eq!(Ok::<(), Failure>(()).exit_code("x"), 0);
        assert_eq!(7.exit_code("x"), 7);
    }

    #[test]
    fn a_refusal_is_right_only_with_the_error_expected() {
        assert!(must_refuse(Err::<(), _>(Error::Denied), Error::Denied, "map").is_ok());
        let other = must_refuse(Err::<(), _>(Error::BadAddress), Error::Denied, "map");
        assert_eq!(
            other.unwrap_err().to_string(),
            "map returned Err(BadAddress)"
        );
        let granted = must_refuse(Ok::<u64, _>(7), Error::Denied, "map");
        assert_eq!(granted.unwrap_err().to_string(), "map returned Ok(7)");
    }
}
