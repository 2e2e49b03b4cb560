//! The kernel command line: `batching=on|off`, `log=LEVEL`, `test=NAME`,
//! `hv=auto|native|pvm`.
//!
//! Parsing never fails: an unknown option or a malformed value becomes a
//! [`Warning`] that names it, and the default stays in force, so a typo costs
//! a line of output rather than a boot.

/// How verbose the kernel log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }
}

/// Which hypervisor backend to run (`hv=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvRequest {
    /// The best the machine offers: pvm where its interface answers,
    /// native everywhere else.
    Auto,
    /// Plain instructions, whatever the machine offers.
    Native,
    /// The PVM native mode; refused with a warning (and `Auto` taken) where
    /// the machine does not offer it.
    Pvm,
}

impl HvRequest {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "auto" => Self::Auto,
            "native" => Self::Native,
            "pvm" => Self::Pvm,
            _ => return None,
        })
    }
}

/// The longest test name kept.
pub const MAX_TEST_NAME: usize = 32;

/// The kernel's configuration, from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub batching: bool,
    pub log_level: LogLevel,
    pub hv: HvRequest,
    test: [u8; MAX_TEST_NAME],
    test_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batching: true,
            log_level: LogLevel::Info,
            hv: HvRequest::Auto,
            test: [0; MAX_TEST_NAME],
            test_len: 0,
        }
    }
}

impl Config {
    /// The in-QEMU test to run (`test=NAME`), if any.
    pub fn test(&self) -> Option<&str> {
        (self.test_len > 0).then(|| core::str::from_utf8(&self.test[..self.test_len]).unwrap_or(""))
    }

    pub fn test_bytes(&self) -> [u8; MAX_TEST_NAME] {
        self.test
    }
}

/// Something on the command line that was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning<'a> {
    /// `name` (with or without `=value`) is not an option of this kernel.
    UnknownOption(&'a str),
    /// `name=value` where value is not one the option accepts.
    BadValue {
        option: &'a str,
        value: &'a str,
        expected: &'static str,
    },
}

impl<'a> Warning<'a> {
    /// `option=value` (or `option` alone: `value` None) where the option
    /// takes `expected`.
    fn bad_value(option: &'a str, value: Option<&'a str>, expected: &'static str) -> Self {
        Warning::BadValue {
            option,
            value: value.unwrap_or(""),
            expected,
        }
    }
}

/// What an on/off option takes.
const ON_OR_OFF: &str = "on or off";

/// An on/off option's value.
fn on_off(value: &str) -> Option<bool> {
    match value {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

impl core::fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Warning::UnknownOption(name) => {
                write!(f, "unknown command-line option '{name}' ignored")
            }
            Warning::BadValue {
                option,
                value,
                expected,
            } => write!(
                f,
                "command-line option '{option}' has malformed value '{value}' \
                 (expected {expected}); using the default"
            ),
        }
    }
}

/// Parse `cmdline`, calling `warn` for each option that is not understood.
pub fn parse<'a>(cmdline: &'a str, mut warn: impl FnMut(Warning<'a>)) -> Config {
    let mut config = Config::default();
    for word in cmdline.split_ascii_whitespace() {
        let (option, value) = match word.split_once('=') {
            Some((o, v)) => (o, Some(v)),
            None => (word, None),
        };
        match (option, value) {
            ("batching", v) => match v.and_then(on_off) {
                Some(on) => config.batching = on,
                None => warn(Warning::bad_value(option, v, ON_OR_OFF)),
            },
            ("log", v) => match v.and_then(LogLevel::parse) {
                Some(level) => config.log_level = level,
                None => warn(Warning::bad_value(
                    option,
                    v,
                    "error, warn, info, debug or trace",
                )),
            },
            ("hv", v) => match v.and_then(HvRequest::parse) {
                Some(request) => config.hv = request,
                None => warn(Warning::bad_value(option, v, "auto, native or pvm")),
            },
            ("test", Some(name))
                if !name.is_empty()
                    && name.len() <= MAX_TEST_NAME
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                config.test[..name.len()].copy_from_slice(name.as_bytes());
                config.test_len = name.len();
            }
            ("test", v) => warn(Warning::bad_value(
                option,
                v,
                "a name of at most 32 letters, digits, '_' or '-'",
            )),
            (option, Some(_)) if server_option(option).is_some() => {}
            _ => warn(Warning::UnknownOption(word)),
        }
    }
    config
}

