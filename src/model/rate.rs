//! Rates as written in the configuration (`"100/minute"`), a route's limits
//! (`[routes.rate_limits]`), and the token bucket that enforces one.

use std::time::{Duration, Instant};

/// `tokens` per `period`, with bursts up to `tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub tokens: u32,
    pub period: Duration,
}

impl Rate {
    /// `"N/second"`, `"N/minute"`, `"N/hour"`, `"N/day"` (also `s`, `m`, `h`, `d`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let fix = "write e.g. \"100/minute\" (N/second, N/minute, N/hour or N/day)";
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a rate: {fix}"))?;
        let tokens: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{text:?}: the count must be a whole number above 0; {fix}"))?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(format!("{text:?}: unknown period; {fix}")),
        };
        Ok(Rate { tokens, period })
    }

    /// The time one token takes to come back (the bucket refills continuously).
    pub fn per_token(&self) -> Duration {
        self.period / self.tokens
    }
}

/// A route's limits.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    /// All callers of the route together.
    pub route: Option<Rate>,
    /// Each caller on the route.
    pub per_principal: Option<Rate>,
    /// Each caller, each tool (`tools/call`).
    pub per_tool: Option<Rate>,
    /// Each caller, these tools (overrides `per_tool`).
    pub tools: Vec<(String, Rate)>,
}

/// A token bucket: full at first, refilled continuously.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.tokens),
            updated: now,
        }
    }

    /// Whether a token is there now, or how long until one is (refills, takes nothing).
    pub fn check(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let refill = elapsed / rate.per_token().as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + refill).min(f64::from(rate.tokens));
        self.updated = now;
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(rate.per_token().mul_f64(1.0 - self.tokens))
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.check(rate, now)?;
        self.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_or_say_how_to_write_them() {
        assert_eq!(
            Rate::parse("100/minute").unwrap(),
            Rate {
                tokens: 100,
                period: Duration::from_secs(60)
            }
        );
        assert_eq!(
            Rate::parse(" 5 / h ").unwrap().period,
            Duration::from_secs(3600)
        );
        for bad in ["100", "0/minute", "-1/s", "x/minute", "10/week", "10/"] {
            let error = Rate::parse(bad).unwrap_err();
            assert!(error.contains("100/minute"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let rate = Rate::parse("3/second").unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(rate, start);
        for _ in 0..3 {
            assert!(bucket.take(rate, start).is_ok());
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert!(
            wait <= Duration::from_millis(334) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(bucket
            .take(rate, start + Duration::from_millis(340))
            .is_ok());
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(bucket.take(rate, later).is_ok());
        }
        assert!(bucket.take(rate, later).is_err());
    }
}
