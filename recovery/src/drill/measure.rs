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
    /// last one present on DR (the first acknowledged one's if none is), 0 when none is missing.
    pub rpo_seconds: f64,
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
/// health check before the measurement, else now); `approved_at_ms` the run's approval.
pub fn measure(
    d: &DisasterRecord,
    present: &Present,
    approved_at_ms: Option<i64>,
    green_at_ms: i64,
    rto_target: Duration,
    rpo_target: Duration,
) -> Measured {
    let last_acked = d.last_acked_seq.unwrap_or(0);
    let on_dr = present.max_seq.unwrap_or(0);
    let rpo_rows = (last_acked - on_dr).max(0);
    let rpo_seconds = if rpo_rows == 0 {
        0.0
    } else {
        let last = d.last_acked_at_ms.unwrap_or(d.disaster_at_ms);
        let kept = present
            .max_seq_at_ms
            .or(d.first_acked_at_ms)
            .unwrap_or(last);
        ms_to_s(last - kept)
    };
    let (from, rto_from) = match approved_at_ms {
        Some(at) => (at, "approval"),
        None => (d.disaster_at_ms, "disaster"),
    };
    let rto_seconds = ms_to_s(green_at_ms - from);
    let rto_met = rto_seconds <= rto_target.as_secs_f64();
    let rpo_met = rpo_seconds <= rpo_target.as_secs_f64();
    Measured {
        rpo_rows,
        rpo_seconds,
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
        let m = measure(&record(), &p, Some(7_000), 12_410, H4, M15);
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
        let m = measure(&record(), &p, None, 11_000, H4, Duration::from_millis(50));
        assert_eq!(m.rpo_rows, 3);
        assert!((m.rpo_seconds - 0.06).abs() < 1e-9, "{}", m.rpo_seconds);
        assert_eq!(m.rto_from, "disaster");
        assert_eq!(m.rto_seconds, 1.0);
        assert!(!m.rpo_met && m.rto_met && !m.met);
    }

    #[test]
    fn none_arrived_and_unacked_extras() {
        let m = measure(
            &record(),
            &Present::default(),
            None,
            10_000,
            Duration::from_secs(1),
            M15,
        );
        assert_eq!(m.rpo_rows, 100);
        assert_eq!(m.rpo_seconds, 1.99, "from the first acknowledged marker");
        let p = Present {
            count: 101,
            max_seq: Some(101),
            max_seq_at_ms: Some(10_001),
        };
        let m = measure(&record(), &p, None, 10_000, H4, M15);
        assert_eq!((m.rpo_rows, m.unacked_on_dr), (0, 1));
        // A green time before the start (clock skew) is 0, not negative.
        let m = measure(&record(), &p, Some(20_000), 10_000, H4, M15);
        assert_eq!(m.rto_seconds, 0.0);
    }
}