/// `NAME.key` split into the server name and the key, if `option` has
/// that form (both parts non-empty, the name a valid server name).
fn server_option(option: &str) -> Option<(&str, &str)> {
    let (server, key) = option.split_once('.')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (valid(server) && valid(key) && server.len() <= 16).then_some((server, key))
}

/// The `key=value` words of `cmdline` addressed to server `name` (written
/// `name.key=value`), in order.
pub fn server_args<'a>(cmdline: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    cmdline.split_ascii_whitespace().filter_map(move |word| {
        let (option, _) = word.split_once('=')?;
        let (server, _) = server_option(option)?;
        (server == name).then(|| &word[server.len() + 1..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(line: &str) -> (Config, Vec<String>) {
        let mut warnings = Vec::new();
        let config = parse(line, |w| warnings.push(w.to_string()));
        (config, warnings)
    }

    #[test]
    fn defaults() {
        let (c, w) = parse_all("");
        assert!(c.batching);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.test(), None);
        assert_eq!(c.hv, HvRequest::Auto);
        assert!(w.is_empty());
    }

    #[test]
    fn hv_takes_auto_native_or_pvm_and_names_anything_else() {
        assert_eq!(parse_all("hv=native").0.hv, HvRequest::Native);
        assert_eq!(parse_all("hv=pvm").0.hv, HvRequest::Pvm);
        assert_eq!(parse_all("hv=pvm hv=auto").0.hv, HvRequest::Auto);
        let (c, w) = parse_all("hv=xen");
        assert_eq!(c.hv, HvRequest::Auto);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("'hv'") && w[0].contains("'xen'") && w[0].contains("auto, native or pvm"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn every_option() {
        let (c, w) = parse_all("  batching=off log=trace   test=page_fault ");
        assert!(!c.batching);
        assert_eq!(c.log_level, LogLevel::Trace);
        assert_eq!(c.test(), Some("page_fault"));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn unknown_option_is_named_and_the_rest_still_applies() {
        let (c, w) = parse_all("frobnicate=yes batching=off quiet");
        assert!(!c.batching);
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("'frobnicate=yes'"), "{}", w[0]);
        assert!(w[1].contains("'quiet'"), "{}", w[1]);
    }

    #[test]
    fn malformed_values_keep_the_default() {
        let (c, w) = parse_all("batching=maybe log=loud batching log");
        assert!(c.batching);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(w.len(), 4);
        assert!(
            w[0].contains("'batching'") && w[0].contains("'maybe'"),
            "{}",
            w[0]
        );
        assert!(w[1].contains("'loud'"), "{}", w[1]);
    }

    #[test]
    fn server_options_pass_through_without_warnings() {
        let line =
            "batching=off stress.messages=1000 stress.batch=64 ring-consumer.x=1 .bad=1 stress.=2";
        let (c, w) = parse_all(line);
        assert!(!c.batching);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("'.bad=1'"));
        let args: Vec<_> = server_args(line, "stress").collect();
        assert_eq!(args, ["messages=1000", "batch=64"]);
        assert_eq!(
            server_args(line, "ring-consumer").collect::<Vec<_>>(),
            ["x=1"]
        );
        assert_eq!(server_args(line, "nobody").count(), 0);
    }

    #[test]
    fn hostile_test_names_are_refused() {
        for bad in [
            "test=",
            "test=a/b",
            "test=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "test=é",
        ] {
            let (c, w) = parse_all(bad);
            assert_eq!(c.test(), None, "{bad}");
            assert_eq!(w.len(), 1, "{bad}");
        }
    }
}
