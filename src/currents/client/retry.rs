//! Backoff, `Retry-After` parsing and the shared request-rate cap.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;
use tokio::time::Instant;

/// Exponential backoff with full jitter: a uniform delay in
/// `0..=min(max, base * 2^(attempt-1))`, `attempt` counting from 1.
pub(crate) fn full_jitter(base: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = exp_ceiling(base, max, attempt);
    if ceiling.is_zero() {
        return ceiling;
    }
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
}

/// `min(max, base * 2^(attempt-1))`.
pub(crate) fn exp_ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(31);
    base.checked_mul(1u32 << shift).unwrap_or(max).min(max)
}

/// The delay before the next attempt: at least what `Retry-After` asked for (capped at
/// `retry_after_max`), and at least the jittered exponential backoff.
pub(crate) fn next_delay(
    base: Duration,
    max: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
    retry_after_max: Duration,
) -> Duration {
    let backoff = full_jitter(base, max, attempt);
    match retry_after {
        Some(ra) => backoff.max(ra.min(retry_after_max)),
        None => backoff,
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`, tolerated: `"1.5"`) or an
/// HTTP-date (IMF-fixdate, RFC 850 or asctime), relative to `now`. A date in the past
/// gives zero; garbage gives `None`.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings saturate rather than fail.
        return Some(Duration::from_secs(
            v.parse::<u64>().unwrap_or(u64::MAX / 4),
        ));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = DateTime::parse_from_rfc2822(v)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; asctime: "Sun Nov  6 08:49:37 1994".
            NaiveDateTime::parse_from_str(v, "%A, %d-%b-%y %H:%M:%S GMT")
                .or_else(|_| NaiveDateTime::parse_from_str(v, "%a %b %e %H:%M:%S %Y"))
                .ok()
                .map(|n| n.and_utc())
        })?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A request-rate cap shared by all clones of a client: requests are spaced at least
/// `1/rate` apart (no bursts), in the order they asked.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Option<Duration>,
    next_slot: Mutex<Option<Instant>>,
    /// Until when the API asked every request of this client to wait (a 429's
    /// `Retry-After`): no request starts before.
    paused_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_second == 0` means unlimited.
    pub(crate) fn new(per_second: u32) -> Self {
        let interval = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
        Self {
            interval,
            next_slot: Mutex::new(None),
            paused_until: Mutex::new(None),
        }
    }

    /// Holds every later request back for `wait` from now (an earlier, longer pause
    /// stays).
    pub(crate) fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        *p = Some(p.map_or(until, |old| old.max(until)));
    }

    /// Until when requests are held back, if that is still to come.
    fn paused(&self) -> Option<Instant> {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|u| *u > Instant::now())
    }

    /// Waits for this request's slot: after any pause, then at the rate cap. A pause
    /// that begins while the request waits for its slot (another request met a 429
    /// meanwhile) holds it back too: once its slot comes it looks again, and while a
    /// pause is on it waits for its end and takes a new slot.
    pub(crate) async fn acquire(&self) {
        loop {
            if let Some(until) = self.paused() {
                tokio::time::sleep_until(until).await;
                // The pause may have been extended meanwhile.
                continue;
            }
            let Some(interval) = self.interval else {
                return;
            };
            let slot = {
                let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let slot = next.map_or(now, |n| n.max(now));
                *next = Some(slot + interval);
                slot
            };
            tokio::time::sleep_until(slot).await;
            if self.paused().is_none() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn exponential_ceiling_doubles_and_caps() {
        let b = Duration::from_millis(500);
        let m = Duration::from_secs(30);
        assert_eq!(exp_ceiling(b, m, 1), Duration::from_millis(500));
        assert_eq!(exp_ceiling(b, m, 2), Duration::from_secs(1));
        assert_eq!(exp_ceiling(b, m, 4), Duration::from_secs(4));
        assert_eq!(exp_ceiling(b, m, 10), m);
        assert_eq!(exp_ceiling(b, m, u32::MAX), m);
        assert_eq!(exp_ceiling(Duration::MAX, m, 3), m);
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_varies() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        let samples: Vec<_> = (0..200).map(|_| full_jitter(b, m, 3)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 10, "jitter must randomise");
        assert_eq!(full_jitter(Duration::ZERO, m, 3), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let b = Duration::from_millis(1);
        let m = Duration::from_millis(2);
        let cap = Duration::from_secs(60);
        assert_eq!(
            next_delay(b, m, 1, Some(Duration::from_secs(3)), cap),
            Duration::from_secs(3)
        );
        assert_eq!(
            next_delay(b, m, 1, Some(Duration::from_secs(3600)), cap),
            cap
        );
        assert!(next_delay(b, m, 1, None, cap) <= m);
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert!(parse_retry_after("99999999999999999999999", now).is_some());
    }

    #[tokio::test]
    async fn rate_limiter_spaces_requests() {
        let rl = RateLimiter::new(50);
        let start = Instant::now();
        for _ in 0..6 {
            rl.acquire().await;
        }
        // Slots at 0, 20, .., 100 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[tokio::test]
    async fn rate_limiter_does_not_bank_idle_time() {
        let rl = RateLimiter::new(20);
        rl.acquire().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        for _ in 0..3 {
            rl.acquire().await;
        }
        // The first is immediate, the next two are 50 ms apart: no burst from idle time.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
    }

    /// A pause that begins while requests wait for their slots (a 429 met by an
    /// earlier request) holds them back too: none goes out before the pause ends. On
    /// tokio's paused clock: no stall of a loaded machine moves the times compared.
    #[tokio::test(start_paused = true)]
    async fn a_pause_begun_while_requests_wait_for_their_slots_holds_them_back() {
        let rl = RateLimiter::new(5);
        let start = Instant::now();
        // The first request's slot is now; the next three reserve 200, 400 and 600 ms.
        rl.acquire().await;
        let pause = Duration::from_millis(600);
        let waiting = || async {
            rl.acquire().await;
            Instant::now()
        };
        let (a, b, c, paused_at) = futures::join!(waiting(), waiting(), waiting(), async {
            // Polled after the three above have reserved their slots: the first
            // request's answer was a 429 with `Retry-After`.
            let at = Instant::now();
            rl.pause_for(pause);
            at
        });
        assert!(
            paused_at - start < Duration::from_millis(200),
            "paused only after the next slot had come"
        );
        for sent in [a, b, c] {
            assert!(
                sent >= paused_at + pause,
                "a request went out {:?} after the pause began, during it",
                sent - paused_at
            );
        }
        // They are still spaced at the rate cap after the pause.
        let mut sent = [a, b, c];
        sent.sort();
        assert!(sent[2] - sent[0] >= Duration::from_millis(390), "{sent:?}");
    }

    #[tokio::test]
    async fn unlimited_rate_never_waits() {
        let rl = RateLimiter::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            rl.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
