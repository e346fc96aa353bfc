//! The `k8s_scale` and `k8s_status` step types, built from the registry and run against the
//! testkit's fake Kubernetes API server: waiting for readiness with progress, scaling to 0,
//! StatefulSets, the scale-subresource PATCH on the wire, clear 401/403/404/timeout/unreachable
//! errors, cancel, validation, and kubeconfig files with several contexts.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use recovery::{
    registry::Registry,
    resources::{KubeClusterDef, Resources},
    secret::Secret,
    step::{ProgressSink, StepContext, StepError, StepOutput},
    testkit::kube::{FakeKube, FakeKubeOptions},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cr3t-bearer-token";

/// A fake that checks [`TOKEN`] and ticks every 50 ms.
async fn fake() -> FakeKube {
    FakeKube::start_with(FakeKubeOptions {
        tick: Duration::from_millis(50),
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await
}

fn api_def(url: &str, token: &str) -> KubeClusterDef {
    KubeClusterDef {
        api_url: Some(url.into()),
        token: Some(Secret::new(token)),
        ..Default::default()
    }
}

/// A registry whose `[kubernetes.dr]` is the fake.
fn registry_for(fake: &FakeKube) -> Registry {
    registry(vec![("dr", api_def(&fake.url(), TOKEN))])
}

fn registry(defs: Vec<(&str, KubeClusterDef)>) -> Registry {
    Registry::with_resources(Arc::new(Resources {
        kubernetes: defs.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
        ..Default::default()
    }))
}

fn context(
    cancel: CancellationToken,
) -> (StepContext, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::new(tx),
        cancel,
        ..Default::default()
    };
    (ctx, rx)
}

/// Builds `kind` from the registry with `params` and runs it; returns the result and the
/// progress lines.
async fn run_with(
    reg: &Registry,
    kind: &str,
    params: Value,
    cancel: CancellationToken,
) -> (Result<StepOutput, StepError>, Vec<String>) {
    let k = reg
        .get(kind)
        .unwrap_or_else(|| panic!("{kind} is not registered"));
    k.validate(&params).unwrap();
    let step = k.build(&params).unwrap();
    let (ctx, mut rx) = context(cancel);
    let out = step.run(&ctx).await;
    drop(ctx);
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l);
    }
    (out, lines)
}

async fn run(
    reg: &Registry,
    kind: &str,
    params: Value,
) -> (Result<StepOutput, StepError>, Vec<String>) {
    run_with(reg, kind, params, CancellationToken::new()).await
}

#[tokio::test]
async fn scale_up_waits_until_ready_and_reports_progress() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 0);
    let reg = registry_for(&fake);
    let (out, lines) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 5,
                "poll": "20ms" }),
    )
    .await;
    let out = out.unwrap();
    assert!(
        out.summary
            .starts_with("deployment apex/apex-api scaled 0 → 5, 5/5 ready in "),
        "{}",
        out.summary
    );
    // The ready count climbs one pod per tick; every count the step saw is reported once.
    assert_eq!(lines.first().unwrap(), "apex-api: 0/5 ready");
    assert_eq!(lines.last().unwrap(), "apex-api: 5/5 ready");
    let counts: Vec<u32> = lines
        .iter()
        .map(|l| {
            l["apex-api: ".len()..]
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    assert!(lines.len() >= 3, "{lines:?}");
    assert_eq!(out.data["previous"], 0);
    assert_eq!(out.data["target"], 5);
    assert_eq!(out.data["ready"], 5);
    assert_eq!(out.data["namespace"], "apex");
    assert_eq!(out.data["name"], "apex-api");
    assert_eq!(out.data["cluster"], "dr");
    // Five ticks of 50 ms at least.
    assert!(
        out.data["elapsed_ms"].as_u64().unwrap() >= 200,
        "{}",
        out.data
    );
    let w = fake.workload("deployments", "apex", "apex-api").unwrap();
    assert_eq!((w.replicas, w.ready), (5, 5));
    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.authorized && r.status == 200));
}

