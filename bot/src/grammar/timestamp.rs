//! Timestamps for `pitr` and `recover-corruption`.
//!
//! Accepted: `YYYY-MM-DD` then `T` or spaces, then `HH:MM`, optional `:SS` and fraction, then
//! an optional zone `Z`, `UTC`, `+HH:MM`, `-HH:MM` (or `+HHMM`, `+HH`), attached or after a
//! space. Without a zone the time is UTC. Unquoted, the date, time and zone may arrive as
//! separate words; [`take`] joins them.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Timelike, Utc};

use super::args::Positionals;
use super::error::{ParseErrorKind, snippet};

/// Latest UTC year accepted, so that every timestamp prints as four digits.
const MAX_YEAR: i32 = 9999;

/// Takes a timestamp from the front of `positionals`, joining a following time and zone word.
pub(crate) fn take(positionals: &mut Positionals) -> Result<DateTime<Utc>, ParseErrorKind> {
    let mut text = positionals.required("<timestamp>")?.text;
    if is_date_only(&text) && positionals.peek().is_some_and(|t| is_time_word(&t.text)) {
        append(&mut text, positionals);
    }
    if !has_zone(&text) && positionals.peek().is_some_and(|t| is_zone_word(&t.text)) {
        append(&mut text, positionals);
    }
    parse(&text).ok_or_else(|| ParseErrorKind::MalformedTimestamp {
        input: snippet(&text),
    })
}

fn append(text: &mut String, positionals: &mut Positionals) {
    if let Some(next) = positionals.next() {
        text.push(' ');
        text.push_str(&next.text);
    }
}

fn is_date_only(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, &c)| {
            if i == 4 || i == 7 {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

fn is_time_word(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_digit()) && text.contains(':')
}

/// `Z`, `UTC`, `+02:00` and the like, or a short word such as `PST` that is then reported
/// as part of a malformed timestamp rather than as a stray argument.
fn is_zone_word(text: &str) -> bool {
    let b = text.as_bytes();
    let named = (1..=5).contains(&b.len()) && b.iter().all(u8::is_ascii_alphabetic);
    named || (matches!(b.first(), Some(b'+' | b'-')) && b.get(1).is_some_and(u8::is_ascii_digit))
}

/// Whether the part after the date already carries a zone (a rough test, to decide joining).
fn has_zone(text: &str) -> bool {
    let rest = text.get(10..).unwrap_or("");
    let upper = rest.trim_end().to_ascii_uppercase();
    rest.contains(['+', '-']) || upper.ends_with('Z') || upper.ends_with("UTC")
}

/// A byte cursor over ASCII syntax; it never slices the string.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        let hit = self
            .bytes
            .get(self.pos..end)
            .is_some_and(|b| b.eq_ignore_ascii_case(word.as_bytes()));
        if hit {
            self.pos = end;
        }
        hit
    }

    /// Skips spaces and tabs; returns how many.
    fn skip_spaces(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n {
            let d = self.peek().filter(u8::is_ascii_digit)?;
            value = value * 10 + u32::from(d - b'0');
            self.pos += 1;
        }
        Some(value)
    }

    /// One to nine digits of a fraction of a second, as nanoseconds.
    fn fraction(&mut self) -> Option<u32> {
        let mut nanos = 0u32;
        let mut count = 0u32;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            if count == 9 {
                return None;
            }
            nanos = nanos * 10 + u32::from(d - b'0');
            count += 1;
            self.pos += 1;
        }
        (count > 0).then(|| nanos * 10u32.pow(9 - count))
    }

    /// Zone offset east of UTC in seconds; `Some(0)` when no zone is written.
    fn zone(&mut self) -> Option<i64> {
        if self.peek().is_none() || self.eat_word("utc") || self.eat_word("z") {
            return Some(0);
        }
        let sign = match self.peek()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.pos += 1;
        let hours = self.digits(2)?;
        let minutes = if self.peek().is_none() {
            0
        } else {
            self.eat(b':');
            self.digits(2)?
        };
        (hours <= 23 && minutes <= 59).then(|| sign * i64::from(hours * 3600 + minutes * 60))
    }
}

/// Parses one timestamp string (see the module docs); `None` if malformed or not a real time.
pub(crate) fn parse(text: &str) -> Option<DateTime<Utc>> {
    let mut c = Cursor {
        bytes: text.trim().as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    c.eat(b'-').then_some(())?;
    let month = c.digits(2)?;
    c.eat(b'-').then_some(())?;
    let day = c.digits(2)?;
    if !(c.eat(b'T') || c.eat(b't') || c.skip_spaces() > 0) {
        return None;
    }
    let hour = c.digits(2)?;
    c.eat(b':').then_some(())?;
    let minute = c.digits(2)?;
    let (second, nanos) = if c.eat(b':') {
        let second = c.digits(2)?;
        let nanos = if c.eat(b'.') || c.eat(b',') {
            c.fraction()?
        } else {
            0
        };
        (second, nanos)
    } else {
        (0, 0)
    };
    c.skip_spaces();
    let offset = c.zone()?;
    c.skip_spaces();
    if c.peek().is_some() || second > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let utc = date
        .and_time(time)
        .checked_sub_signed(TimeDelta::seconds(offset))?
        .and_utc();
    (0..=MAX_YEAR).contains(&utc.year()).then_some(utc)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, with a fraction of a second only when there is one.
pub(crate) fn format(t: &DateTime<Utc>) -> String {
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out
}
