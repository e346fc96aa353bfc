//! RPO and RTO of a drill from the disaster's record and what the promoted DR database holds:
//! pure arithmetic, so every case is unit-tested.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::markers::{Ack, Present};

/// What `pg_drill_disaster` recorded (its step data), as the measurement needs it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DisasterRecord {
    /// The drill's marker tag.
    pub drill: String,
    /// The marker table.
    pub table: String,
    /// When the primary was killed (or blocked), Unix ms.
    pub disaster_at_ms: i64,
    /// Markers acknowledged by the primary.
    pub markers_written: i64,
    /// `seq` of the last acknowledged marker.
    pub last_acked_seq: Option<i64>,
    /// Its `written_at`, Unix ms.
    pub last_acked_at_ms: Option<i64>,
    /// `written_at` of the first acknowledged marker, Unix ms.
    pub first_acked_at_ms: Option<i64>,
}

/// The measured drill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    /// Acknowledged markers missing on the DR database (≥ 0).
    pub rpo_rows: i64,
    /// Seconds of acknowledged commits lost: the last acknowledged marker's time minus the
    /// last one present on DR, 0 when none is missing. When none reached DR: minus the DR
    /// database's last replayed commit (the promotion's evidence) when known, else minus the
    /// first acknowledged marker, which is only a lower bound (`rpo_at_least`).
    pub rpo_seconds: f64,
    /// `rpo_seconds` is only a lower bound: no marker reached DR and its last replayed commit
    /// is unknown, so more may be lost. Such an RPO is never reported as met.
    pub rpo_at_least: bool,
    /// Seconds from `rto_from` to health green on the DR side.
    pub rto_seconds: f64,
    /// `approval` (the run's approval) or `disaster` (the run needed none).
    pub rto_from: &'static str,
    /// Seconds from the disaster to health green (the outage customers would see).
    pub outage_seconds: f64,
    /// Markers on DR that the writer never saw acknowledged (committed as the primary died).
    pub unacked_on_dr: i64,
    /// Both within the targets.
    pub met: bool,
    /// RTO within its target.
    pub rto_met: bool,
    /// RPO within its target.
    pub rpo_met: bool,
}

/// Computes the figures. `green_at_ms` is when the DR side was healthy (the end of the last
/// health check before the measurement, else now); `approved_at_ms` the run's approval;
/// `replayed_at_ms` the DR database's last replayed commit, on the primary's clock (as the
/// markers' times), when the promotion recorded it.
pub fn measure(
    d: &DisasterRecord,
    present: &Present,
    replayed_at_ms: Option<i64>,
    approved_at_ms: Option<i64>,
    green_at_ms: i64,
    rto_target: Duration,
    rpo_target: Duration,
) -> Measured {
    let last_acked = d.last_acked_seq.unwrap_or(0);
    let on_dr = present.max_seq.unwrap_or(0);
    let rpo_rows = (last_acked - on_dr).max(0);
    let last = d.last_acked_at_ms.unwrap_or(d.disaster_at_ms);
    let (rpo_seconds, rpo_at_least) = match (rpo_rows, present.max_seq_at_ms, replayed_at_ms) {
        (0, _, _) => (0.0, false),
        (_, Some(kept), _) => (ms_to_s(last - kept), false),
        // None arrived: what DR holds ends at its last replayed commit, before every marker.
        (_, None, Some(replayed)) => {
            let kept = d.first_acked_at_ms.map_or(replayed, |f| replayed.min(f));
            (ms_to_s(last - kept), false)
        }
        (_, None, None) => (ms_to_s(last - d.first_acked_at_ms.unwrap_or(last)), true),
    };
    let (from, rto_from) = match approved_at_ms {
        Some(at) => (at, "approval"),
        None => (d.disaster_at_ms, "disaster"),
    };
    let rto_seconds = ms_to_s(green_at_ms - from);
    let rto_met = rto_seconds <= rto_target.as_secs_f64();
    let rpo_met = !rpo_at_least && rpo_seconds <= rpo_target.as_secs_f64();
    Measured {
        rpo_rows,
        rpo_seconds,
        rpo_at_least,
        rto_seconds,
        rto_from,
        outage_seconds: ms_to_s(green_at_ms - d.disaster_at_ms),
        unacked_on_dr: (on_dr - last_acked).max(0),
        met: rto_met && rpo_met,
        rto_met,
        rpo_met,
    }
}