#[tokio::test]
async fn the_patch_goes_to_the_scale_subresource_as_a_merge_patch() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 2);
    let reg = registry_for(&fake);
    // A replica count filled from a command argument arrives as a string.
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": "3",
                "poll": "20ms" }),
    )
    .await;
    out.unwrap();
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let p = &patches[0];
    assert_eq!(
        p.path,
        "/apis/apps/v1/namespaces/apex/deployments/apex-api/scale"
    );
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(p.body, json!({ "spec": { "replicas": 3 } }));
    assert!(p.authorized);
    // Everything else was a read of the Deployment itself.
    for r in fake.requests().iter().filter(|r| r.method != "PATCH") {
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/apis/apps/v1/namespaces/apex/deployments/apex-api");
    }
    let w = fake.workload("deployments", "apex", "apex-api").unwrap();
    assert_eq!((w.replicas, w.ready, w.generation), (3, 3, 2));

    // Running it again changes nothing and sends no PATCH (idempotent).
    let (again, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 3 }),
    )
    .await;
    let again = again.unwrap();
    assert!(
        again
            .summary
            .starts_with("deployment apex/apex-api already at 3 replicas, 3/3 ready in "),
        "{}",
        again.summary
    );
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count(),
        1
    );
}

#[tokio::test]
async fn scale_to_zero_waits_until_no_replica_is_ready() {
    let fake = fake().await;
    fake.add_deployment("apex", "worker", 3);
    let reg = registry_for(&fake);
    let (out, lines) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "worker", "replicas": 0,
                "poll": "20ms" }),
    )
    .await;
    let out = out.unwrap();
    assert!(
        out.summary
            .starts_with("deployment apex/worker scaled 3 → 0, 0/0 ready in "),
        "{}",
        out.summary
    );
    assert_eq!(lines.last().unwrap(), "worker: 0/0 ready");
    assert_eq!(out.data["previous"], 3);
    assert_eq!(out.data["ready"], 0);
    let w = fake.workload("deployments", "apex", "worker").unwrap();
    assert_eq!((w.replicas, w.ready, w.current), (0, 0, 0));
}

/// readyReplicas drops as soon as pods are marked for deletion, but they keep serving (and
/// writing) through their grace period: a scale to 0 is done when no pod is left.
#[tokio::test]
async fn scale_to_zero_waits_until_terminating_pods_are_gone() {
    let fake = fake().await;
    fake.add_deployment("apex", "worker", 3);
    // Pods of another app in the namespace do not count.
    fake.add_deployment("apex", "other", 2);
    fake.hold_terminating("worker");
    let reg = registry_for(&fake);
    let released_at = std::sync::Mutex::new(None::<Instant>);
    let step = async {
        let out = run(
            &reg,
            "k8s_scale",
            json!({ "kube": "dr", "namespace": "apex", "name": "worker", "replicas": 0,
                    "poll": "20ms", "wait": "20s" }),
        )
        .await;
        (out, Instant::now())
    };
    let releaser = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let w = fake.workload("deployments", "apex", "worker").unwrap();
            if (w.ready, w.terminating) == (0, 3) {
                break;
            }
            assert!(Instant::now() < deadline, "never scaled down: {w:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Ready is 0, the pods are still terminating: the step must keep waiting.
        tokio::time::sleep(Duration::from_millis(400)).await;
        *released_at.lock().unwrap() = Some(Instant::now());
        fake.release_terminating("worker");
    };
    let (((out, lines), finished_at), ()) = tokio::join!(step, releaser);
    let out = out.unwrap();
    let released_at = released_at.lock().unwrap().unwrap();
    assert!(
        finished_at >= released_at,
        "the step finished {:?} before the terminating pods were gone: {lines:?}",
        released_at - finished_at
    );
    assert!(
        out.summary
            .starts_with("deployment apex/worker scaled 3 → 0, 0/0 ready in "),
        "{}",
        out.summary
    );
    assert!(
        lines.contains(&"worker: 0/0 ready, 3 pods still terminating".to_string()),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), "worker: 0/0 ready");
    // The pods were found through the Deployment's selector.
    let list = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/namespaces/apex/pods")
        .expect("the pods were listed");
    assert_eq!(list.method, "GET");
    let query = list.query.unwrap_or_default();
    assert!(query.contains("labelSelector=app%3Dworker"), "{query}");
}

