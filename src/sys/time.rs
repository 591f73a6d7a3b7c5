//! Time as the kernel takes it (`timespec` on a named clock) and as the
//! runtime's timers take it (`Instant`, `Duration`): every conversion between
//! them lives here, once.

use std::time::{Duration, Instant};

use libc::{c_int, c_long, clockid_t, timespec};

const NANOS: c_long = 1_000_000_000;

/// `d` as a timespec, saturating at `time_t::MAX` seconds.
pub(crate) fn to_timespec(d: Duration) -> timespec {
    timespec {
        tv_sec: d.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos().into(),
    }
}

/// `clock`'s reading; None if `clock_gettime` fails (an unknown clock).
pub(crate) fn clock_now(clock: clockid_t) -> Option<timespec> {
    let mut now = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`.
    (unsafe { libc::clock_gettime(clock, &mut now) } == 0).then_some(now)
}

/// The absolute time `d` from now on `clock`, saturating: for the calls that
/// take an absolute timeout (`FUTEX_WAIT_BITSET`, `sem_clockwait`). A clock
/// that cannot be read counts from its epoch.
pub(crate) fn timespec_after(clock: clockid_t, d: Duration) -> timespec {
    let now = clock_now(clock).unwrap_or(timespec {
        tv_sec: 0,
        tv_nsec: 0,
    });
    let ns = now.tv_nsec + c_long::from(d.subsec_nanos());
    timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(d.as_secs().try_into().unwrap_or(libc::time_t::MAX))
            .saturating_add(ns / NANOS),
        tv_nsec: ns % NANOS,
    }
}

/// `d` from now. Beyond `Instant`'s range (`tv_sec` near `time_t::MAX`) the
/// deadline becomes a century away, which a process cannot tell from never.
pub(crate) fn deadline_after(d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now + CENTURY)
}

/// What the kernel accepts as a timespec (`timespec64_valid`): `tv_sec >= 0`,
/// `0 <= tv_nsec < 1e9`. None for anything it rejects with EINVAL.
pub(crate) fn timespec_duration(ts: &timespec) -> Option<Duration> {
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    Some(Duration::new(secs, nanos))
}

/// Converts an absolute `clock` time to a deadline; EINVAL for a bad timespec.
pub(crate) fn deadline_at(
    clock: clockid_t,
    abstime: *const timespec,
) -> Result<Option<Instant>, c_int> {
    // SAFETY: null or the caller's readable timespec.
    let Some(at) = (unsafe { abstime.as_ref() }) else {
        return Ok(None);
    };
    if !(0..NANOS).contains(&at.tv_nsec) {
        return Err(libc::EINVAL);
    }
    let now = clock_now(clock).ok_or(libc::EINVAL)?;
    let nanos = |t: &timespec| i128::from(t.tv_sec) * i128::from(NANOS) + i128::from(t.tv_nsec);
    let left = u64::try_from((nanos(at) - nanos(&now)).max(0)).unwrap_or(u64::MAX);
    Ok(Some(deadline_after(Duration::from_nanos(left))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_timespec_splits_and_saturates() {
        let ts = to_timespec(Duration::new(3, 250));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (3, 250));
        let ts = to_timespec(Duration::MAX);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (libc::time_t::MAX, 999_999_999));
    }

    #[test]
    fn timespec_after_carries_nanoseconds_and_saturates() {
        let before = clock_now(libc::CLOCK_MONOTONIC).unwrap();
        let at = timespec_after(libc::CLOCK_MONOTONIC, Duration::new(2, 999_999_999));
        assert!((0..NANOS).contains(&at.tv_nsec), "{}", at.tv_nsec);
        let ns = |t: &timespec| i128::from(t.tv_sec) * i128::from(NANOS) + i128::from(t.tv_nsec);
        let ahead = ns(&at) - ns(&before);
        assert!(
            (2_999_999_999..60 * i128::from(NANOS)).contains(&ahead),
            "{ahead}"
        );
        let far = timespec_after(libc::CLOCK_MONOTONIC, Duration::MAX);
        assert_eq!(far.tv_sec, libc::time_t::MAX);
    }

    #[test]
    fn deadline_at_checks_the_timespec_and_clamps_the_past() {
        assert_eq!(
            deadline_at(libc::CLOCK_REALTIME, std::ptr::null()),
            Ok(None)
        );
        let bad = timespec {
            tv_sec: 0,
            tv_nsec: NANOS,
        };
        assert_eq!(deadline_at(libc::CLOCK_REALTIME, &bad), Err(libc::EINVAL));
        assert_eq!(
            deadline_at(
                -1,
                &timespec {
                    tv_sec: 0,
                    tv_nsec: 0
                }
            ),
            Err(libc::EINVAL)
        );
        let past = timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let at = deadline_at(libc::CLOCK_REALTIME, &past).unwrap().unwrap();
        assert!(at <= Instant::now());
        let soon = timespec_after(libc::CLOCK_MONOTONIC, Duration::from_secs(30));
        let at = deadline_at(libc::CLOCK_MONOTONIC, &soon).unwrap().unwrap();
        let left = at.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(20) && left <= Duration::from_secs(30),
            "{left:?}"
        );
    }
}
