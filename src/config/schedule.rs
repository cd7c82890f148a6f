//! Retention schedules: standard cron, read the way crontab(5) reads it.
//!
//! The `cron` crate parses the expressions, but its weekday numbers start at 1 for Sunday
//! and it requires both day fields to match. A schedule written for crontab means
//! something else to it: `0 3 * * 1` (Mondays) would run on Sundays. So a rule's
//! `schedule` is translated first:
//!
//! - weekdays are `0`–`7` with `0` and `7` both Sunday, or the names `sun` … `sat` (any
//!   case, also spelt out: `monday`), in lists, ranges and steps (`1-5`, `mon,wed`,
//!   `*/2`, `1-5/2`);
//! - when both the day of the month and the weekday are restricted (neither starts with
//!   `*`), a day matching either one is a match (`0 3 1 * 1`: the 1st of each month and
//!   every Monday);
//! - `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly`
//!   (`@annually`) stand for their usual five fields;
//! - six fields put seconds first; the other fields read the same as with five.
//!
//! Times are UTC.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A parsed retention schedule (see the module docs).
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The schedule as written in the rule.
    text: String,
    /// One schedule, or two (day of month, weekday) when a day may match either.
    alternatives: Vec<cron::Schedule>,
}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// A weekday (0 = Sunday) from a number `0`–`7` or a name.
fn weekday(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return if n <= 7 {
            Ok(n % 7)
        } else {
            Err(format!(
                "weekday {n} is out of range (0-7, 0 and 7 are Sunday)"
            ))
        };
    }
    let lower = s.to_ascii_lowercase();
    WEEKDAYS
        .iter()
        .position(|w| lower.len() >= 3 && w.starts_with(&lower))
        .map(|i| i as u32)
        .ok_or_else(|| format!("{s:?} is not a weekday (0-7 or sun, mon, ... sat)"))
}

/// The weekday field translated to the `cron` crate's numbering (1 = Sunday).
fn weekday_field(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step = s
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("weekday step {s:?} is not a positive number"))?;
                (r, step)
            }
            None => (item, 1),
        };
        // Steps run over the raw numbers, as in crontab: `*/2` is 0, 2, 4, 6.
        let (first, last) = match range.split_once('-') {
            _ if range == "*" || range == "?" => (0, 6),
            Some((a, b)) => {
                let (a, b) = (raw_weekday(a)?, raw_weekday(b)?);
                if a > b {
                    return Err(format!("weekday range {range:?} runs backwards"));
                }
                (a, b)
            }
            // `a/step` runs to the end of the week, as in crontab.
            None if step > 1 => (raw_weekday(range)?, 6),
            None => {
                let d = raw_weekday(range)?;
                (d, d)
            }
        };
        for d in (first..=last).step_by(step as usize) {
            days[(d % 7) as usize] = true;
        }
    }
    Ok(days
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .map(|(d, _)| (d + 1).to_string())
        .collect::<Vec<_>>()
        .join(","))
}

/// A weekday as written, `7` kept as `7` (ranges such as `5-7` end on Sunday).
fn raw_weekday(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(7) => Ok(7),
        _ => weekday(s),
    }
}