fn ms_to_s(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// `Ack` fields of a record, for the disaster step's data.
pub fn ack_fields(first: Option<Ack>, last: Option<Ack>) -> serde_json::Value {
    serde_json::json!({
        "last_acked_marker": last.map(|a| a.id),
        "last_acked_seq": last.map(|a| a.seq),
        "last_acked_at_ms": last.map(|a| a.at_ms),
        "first_acked_at_ms": first.map(|a| a.at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DisasterRecord {
        DisasterRecord {
            drill: "d".into(),
            table: "t".into(),
            disaster_at_ms: 10_000,
            markers_written: 100,
            last_acked_seq: Some(100),
            last_acked_at_ms: Some(9_990),
            first_acked_at_ms: Some(8_000),
        }
    }

    const H4: Duration = Duration::from_secs(4 * 3600);
    const M15: Duration = Duration::from_secs(900);

    #[test]
    fn nothing_lost() {
        let p = Present {
            count: 100,
            max_seq: Some(100),
            max_seq_at_ms: Some(9_990),
        };
        let m = measure(&record(), &p, None, Some(7_000), 12_410, H4, M15);
        assert_eq!(m.rpo_rows, 0);
        assert_eq!(m.rpo_seconds, 0.0);
        assert_eq!(m.rto_seconds, 5.41);
        assert_eq!(m.rto_from, "approval");
        assert_eq!(m.outage_seconds, 2.41);
        assert!(m.met);
    }

    #[test]
    fn lost_rows_and_their_time_gap() {
        let p = Present {
            count: 97,
            max_seq: Some(97),
            max_seq_at_ms: Some(9_930),
        };
        let m = measure(
            &record(),
            &p,
            None,
            None,
            11_000,
            H4,
            Duration::from_millis(50),
        );
        assert_eq!(m.rpo_rows, 3);
        assert!((m.rpo_seconds - 0.06).abs() < 1e-9, "{}", m.rpo_seconds);
        assert_eq!(m.rto_from, "disaster");
        assert_eq!(m.rto_seconds, 1.0);
        assert!(!m.rpo_met && m.rto_met && !m.met);
    }

    #[test]
    fn none_arrived_and_unacked_extras() {
        // Nothing known of DR's last commit: at least the markers' span, never "met".
        let m = measure(
            &record(),
            &Present::default(),
            None,
            None,
            10_000,
            Duration::from_secs(1),
            M15,
        );
        assert_eq!(m.rpo_rows, 100);
        assert_eq!(m.rpo_seconds, 1.99, "from the first acknowledged marker");
        assert!(m.rpo_at_least && !m.rpo_met && !m.met, "{m:?}");
        // DR's last replayed commit 10 minutes before the drill: that is the loss.
        let m = measure(
            &record(),
            &Present::default(),
            Some(9_990 - 600_000),
            None,
            10_000,
            Duration::from_secs(1),
            M15,
        );
        assert_eq!(m.rpo_seconds, 600.0);
        assert!(!m.rpo_at_least && m.rpo_met, "{m:?}");
        let m = measure(
            &record(),
            &Present::default(),
            Some(9_990 - 1_000_000),
            None,
            10_000,
            Duration::from_secs(1),
            M15,
        );
        assert!(!m.rpo_met, "1,000 s over a 15-minute target: {m:?}");
        let p = Present {
            count: 101,
            max_seq: Some(101),
            max_seq_at_ms: Some(10_001),
        };
        let m = measure(&record(), &p, None, None, 10_000, H4, M15);
        assert_eq!((m.rpo_rows, m.unacked_on_dr), (0, 1));
        // A green time before the start (clock skew) is 0, not negative.
        let m = measure(&record(), &p, None, Some(20_000), 10_000, H4, M15);
        assert_eq!(m.rto_seconds, 0.0);
    }
}
