//! The Route53 DNS provider: reads a record with `ListResourceRecordSets`, changes it with
//! one `ChangeResourceRecordSets` UPSERT batch and polls `GetChange` until `INSYNC`.
//! Credentials come from the standard AWS chain; errors are sorted into fatal (no
//! credentials, unknown hosted zone, invalid change) and retryable (throttling, 5xx,
//! connection failures, a change still pending after `wait`).

use std::time::{Duration, Instant};

use aws_sdk_route53::{
    Client,
    config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig},
    error::{ProvideErrorMetadata, SdkError},
    types::{
        AliasTarget as SdkAlias, Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
        ResourceRecordSet, RrType,
    },
};

use super::{
    Applied, Timing,
    record::{AliasTarget, Record, RecordData, RecordType, same_name},
};
use crate::step::{StepContext, StepError};

/// Region used when the zone names none (Route53 is a global service).
pub const DEFAULT_REGION: &str = "us-east-1";

/// A Route53 hosted zone and a client for it.
#[derive(Debug, Clone)]
pub struct Route53Zone {
    client: Client,
    hosted_zone_id: String,
}

/// A Route53 client for `region` (default `us-east-1`) and optional `endpoint`, with
/// credentials from the standard AWS chain, three attempts per call and bounded timeouts.
pub async fn client(region: Option<&str>, endpoint: Option<&str>) -> Client {
    let region = Region::new(
        region
            .filter(|r| !r.trim().is_empty())
            .unwrap_or(DEFAULT_REGION)
            .to_string(),
    );
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await;
    let mut conf = aws_sdk_route53::config::Builder::from(&shared)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(90))
                .build(),
        );
    if let Some(e) = endpoint.filter(|e| !e.trim().is_empty()) {
        conf = conf.endpoint_url(e.trim());
    }
    Client::from_conf(conf.build())
}

/// `Z123` from `Z123` or `/hostedzone/Z123`.
fn bare_zone_id(id: &str) -> String {
    id.trim()
        .trim_start_matches("/hostedzone/")
        .trim_start_matches("hostedzone/")
        .to_string()
}

/// `C123` from `/change/C123`.
fn bare_change_id(id: &str) -> String {
    id.trim().trim_start_matches("/change/").to_string()
}

fn rr_type(t: RecordType) -> RrType {
    match t {
        RecordType::A => RrType::A,
        RecordType::Aaaa => RrType::Aaaa,
        RecordType::Cname => RrType::Cname,
    }
}

/// The error and its causes, one line each joined by `: ` (no debug dumps).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let line = err.to_string();
        let line = line.lines().next().unwrap_or("").trim().to_string();
        if !line.is_empty() && !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Sorts an SDK error into fatal or retryable, with a message naming the call and the zone
/// (never credentials).
fn sdk_error<E>(op: &str, zone: &str, e: SdkError<E>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            let code = err.code().unwrap_or("error");
            let detail = err.message().unwrap_or("");
            let msg = format!("Route53 {op} on hosted zone {zone} failed: {code}: {detail}");
            match code {
                "NoSuchHostedZone" => StepError::fatal(format!(
                    "Route53 hosted zone {zone} does not exist ({op}: {detail})"
                )),
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "AccessDeniedException"
                | "UnrecognizedClientException" => StepError::fatal(format!(
                    "Route53 refused the AWS credentials for {op} on hosted zone {zone}: \
                         {code}: {detail}"
                )),
                "Throttling"
                | "ThrottlingException"
                | "RequestThrottled"
                | "PriorRequestNotComplete"
                | "ServiceUnavailable"
                | "InternalFailure" => StepError::retryable(msg),
                _ if status >= 500 || status == 429 => StepError::retryable(msg),
                _ => StepError::fatal(msg),
            }
        }
        SdkError::DispatchFailure(_) => {
            let text = causes(&e);
            if text.to_ascii_lowercase().contains("credential") {
                StepError::fatal(format!(
                    "no AWS credentials for Route53 {op} on hosted zone {zone}: set them in the \
                     environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), a profile, web \
                     identity or an instance role ({text})"
                ))
            } else {
                StepError::retryable(format!(
                    "cannot reach Route53 for {op} on hosted zone {zone}: {text}"
                ))
            }
        }
        SdkError::TimeoutError(_) => {
            StepError::retryable(format!("Route53 {op} on hosted zone {zone} timed out"))
        }
        SdkError::ResponseError(r) => StepError::retryable(format!(
            "Route53 {op} on hosted zone {zone}: unreadable response (HTTP {}): {}",
            r.raw().status().as_u16(),
            causes(&e)
        )),
        SdkError::ConstructionFailure(_) => StepError::fatal(format!(
            "Route53 {op} on hosted zone {zone}: cannot build the request: {}",
            causes(&e)
        )),
        _ => StepError::retryable(format!(
            "Route53 {op} on hosted zone {zone} failed: {}",
            causes(&e)
        )),
    }
}