#[tokio::test]
async fn scale_to_zero_names_the_pods_left_and_the_missing_rbac_verb() {
    let fake = fake().await;
    fake.add_deployment("apex", "stuck", 2);
    fake.hold_terminating("stuck");
    let reg = registry_for(&fake);
    let (out, lines) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "stuck", "replicas": 0,
                "poll": "20ms", "wait": "600ms" }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(err.retryable);
    assert_eq!(
        err.message,
        "deployment apex/stuck: 0/0 ready, but 2 pods still terminating after waiting 600ms \
         (target 0 replicas)"
    );
    assert_eq!(
        lines.last().unwrap(),
        "stuck: 0/0 ready, 2 pods still terminating"
    );

    fake.add_statefulset("data", "ledger", 1);
    fake.forbid_pods("data");
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "data", "kind": "statefulset", "name": "ledger",
                "replicas": 0, "poll": "20ms", "wait": "10s" }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.message.starts_with(
            "forbidden: pods is forbidden: User \"system:serviceaccount:drbot:drbot\" cannot \
             list resource \"pods\""
        ) && err.message.ends_with(
            "drbot's account needs the RBAC verb list on pods (core group) in namespace data)"
        ),
        "{}",
        err.message
    );
}

/// An autoscaler whose minReplicas is above the target keeps more replicas ready than asked
/// for: that is a success, not a timeout (a retry would patch against the autoscaler).
#[tokio::test]
async fn scale_up_is_done_when_an_autoscaler_keeps_more_ready() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 4);
    fake.autoscale("apex-api", 4);
    let reg = registry_for(&fake);
    let (out, lines) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 2,
                "poll": "20ms", "wait": "2s" }),
    )
    .await;
    let out = out.unwrap_or_else(|e| panic!("{}: {lines:?}", e.message));
    assert!(
        out.summary
            .starts_with("deployment apex/apex-api scaled 4 → 2, 4/2 ready in "),
        "{}",
        out.summary
    );
    assert!(
        out.summary.ends_with(
            " (spec.replicas is now 4, changed by something else such as an autoscaler)"
        ),
        "{}",
        out.summary
    );
    assert_eq!(out.data["ready"], 4);
    let w = fake.workload("deployments", "apex", "apex-api").unwrap();
    assert_eq!((w.replicas, w.ready), (4, 4));

    // From 0 (where the autoscaler is inactive) to 2: the autoscaler takes it to 4.
    fake.add_deployment("apex", "apex-web", 0);
    fake.autoscale("apex-web", 4);
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-web", "replicas": 2,
                "poll": "20ms", "wait": "5s" }),
    )
    .await;
    assert!(out.unwrap().data["ready"].as_u64().unwrap() >= 2);
    let patches = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/apex-web/"))
        .count();
    assert_eq!(patches, 1);
}

/// A `wait` too long for the clock to add is no deadline, not a panic.
#[tokio::test]
async fn absurd_waits_do_not_overflow() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 1);
    let reg = registry_for(&fake);
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 2,
                "poll": "20ms", "wait": "500000000000years" }),
    )
    .await;
    assert!(
        out.unwrap()
            .summary
            .starts_with("deployment apex/apex-api scaled 1 → 2, 2/2 ready in ")
    );
}

#[tokio::test]
async fn statefulsets_scale_through_their_own_scale_subresource() {
    let fake = fake().await;
    fake.add_statefulset("data", "ledger", 1);
    // A Deployment of the same name must not be touched.
    fake.add_deployment("data", "ledger", 1);
    let reg = registry_for(&fake);
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "data", "kind": "statefulset", "name": "ledger",
                "replicas": 3, "poll": "20ms" }),
    )
    .await;
    let out = out.unwrap();
    assert!(
        out.summary
            .starts_with("statefulset data/ledger scaled 1 → 3, 3/3 ready in "),
        "{}",
        out.summary
    );
    let patch = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patch.path,
        "/apis/apps/v1/namespaces/data/statefulsets/ledger/scale"
    );
    assert_eq!(
        fake.workload("statefulsets", "data", "ledger")
            .unwrap()
            .ready,
        3
    );
    assert_eq!(
        fake.workload("deployments", "data", "ledger")
            .unwrap()
            .replicas,
        1
    );

    let (status, _) = run(
        &reg,
        "k8s_status",
        json!({ "kube": "dr", "namespace": "data", "kind": "statefulset", "name": "ledger" }),
    )
    .await;
    assert_eq!(
        status.unwrap().summary,
        "statefulset data/ledger: 3 replicas, 3 ready"
    );
}

