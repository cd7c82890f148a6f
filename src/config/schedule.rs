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
//! Every field is checked here, against crontab's ranges (second and minute `0`–`59`,
//! hour `0`–`23`, day of the month `1`–`31`, month `1`–`12` or `jan` … `dec`), before
//! the `cron` crate sees it: the crate's own messages quote its internal rewrite of the
//! expression and state some limits wrongly ("Hours must be less than 23"). A schedule
//! that can never fire (`0 3 31 2 *`, February 31) is an error too.
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

/// One of the fields other than the weekday: its name in messages, its range and, for
/// months, the names it accepts.
struct Unit {
    name: &'static str,
    min: u32,
    max: u32,
    /// The range as messages state it.
    range: &'static str,
    /// Names of the values from `min` on (months), matched like weekdays: any case,
    /// three letters or more of the name.
    names: &'static [&'static str],
}

const SECOND: Unit = Unit {
    name: "second",
    min: 0,
    max: 59,
    range: "0-59",
    names: &[],
};
const MINUTE: Unit = Unit {
    name: "minute",
    min: 0,
    max: 59,
    range: "0-59",
    names: &[],
};
const HOUR: Unit = Unit {
    name: "hour",
    min: 0,
    max: 23,
    range: "0-23",
    names: &[],
};
const DAY_OF_MONTH: Unit = Unit {
    name: "day of month",
    min: 1,
    max: 31,
    range: "1-31",
    names: &[],
};
const MONTH: Unit = Unit {
    name: "month",
    min: 1,
    max: 12,
    range: "1-12 or jan-dec",
    names: &[
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ],
};