/// Our record model of a Route53 record set, if it is one of the types we handle.
fn from_sdk(set: &ResourceRecordSet) -> Option<Record> {
    let rtype = match set.r#type() {
        RrType::A => RecordType::A,
        RrType::Aaaa => RecordType::Aaaa,
        RrType::Cname => RecordType::Cname,
        _ => return None,
    };
    let data = match set.alias_target() {
        Some(a) => RecordData::Alias(AliasTarget {
            hosted_zone_id: a.hosted_zone_id().to_string(),
            dns_name: a.dns_name().trim_end_matches('.').to_string(),
            evaluate_target_health: a.evaluate_target_health(),
        }),
        None => RecordData::Values {
            values: set
                .resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect(),
            ttl: set.ttl().unwrap_or(0),
        },
    };
    Some(Record {
        name: set.name().trim_end_matches('.').to_string(),
        rtype,
        data,
        set_identifier: set.set_identifier().map(str::to_string),
        weight: set.weight(),
    })
}

/// The Route53 record set for `record`.
fn to_sdk(record: &Record) -> Result<ResourceRecordSet, String> {
    let mut b = ResourceRecordSet::builder()
        .name(record.name.trim())
        .r#type(rr_type(record.rtype))
        .set_set_identifier(record.set_identifier.clone())
        .set_weight(record.weight);
    match &record.data {
        RecordData::Values { values, ttl } => {
            b = b.ttl(*ttl);
            for v in values {
                b = b.resource_records(
                    ResourceRecord::builder()
                        .value(v.trim())
                        .build()
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        RecordData::Alias(a) => {
            b = b.alias_target(
                SdkAlias::builder()
                    .hosted_zone_id(a.hosted_zone_id.trim())
                    .dns_name(a.dns_name.trim())
                    .evaluate_target_health(a.evaluate_target_health)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    b.build().map_err(|e| e.to_string())
}

impl Route53Zone {
    /// The hosted zone `hosted_zone_id` (`Z123` or `/hostedzone/Z123`) through a client from
    /// [`client`].
    pub async fn connect(
        hosted_zone_id: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> Self {
        Self::with_client(client(region, endpoint).await, hosted_zone_id)
    }

    /// The hosted zone `hosted_zone_id` through `client` (e.g. one with explicit credentials).
    pub fn with_client(client: Client, hosted_zone_id: &str) -> Self {
        Self {
            client,
            hosted_zone_id: bare_zone_id(hosted_zone_id),
        }
    }

    /// The hosted zone id without the `/hostedzone/` prefix.
    pub fn hosted_zone_id(&self) -> &str {
        &self.hosted_zone_id
    }

    /// The record set `name`/`rtype` (weighted member `set_identifier`), if it exists.
    pub async fn read(
        &self,
        name: &str,
        rtype: RecordType,
        set_identifier: Option<&str>,
    ) -> Result<Option<Record>, StepError> {
        let zone = &self.hosted_zone_id;
        let mut start_id: Option<String> = None;
        // Record sets are listed in order from (name, type); all the sets of one name and
        // type (weighted members) come together, so a few pages at most are read.
        for _ in 0..20 {
            let page = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(zone)
                .start_record_name(name.trim())
                .start_record_type(rr_type(rtype))
                .set_start_record_identifier(start_id.take())
                .max_items(100)
                .send()
                .await
                .map_err(|e| sdk_error("ListResourceRecordSets", zone, e))?;
            let mut past = false;
            for set in page.resource_record_sets() {
                let same_set = same_name(set.name(), name) && *set.r#type() == rr_type(rtype);
                if !same_set {
                    past = true;
                    continue;
                }
                if set.set_identifier() == set_identifier {
                    return Ok(from_sdk(set));
                }
            }
            let more = page.is_truncated()
                && !past
                && page.next_record_name().is_some_and(|n| same_name(n, name))
                && page.next_record_type() == Some(&rr_type(rtype));
            if !more {
                return Ok(None);
            }
            start_id = page.next_record_identifier().map(str::to_string);
        }
        Ok(None)
    }

    /// Sends `record` as one UPSERT change batch and returns the change id and status.
    pub async fn submit(
        &self,
        record: &Record,
        comment: &str,
    ) -> Result<(String, String), StepError> {
        let zone = &self.hosted_zone_id;
        let build = |e: String| StepError::fatal(format!("cannot build the Route53 change: {e}"));
        let change = Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(to_sdk(record).map_err(build)?)
            .build()
            .map_err(|e| build(e.to_string()))?;
        let mut batch = ChangeBatch::builder().changes(change);
        if !comment.is_empty() {
            batch = batch.comment(comment.chars().take(256).collect::<String>());
        }
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch.build().map_err(|e| build(e.to_string()))?)
            .send()
            .await
            .map_err(|e| sdk_error("ChangeResourceRecordSets", zone, e))?;
        let info = out.change_info().ok_or_else(|| {
            StepError::retryable("Route53 ChangeResourceRecordSets returned no ChangeInfo")
        })?;
        Ok((
            bare_change_id(info.id()),
            info.status().as_str().to_string(),
        ))
    }

    /// The status of change `change_id` (`PENDING` or `INSYNC`).
    pub async fn status(&self, change_id: &str) -> Result<String, StepError> {
        let out = self
            .client
            .get_change()
            .id(change_id)
            .send()
            .await
            .map_err(|e| sdk_error("GetChange", &self.hosted_zone_id, e))?;
        let info = out
            .change_info()
            .ok_or_else(|| StepError::retryable("Route53 GetChange returned no ChangeInfo"))?;
        Ok(info.status().as_str().to_string())
    }

    /// Submits `record` and polls the change every `timing.poll` until `INSYNC`, reporting
    /// `change C123 PENDING (4s)` lines; still pending after `timing.wait` is a retryable
    /// error naming the change.
    pub async fn upsert(
        &self,
        record: &Record,
        comment: &str,
        timing: Timing,
        ctx: &StepContext,
    ) -> Result<Applied, StepError> {
        let started = Instant::now();
        let (id, mut status) = tokio::select! {
            r = self.submit(record, comment) => r?,
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
        };
        let insync = ChangeStatus::Insync.as_str();
        loop {
            if status == insync {
                return Ok(Applied {
                    change_id: Some(id),
                    status,
                    elapsed: started.elapsed(),
                });
            }
            let elapsed = started.elapsed();
            if elapsed >= timing.wait {
                return Err(StepError::retryable(format!(
                    "Route53 change {id} is still {status} after {}s (wait {}): the record \
                     was submitted but is not yet in sync",
                    elapsed.as_secs(),
                    humantime::format_duration(timing.wait)
                )));
            }
            ctx.progress
                .line(format!("change {id} {status} ({}s)", elapsed.as_secs()));
            let nap = timing.poll.min(timing.wait - elapsed);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
            }
            status = tokio::select! {
                r = self.status(&id) => r?,
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_lose_their_prefixes() {
        assert_eq!(bare_zone_id("/hostedzone/Z123"), "Z123");
        assert_eq!(bare_zone_id(" Z123 "), "Z123");
        assert_eq!(bare_change_id("/change/C9"), "C9");
    }

    #[test]
    fn record_sets_round_trip() {
        let rec = Record {
            name: "api.example.com".into(),
            rtype: RecordType::A,
            data: RecordData::Alias(AliasTarget {
                hosted_zone_id: "Z2EXAMPLE".into(),
                dns_name: "api-dr.example.com".into(),
                evaluate_target_health: true,
            }),
            set_identifier: Some("dr".into()),
            weight: Some(10),
        };
        let back = from_sdk(&to_sdk(&rec).unwrap()).unwrap();
        assert!(back.same_as(&rec), "{back:?}");
    }
}