#[tokio::test]
async fn wait_0s_sets_the_replicas_without_waiting() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 1);
    fake.stall("apex-api");
    let reg = registry_for(&fake);
    let (out, lines) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 4,
                "wait": "0s" }),
    )
    .await;
    let out = out.unwrap();
    assert_eq!(
        out.summary,
        "deployment apex/apex-api scaled 1 → 4, not waiting (1/4 ready before)"
    );
    assert_eq!(lines, ["apex-api: 1/4 ready (not waiting)"]);
    assert_eq!(out.data["waited"], false);
    assert_eq!(
        fake.workload("deployments", "apex", "apex-api")
            .unwrap()
            .replicas,
        4
    );
}

#[tokio::test]
async fn a_missing_workload_is_a_fatal_not_found() {
    let fake = fake().await;
    let reg = registry_for(&fake);
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 5 }),
    )
    .await;
    let err = out.unwrap_err();
    assert_eq!(
        err.message,
        "deployment apex/apex-api not found in cluster dr"
    );
    assert!(!err.retryable);
    let (out, _) = run(
        &reg,
        "k8s_status",
        json!({ "kube": "dr", "namespace": "apex", "kind": "statefulset", "name": "db" }),
    )
    .await;
    let err = out.unwrap_err();
    assert_eq!(err.message, "statefulset apex/db not found in cluster dr");
    assert!(!err.retryable);
    assert!(fake.requests().iter().all(|r| r.status == 404));
}

#[tokio::test]
async fn forbidden_is_fatal_and_names_the_rbac_verbs() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 1);
    fake.forbid("apex-api");
    let reg = registry_for(&fake);
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 5 }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.message.starts_with(
            "forbidden: deployments.apps \"apex-api\" is forbidden: User \
             \"system:serviceaccount:drbot:drbot\" cannot get resource \"deployments\""
        ),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("needs the RBAC verbs get and patch on deployments and deployments/scale"),
        "{}",
        err.message
    );
    assert_eq!(
        fake.workload("deployments", "apex", "apex-api")
            .unwrap()
            .replicas,
        1
    );
}

#[tokio::test]
async fn a_rejected_token_is_fatal_and_never_shown() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 1);
    let wrong = "wrong-token-value";
    let reg = registry(vec![("dr", api_def(&fake.url(), wrong))]);
    let (out, _) = run(
        &reg,
        "k8s_status",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api" }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(
        err.message,
        "unauthorized: cluster dr rejected drbot's credentials (Unauthorized)"
    );
    assert!(!err.message.contains(wrong) && !err.log.contains(wrong));
    let r = &fake.requests()[0];
    assert!(!r.authorized);
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_workload_that_never_becomes_ready_times_out_retryably() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 0);
    fake.stall("apex-api");
    let reg = registry_for(&fake);
    let started = Instant::now();
    let (out, lines) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 4,
                "wait": "600ms", "poll": "50ms" }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(err.retryable);
    assert_eq!(
        err.message,
        "deployment apex/apex-api: 0/4 ready after waiting 600ms (target 4 replicas)"
    );
    assert_eq!(lines, ["apex-api: 0/4 ready"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(30),
        "{took:?}"
    );
    // The replicas were set; only readiness is missing.
    assert_eq!(
        fake.workload("deployments", "apex", "apex-api")
            .unwrap()
            .replicas,
        4
    );
}