impl Unit {
    /// One value of the field: a number in range, or a name.
    fn value(&self, s: &str) -> Result<u32, String> {
        if let Ok(n) = s.parse::<u32>() {
            return if (self.min..=self.max).contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "{} {n} is out of range ({})",
                    self.name, self.range
                ))
            };
        }
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self
            .names
            .iter()
            .position(|n| lower.len() >= 3 && n.starts_with(&lower))
        {
            return Ok(self.min + i as u32);
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) || s.starts_with('-') {
            Err(format!(
                "{} {s:?} is out of range ({})",
                self.name, self.range
            ))
        } else if s.is_empty() {
            Err(format!("{} value is missing", self.name))
        } else {
            Err(format!("{s:?} is not a {} ({})", self.name, self.range))
        }
    }

    /// Checks a field (lists, ranges, steps, names; `?` too for the day of the month)
    /// and spells it out as the `cron` crate reads it: `*` or a list of numbers.
    fn field(&self, field: &str, question_mark: bool) -> Result<String, String> {
        if field == "*" || (question_mark && field == "?") {
            return Ok("*".into());
        }
        let mut values = std::collections::BTreeSet::new();
        for item in field.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step = s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{} step {s:?} is not a positive number", self.name)
                    })?;
                    (r, step)
                }
                None => (item, 1),
            };
            let (first, last) = match range.split_once('-') {
                _ if range == "*" => (self.min, self.max),
                // A leading `-` is a negative number, not a range.
                Some((a, b)) if !a.is_empty() => {
                    let (a, b) = (self.value(a)?, self.value(b)?);
                    if a > b {
                        return Err(format!("{} range {range:?} runs backwards", self.name));
                    }
                    (a, b)
                }
                // `a/step` runs to the end of the field, as in crontab.
                _ if step > 1 => (self.value(range)?, self.max),
                _ => {
                    let v = self.value(range)?;
                    (v, v)
                }
            };
            values.extend((first..=last).step_by(step as usize));
        }
        Ok(values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","))
    }
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
        let invalid = |e: String| format!("invalid cron {text:?}: {e}");
        // With five fields the seconds are the "0" inserted above.
        let second = SECOND.field(fields[0], false).map_err(invalid)?;
        let minute = MINUTE.field(fields[1], false).map_err(invalid)?;
        let hour = HOUR.field(fields[2], false).map_err(invalid)?;
        let dom = DAY_OF_MONTH.field(fields[3], true).map_err(invalid)?;
        let month = MONTH.field(fields[4], false).map_err(invalid)?;
        let dow = weekday_field(fields[5]).map_err(invalid)?;
        let either = !fields[3].starts_with('*')
            && fields[3] != "?"
            && !fields[5].starts_with('*')
            && fields[5] != "?";
        let build = |dom: &str, dow: &str| {
            let expr = format!("{second} {minute} {hour} {dom} {month} {dow}");
            // Every field was checked above; should the crate still refuse, its message
            // (which quotes `expr`, not what the user wrote) stays out.
            cron::Schedule::from_str(&expr)
                .map_err(|_| invalid("not a cron expression the scheduler can run".into()))
        };
        let alternatives = if either {
            vec![build(&dom, "*")?, build("*", &dow)?]
        } else {
            vec![build(&dom, &dow)?]
        };
        let schedule = Self {
            text: text.to_string(),
            alternatives,
        };
        // `0 3 31 2 *`: `serve` would wait for it for ever.
        if schedule.next_after(&Utc::now()).is_none() {
            return Err(invalid(format!(
                "it never fires (month {:?} has no day {:?})",
                fields[4], fields[3]
            )));
        }
        Ok(schedule)
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

    /// The latest slot in `(after, now]`, if any. Found by walking back from `now`, so
    /// the cost does not grow with the length of `(after, now]` (a schedule every second
    /// and a month of downtime).
    pub fn latest_in(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots are whole seconds: start just past `now`, skip what is later than it.
        let from = now + chrono::Duration::seconds(1);
        self.alternatives
            .iter()
            .filter_map(|s| s.after(&from).rev().find(|t| *t <= now))
            .max()
            .filter(|t| *t > after)
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

    /// Each field is checked against crontab's range, in one line that quotes the
    /// schedule as written (not the six-field rewrite the `cron` crate is given).
    #[test]
    fn out_of_range_fields_are_named_with_their_range() {
        let err = |t: &str| CronSchedule::parse(t).unwrap_err();
        for (text, want) in [
            (
                "0 25 * * *",
                "invalid cron \"0 25 * * *\": hour 25 is out of range (0-23)",
            ),
            (
                "60 3 * * *",
                "invalid cron \"60 3 * * *\": minute 60 is out of range (0-59)",
            ),
            (
                "0 3 * 13 *",
                "invalid cron \"0 3 * 13 *\": month 13 is out of range (1-12 or jan-dec)",
            ),
            (
                "0 3 0 * *",
                "invalid cron \"0 3 0 * *\": day of month 0 is out of range (1-31)",
            ),
            (
                "0 3 32 * *",
                "invalid cron \"0 3 32 * *\": day of month 32 is out of range (1-31)",
            ),
            (
                "60 0 3 * * *",
                "invalid cron \"60 0 3 * * *\": second 60 is out of range (0-59)",
            ),
            (
                "0 1-24 * * *",
                "invalid cron \"0 1-24 * * *\": hour 24 is out of range (0-23)",
            ),
            (
                "0 3,25 * * *",
                "invalid cron \"0 3,25 * * *\": hour 25 is out of range (0-23)",
            ),
            (
                "0 -1 * * *",
                "invalid cron \"0 -1 * * *\": hour \"-1\" is out of range (0-23)",
            ),
            (
                "0 5-2 * * *",
                "invalid cron \"0 5-2 * * *\": hour range \"5-2\" runs backwards",
            ),
            (
                "0 */0 * * *",
                "invalid cron \"0 */0 * * *\": hour step \"0\" is not a positive number",
            ),
            (
                "0 3 * foo *",
                "invalid cron \"0 3 * foo *\": \"foo\" is not a month (1-12 or jan-dec)",
            ),
            (
                "x 3 * * *",
                "invalid cron \"x 3 * * *\": \"x\" is not a minute (0-59)",
            ),
        ] {
            let e = err(text);
            assert_eq!(e, want, "{text}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn fields_take_lists_ranges_steps_and_month_names() {
        let from = at(2026, 12, 6, 10, 30);
        assert_eq!(slots("0 23 * * *", from, 1), [at(2026, 12, 6, 23, 0)]);
        assert_eq!(slots("59 3 31 12 *", from, 1), [at(2026, 12, 31, 3, 59)]);
        assert_eq!(
            slots("0 3 1 jan,JUL *", from, 2),
            [at(2027, 1, 1, 3, 0), at(2027, 7, 1, 3, 0)]
        );
        assert_eq!(
            slots("0 3 1 Feb-apr/2 *", from, 2),
            [at(2027, 2, 1, 3, 0), at(2027, 4, 1, 3, 0)]
        );
        assert_eq!(
            slots("*/20 */12 * * *", from, 3),
            [
                at(2026, 12, 6, 12, 0),
                at(2026, 12, 6, 12, 20),
                at(2026, 12, 6, 12, 40)
            ]
        );
        assert_eq!(
            slots("10-30/10 4 * * *", from, 3),
            [
                at(2026, 12, 7, 4, 10),
                at(2026, 12, 7, 4, 20),
                at(2026, 12, 7, 4, 30)
            ]
        );
        assert_eq!(
            slots("0 0 10/10 * *", from, 3),
            [
                at(2026, 12, 10, 0, 0),
                at(2026, 12, 20, 0, 0),
                at(2026, 12, 30, 0, 0)
            ]
        );
        assert_eq!(slots("0 3 ? * mon", from, 1), [at(2026, 12, 7, 3, 0)]);
        // February 29 fires in leap years.
        assert_eq!(slots("0 3 29 2 *", from, 1), [at(2028, 2, 29, 3, 0)]);
    }

    #[test]
    fn a_schedule_that_never_fires_is_an_error() {
        for text in ["0 3 31 2 *", "0 3 30,31 feb *", "0 3 31 4,6,9,11 *"] {
            let e = CronSchedule::parse(text).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid cron {text:?}: it never fires")),
                "{e}"
            );
        }
        // With a weekday too, a day matches either field: it fires on Mondays.
        assert!(CronSchedule::parse("0 3 31 2 1").is_ok());
    }

    #[test]
    fn the_latest_slot_is_found_however_long_ago_the_range_began() {
        let every_second = CronSchedule::parse("* * * * * *").unwrap();
        let now = at(2026, 3, 1, 12, 0) + chrono::Duration::milliseconds(400);
        // A month of downtime: the latest slot is the second just before now.
        assert_eq!(
            every_second.latest_in(at(2026, 1, 30, 0, 0), now),
            Some(at(2026, 3, 1, 12, 0))
        );
        let weekly = CronSchedule::parse("0 3 * * 0").unwrap(); // Sundays 03:00
        let sunday = at(2026, 3, 1, 3, 0);
        // A slot at `now` counts; one at `after` does not.
        assert_eq!(weekly.latest_in(at(2026, 2, 1, 0, 0), sunday), Some(sunday));
        assert_eq!(weekly.latest_in(sunday, at(2026, 3, 7, 0, 0)), None);
        // Down from Saturday noon to Monday 04:00: Sunday's slot, the last before now.
        assert_eq!(
            weekly.latest_in(at(2026, 2, 22, 3, 0), at(2026, 3, 2, 4, 0)),
            Some(sunday)
        );
        assert_eq!(
            weekly.latest_in(at(2026, 2, 1, 0, 0), at(2026, 3, 1, 2, 59)),
            Some(at(2026, 2, 22, 3, 0))
        );
    }
}