impl CronSchedule {
    /// Parses a rule's `schedule` (see the module docs); the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ if trimmed.starts_with('@') => {
                return Err(format!(
                    "cron {text:?}: unknown shorthand (use @hourly, @daily, @weekly, @monthly or @yearly)"
                ));
            }
            _ => trimmed,
        };
        let mut fields: Vec<&str> = expanded.split_whitespace().collect();
        match fields.len() {
            5 => fields.insert(0, "0"),
            6 => {}
            n => {
                return Err(format!(
                    "cron {text:?} has {n} fields; expected 5 (min hour day month weekday) or 6 (seconds first)"
                ));
            }
        }
        let dow = weekday_field(fields[5]).map_err(|e| format!("invalid cron {text:?}: {e}"))?;
        let dom = fields[3];
        let either =
            !dom.starts_with('*') && dom != "?" && !fields[5].starts_with('*') && fields[5] != "?";
        let build = |dom: &str, dow: &str| {
            let expr = format!(
                "{} {} {} {dom} {} {dow}",
                fields[0], fields[1], fields[2], fields[4]
            );
            cron::Schedule::from_str(&expr).map_err(|e| format!("invalid cron {text:?}: {e}"))
        };
        let alternatives = if either {
            vec![build(dom, "*")?, build("*", &dow)?]
        } else {
            vec![build(dom, &dow)?]
        };
        Ok(Self {
            text: text.to_string(),
            alternatives,
        })
    }

    /// The schedule as written in the rule (5 or 6 fields, or a shorthand).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.alternatives
            .iter()
            .filter_map(|s| s.after(t).next())
            .min()
    }

    /// The latest slot in `(after, now]`, if any.
    pub fn latest_in(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.alternatives
            .iter()
            .filter_map(|s| s.after(&after).take_while(|t| *t <= now).last())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    /// The next `n` slots after `from`.
    fn slots(text: &str, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let s = CronSchedule::parse(text).unwrap();
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = s.next_after(&t).unwrap();
            out.push(t);
        }
        out
    }

    /// The weekdays of a week of slots, Monday first.
    fn weekdays(text: &str) -> Vec<Weekday> {
        // 2026-12-06 is a Sunday.
        let mut days: Vec<Weekday> = slots(text, at(2026, 12, 6, 0, 0), 7)
            .iter()
            .map(|t| t.weekday())
            .collect();
        days.sort_by_key(|d| d.num_days_from_monday());
        days.dedup();
        days
    }

    #[test]
    fn weekdays_are_numbered_as_in_crontab() {
        use Weekday::*;
        assert_eq!(
            slots("0 3 * * 1", at(2026, 12, 6, 0, 0), 1),
            [at(2026, 12, 7, 3, 0)],
            "1 is Monday"
        );
        assert_eq!(weekdays("0 3 * * 0"), [Sun]);
        assert_eq!(weekdays("0 3 * * 7"), [Sun]);
        assert_eq!(weekdays("0 3 * * 1-5"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 3 * * MON-FRI"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 3 * * 5-7"), [Fri, Sat, Sun]);
        assert_eq!(weekdays("0 3 * * sat,sunday"), [Sat, Sun]);
        assert_eq!(weekdays("0 3 * * */2"), [Tue, Thu, Sat, Sun]);
        assert_eq!(weekdays("0 3 * * 1-5/2"), [Mon, Wed, Fri]);
        assert_eq!(weekdays("0 3 * * 3/2"), [Wed, Fri]);
        assert_eq!(weekdays("0 3 * * *").len(), 7);
        assert_eq!(
            slots("30 0 3 * * 1", at(2026, 12, 6, 0, 0), 1),
            [Utc.with_ymd_and_hms(2026, 12, 7, 3, 0, 30).unwrap()],
            "six fields: seconds first, the weekday read the same"
        );
    }

    #[test]
    fn a_day_matches_either_day_field_when_both_are_restricted() {
        // The 1st of the month and every Monday; 2026-12-01 is a Tuesday.
        assert_eq!(
            slots("0 3 1 * 1", at(2026, 11, 30, 4, 0), 4),
            [
                at(2026, 12, 1, 3, 0),
                at(2026, 12, 7, 3, 0),
                at(2026, 12, 14, 3, 0),
                at(2026, 12, 21, 3, 0),
            ]
        );
        // With `*` in one of them, only the other restricts.
        assert_eq!(
            slots("0 3 1 * *", at(2026, 11, 30, 4, 0), 2),
            [at(2026, 12, 1, 3, 0), at(2027, 1, 1, 3, 0)]
        );
        let s = CronSchedule::parse("0 3 1 * 1").unwrap();
        assert_eq!(
            s.latest_in(at(2026, 11, 30, 4, 0), at(2026, 12, 10, 0, 0)),
            Some(at(2026, 12, 7, 3, 0))
        );
        assert_eq!(
            s.latest_in(at(2026, 12, 7, 3, 0), at(2026, 12, 10, 0, 0)),
            None,
            "the interval is open at its start"
        );
    }

    #[test]
    fn shorthands_stand_for_their_five_fields() {
        let from = at(2026, 12, 6, 10, 30);
        assert_eq!(slots("@hourly", from, 1), [at(2026, 12, 6, 11, 0)]);
        assert_eq!(slots("@daily", from, 1), [at(2026, 12, 7, 0, 0)]);
        assert_eq!(slots("@midnight", from, 1), [at(2026, 12, 7, 0, 0)]);
        assert_eq!(slots("@weekly", from, 1), [at(2026, 12, 13, 0, 0)]);
        assert_eq!(slots("@monthly", from, 1), [at(2027, 1, 1, 0, 0)]);
        assert_eq!(slots("@Yearly", from, 1), [at(2027, 1, 1, 0, 0)]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| CronSchedule::parse(t).unwrap_err();
        assert!(
            err("0 3 * * 8").contains("weekday 8 is out of range"),
            "{}",
            err("0 3 * * 8")
        );
        assert!(err("0 3 * * 5-2").contains("runs backwards"));
        assert!(err("0 3 * * fr").contains("\"fr\" is not a weekday"));
        assert!(err("0 3 * * 1/0").contains("step"));
        assert!(err("0 3 * *").contains("has 4 fields"));
        assert!(err("@often").contains("unknown shorthand"));
        assert!(err("0 99 * * *").contains("invalid cron \"0 99 * * *\""));
    }
}
