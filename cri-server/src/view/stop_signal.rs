//! Container stop signals (KEP-4960): `ContainerConfig.stop_signal` overrides the image's
//! `StopSignal`, which overrides SIGTERM; `ContainerStatus.stop_signal` reports the signal
//! StopContainer sends. The CRI names signals by an enum; these map it to and from numbers.

use proto::cri::{ContainerConfig, Signal};

/// The signal StopContainer sends: the config's, else the image's (`image_signal`), else
/// SIGTERM.
pub fn effective(config: &ContainerConfig, image_signal: Option<&str>) -> i32 {
    number(config.stop_signal())
        .or_else(|| image_signal.and_then(parse_name))
        .unwrap_or(libc::SIGTERM)
}

/// The number of a CRI signal; None for `RUNTIME_DEFAULT`.
fn number(sig: Signal) -> Option<i32> {
    let name = sig.as_str_name();
    if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
        return n.parse::<i32>().ok().map(|n| libc::SIGRTMIN() + n);
    }
    if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
        return n.parse::<i32>().ok().map(|n| libc::SIGRTMAX() - n);
    }
    match sig {
        Signal::RuntimeDefault => None,
        Signal::Sigrtmin => Some(libc::SIGRTMIN()),
        Signal::Sigrtmax => Some(libc::SIGRTMAX()),
        _ => parse_name(name),
    }
}

/// The CRI signal for a number (the first name the enum gives it).
pub fn of_number(n: i32) -> Signal {
    (1..=65)
        .filter_map(Signal::try_from_i32)
        .find(|s| number(*s) == Some(n))
        .unwrap_or(Signal::RuntimeDefault)
}

/// A signal name as images write it (`SIGTERM`, `TERM`, `9`, `SIGRTMIN+3`).
fn parse_name(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt_offset(rest).map(|k| libc::SIGRTMIN() + k);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt_offset(rest).map(|k| libc::SIGRTMAX() - k);
    }
    match name {
        "CLD" => Some(libc::SIGCHLD),
        "POLL" => Some(libc::SIGIO),
        "IOT" => Some(libc::SIGABRT),
        _ => format!("SIG{name}")
            .parse::<nix::sys::signal::Signal>()
            .ok()
            .map(|s| s as i32),
    }
}

/// `""` → 0, `+3` → 3 (for RTMIN), `-3` → 3 (for RTMAX).
fn rt_offset(s: &str) -> Option<i32> {
    if s.is_empty() {
        return Some(0);
    }
    s.get(1..)?
        .parse::<i32>()
        .ok()
        .filter(|k| (0..=15).contains(k))
}

trait TryFromI32: Sized {
    fn try_from_i32(v: i32) -> Option<Self>;
}

impl TryFromI32 for Signal {
    fn try_from_i32(v: i32) -> Option<Signal> {
        Signal::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_signals_map_to_linux_numbers() {
        assert_eq!(number(Signal::Sigterm), Some(libc::SIGTERM));
        assert_eq!(number(Signal::Sigkill), Some(libc::SIGKILL));
        assert_eq!(number(Signal::Sigcld), Some(libc::SIGCHLD));
        assert_eq!(number(Signal::Sigpoll), Some(libc::SIGIO));
        assert_eq!(number(Signal::Sigrtmin), Some(libc::SIGRTMIN()));
        assert_eq!(number(Signal::Sigrtminplus3), Some(libc::SIGRTMIN() + 3));
        assert_eq!(number(Signal::Sigrtmaxminus1), Some(libc::SIGRTMAX() - 1));
        assert_eq!(number(Signal::Sigrtmax), Some(libc::SIGRTMAX()));
        assert_eq!(number(Signal::RuntimeDefault), None);
        // Every named signal has a number.
        for v in 1..=65 {
            let s = Signal::try_from(v).unwrap();
            assert!(number(s).is_some(), "{s:?}");
        }
    }

    #[test]
    fn numbers_map_back_to_their_cri_signal() {
        assert_eq!(of_number(libc::SIGTERM), Signal::Sigterm);
        assert_eq!(of_number(libc::SIGQUIT), Signal::Sigquit);
        assert_eq!(of_number(libc::SIGRTMIN() + 2), Signal::Sigrtminplus2);
        assert_eq!(of_number(0), Signal::RuntimeDefault);
    }

    #[test]
    fn config_overrides_image_which_overrides_sigterm() {
        let mut c = ContainerConfig::default();
        assert_eq!(effective(&c, None), libc::SIGTERM);
        assert_eq!(effective(&c, Some("SIGQUIT")), libc::SIGQUIT);
        assert_eq!(effective(&c, Some("RTMIN+1")), libc::SIGRTMIN() + 1);
        c.set_stop_signal(Signal::Sigusr1);
        assert_eq!(effective(&c, Some("SIGQUIT")), libc::SIGUSR1);
    }

    #[test]
    fn image_signal_names() {
        assert_eq!(parse_name("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_name("9"), Some(9));
        assert_eq!(parse_name("SIGRTMAX-2"), Some(libc::SIGRTMAX() - 2));
        assert_eq!(parse_name("NOPE"), None);
        assert_eq!(parse_name("0"), None);
    }
}