#[tokio::test]
async fn cancel_stops_the_wait_promptly() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 0);
    fake.stall("apex-api");
    let reg = registry_for(&fake);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (out, _) = run_with(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 2,
                "wait": "5m", "poll": "1m" }),
        cancel,
    )
    .await;
    let err = out.unwrap_err();
    assert_eq!(err.message, "cancelled");
    assert!(err.retryable);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(30),
        "{took:?}"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_is_retryable() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let reg = registry(vec![("dr", api_def(&url, TOKEN))]);
    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 2 }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert!(
        err.message
            .starts_with("cannot reach Kubernetes cluster dr to get deployment apex/apex-api: "),
        "{}",
        err.message
    );
    assert!(err.message.contains("onnection refused"), "{}", err.message);
    assert!(!err.message.contains(TOKEN));
}

#[tokio::test]
async fn k8s_status_reports_replicas_and_checks_the_minimum() {
    let fake = fake().await;
    fake.add_deployment("apex", "apex-api", 3);
    let reg = registry_for(&fake);
    let (out, lines) = run(
        &reg,
        "k8s_status",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api",
                "expect_ready_at_least": 3 }),
    )
    .await;
    let out = out.unwrap();
    assert_eq!(out.summary, "deployment apex/apex-api: 3 replicas, 3 ready");
    assert!(lines.is_empty());
    assert_eq!(
        out.data,
        json!({ "cluster": "dr", "kind": "deployment", "namespace": "apex", "name": "apex-api",
                "replicas": 3, "current": 3, "ready": 3, "available": 3, "updated": 3 })
    );
    let (out, _) = run(
        &reg,
        "k8s_status",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api",
                "expect_ready_at_least": "4" }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(err.retryable);
    assert_eq!(
        err.message,
        "deployment apex/apex-api: 3 replicas, 3 ready; expected at least 4 ready"
    );
    // Read-only: nothing but GETs.
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn validate_rejects_unknown_clusters_and_bad_params() {
    let fake = fake().await;
    let mut defs = vec![("dr", api_def(&fake.url(), TOKEN))];
    defs.push(("main", api_def(&fake.url(), TOKEN)));
    let reg = registry(defs);
    let scale = reg.get("k8s_scale").unwrap();
    let status = reg.get("k8s_status").unwrap();
    assert!(scale.traits().destructive && scale.traits().idempotent);
    assert!(!status.traits().destructive && status.traits().idempotent);

    let check = |kind: &str, p: Value| reg.get(kind).unwrap().validate(&p);
    assert_eq!(
        check(
            "k8s_scale",
            json!({ "kube": "west", "name": "apex-api", "replicas": 1 })
        )
        .unwrap_err(),
        "kube: unknown Kubernetes cluster `west` (known: dr, main)"
    );
    assert_eq!(
        check("k8s_status", json!({ "kube": "west", "name": "apex-api" })).unwrap_err(),
        "kube: unknown Kubernetes cluster `west` (known: dr, main)"
    );
    // Placeholders are accepted until the plan is resolved.
    check(
        "k8s_scale",
        json!({ "kube": "{region}", "namespace": "{ns}", "name": "{app}", "replicas": "{n}" }),
    )
    .unwrap();
    check(
        "k8s_status",
        json!({ "kube": "{region}", "name": "apex-api", "expect_ready_at_least": "{n}" }),
    )
    .unwrap();
    assert_eq!(
        check(
            "k8s_scale",
            json!({ "kube": "dr", "name": "apex-api", "replicas": "lots" })
        )
        .unwrap_err(),
        "replicas: `lots` is not a replica count (a whole number, 0 or more)"
    );
    assert!(
        check("k8s_scale", json!({ "kube": "dr", "name": "apex-api" }))
            .unwrap_err()
            .contains("missing field `replicas`")
    );
    assert!(
        check(
            "k8s_scale",
            json!({ "kube": "dr", "name": "apex-api", "replicas": 1, "kind": "daemonset" })
        )
        .unwrap_err()
        .starts_with("kind: unknown variant `daemonset`, expected `deployment` or `statefulset`")
    );
    assert!(
        check(
            "k8s_scale",
            json!({ "kube": "dr", "name": "apex-api", "replicas": 1, "wait": "forever" })
        )
        .unwrap_err()
        .starts_with("wait: `forever`")
    );
    assert!(
        check(
            "k8s_status",
            json!({ "kube": "dr", "name": "apex-api", "replicas": 1 })
        )
        .unwrap_err()
        .contains("unknown field `replicas`")
    );
    assert!(
        check(
            "k8s_status",
            json!({ "kube": "dr", "namespace": "Prod Apps", "name": "apex-api" })
        )
        .unwrap_err()
        .starts_with("namespace: `Prod Apps` is not a valid Kubernetes name")
    );
    // `build` gets resolved parameters: a leftover placeholder is an error, not a guess.
    let leftover = json!({ "kube": "dr", "name": "apex-api", "replicas": "{n}" });
    assert_eq!(
        scale.build(&leftover).err().unwrap(),
        "replicas: `{n}` was not resolved to a number"
    );
}

