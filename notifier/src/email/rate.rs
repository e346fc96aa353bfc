//! A rate limiter for bulk sends: messages start at most `per_second` apart on average
//! (a virtual-clock token bucket holding one token, so there is no burst).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces out calls to `acquire` so that at most `per_second` return per second.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

/// The longest wait between two events, however small the rate.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

impl RateLimiter {
    /// A limiter for `per_second` events per second; `None` when the rate is not a positive
    /// finite number.
    pub fn new(per_second: f64) -> Option<Self> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return None;
        }
        // An absurdly small rate (1e-20) would overflow a Duration: it waits an hour.
        let interval = Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(MAX_INTERVAL)
            .min(MAX_INTERVAL);
        Some(Self {
            interval,
            next: Mutex::new(None),
        })
    }

    /// Waits for this caller's slot. Slots are handed out in call order.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nonsense_rates() {
        assert!(RateLimiter::new(0.0).is_none());
        assert!(RateLimiter::new(-1.0).is_none());
        assert!(RateLimiter::new(f64::NAN).is_none());
        assert!(RateLimiter::new(f64::INFINITY).is_none());
        let tiny = RateLimiter::new(1e-20).expect("a rate, however small");
        assert_eq!(tiny.interval, MAX_INTERVAL);
        assert_eq!(
            RateLimiter::new(f64::MIN_POSITIVE).unwrap().interval,
            MAX_INTERVAL
        );
    }

    #[tokio::test]
    async fn spaces_calls() {
        let r = RateLimiter::new(200.0).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..41 {
            r.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(195), "{took:?}");
        // Late wake-ups on a loaded machine add up (a slot missed is not made up): a loose
        // upper bound, still far below what a wrong interval (10× too long) would take.
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