fn kubeconfig_yaml(dr: &FakeKube, main: &FakeKube) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
current-context: main
clusters:
- name: dr-cluster
  cluster:
    server: {dr}
- name: main-cluster
  cluster:
    server: {main}
users:
- name: dr-user
  user:
    token: dr-token
- name: main-user
  user:
    token: main-token
contexts:
- name: dr-cluster
  context:
    cluster: dr-cluster
    user: dr-user
    namespace: apex
- name: main
  context:
    cluster: main-cluster
    user: main-user
"#,
        dr = dr.url(),
        main = main.url()
    )
}

#[tokio::test]
async fn kubeconfig_files_pick_the_named_context() {
    let opts = |token: &str| FakeKubeOptions {
        tick: Duration::from_millis(50),
        token: Some(token.into()),
        ..Default::default()
    };
    let dr = FakeKube::start_with(opts("dr-token")).await;
    let main = FakeKube::start_with(opts("main-token")).await;
    dr.add_deployment("apex", "apex-api", 2);
    main.add_deployment("apex", "apex-api", 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig_yaml(&dr, &main)).unwrap();
    let def = |context: Option<&str>| KubeClusterDef {
        kubeconfig: Some(path.clone()),
        context: context.map(str::to_string),
        ..Default::default()
    };
    let reg = registry(vec![
        ("dr", def(Some("dr-cluster"))),
        ("current", def(None)),
        ("typo", def(Some("dr-clustr"))),
    ]);

    let (out, _) = run(
        &reg,
        "k8s_scale",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api", "replicas": 3,
                "poll": "20ms" }),
    )
    .await;
    assert!(
        out.unwrap()
            .summary
            .starts_with("deployment apex/apex-api scaled 2 → 3, 3/3 ready")
    );
    assert!(!dr.requests().is_empty());
    assert!(dr.requests().iter().all(|r| r.authorized));
    assert!(main.requests().is_empty());
    assert_eq!(
        main.workload("deployments", "apex", "apex-api")
            .unwrap()
            .replicas,
        7
    );

    // Without `context`, the kubeconfig's current context is used.
    let (out, _) = run(
        &reg,
        "k8s_status",
        json!({ "kube": "current", "namespace": "apex", "name": "apex-api" }),
    )
    .await;
    assert_eq!(
        out.unwrap().summary,
        "deployment apex/apex-api: 7 replicas, 7 ready"
    );
    assert!(main.requests().iter().all(|r| r.authorized));

    // A context that is not in the file is a fatal configuration error naming it.
    let (out, _) = run(
        &reg,
        "k8s_status",
        json!({ "kube": "typo", "namespace": "apex", "name": "apex-api" }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.message.starts_with(&format!(
            "Kubernetes cluster typo: kubeconfig {}, context `dr-clustr`: ",
            path.display()
        )),
        "{}",
        err.message
    );

    // A kubeconfig path that does not exist says so.
    let missing = registry(vec![(
        "dr",
        KubeClusterDef {
            kubeconfig: Some(dir.path().join("nope")),
            ..Default::default()
        },
    )]);
    let (out, _) = run(
        &missing,
        "k8s_status",
        json!({ "kube": "dr", "namespace": "apex", "name": "apex-api" }),
    )
    .await;
    let err = out.unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.message
            .starts_with("Kubernetes cluster dr: kubeconfig ")
            && err.message.contains("nope"),
        "{}",
        err.message
    );
}
